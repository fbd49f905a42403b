//! Webhook signature verification: Standard Webhooks v1 (HMAC-SHA256), as Svix sends it for
//! Clerk and others.
//!
//! ```
//! use pg_tenancy::webhook::{Verifier, WebhookHeaders};
//!
//! let verifier = Verifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let body = br#"{"test": 2432232314}"#;
//! let signature = verifier.sign("msg_1", 1614265330, body);
//! let headers = WebhookHeaders::from_fn(|name| match name {
//!     "svix-id" => Some("msg_1"),
//!     "svix-timestamp" => Some("1614265330"),
//!     "svix-signature" => Some(signature.as_str()),
//!     _ => None,
//! });
//! let verified = verifier.verify_at(&headers, body, 1614265330)?;
//! assert_eq!(verified.id, "msg_1");
//! # Ok::<(), pg_tenancy::webhook::WebhookError>(())
//! ```
//!
//! Verify the raw body bytes as received (never re-serialised JSON), and cap the body size in
//! your HTTP layer (Svix documents payloads up to about 350 kB; 1 MiB is a sensible cap).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::ErrorKind;

type HmacSha256 = Hmac<Sha256>;

/// Default tolerance between the signature's timestamp and the clock, both ways: 300 s.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

const SECRET_PREFIX: &str = "whsec_";
const SIGNATURE_VERSION: &str = "v1";

/// Which webhook header was missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Header {
    /// `svix-id` / `webhook-id`.
    Id,
    /// `svix-timestamp` / `webhook-timestamp`.
    Timestamp,
    /// `svix-signature` / `webhook-signature`.
    Signature,
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Header::Id => "id",
            Header::Timestamp => "timestamp",
            Header::Signature => "signature",
        })
    }
}

/// Why a webhook was not accepted, or a verifier could not be built.
///
/// [`WebhookError::kind`] tells them apart: a delivery that fails verification is the
/// sender's problem ([`ErrorKind::BadRequest`], 400); an empty or invalid secret is the
/// operator's ([`ErrorKind::Internal`], 500).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A required header is absent (neither the `svix-` nor the `webhook-` name).
    #[error("missing webhook {0} header")]
    MissingHeader(Header),
    /// The timestamp header is not a plain decimal integer of seconds.
    #[error("invalid webhook timestamp")]
    InvalidTimestamp,
    /// The timestamp is older than the tolerance.
    #[error("webhook timestamp too old")]
    TimestampTooOld,
    /// The timestamp is further in the future than the tolerance.
    #[error("webhook timestamp too new")]
    TimestampTooNew,
    /// No `v1` signature matches any configured secret.
    #[error("no matching webhook signature")]
    NoMatchingSignature,
    /// The secret is empty (`""` or `"whsec_"`), or no secret was given.
    #[error("empty webhook secret")]
    EmptySecret,
    /// The secret is not valid base64.
    #[error("invalid webhook secret")]
    InvalidSecret,
}

impl WebhookError {
    /// What the error means: [`ErrorKind::Internal`] for a configuration mistake
    /// ([`WebhookError::EmptySecret`], [`WebhookError::InvalidSecret`]), else
    /// [`ErrorKind::BadRequest`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            WebhookError::EmptySecret | WebhookError::InvalidSecret => ErrorKind::Internal,
            WebhookError::MissingHeader(_)
            | WebhookError::InvalidTimestamp
            | WebhookError::TimestampTooOld
            | WebhookError::TimestampTooNew
            | WebhookError::NoMatchingSignature => ErrorKind::BadRequest,
        }
    }
}

/// A signing secret. `Debug` is redacted and there is no `Display`.
#[derive(Clone)]
pub struct Secret {
    /// HMAC state already keyed: each verification clones it instead of re-deriving the pads.
    keyed: HmacSha256,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// Parses `whsec_<base64>` or bare base64 (standard alphabet, padded).
    ///
    /// # Errors
    /// [`WebhookError::EmptySecret`] for an empty secret, [`WebhookError::InvalidSecret`] for
    /// one that is not base64.
    pub fn new(secret: &str) -> Result<Self, WebhookError> {
        let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
        if encoded.is_empty() {
            return Err(WebhookError::EmptySecret);
        }
        let key = BASE64
            .decode(encoded)
            .map_err(|_| WebhookError::InvalidSecret)?;
        Self::from_bytes(&key)
    }

    /// Uses raw key bytes.
    ///
    /// # Errors
    /// [`WebhookError::EmptySecret`] for an empty key.
    pub fn from_bytes(key: &[u8]) -> Result<Self, WebhookError> {
        if key.is_empty() {
            return Err(WebhookError::EmptySecret);
        }
        let keyed = HmacSha256::new_from_slice(key).map_err(|_| WebhookError::InvalidSecret)?;
        Ok(Secret { keyed })
    }

    fn tag(&self, id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// The `svix-signature` value (`v1,<base64>`) for a message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.tag(id, &timestamp.to_string(), body);
        format!("{SIGNATURE_VERSION},{}", BASE64.encode(tag))
    }
}

