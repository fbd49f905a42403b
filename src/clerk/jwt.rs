//! Verification of Clerk session tokens (feature `clerk-jwt`).
//!
//! [`SessionTokenVerifier`] checks a token the way Clerk's manual-verification guide asks, and
//! only then reads its claims into [`SessionClaims`]:
//!
//! - the header names `RS256` (anything else, `none` and `HS256` included, is
//!   [`TokenError::UnsupportedAlgorithm`], before any key is used);
//! - the signature, by the key the header's `kid` names (a JWKS fetched from a URL and cached,
//!   refreshed at most once per [`refresh interval`](SessionTokenVerifier::with_refresh_interval)
//!   when a token names a key not in the cache; while no fetch has succeeded, every token
//!   that gets this far is [`TokenError::KeysUnavailable`]), or by a static PEM or JWKS (no
//!   network);
//! - `exp` and `nbf` present and in range (leeway 5 s by default), `iss` equal to the instance's
//!   Frontend API URL, `sub` present;
//! - `azp`, when present, one of the configured origins (an empty allow-list refuses every token
//!   that carries one: configure your origins);
//! - `sts` = `pending` (the session is not set up yet) refused unless allowed.
//!
//! Every rejection is its own [`TokenError`] variant, so that logs say which check failed; all
//! but a configuration or key-fetching failure are [`ErrorKind::Unauthenticated`] (401).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::roles::RoleMapping;
use super::session::SessionClaims;
use crate::error::ErrorKind;
use crate::util::{ECHO_CHARS, clip};

/// Why a session token was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The request carries no token (no `Authorization: Bearer`, no `__session` cookie).
    #[error("no session token")]
    Missing,
    /// The token is longer than the verifier accepts (8 KiB by default); nothing of it was
    /// decoded.
    #[error("session token of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The token's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not three base64url parts with a JSON header and payload.
    #[error("malformed session token: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not `RS256` (`none`, `HS256`, ...).
    #[error("session token algorithm {0:?} is not accepted (RS256 only)")]
    UnsupportedAlgorithm(String),
    /// The header's `kid` names no known key (after a refresh, if one was due).
    #[error("session token signed by an unknown key {0:?}")]
    UnknownKey(Option<String>),
    /// The signature does not verify with the key.
    #[error("session token signature does not verify")]
    BadSignature,
    /// `exp` is in the past.
    #[error("session token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("session token not yet valid")]
    NotYetValid,
    /// A required claim (`exp`, `nbf`, `iss`, `sub`) is absent or of the wrong type.
    #[error("session token claim {0:?} is absent or invalid")]
    InvalidClaim(String),
    /// `iss` is not the configured issuer.
    #[error("session token issued by another issuer")]
    WrongIssuer,
    /// `azp` is not one of the permitted origins.
    #[error("session token for a foreign authorized party")]
    ForeignAuthorizedParty,
    /// `sts` is `pending`: the session is not fully set up.
    #[error("session is pending")]
    PendingSession,
    /// The verifier holds no keys: they could not be fetched or parsed (a 500: the server's
    /// problem, not the client's). While a JWKS URL's verifier holds none, every token that
    /// reaches the key lookup gets this, whatever its `kid`, until a fetch succeeds. The [`KeysError`] says what failed,
    /// and is the error's [`source`](std::error::Error::source).
    #[error("session token keys unavailable")]
    KeysUnavailable(#[source] KeysError),
}

/// What made a verifier's keys unavailable: what failed (`Display`) and, as its
/// [`source`](std::error::Error::source), the error underneath when there is one (the HTTP
/// client's, the JSON parser's, the PEM decoder's). Cheap to clone: while no keys are held, the
/// last fetch's failure is handed to every token that asks.
#[derive(Debug, Clone)]
pub struct KeysError {
    reason: Cow<'static, str>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl KeysError {
    fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        KeysError {
            reason: reason.into(),
            source: None,
        }
    }

    fn because(
        reason: impl Into<Cow<'static, str>>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        KeysError {
            reason: reason.into(),
            source: Some(Arc::new(source)),
        }
    }
}

impl fmt::Display for KeysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for KeysError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The error itself, not its `Arc` (so that it downcasts to its own type).
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<KeysError> for TokenError {
    fn from(e: KeysError) -> Self {
        TokenError::KeysUnavailable(e)
    }
}

