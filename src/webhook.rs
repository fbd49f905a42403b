//! Webhook signature verification: Standard Webhooks `v1` (HMAC-SHA256), as Svix sends it for
//! Clerk and others, and `v1a` (Ed25519 public keys).
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
//! A sender that signs asymmetrically gives you a public key, `whpk_<base64>`, instead of a
//! secret: the verifier then checks `v1a,<base64>` Ed25519 signatures over the same
//! `{id}.{timestamp}.{body}` content, with the same timestamp tolerance. A header may carry
//! `v1` and `v1a` signatures side by side; any one valid signature by a configured secret or key
//! passes, and entries of other versions are ignored.
//!
//! ```
//! use pg_tenancy::webhook::{Verifier, WebhookHeaders};
//!
//! // Only the sender holds the private key: a leaked public key cannot forge a delivery.
//! let verifier = Verifier::with_public_key("whpk_zDXBnckmrMPGrtM1gOzA8fjksHyP+SPqlDrf4L5YHMU=")?;
//! // During a move from a secret to a key pair, both at once (chosen by their prefixes):
//! let both = Verifier::with_keys([
//!     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
//!     "whpk_zDXBnckmrMPGrtM1gOzA8fjksHyP+SPqlDrf4L5YHMU=",
//! ])?;
//! let headers = WebhookHeaders::from_pairs([
//!     ("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
//!     ("webhook-timestamp", "1716883200"),
//!     ("webhook-signature", "v1a,O5kMXBAz1v1YpDAe8Qsb9n6RA5ex4oCCMx8ymox57WiR7j5bCry1nhjQ89uW8bLH0MxHLeEJyjOAHASt2FRXAA=="),
//! ]);
//! let body = br#"{"type":"organization.created","data":{"id":"org_2g7np7Hrk0SN6kj5EDMLDaKNL0S"}}"#;
//! assert!(verifier.verify_at(&headers, body, 1716883200).is_ok());
//! assert!(both.verify_at(&headers, body, 1716883200).is_ok());
//! # Ok::<(), pg_tenancy::webhook::WebhookError>(())
//! ```
//!
//! Verify the raw body bytes as received (never re-serialised JSON), and cap the body size in
//! your HTTP layer (Svix documents payloads up to about 350 kB; 1 MiB is a sensible cap).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::ErrorKind;

type HmacSha256 = Hmac<Sha256>;

/// Default tolerance between the signature's timestamp and the clock, both ways: 300 s.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// At most this many well-formed `v1a` entries of one signature header are checked; later
/// ones are ignored. Each check hashes the whole body with SHA-512 (per configured key), so a
/// header stuffed with forged entries could otherwise multiply a delivery's cost; a sender
/// signs once per active key, two or three during a rotation.
pub const MAX_V1A_SIGNATURES: usize = 8;

const SECRET_PREFIX: &str = "whsec_";
const PUBLIC_KEY_PREFIX: &str = "whpk_";
const SIGNATURE_VERSION: &str = "v1";
const ASYMMETRIC_VERSION: &str = "v1a";

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
/// sender's problem ([`ErrorKind::BadRequest`], 400); an empty or invalid secret or public key
/// is the operator's ([`ErrorKind::Internal`], 500).
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
    /// No `v1` signature matches any configured secret, and no `v1a` signature any configured
    /// public key.
    #[error("no matching webhook signature")]
    NoMatchingSignature,
    /// The secret is empty (`""` or `"whsec_"`), or no secret or public key was given.
    #[error("empty webhook secret")]
    EmptySecret,
    /// The secret is not valid base64.
    #[error("invalid webhook secret")]
    InvalidSecret,
    /// The public key is not `whpk_` followed by the standard base64 of a 32-byte Ed25519 public
    /// key: wrong prefix, not base64, wrong length, not a curve point, or a small-order point
    /// (which no strict verification accepts).
    #[error("invalid webhook public key")]
    InvalidPublicKey,
}

impl WebhookError {
    /// What the error means: [`ErrorKind::Internal`] for a configuration mistake
    /// ([`WebhookError::EmptySecret`], [`WebhookError::InvalidSecret`],
    /// [`WebhookError::InvalidPublicKey`]), else [`ErrorKind::BadRequest`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            WebhookError::EmptySecret
            | WebhookError::InvalidSecret
            | WebhookError::InvalidPublicKey => ErrorKind::Internal,
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

/// An Ed25519 public key that verifies `v1a` signatures. Not a secret: its `Debug` shows the
/// `whpk_` form, so a log tells which key a verifier holds.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PublicKey({PUBLIC_KEY_PREFIX}{})",
            BASE64.encode(self.key.as_bytes())
        )
    }
}

impl PublicKey {
    /// Parses `whpk_<base64>`: the prefix, then the standard base64 (padded) of the 32-byte
    /// public key. Unlike a secret, the prefix is required, so that a secret or a private
    /// (`whsk_`) key given by mistake is refused rather than misread.
    ///
    /// # Errors
    /// [`WebhookError::InvalidPublicKey`], as [`PublicKey::from_bytes`] and for a missing prefix
    /// or bad base64.
    pub fn new(key: &str) -> Result<Self, WebhookError> {
        let encoded = key
            .strip_prefix(PUBLIC_KEY_PREFIX)
            .ok_or(WebhookError::InvalidPublicKey)?;
        // 32 bytes are 44 characters of padded base64; the buffer fits the decoder's estimate.
        let mut bytes = [0u8; 33];
        match BASE64.decode_slice(encoded, &mut bytes) {
            Ok(32) if encoded.len() == 44 => Self::from_bytes(&bytes[..32]),
            _ => Err(WebhookError::InvalidPublicKey),
        }
    }