/// The three webhook headers, borrowed from whatever HTTP types you use.
///
/// Build it with [`WebhookHeaders::from_fn`] (a lookup by lower-case name: axum, actix-web,
/// hyper, tests), [`WebhookHeaders::from_pairs`], or with the `http` feature
/// `WebhookHeaders::from_header_map`. The `svix-` names win over the `webhook-` names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookHeaders<'a> {
    /// `svix-id` / `webhook-id`.
    pub id: Option<&'a str>,
    /// `svix-timestamp` / `webhook-timestamp`.
    pub timestamp: Option<&'a str>,
    /// `svix-signature` / `webhook-signature`.
    pub signature: Option<&'a str>,
}

impl<'a> WebhookHeaders<'a> {
    /// Looks each header up by its lower-case names through `get` (HTTP header maps are
    /// case-insensitive, so a lower-case lookup finds any spelling).
    pub fn from_fn(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        let pick = |svix: &str, plain: &str| get(svix).or_else(|| get(plain));
        WebhookHeaders {
            id: pick("svix-id", "webhook-id"),
            timestamp: pick("svix-timestamp", "webhook-timestamp"),
            signature: pick("svix-signature", "webhook-signature"),
        }
    }

    /// Finds the headers in `(name, value)` pairs, comparing names case-insensitively.
    pub fn from_pairs<I>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
        Self::from_fn(|name| {
            pairs
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        })
    }

    /// Reads the headers from an `http::HeaderMap` (feature `http`). Values that are not
    /// visible ASCII count as missing.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn from_header_map(map: &'a http::HeaderMap) -> Self {
        Self::from_fn(|name| map.get(name).and_then(|v| v.to_str().ok()))
    }
}

/// A verified message's id and timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified<'a> {
    /// The message id (`svix-id`): stable across retries, the idempotency key.
    pub id: &'a str,
    /// The signature's timestamp, unix seconds.
    pub timestamp: i64,
}

/// Verifies webhook signatures against one or more secrets (several during rotation).
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<Secret>,
    tolerance: u64,
}

impl Verifier {
    /// A verifier for one secret, with the default tolerance of 300 s.
    ///
    /// # Errors
    /// As [`Secret::new`].
    pub fn new(secret: &str) -> Result<Self, WebhookError> {
        Self::with_secrets([secret])
    }

    /// A verifier that accepts a signature by any of `secrets` (rotation). An empty list is
    /// [`WebhookError::EmptySecret`].
    ///
    /// # Errors
    /// As [`Secret::new`] for each secret; [`WebhookError::EmptySecret`] for an empty list.
    pub fn with_secrets<I, S>(secrets: I) -> Result<Self, WebhookError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let secrets = secrets
            .into_iter()
            .map(|s| Secret::new(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_secrets(secrets)
    }

    /// A verifier for secrets already parsed, or made from raw key bytes with
    /// [`Secret::from_bytes`] (a key kept in a vault rather than as `whsec_` text). An empty
    /// list is [`WebhookError::EmptySecret`].
    ///
    /// # Errors
    /// [`WebhookError::EmptySecret`] for an empty list.
    pub fn from_secrets<I>(secrets: I) -> Result<Self, WebhookError>
    where
        I: IntoIterator<Item = Secret>,
    {
        let secrets: Vec<Secret> = secrets.into_iter().collect();
        if secrets.is_empty() {
            return Err(WebhookError::EmptySecret);
        }
        Ok(Verifier {
            secrets,
            tolerance: DEFAULT_TOLERANCE_SECS,
        })
    }

    /// Sets the tolerance, in seconds, both ways (inclusive). Default:
    /// [`DEFAULT_TOLERANCE_SECS`].
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_tolerance_secs(mut self, seconds: u64) -> Self {
        self.tolerance = seconds;
        self
    }

    /// Verifies against the system clock.
    ///
    /// # Errors
    /// As [`Verifier::verify_at`].
    pub fn verify<'h>(
        &self,
        headers: &WebhookHeaders<'h>,
        body: &[u8],
    ) -> Result<Verified<'h>, WebhookError> {
        self.verify_at(headers, body, crate::util::unix_now())
    }

    /// Verifies against `now` (unix seconds): deterministic tests, or your own clock.
    ///
    /// # Errors
    /// [`WebhookError::MissingHeader`], [`WebhookError::InvalidTimestamp`],
    /// [`WebhookError::TimestampTooOld`] / [`WebhookError::TimestampTooNew`] outside the
    /// tolerance, [`WebhookError::NoMatchingSignature`].
    pub fn verify_at<'h>(
        &self,
        headers: &WebhookHeaders<'h>,
        body: &[u8],
        now: i64,
    ) -> Result<Verified<'h>, WebhookError> {
        let (id, ts_text, signature) = required(headers)?;
        let timestamp = parse_timestamp(ts_text)?;
        let tolerance = i128::from(self.tolerance);
        let age = i128::from(now) - i128::from(timestamp);
        if age > tolerance {
            return Err(WebhookError::TimestampTooOld);
        }
        if -age > tolerance {
            return Err(WebhookError::TimestampTooNew);
        }
        self.check_signature(id, ts_text, signature, body)?;
        Ok(Verified { id, timestamp })
    }

    /// Verifies the signature only, accepting any well-formed timestamp. For replaying stored
    /// messages; a live endpoint should use [`Verifier::verify`].
    ///
    /// # Errors
    /// As [`Verifier::verify_at`], but never for the timestamp's age.
    pub fn verify_ignoring_timestamp<'h>(
        &self,
        headers: &WebhookHeaders<'h>,
        body: &[u8],
    ) -> Result<Verified<'h>, WebhookError> {
        let (id, ts_text, signature) = required(headers)?;
        let timestamp = parse_timestamp(ts_text)?;
        self.check_signature(id, ts_text, signature, body)?;
        Ok(Verified { id, timestamp })
    }

    /// Signs with the first secret: the `svix-signature` value (`v1,<base64>`).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        self.secrets[0].sign(id, timestamp, body)
    }

    fn check_signature(
        &self,
        id: &str,
        timestamp: &str,
        header: &str,
        body: &[u8],
    ) -> Result<(), WebhookError> {
        // Expected tags, one per secret, computed on the first well-formed `v1` entry.
        let mut expected: Vec<[u8; 32]> = Vec::new();
        for entry in header.split_ascii_whitespace() {
            // Entries of other versions (`v1a` is ed25519) or without a comma are skipped.
            let Some((version, sig)) = entry.split_once(',') else {
                continue;
            };
            if version != SIGNATURE_VERSION || sig.len() != 44 {
                continue;
            }
            let mut candidate = [0u8; 33];
            if BASE64.decode_slice(sig, &mut candidate) != Ok(32) {
                continue;
            }
            if expected.is_empty() {
                expected = self
                    .secrets
                    .iter()
                    .map(|s| s.tag(id, timestamp, body))
                    .collect();
            }
            // Constant-time per comparison; stopping at a match reveals only the result.
            if expected
                .iter()
                .any(|tag| bool::from(tag.ct_eq(&candidate[..32])))
            {
                return Ok(());
            }
        }
        Err(WebhookError::NoMatchingSignature)
    }
}