impl TokenError {
    /// [`ErrorKind::Internal`] when the keys are unavailable, else
    /// [`ErrorKind::Unauthenticated`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            TokenError::KeysUnavailable(_) => ErrorKind::Internal,
            _ => ErrorKind::Unauthenticated,
        }
    }

    /// A stable machine-readable code (`"token_expired"`, ...), for a response body.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Missing => "missing_token",
            TokenError::TooLarge { .. } => "token_too_large",
            TokenError::Malformed(_) => "malformed_token",
            TokenError::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            TokenError::UnknownKey(_) => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::InvalidClaim(_) => "invalid_claim",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::ForeignAuthorizedParty => "foreign_authorized_party",
            TokenError::PendingSession => "pending_session",
            TokenError::KeysUnavailable(_) => "keys_unavailable",
        }
    }
}

/// The default limit on a token's length: Clerk's tokens are about 1 KiB; cookies are capped
/// near 4 KiB.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;

/// Verifies Clerk session tokens. Cheap to clone (the key cache is shared).
///
/// ```no_run
/// # async fn demo() -> Result<(), pg_tenancy::clerk::TokenError> {
/// use pg_tenancy::clerk::SessionTokenVerifier;
/// let verifier = SessionTokenVerifier::from_jwks_url(
///     "https://your-site.clerk.accounts.dev/.well-known/jwks.json",
///     "https://your-site.clerk.accounts.dev",
/// )?
/// .with_authorized_parties(["https://app.example.com"]);
/// let claims = verifier.verify("eyJ...").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SessionTokenVerifier {
    keys: Keys,
    issuer: String,
    authorized_parties: Arc<[String]>,
    allow_pending: bool,
    leeway_secs: u64,
    max_len: usize,
    roles: RoleMapping,
}

impl fmt::Debug for SessionTokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = match &self.keys {
            Keys::Static(_) => "static",
            Keys::Remote(_) => "jwks-url",
        };
        f.debug_struct("SessionTokenVerifier")
            .field("keys", &keys)
            .field("issuer", &self.issuer)
            .field("authorized_parties", &self.authorized_parties)
            .field("allow_pending", &self.allow_pending)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum Keys {
    Static(Arc<KeySet>),
    Remote(Arc<RemoteKeys>),
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, DecodingKey>,
    /// A key given without a `kid` (a PEM): it verifies tokens whatever their `kid`.
    any_kid: Option<DecodingKey>,
}

impl KeySet {
    fn get(&self, kid: Option<&str>) -> Option<&DecodingKey> {
        kid.and_then(|k| self.by_kid.get(k))
            .or(self.any_kid.as_ref())
    }
}

struct RemoteKeys {
    url: String,
    client: reqwest::Client,
    min_refresh: Duration,
    max_age: Duration,
    cache: tokio::sync::RwLock<Cache>,
    /// One fetch at a time; others wait for it and read its result.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Cache {
    held: Held,
    attempted_at: Option<Instant>,
}

/// What a JWKS URL's verifier holds.
#[derive(Default)]
enum Held {
    /// No fetch yet.
    #[default]
    Nothing,
    /// No fetch has succeeded; the last one failed so.
    Failed(KeysError),
    /// The keys of the last successful fetch.
    Keys {
        keys: Arc<KeySet>,
        fetched_at: Instant,
    },
}

/// The largest JWKS document a fetch accepts.
const MAX_JWKS_BYTES: usize = 256 * 1024;

impl SessionTokenVerifier {
    fn with_keys(keys: Keys, issuer: &str) -> Self {
        SessionTokenVerifier {
            keys,
            issuer: issuer.trim_end_matches('/').to_owned(),
            authorized_parties: Arc::from(Vec::new()),
            allow_pending: false,
            leeway_secs: 5,
            max_len: DEFAULT_MAX_TOKEN_LEN,
            roles: RoleMapping::default(),
        }
    }