    /// Uses the raw 32 bytes of a public key.
    ///
    /// # Errors
    /// [`WebhookError::InvalidPublicKey`] for a length other than 32, bytes that are not the
    /// encoding of a curve point, or a point of small order.
    pub fn from_bytes(key: &[u8]) -> Result<Self, WebhookError> {
        let bytes: &[u8; 32] = key.try_into().map_err(|_| WebhookError::InvalidPublicKey)?;
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| WebhookError::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(WebhookError::InvalidPublicKey);
        }
        Ok(PublicKey { key })
    }

    /// Whether `signature` is a valid signature by this key over `message`: strict
    /// verification (canonical scalar, no small-order points).
    fn verifies(&self, message: &[u8], signature: &Signature) -> bool {
        self.key.verify_strict(message, signature).is_ok()
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

/// Verifies webhook signatures against one or more secrets (`v1`) and public keys (`v1a`):
/// several during a rotation, or both kinds during a move from one scheme to the other.
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<Secret>,
    public_keys: Vec<PublicKey>,
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
        Self::from_keys(secrets, [])
    }

    /// A verifier for one Ed25519 public key (`whpk_<base64>`): it accepts `v1a` signatures
    /// only, with the default tolerance of 300 s.
    ///
    /// # Errors
    /// As [`PublicKey::new`].
    pub fn with_public_key(key: &str) -> Result<Self, WebhookError> {
        Self::with_public_keys([key])
    }

    /// A verifier that accepts a `v1a` signature by any of `keys` (`whpk_<base64>` each;
    /// several during a rotation). An empty list is [`WebhookError::EmptySecret`].
    ///
    /// # Errors
    /// As [`PublicKey::new`] for each key; [`WebhookError::EmptySecret`] for an empty list.
    pub fn with_public_keys<I, S>(keys: I) -> Result<Self, WebhookError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let keys = keys
            .into_iter()
            .map(|k| PublicKey::new(k.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_keys([], keys)
    }

    /// A verifier for secrets and public keys given as text, each told apart by its prefix:
    /// `whpk_` is a public key ([`PublicKey::new`]), anything else a secret ([`Secret::new`],
    /// `whsec_` or bare base64). For one setting that lists whatever the sender signs with.
    /// An empty list is [`WebhookError::EmptySecret`].
    ///
    /// # Errors
    /// As [`Secret::new`] or [`PublicKey::new`] for each entry; [`WebhookError::EmptySecret`]
    /// for an empty list.
    pub fn with_keys<I, S>(keys: I) -> Result<Self, WebhookError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut secrets = Vec::new();
        let mut public_keys = Vec::new();
        for key in keys {
            let key = key.as_ref();
            if key.starts_with(PUBLIC_KEY_PREFIX) {
                public_keys.push(PublicKey::new(key)?);
            } else {
                secrets.push(Secret::new(key)?);
            }
        }
        Self::from_keys(secrets, public_keys)
    }

    /// A verifier for parsed secrets (`v1`) and public keys (`v1a`) side by side. Both lists
    /// empty is [`WebhookError::EmptySecret`].
    ///
    /// # Errors
    /// [`WebhookError::EmptySecret`] when both lists are empty.
    pub fn from_keys<S, P>(secrets: S, public_keys: P) -> Result<Self, WebhookError>
    where
        S: IntoIterator<Item = Secret>,
        P: IntoIterator<Item = PublicKey>,
    {
        let secrets: Vec<Secret> = secrets.into_iter().collect();
        let public_keys: Vec<PublicKey> = public_keys.into_iter().collect();
        if secrets.is_empty() && public_keys.is_empty() {
            return Err(WebhookError::EmptySecret);
        }
        Ok(Verifier {
            secrets,
            public_keys,
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
    ///
    /// # Panics
    /// When the verifier holds public keys only: a public key cannot sign.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let secret = self
            .secrets
            .first()
            .expect("Verifier::sign needs a secret; this verifier holds public keys only");
        secret.sign(id, timestamp, body)
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
        // The signed content for `v1a` (Ed25519 hashes the whole message twice over, with the
        // signature's R first, so it cannot be streamed like the HMAC), built on the first
        // well-formed `v1a` entry.
        let mut content: Vec<u8> = Vec::new();
        let mut asymmetric_checked = 0;
        for entry in header.split_ascii_whitespace() {
            // Entries of other versions or without a comma are skipped.
            let Some((version, sig)) = entry.split_once(',') else {
                continue;
            };
            if version == SIGNATURE_VERSION && !self.secrets.is_empty() {
                let mut candidate = [0u8; 33];
                if sig.len() != 44 || BASE64.decode_slice(sig, &mut candidate) != Ok(32) {
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
            } else if version == ASYMMETRIC_VERSION
                && !self.public_keys.is_empty()
                && asymmetric_checked < MAX_V1A_SIGNATURES
            {
                // 64 bytes are 88 characters of padded base64; the buffer fits the estimate.
                let mut candidate = [0u8; 66];
                if sig.len() != 88 || BASE64.decode_slice(sig, &mut candidate) != Ok(64) {
                    continue;
                }
                asymmetric_checked += 1;
                let mut bytes = [0u8; 64];
                bytes.copy_from_slice(&candidate[..64]);
                let signature = Signature::from_bytes(&bytes);
                if content.is_empty() {
                    content = signed_content(id, timestamp, body);
                }
                // A public check on public data: no secret to keep in constant time.
                if self
                    .public_keys
                    .iter()
                    .any(|k| k.verifies(&content, &signature))
                {
                    return Ok(());
                }
            }
        }
        Err(WebhookError::NoMatchingSignature)
    }
}

/// `{id}.{timestamp}.{body}`: what both versions sign.
fn signed_content(id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
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
