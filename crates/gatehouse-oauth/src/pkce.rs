//! PKCE (RFC 7636), `S256` only, as OAuth 2.1 and attack case A3 require.
//! Whether a challenge was sent at all (the A4 downgrade) is the caller's
//! decision: it must refuse a `code_verifier` for a code issued without one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// BASE64URL-NOPAD of a 32-byte SHA-256 digest.
pub const CHALLENGE_LEN: usize = 43;
pub const MIN_VERIFIER_LEN: usize = 43;
pub const MAX_VERIFIER_LEN: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    /// RFC 7636 §4.3 defaults a missing method to `plain`, so absence is a
    /// downgrade, not a shorthand for `S256`.
    #[error("code_challenge_method is required and must be S256")]
    MethodMissing,
    #[error("code_challenge_method must be S256")]
    MethodNotSupported,
    #[error("code_challenge must be 43 base64url characters")]
    MalformedChallenge,
    #[error("code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~]")]
    MalformedVerifier,
    #[error("code_verifier does not match the code_challenge")]
    Mismatch,
}

/// Checks the `code_challenge_method` and `code_challenge` of an
/// authorization request.
pub fn validate_challenge(method: Option<&str>, challenge: &str) -> Result<(), PkceError> {
    match method {
        None => return Err(PkceError::MethodMissing),
        // Exact: `s256` is not the registered method name.
        Some("S256") => {}
        Some(_) => return Err(PkceError::MethodNotSupported),
    }
    let well_formed = challenge.len() == CHALLENGE_LEN
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if well_formed {
        Ok(())
    } else {
        Err(PkceError::MalformedChallenge)
    }
}

/// The S256 challenge of a verifier (RFC 7636 §4.2).
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Checks a token request's `code_verifier` against the stored challenge.
pub fn verify(verifier: &str, challenge: &str) -> Result<(), PkceError> {
    let well_formed = (MIN_VERIFIER_LEN..=MAX_VERIFIER_LEN).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return Err(PkceError::MalformedVerifier);
    }
    let computed = s256_challenge(verifier);
    // The challenge is not secret, but a timing oracle on the comparison
    // would let an attacker holding a stolen code search for a verifier
    // prefix by prefix; constant time costs nothing here.
    if bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
        Ok(())
    } else {
        Err(PkceError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 Appendix B.
    const RFC_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const RFC_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc_7636_appendix_b_vector() {
        assert_eq!(validate_challenge(Some("S256"), RFC_CHALLENGE), Ok(()));
        assert_eq!(verify(RFC_VERIFIER, RFC_CHALLENGE), Ok(()));
    }

    #[test]
    fn only_s256_is_accepted() {
        assert_eq!(
            validate_challenge(None, RFC_CHALLENGE),
            Err(PkceError::MethodMissing)
        );
        for method in ["plain", "s256", "S256 ", "", "S512"] {
            assert_eq!(
                validate_challenge(Some(method), RFC_CHALLENGE),
                Err(PkceError::MethodNotSupported),
                "{method:?}"
            );
        }
    }

    #[test]
    fn malformed_challenges() {
        let cases = [
            String::new(),
            RFC_CHALLENGE[..42].to_string(),
            format!("{RFC_CHALLENGE}A"),
            format!("{RFC_CHALLENGE}="),
            format!("{}+", &RFC_CHALLENGE[..42]),
            format!("{}/", &RFC_CHALLENGE[..42]),
            format!("{}=", &RFC_CHALLENGE[..42]),
            format!("{}é", &RFC_CHALLENGE[..41]),
            // A `plain` challenge is a verifier, usually longer.
            RFC_VERIFIER.repeat(2),
        ];
        for challenge in &cases {
            assert_eq!(
                validate_challenge(Some("S256"), challenge),
                Err(PkceError::MalformedChallenge),
                "{challenge:?}"
            );
        }
    }

    #[test]
    fn verifier_length_bounds() {
        let challenge_of = |v: &str| URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()));
        for (len, ok) in [(42, false), (43, true), (128, true), (129, false)] {
            let verifier = "a".repeat(len);
            let want = if ok {
                Ok(())
            } else {
                Err(PkceError::MalformedVerifier)
            };
            assert_eq!(verify(&verifier, &challenge_of(&verifier)), want, "{len}");
        }
    }

    #[test]
    fn verifier_charset() {
        let good = "AZaz09-._~".repeat(5);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(good.as_bytes()));
        assert_eq!(verify(&good, &challenge), Ok(()));
        for bad in ['+', '/', '=', ' ', '%', '\n', 'é'] {
            let verifier = format!("{}{bad}", &RFC_VERIFIER[..42]);
            let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            assert_eq!(
                verify(&verifier, &challenge),
                Err(PkceError::MalformedVerifier),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn wrong_verifier_or_plain_style_use_is_refused() {
        let other = "b".repeat(43);
        assert_eq!(verify(&other, RFC_CHALLENGE), Err(PkceError::Mismatch));
        // `plain`: the verifier itself presented as the challenge.
        assert_eq!(verify(RFC_VERIFIER, RFC_VERIFIER), Err(PkceError::Mismatch));
        assert_eq!(verify(RFC_VERIFIER, ""), Err(PkceError::Mismatch));
        assert_eq!(
            verify(RFC_VERIFIER, &RFC_CHALLENGE.to_lowercase()),
            Err(PkceError::Mismatch)
        );
    }
}