fn required<'h>(h: &WebhookHeaders<'h>) -> Result<(&'h str, &'h str, &'h str), WebhookError> {
    let id = h.id.ok_or(WebhookError::MissingHeader(Header::Id))?;
    let ts = h
        .timestamp
        .ok_or(WebhookError::MissingHeader(Header::Timestamp))?;
    let sig = h
        .signature
        .ok_or(WebhookError::MissingHeader(Header::Signature))?;
    Ok((id, ts, sig))
}

/// Strict: ASCII digits only (no sign, point, exponent or space), fitting an `i64`.
fn parse_timestamp(text: &str) -> Result<i64, WebhookError> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WebhookError::InvalidTimestamp);
    }
    text.parse().map_err(|_| WebhookError::InvalidTimestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_parsed_strictly() {
        for bad in [
            "",
            "abc",
            "1614265330.0",
            "-5",
            "+5",
            " 5",
            "5 ",
            "1e9",
            "99999999999999999999",
        ] {
            assert_eq!(
                parse_timestamp(bad),
                Err(WebhookError::InvalidTimestamp),
                "{bad:?}"
            );
        }
        assert_eq!(parse_timestamp("1614265330"), Ok(1614265330));
    }

    #[test]
    fn secrets_debug_is_redacted() {
        let s = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let v = Verifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert!(!format!("{v:?}").contains("MfKQ"));
    }

    #[test]
    fn tolerance_is_inclusive_both_ways() {
        let v = Verifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = v.sign("m", 1000, b"x");
        let h = WebhookHeaders {
            id: Some("m"),
            timestamp: Some("1000"),
            signature: Some(&sig),
        };
        assert!(v.verify_at(&h, b"x", 1300).is_ok());
        assert!(v.verify_at(&h, b"x", 700).is_ok());
        assert_eq!(
            v.verify_at(&h, b"x", 1301),
            Err(WebhookError::TimestampTooOld)
        );
        assert_eq!(
            v.verify_at(&h, b"x", 699),
            Err(WebhookError::TimestampTooNew)
        );
        let strict = v.clone().with_tolerance_secs(0);
        assert!(strict.verify_at(&h, b"x", 1000).is_ok());
        assert_eq!(
            strict.verify_at(&h, b"x", 1001),
            Err(WebhookError::TimestampTooOld)
        );
        assert!(v.verify_ignoring_timestamp(&h, b"x").is_ok());
        assert_eq!(
            v.verify_at(&h, b"y", 1000),
            Err(WebhookError::NoMatchingSignature)
        );
    }
}
