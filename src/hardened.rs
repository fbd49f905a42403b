//! Hardened mode: the context a unit runs with is signed by the application and sealed by the
//! database, so SQL injected into a unit cannot switch it (see `docs/security.md`).

use std::fmt;
use std::time::Duration;

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
    /// How long a signed context lives (`TenantPool::with_context_ttl`; 60 s by default).
    pub(crate) ttl: Duration,
    /// The database's clock minus the application's, in seconds, measured when the pool
    /// starts: expiries are written in the database's clock, which checks them, so a skewed
    /// application clock neither fails every unit nor stretches a context's life.
    pub(crate) clock_offset: i64,
    /// Tests only: seconds added to the application's clock, to simulate a skewed one.
    pub(crate) simulated_skew: i64,
}

impl Signer {
    /// The context lifetime when the application sets none.
    pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(60);

    /// The application's clock, in unix seconds (skewed in tests that say so).
    pub(crate) fn app_now(&self) -> i64 {
        crate::util::unix_now() + self.simulated_skew
    }

    /// Unix seconds, in the database's clock, at which a context signed now expires.
    pub(crate) fn expiry(&self) -> i64 {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        self.app_now()
            .saturating_add(self.clock_offset)
            .saturating_add(ttl)
    }
}

/// The message a signature covers: each field as `<bytes>:<text>`, joined with `|`, so that no
/// field's text can stand for another's boundary (`tenancy_signed_field` in the database).
pub(crate) fn encode(fields: &[&str]) -> String {
    let mut out = String::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        out.push_str(&field.len().to_string());
        out.push(':');
        out.push_str(field);
    }
    out
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

    #[test]
    fn encoded_fields_cannot_stand_for_each_other() {
        assert_eq!(encode(&["enter", "member", ""]), "5:enter|6:member|0:");
        // The ambiguity `concat_ws('|', ...)` had: a field holding the separator.
        assert_ne!(
            encode(&["member", "member|true", ""]),
            encode(&["member", "member", "true"])
        );
        // Bytes, as PostgreSQL's octet_length counts them.
        assert_eq!(encode(&["é"]), "2:é");
    }

    #[test]
    fn expiries_are_written_in_the_databases_clock() {
        let signer = |offset, skew| Signer {
            key: ContextKey::generate(),
            ttl: Duration::from_secs(60),
            clock_offset: offset,
            simulated_skew: skew,
        };
        let now = crate::util::unix_now();
        // An application clock 300 s behind, measured: the expiry is now + 60 in the
        // database's clock.
        let measured = signer(300, -300).expiry();
        assert!(
            (now + 60..=now + 61).contains(&measured),
            "{measured} vs {now}"
        );
        // The same clock unmeasured: already expired for the database.
        assert!(signer(0, -300).expiry() < now);
    }
}
