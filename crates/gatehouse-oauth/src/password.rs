//! Passwords of human users: Argon2id hashes in PHC strings.
//!
//! Argon2id is memory-hard on purpose, so one login costs ~19 MiB and tens of
//! milliseconds of CPU. A semaphore bounds how many run at once, so a burst of
//! login attempts queues instead of exhausting memory or starving the async
//! runtime (the work itself runs on the blocking pool).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

/// Shortest accepted password, in bytes (UTF-8).
pub const MIN_PASSWORD_BYTES: usize = 12;
/// Longest accepted password, in bytes (UTF-8). Bounds the pre-hash work an
/// attacker can ask for and is far above any real passphrase.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Length of [`generate_password`] output, in characters.
pub const GENERATED_PASSWORD_CHARS: usize = 20;

/// OWASP Password Storage Cheat Sheet, Argon2id option 2.
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// No 0/O, 1/l/I: generated passwords are read off a terminal and retyped.
const PASSWORD_ALPHABET: &[u8] = b"23456789abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ";

/// Failures of password handling. Messages are fixed strings: they never
/// contain the password or the stored hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be at least 12 bytes long")]
    TooShort,
    #[error("the password must be at most 1024 bytes long")]
    TooLong,
    #[error("the password must not be only whitespace")]
    Blank,
    #[error("at least one concurrent password hashing slot is required")]
    InvalidConcurrency,
    /// The stored value is not an Argon2 PHC string we can verify against.
    #[error("the stored password hash is malformed")]
    CorruptHash,
    #[error("the system random number generator failed")]
    Random,
    #[error("password hashing failed")]
    Hash,
    #[error("the password hashing task failed")]
    Task,
    /// Every hashing slot stayed taken for [`SLOT_WAIT`]: nothing was
    /// checked (a flood of sign-ins must not queue without end).
    #[error("every password hashing slot is busy")]
    Busy,
}

/// How long a hash waits for a slot before it is given up.
pub const SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Hashes and verifies passwords with Argon2id, a bounded number at a time.
/// Cheap to clone: clones share the limit.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    argon2: Argon2<'static>,
    // Arc so that a permit can be moved into the blocking task: if the
    // request future is dropped mid-hash, the work goes on and must keep
    // its slot until it really ends.
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    /// Verified against when the user does not exist, so that an unknown
    /// username costs the same time as a wrong password.
    dummy: String,
    in_flight: AtomicUsize,
    #[cfg(test)]
    peak: AtomicUsize,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("max_concurrent", &self.inner.max_concurrent)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

fn default_params() -> Result<Params, PasswordError> {
    Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(|_| PasswordError::Hash)
}

fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>, PasswordError> {
    let mut bytes = Zeroizing::new([0u8; N]);
    getrandom::fill(bytes.as_mut()).map_err(|_| PasswordError::Random)?;
    Ok(bytes)
}

/// Decrements the in-flight count even if the hash panics.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Inner {
    fn enter(&self) -> InFlight<'_> {
        let _now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        #[cfg(test)]
        self.peak.fetch_max(_now, Ordering::SeqCst);
        InFlight(&self.in_flight)
    }

    fn hash(&self, password: &[u8]) -> Result<String, PasswordError> {
        let _guard = self.enter();
        let salt = random_bytes::<16>()?;
        self.argon2
            .hash_password_with_salt(password, salt.as_ref())
            .map(|hash| hash.to_string())
            .map_err(|_| PasswordError::Hash)
    }

    /// `Ok(false)` for a wrong password; the caller decides what an
    /// unknown user means.
    fn verify(&self, password: &[u8], stored: &str) -> Result<bool, PasswordError> {
        let _guard = self.enter();
        let parsed = PasswordHash::new(stored).map_err(|_| PasswordError::CorruptHash)?;
        match self.argon2.verify_password(password, &parsed) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
            Err(_) => Err(PasswordError::CorruptHash),
        }
    }

    fn verify_dummy(&self, password: &[u8]) {
        // The result is meaningless; only the time spent matters.
        let _ = self.verify(password, &self.dummy);
    }

    fn verify_stored(&self, password: &[u8], stored: Option<&str>) -> Result<bool, PasswordError> {
        if password.len() > MAX_PASSWORD_BYTES {
            // Cannot match anything `hash` accepted; still spend the time.
            self.verify_dummy(password.get(..MAX_PASSWORD_BYTES).unwrap_or(password));
            return Ok(false);
        }
        let Some(stored) = stored else {
            self.verify_dummy(password);
            return Ok(false);
        };
        match self.verify(password, stored) {
            Err(PasswordError::CorruptHash) => {
                // A hash that fails to parse returns at once: do the work a
                // real verification would have done before saying so.
                self.verify_dummy(password);
                Err(PasswordError::CorruptHash)
            }
            other => other,
        }
    }
}

