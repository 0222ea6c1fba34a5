use super::*;

const PASSWORD: &str = "correct horse battery";

/// Far below OWASP: only the semaphore and plumbing are under test.
fn cheap(max_concurrent: usize) -> PasswordHasher {
    let params = Params::new(Params::MIN_M_COST, 1, 1, None).unwrap();
    PasswordHasher::with_params(max_concurrent, params).unwrap()
}

#[tokio::test]
async fn hash_then_verify_with_owasp_parameters() {
    let hasher = PasswordHasher::new(2).unwrap();
    let stored = hasher.hash(PASSWORD).await.unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    assert!(!stored.contains(PASSWORD));
    assert!(hasher.verify(PASSWORD, Some(&stored)).await.unwrap());
    assert!(
        !hasher
            .verify("correct horse battery!", Some(&stored))
            .await
            .unwrap()
    );
    assert!(
        hasher
            .inner
            .dummy
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
    );
}

#[tokio::test]
async fn salts_are_random() {
    let hasher = cheap(2);
    let a = hasher.hash(PASSWORD).await.unwrap();
    let b = hasher.hash(PASSWORD).await.unwrap();
    assert_ne!(a, b);
    assert!(hasher.verify(PASSWORD, Some(&a)).await.unwrap());
    assert!(hasher.verify(PASSWORD, Some(&b)).await.unwrap());
}

#[tokio::test]
async fn unknown_user_is_false_after_dummy_work() {
    let hasher = cheap(1);
    // Construction hashed the dummy; start counting after it.
    hasher.inner.peak.store(0, Ordering::SeqCst);
    assert!(!hasher.verify(PASSWORD, None).await.unwrap());
    // The dummy was verified against, through the same path.
    assert_eq!(hasher.inner.peak.load(Ordering::SeqCst), 1);
    // Even the dummy's own password (which nobody knows) would not log in.
    assert!(!hasher.verify("", None).await.unwrap());
}

#[tokio::test]
async fn corrupt_hash_is_an_error_not_a_match() {
    let hasher = cheap(1);
    for stored in [
        "",
        "plaintext",
        "$argon2id$v=19$m=8,t=1,p=1$bad",
        "$2b$12$abc",
    ] {
        assert_eq!(
            hasher.verify(PASSWORD, Some(stored)).await,
            Err(PasswordError::CorruptHash),
            "{stored}"
        );
    }
}

#[tokio::test]
async fn overlong_password_never_matches() {
    let hasher = cheap(1);
    let long = "a".repeat(MAX_PASSWORD_BYTES + 1);
    assert_eq!(hasher.hash(&long).await, Err(PasswordError::TooLong));
    let stored = hasher.hash(&long[..MAX_PASSWORD_BYTES]).await.unwrap();
    assert!(!hasher.verify(&long, Some(&stored)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn semaphore_bounds_concurrency() {
    for limit in [1, 2] {
        let hasher = cheap(limit);
        hasher.inner.peak.store(0, Ordering::SeqCst);
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let hasher = hasher.clone();
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        hasher.hash(PASSWORD).await.map(|_| ())
                    } else {
                        hasher.verify(PASSWORD, None).await.map(|_| ())
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let peak = hasher.inner.peak.load(Ordering::SeqCst);
        assert!(peak <= limit, "peak {peak} above limit {limit}");
        assert_eq!(hasher.in_flight(), 0);
        assert_eq!(hasher.available_permits(), limit);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_slot_makes_callers_wait() {
    let hasher = cheap(1);
    // Hold the only slot, as a running hash would.
    let held = hasher.permit().await.unwrap();
    assert_eq!(hasher.available_permits(), 0);
    let waiting = tokio::spawn({
        let hasher = hasher.clone();
        async move { hasher.hash(PASSWORD).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!waiting.is_finished());
    assert_eq!(hasher.in_flight(), 0);
    drop(held);
    assert!(waiting.await.unwrap().is_ok());
    assert_eq!(hasher.available_permits(), 1);
}

/// A flood of sign-ins queued for the hashing slots without end, each
/// waiting its turn (a real sign-in behind them for minutes): a caller
/// waits `SLOT_WAIT` at most, then is told the slots are busy.
#[tokio::test(start_paused = true)]
async fn a_caller_waits_for_a_slot_only_so_long() {
    let hasher = cheap(1);
    let held = hasher.permit().await.unwrap();
    let started = tokio::time::Instant::now();
    assert!(matches!(
        hasher.verify(PASSWORD, None).await,
        Err(PasswordError::Busy)
    ));
    assert_eq!(started.elapsed(), SLOT_WAIT);
    drop(held);
    assert!(hasher.verify(PASSWORD, None).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_caller_keeps_its_slot_until_the_work_ends() {
    let hasher = cheap(1);
    let call = tokio::spawn({
        let hasher = hasher.clone();
        async move { hasher.hash(PASSWORD).await }
    });
    // Wait until the hash holds the slot, then drop the caller.
    while hasher.available_permits() == 1 && !call.is_finished() {
        tokio::task::yield_now().await;
    }
    call.abort();
    // The next caller still gets a slot once the orphaned work ends.
    let stored = hasher.hash(PASSWORD).await.unwrap();
    assert!(hasher.verify(PASSWORD, Some(&stored)).await.unwrap());
    assert!(hasher.inner.peak.load(Ordering::SeqCst) <= 1);
}

#[test]
fn zero_concurrency_is_rejected() {
    assert_eq!(
        PasswordHasher::new(0).err(),
        Some(PasswordError::InvalidConcurrency)
    );
}

#[test]
fn policy() {
    assert_eq!(check_policy("short"), Err(PasswordError::TooShort));
    assert_eq!(check_policy("elevenchars"), Err(PasswordError::TooShort));
    assert_eq!(check_policy("twelve chars"), Ok(()));
    assert_eq!(check_policy(&"x".repeat(1024)), Ok(()));
    assert_eq!(check_policy(&"x".repeat(1025)), Err(PasswordError::TooLong));
    assert_eq!(check_policy(" \t\n            "), Err(PasswordError::Blank));
    // Bytes, not characters: four 3-byte characters are 12 bytes.
    assert_eq!(check_policy("€€€€"), Ok(()));
    assert!(PasswordError::TooShort.to_string().contains("12 bytes"));
    assert!(PasswordError::TooLong.to_string().contains("1024 bytes"));
}

#[test]
fn generated_passwords() {
    let a = generate_password().unwrap();
    let b = generate_password().unwrap();
    assert_ne!(a, b);
    for p in [&a, &b] {
        assert_eq!(p.chars().count(), GENERATED_PASSWORD_CHARS);
        assert!(p.bytes().all(|c| PASSWORD_ALPHABET.contains(&c)), "{p}");
        assert!(!p.contains(['0', 'O', '1', 'l', 'I']));
        assert_eq!(check_policy(p), Ok(()));
    }
}

#[tokio::test]
async fn debug_and_errors_never_show_the_password() {
    let hasher = cheap(1);
    let stored = hasher.hash(PASSWORD).await.unwrap();
    let debug = format!("{hasher:?}");
    assert!(!debug.contains(PASSWORD));
    assert!(!debug.contains(&stored));
    assert!(!debug.contains(&hasher.inner.dummy));
    let err = hasher.verify(PASSWORD, Some("garbage")).await.unwrap_err();
    assert!(!format!("{err:?} {err}").contains(PASSWORD));
    assert!(!format!("{err:?} {err}").contains("garbage"));
}