    /// Keys from a JWKS URL (Clerk: `https://<frontend-api>/.well-known/jwks.json`), fetched on
    /// first use, kept for an hour, and fetched again early when a token names an unknown
    /// `kid`, at most once per refresh interval (30 s by default). `issuer` is the instance's
    /// Frontend API URL.
    ///
    /// While no fetch has succeeded, every token that reaches the key lookup (past the length
    /// and header checks) is [`TokenError::KeysUnavailable`] (a 500), whatever its `kid`, and a failed fetch is tried again at most once per refresh interval;
    /// once keys are held, they keep serving while the URL is unreachable, and a `kid` they do
    /// not know is [`TokenError::UnknownKey`] (a 401).
    ///
    /// # Errors
    /// [`TokenError::KeysUnavailable`] when the HTTP client cannot be built.
    pub fn from_jwks_url(url: &str, issuer: &str) -> Result<Self, TokenError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| KeysError::because("building the HTTP client", e))?;
        let remote = RemoteKeys {
            url: url.to_owned(),
            client,
            min_refresh: Duration::from_secs(30),
            max_age: Duration::from_secs(3600),
            cache: tokio::sync::RwLock::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(()),
        };
        Ok(Self::with_keys(Keys::Remote(Arc::new(remote)), issuer))
    }

    /// A static RSA public key in PEM (Clerk's dashboard: "JWKS Public Key"); no network. It
    /// verifies tokens whatever their `kid`.
    ///
    /// # Errors
    /// [`TokenError::KeysUnavailable`] when the PEM is not an RSA public key.
    pub fn from_pem(pem: &str, issuer: &str) -> Result<Self, TokenError> {
        let key = DecodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|e| KeysError::because("the PEM is not an RSA public key", e))?;
        let set = KeySet {
            any_kid: Some(key),
            ..KeySet::default()
        };
        Ok(Self::with_keys(Keys::Static(Arc::new(set)), issuer))
    }

    /// A static JWKS document (`{"keys": [...]}`); no network. Tokens must name one of its
    /// keys by `kid`.
    ///
    /// # Errors
    /// [`TokenError::KeysUnavailable`] when the document holds no usable RSA key.
    pub fn from_jwks_json(jwks: &str, issuer: &str) -> Result<Self, TokenError> {
        let set = parse_jwks(jwks.as_bytes())?;
        Ok(Self::with_keys(Keys::Static(Arc::new(set)), issuer))
    }

    /// The permitted origins for `azp` (`https://app.example.com`). A token with an `azp`
    /// outside the list is refused; a token without one is accepted.
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_authorized_parties<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let list: Vec<String> = origins.into_iter().map(Into::into).collect();
        self.authorized_parties = Arc::from(list);
        self
    }

    /// Accepts sessions whose `sts` is `pending` (refused by default).
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn allow_pending_sessions(mut self, allow: bool) -> Self {
        self.allow_pending = allow;
        self
    }

    /// The clock skew tolerated on `exp` and `nbf` (default 5 s).
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_leeway_secs(mut self, seconds: u64) -> Self {
        self.leeway_secs = seconds;
        self
    }

    /// The longest token accepted (default [`DEFAULT_MAX_TOKEN_LEN`]).
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_max_token_len(mut self, bytes: usize) -> Self {
        self.max_len = bytes;
        self
    }

    /// How often, at most, the JWKS URL is fetched again: when a token names an unknown `kid`,
    /// or after a failed fetch (default 30 s).
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_refresh_interval(mut self, interval: Duration) -> Self {
        if let Keys::Remote(remote) = &mut self.keys
            && let Some(r) = Arc::get_mut(remote)
        {
            r.min_refresh = interval;
        }
        self
    }

    /// The mapping of the token's organization role to a [`Role`](crate::Role) (used for a
    /// membership the token claims, see `web::Tenancy`).
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_roles(mut self, roles: RoleMapping) -> Self {
        self.roles = roles;
        self
    }

    /// The role mapping.
    pub fn roles(&self) -> &RoleMapping {
        &self.roles
    }

    /// Verifies `token` and returns its claims.
    ///
    /// # Errors
    /// The [`TokenError`] of the first check that fails, in the order the module lists them.
    pub async fn verify(&self, token: &str) -> Result<SessionClaims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > self.max_len {
            return Err(TokenError::TooLarge {
                len: token.len(),
                max: self.max_len,
            });
        }
        let kid = read_header(token)?;
        let keys = match &self.keys {
            Keys::Static(set) => Arc::clone(set),
            Keys::Remote(remote) => remote.keys_for(kid.as_deref()).await?,
        };
        // The kid is echoed in the error: clipped, as the client wrote it.
        let key = keys
            .get(kid.as_deref())
            .ok_or_else(|| TokenError::UnknownKey(kid.as_deref().map(|k| clip(k, ECHO_CHARS))))?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Clerk's session tokens carry no `aud`; a custom template's is not ours to judge.
        validation.validate_aud = false;
        validation.leeway = self.leeway_secs;
        validation.set_issuer(&[&self.issuer]);
        let data = jsonwebtoken::decode::<Value>(token, key, &validation).map_err(from_jwt)?;
        let claims = data.claims;

        if let Some(azp) = claims.get("azp") {
            let azp = azp
                .as_str()
                .ok_or_else(|| TokenError::InvalidClaim("azp".into()))?;
            if !self.authorized_parties.iter().any(|p| p == azp) {
                return Err(TokenError::ForeignAuthorizedParty);
            }
        }
        if !self.allow_pending && claims.get("sts").and_then(Value::as_str) == Some("pending") {
            return Err(TokenError::PendingSession);
        }
        SessionClaims::from_verified_claims(&claims).map_err(|e| {
            TokenError::InvalidClaim(match e {
                super::PayloadError::Invalid { field, .. } => field.into(),
                super::PayloadError::Malformed(_) => "sub".into(),
            })
        })
    }
}

