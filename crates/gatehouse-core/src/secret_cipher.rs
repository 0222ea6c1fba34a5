//! How tenant secrets are kept at rest: sealed with the master key, bound to
//! their tenant and name, so a database dump holds no usable secret and a
//! sealed value moved to another tenant or name does not open.
//!
//! The trait lives here, without cryptography, so the store, the tools and
//! the gateway can share it; the binary supplies the implementation (the
//! authorization server's master key).

/// Stored values start with this; anything else is a value stored before
/// secrets were sealed, and is returned as it is.
pub const SEALED_PREFIX: &str = "sealed:v1:";

pub trait SecretCipher: Send + Sync {
    /// The value to store for `value`.
    fn seal(&self, tenant: &str, name: &str, value: &str) -> Result<String, String>;
    /// The value a stored text holds. A sealed text that does not open
    /// (another key, another tenant or name, altered) is an error.
    fn open(&self, tenant: &str, name: &str, stored: &str) -> Result<String, String>;
}

/// What a sealed secret is bound to (authenticated, not encrypted).
pub fn secret_binding(tenant: &str, name: &str) -> Vec<u8> {
    format!("gatehouse-tenant-secret\0{tenant}\0{name}").into_bytes()
}