impl PasswordHasher {
    /// Argon2id with the OWASP parameters (m = 19 MiB, t = 2, p = 1), at
    /// most `max_concurrent` hashes at once. Computes one hash to serve as
    /// the dummy, so this blocks for a few tens of milliseconds.
    pub fn new(max_concurrent: usize) -> Result<Self, PasswordError> {
        Self::with_params(max_concurrent, default_params()?)
    }

    fn with_params(max_concurrent: usize, params: Params) -> Result<Self, PasswordError> {
        if max_concurrent == 0 {
            return Err(PasswordError::InvalidConcurrency);
        }
        let mut inner = Inner {
            argon2: Argon2::new(Algorithm::Argon2id, argon2::Version::V0x13, params),
            permits: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            dummy: String::new(),
            in_flight: AtomicUsize::new(0),
            #[cfg(test)]
            peak: AtomicUsize::new(0),
        };
        let dummy_password = random_bytes::<32>()?;
        inner.dummy = inner.hash(dummy_password.as_ref())?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Hashes currently running on the blocking pool (not those queued for
    /// a slot). For metrics and tests.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    /// Slots free right now.
    pub fn available_permits(&self) -> usize {
        self.inner.permits.available_permits()
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, PasswordError> {
        let acquire = Arc::clone(&self.inner.permits).acquire_owned();
        match tokio::time::timeout(SLOT_WAIT, acquire).await {
            Ok(permit) => {
                // The semaphore is never closed; an error here would be a bug.
                permit.map_err(|_| PasswordError::Task)
            }
            Err(_) => Err(PasswordError::Busy),
        }
    }

    async fn run<T, F>(&self, password: &str, work: F) -> Result<T, PasswordError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &[u8]) -> Result<T, PasswordError> + Send + 'static,
    {
        let permit = self.permit().await?;
        let inner = Arc::clone(&self.inner);
        let password = Zeroizing::new(password.as_bytes().to_vec());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&inner, &password)
        })
        .await
        .map_err(|_| PasswordError::Task)?
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) with a fresh
    /// random salt. Enforces [`check_policy`].
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        check_policy(password)?;
        self.run(password, |inner, password| inner.hash(password))
            .await
    }

    /// Whether `password` matches `stored`. `None` (no such user) verifies
    /// against the dummy hash and answers `false`, taking as long as a real
    /// check so that usernames cannot be probed by timing. A stored value
    /// that is not a valid Argon2 PHC string is [`PasswordError::CorruptHash`],
    /// also after equal work.
    pub async fn verify(
        &self,
        password: &str,
        stored: Option<&str>,
    ) -> Result<bool, PasswordError> {
        let stored = stored.map(str::to_owned);
        self.run(password, move |inner, password| {
            inner.verify_stored(password, stored.as_deref())
        })
        .await
    }
}

/// The password rules: 12 to 1024 bytes, not only whitespace. Length is in
/// bytes because that is what the hash consumes; non-ASCII characters count
/// for more than one.
pub fn check_policy(password: &str) -> Result<(), PasswordError> {
    if password.len() < MIN_PASSWORD_BYTES {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    if password.chars().all(char::is_whitespace) {
        return Err(PasswordError::Blank);
    }
    Ok(())
}

/// A random password of [`GENERATED_PASSWORD_CHARS`] characters from an
/// alphabet without look-alikes (about 116 bits), for `gatehouse users add`
/// when the operator gives none.
pub fn generate_password() -> Result<String, PasswordError> {
    let len = PASSWORD_ALPHABET.len();
    // Rejection sampling: bytes at or above the largest multiple of the
    // alphabet size would make the first symbols more likely.
    let limit = 256 - 256 % len;
    let mut out = String::with_capacity(GENERATED_PASSWORD_CHARS);
    while out.len() < GENERATED_PASSWORD_CHARS {
        let bytes = random_bytes::<32>()?;
        for &b in bytes.iter() {
            if usize::from(b) < limit && out.len() < GENERATED_PASSWORD_CHARS {
                out.push(char::from(PASSWORD_ALPHABET[usize::from(b) % len]));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "password_tests.rs"]
mod tests;
