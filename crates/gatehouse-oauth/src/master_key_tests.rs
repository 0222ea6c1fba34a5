use super::*;

const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const AAD: &[u8] = b"kid-1";

fn key() -> MasterKey {
    MasterKey::from_hex(HEX).unwrap()
}

#[test]
fn seal_open_round_trip() {
    let k = key();
    for plaintext in [&b""[..], b"x", b"a PKCS#8 document", &[0u8; 4096][..]] {
        let sealed = k.seal(plaintext, AAD).unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + plaintext.len() + TAG_LEN);
        assert_eq!(k.open(&sealed, AAD).unwrap(), plaintext);
    }
}

#[test]
fn ciphertext_does_not_contain_the_plaintext_and_nonces_differ() {
    let k = key();
    let plaintext = b"super secret private key bytes!!";
    let a = k.seal(plaintext, AAD).unwrap();
    let b = k.seal(plaintext, AAD).unwrap();
    assert_ne!(a, b);
    assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
    assert!(!a.windows(plaintext.len()).any(|w| w == plaintext));
}

#[test]
fn open_fails_with_the_wrong_key() {
    let sealed = key().seal(b"secret", AAD).unwrap();
    let other = MasterKey::generate().unwrap();
    assert_eq!(other.open(&sealed, AAD), Err(KeyError::Open));
}

#[test]
fn open_fails_with_the_wrong_aad() {
    let k = key();
    let sealed = k.seal(b"secret", AAD).unwrap();
    for aad in [&b"kid-2"[..], b"", b"kid-1 ", b"KID-1"] {
        assert_eq!(k.open(&sealed, aad), Err(KeyError::Open));
    }
    let unbound = k.seal(b"secret", b"").unwrap();
    assert_eq!(k.open(&unbound, AAD), Err(KeyError::Open));
}

#[test]
fn open_fails_on_any_flipped_bit() {
    let k = key();
    let sealed = k.seal(b"secret", AAD).unwrap();
    for i in 0..sealed.len() {
        for bit in [0x01u8, 0x80] {
            let mut tampered = sealed.clone();
            tampered[i] ^= bit;
            assert_eq!(k.open(&tampered, AAD), Err(KeyError::Open), "byte {i}");
        }
    }
}

#[test]
fn open_fails_on_truncated_or_extended_input() {
    let k = key();
    let sealed = k.seal(b"secret", AAD).unwrap();
    for len in 0..sealed.len() {
        assert_eq!(
            k.open(&sealed[..len], AAD),
            Err(KeyError::Open),
            "len {len}"
        );
    }
    let mut extended = sealed.clone();
    extended.push(0);
    assert_eq!(k.open(&extended, AAD), Err(KeyError::Open));
    // Dropping bytes from the front (nonce) fails too.
    assert_eq!(k.open(&sealed[1..], AAD), Err(KeyError::Open));
}

#[test]
fn from_bytes_requires_exactly_32_bytes() {
    assert!(MasterKey::from_bytes(&[7u8; 32]).is_ok());
    for len in [0, 16, 31, 33, 64] {
        assert_eq!(
            MasterKey::from_bytes(&vec![7u8; len]).err(),
            Some(KeyError::InvalidLength),
            "{len}"
        );
    }
}

#[test]
fn from_hex_parses_trims_and_validates() {
    let k = key();
    assert_eq!(k.to_hex(), HEX);
    let padded = format!("  {}\n", HEX.to_uppercase());
    assert_eq!(MasterKey::from_hex(&padded).unwrap().to_hex(), HEX);
    // Same key from bytes and hex.
    let bytes: Vec<u8> = (0u8..32).collect();
    let sealed = MasterKey::from_bytes(&bytes)
        .unwrap()
        .seal(b"x", AAD)
        .unwrap();
    assert_eq!(k.open(&sealed, AAD).unwrap(), b"x");

    assert_eq!(
        MasterKey::from_hex(&HEX[..62]).err(),
        Some(KeyError::InvalidLength)
    );
    assert_eq!(
        MasterKey::from_hex(&format!("{HEX}00")).err(),
        Some(KeyError::InvalidLength)
    );
    assert_eq!(MasterKey::from_hex("").err(), Some(KeyError::InvalidLength));
    let not_hex = format!("zz{}", &HEX[2..]);
    assert_eq!(
        MasterKey::from_hex(&not_hex).err(),
        Some(KeyError::InvalidHex)
    );
    let inner_space = format!("{} {}", &HEX[..31], &HEX[32..]);
    assert!(MasterKey::from_hex(&inner_space).is_err());
    // Multi-byte characters with a matching byte length are not hex either.
    let unicode = format!("é{}", &HEX[2..]);
    assert_eq!(unicode.len(), 64);
    assert_eq!(
        MasterKey::from_hex(&unicode).err(),
        Some(KeyError::InvalidHex)
    );
}

#[test]
fn generate_gives_distinct_usable_keys() {
    let a = MasterKey::generate().unwrap();
    let b = MasterKey::generate().unwrap();
    assert_ne!(a.to_hex(), b.to_hex());
    assert_eq!(a.to_hex().len(), 64);
    let restored = MasterKey::from_hex(&a.to_hex()).unwrap();
    let sealed = a.seal(b"payload", AAD).unwrap();
    assert_eq!(restored.open(&sealed, AAD).unwrap(), b"payload");
}

#[test]
fn debug_and_errors_reveal_nothing() {
    let k = key();
    let shown = format!("{k:?}");
    assert_eq!(shown, "MasterKey(<redacted>)");
    assert!(!shown.contains("0001"));
    let not_hex = format!("{}zz", &HEX[..62]);
    let err = MasterKey::from_hex(&not_hex).err().unwrap();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(&HEX[..20]), "{shown}");
    assert!(!shown.contains("zz"), "{shown}");
}
