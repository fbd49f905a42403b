//! Hardened mode: the context a unit runs with is signed by the application and sealed by the
//! database, so SQL injected into a unit cannot switch it (see `docs/security.md`).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

/// The key the application signs unit contexts with in hardened mode. The database holds the
/// same key where the roles that serve requests cannot read it (installed by the owner with
/// `SELECT tenancy_enable_hardened_mode('\x…')`).
///
/// A secret: `Debug` is redacted and there is no `Display`.
#[derive(Clone)]
pub struct ContextKey {
    bytes: Vec<u8>,
}

impl fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContextKey(<redacted>)")
    }
}

impl ContextKey {
    /// Shortest accepted key, in bytes.
    pub const MIN_LEN: usize = 32;

    /// Wraps key bytes (at least [`ContextKey::MIN_LEN`]).
    ///
    /// # Errors
    /// [`Error::InvalidContextKey`] for a shorter key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < Self::MIN_LEN {
            return Err(Error::InvalidContextKey);
        }
        Ok(ContextKey {
            bytes: bytes.to_vec(),
        })
    }

    /// A new random 32-byte key (from the operating system's generator).
    pub fn generate() -> Self {
        let mut bytes = Vec::with_capacity(32);
        bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        ContextKey { bytes }
    }

    /// The SQL the database owner runs once to enable hardened mode with this key:
    /// `SELECT tenancy_enable_hardened_mode('\x…')`. It contains the key: keep it out of logs.
    pub fn enable_sql(&self) -> String {
        format!(
            "SELECT tenancy_enable_hardened_mode('\\x{}'::bytea)",
            hex(&self.bytes)
        )
    }

    pub(crate) fn sign(&self, message: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.bytes).expect("HMAC takes any key");
        mac.update(message.as_bytes());
        hex(&mac.finalize().into_bytes())
    }
}

/// What a hardened pool adds to each unit's entry.
#[derive(Debug, Clone)]
pub(crate) struct Signer {
    pub(crate) key: ContextKey,
    pub(crate) ttl: Duration,
}

impl Signer {
    /// Unix seconds at which a context signed now expires.
    pub(crate) fn expiry(&self) -> u64 {
        (SystemTime::now() + self.ttl)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_in_hex_and_keys_are_secret() {
        // HMAC-SHA256(key = 32 x 0x0b, "Hi There"), computed independently with Python's
        // `hmac` module.
        let key = ContextKey::from_bytes(&[0x0b; 32]).unwrap();
        assert_eq!(
            key.sign("Hi There"),
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
        assert!(matches!(
            ContextKey::from_bytes(&[1; 31]),
            Err(Error::InvalidContextKey)
        ));
        assert_eq!(format!("{key:?}"), "ContextKey(<redacted>)");
        assert_eq!(ContextKey::generate().bytes.len(), 32);
        assert_ne!(ContextKey::generate().bytes, ContextKey::generate().bytes);
        assert!(key.enable_sql().contains(&"0b".repeat(32)));
    }
}