/// Reads the header: `RS256` or a refusal, and the `kid`.
fn read_header(token: &str) -> Result<Option<String>, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three parts"));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed("header is not base64url"))?;
    let header: Value =
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed("header is not JSON"))?;
    match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => {}
        // What the client wrote is echoed in errors (and answers): clipped.
        Some(other) => return Err(TokenError::UnsupportedAlgorithm(clip(other, ECHO_CHARS))),
        None => return Err(TokenError::Malformed("header has no alg")),
    }
    Ok(header.get("kid").and_then(Value::as_str).map(str::to_owned))
}

fn from_jwt(e: jsonwebtoken::errors::Error) -> TokenError {
    match e.into_kind() {
        JwtErrorKind::InvalidSignature => TokenError::BadSignature,
        JwtErrorKind::ExpiredSignature => TokenError::Expired,
        JwtErrorKind::ImmatureSignature => TokenError::NotYetValid,
        JwtErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        JwtErrorKind::MissingRequiredClaim(c) | JwtErrorKind::InvalidClaimFormat(c) => {
            TokenError::InvalidClaim(c)
        }
        JwtErrorKind::InvalidAlgorithm | JwtErrorKind::UnsupportedAlgorithm => {
            TokenError::UnsupportedAlgorithm("RS256 with a non-RSA key".into())
        }
        JwtErrorKind::Json(_) => TokenError::Malformed("payload is not a JSON claims object"),
        JwtErrorKind::Utf8(_) | JwtErrorKind::Base64(_) | JwtErrorKind::InvalidToken => {
            TokenError::Malformed("undecodable part")
        }
        _ => TokenError::BadSignature,
    }
}

fn parse_jwks(body: &[u8]) -> Result<KeySet, KeysError> {
    let set: JwkSet =
        serde_json::from_slice(body).map_err(|e| KeysError::because("JWKS is not a key set", e))?;
    let mut keys = KeySet::default();
    for jwk in &set.keys {
        let (Some(kid), AlgorithmParameters::RSA(_)) = (&jwk.common.key_id, &jwk.algorithm) else {
            continue;
        };
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            keys.by_kid.insert(kid.clone(), key);
        }
    }
    if keys.by_kid.is_empty() {
        return Err(KeysError::new("JWKS holds no RSA key with a kid"));
    }
    Ok(keys)
}

impl RemoteKeys {
    /// The cached keys, fetched first when there are none, when they are older than
    /// `max_age`, or when `kid` is unknown and the last attempt is older than `min_refresh`.
    ///
    /// While no fetch has succeeded, the last failure, whatever `kid` is: an unknown `kid` is
    /// only a client's fault when there are keys to know it by.
    async fn keys_for(&self, kid: Option<&str>) -> Result<Arc<KeySet>, TokenError> {
        if let Some(held) = self.cached(kid).await {
            return held;
        }
        let _one_fetch = self.fetching.lock().await;
        // Another task may have fetched while this one waited.
        if let Some(held) = self.cached(kid).await {
            return held;
        }
        let fetched = self.fetch().await;
        let mut cache = self.cache.write().await;
        let now = Instant::now();
        cache.attempted_at = Some(now);
        match (fetched, &cache.held) {
            (Ok(keys), _) => {
                let keys = Arc::new(keys);
                cache.held = Held::Keys {
                    keys: Arc::clone(&keys),
                    fetched_at: now,
                };
                Ok(keys)
            }
            // Keys already held keep serving while the URL is unreachable.
            (Err(_), Held::Keys { keys, .. }) => Ok(Arc::clone(keys)),
            (Err(e), Held::Nothing | Held::Failed(_)) => {
                cache.held = Held::Failed(e.clone());
                Err(e.into())
            }
        }
    }

