/// Failures of key handling. Messages are fixed strings: they never contain
/// key material, ciphertext or the input that was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key has the wrong length")]
    InvalidLength,
    #[error("the key is not valid hex")]
    InvalidHex,
    #[error("the system random number generator failed")]
    Random,
    #[error("encryption failed")]
    Seal,
    /// Wrong key, wrong associated data, tampering or truncation: on purpose
    /// indistinguishable.
    #[error("decryption failed")]
    Open,
    #[error("the private key is not a valid P-256 PKCS#8 key")]
    InvalidPrivateKey,
    #[error("key generation failed")]
    Generate,
    #[error("signing failed")]
    Sign,
}