    /// What the cache answers for `kid`, unless a fetch is due: the keys held, or while none
    /// are, the last fetch's failure.
    async fn cached(&self, kid: Option<&str>) -> Option<Result<Arc<KeySet>, TokenError>> {
        let cache = self.cache.read().await;
        let rate_ok = cache
            .attempted_at
            .is_none_or(|a| a.elapsed() >= self.min_refresh);
        match &cache.held {
            Held::Nothing => None,
            Held::Failed(_) if rate_ok => None,
            Held::Failed(e) => Some(Err(e.clone().into())),
            Held::Keys { keys, fetched_at } => {
                let due = fetched_at.elapsed() >= self.max_age || keys.get(kid).is_none();
                (!(rate_ok && due)).then(|| Ok(Arc::clone(keys)))
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, KeysError> {
        let mut response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| KeysError::because("fetching the JWKS", e))?;
        if !response.status().is_success() {
            return Err(KeysError::new(format!(
                "the JWKS URL answered {}",
                response.status()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| KeysError::because("reading the JWKS", e))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(KeysError::new("the JWKS is larger than 256 KiB"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::error::Error as _;
    use std::mem::discriminant;

    use super::*;

    /// One sample of the variant declared after `e`'s (`None` after the last). The match has
    /// no wildcard: a new variant does not build until it has an arm here, and it joins
    /// [`every_variant`] by being named from the arm before it.
    fn after(e: &TokenError) -> Option<TokenError> {
        use TokenError::*;
        Some(match e {
            Missing => TooLarge {
                len: 9000,
                max: 8192,
            },
            TooLarge { .. } => Malformed("not three parts"),
            Malformed(_) => UnsupportedAlgorithm("HS256".into()),
            UnsupportedAlgorithm(_) => UnknownKey(Some("kid_1".into())),
            UnknownKey(_) => BadSignature,
            BadSignature => Expired,
            Expired => NotYetValid,
            NotYetValid => InvalidClaim("exp".into()),
            InvalidClaim(_) => WrongIssuer,
            WrongIssuer => ForeignAuthorizedParty,
            ForeignAuthorizedParty => PendingSession,
            PendingSession => KeysUnavailable(KeysError::new("the JWKS URL answered 503")),
            KeysUnavailable(_) => return None,
        })
    }

    fn every_variant() -> Vec<TokenError> {
        std::iter::successors(Some(TokenError::Missing), after).collect()
    }

    #[test]
    fn every_rejection_has_its_own_stable_code_and_status() {
        let all = every_variant();
        let variants: HashSet<_> = all.iter().map(discriminant).collect();
        assert_eq!(variants.len(), all.len(), "each sample is another variant");
        let codes: Vec<(&str, u16)> = all
            .iter()
            .map(|e| (e.code(), e.kind().http_status()))
            .collect();
        // Stable: these codes are an API (docs/web.md lists them).
        assert_eq!(
            codes,
            [
                ("missing_token", 401),
                ("token_too_large", 401),
                ("malformed_token", 401),
                ("unsupported_algorithm", 401),
                ("unknown_key", 401),
                ("bad_signature", 401),
                ("token_expired", 401),
                ("token_not_yet_valid", 401),
                ("invalid_claim", 401),
                ("wrong_issuer", 401),
                ("foreign_authorized_party", 401),
                ("pending_session", 401),
                ("keys_unavailable", 500),
            ]
        );
        let distinct: HashSet<&str> = codes.iter().map(|(code, _)| *code).collect();
        assert_eq!(distinct.len(), codes.len(), "{codes:?}");
    }

    #[test]
    fn keys_errors_keep_what_they_wrap_as_their_source() {
        let e = SessionTokenVerifier::from_pem("not a pem", "https://issuer.test").unwrap_err();
        let TokenError::KeysUnavailable(keys) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(keys.to_string(), "the PEM is not an RSA public key");
        let cause = e.source().and_then(|k| k.source()).expect("the PEM error");
        assert!(cause.is::<jsonwebtoken::errors::Error>(), "{cause:?}");

        let e = SessionTokenVerifier::from_jwks_json("{", "https://issuer.test").unwrap_err();
        let cause = e.source().and_then(|k| k.source()).expect("the JSON error");
        assert!(cause.is::<serde_json::Error>(), "{cause:?}");
        assert_eq!(e.source().unwrap().to_string(), "JWKS is not a key set");

        // Nothing underneath: no source.
        let e = SessionTokenVerifier::from_jwks_json("{\"keys\": []}", "https://issuer.test")
            .unwrap_err();
        assert_eq!(
            e.source().unwrap().to_string(),
            "JWKS holds no RSA key with a kid"
        );
        assert!(e.source().unwrap().source().is_none());
    }
}
