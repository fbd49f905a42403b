//! `clerk::SessionTokenVerifier`: every rejection, each beside the same token accepted once the
//! one thing wrong with it is put right, with keys made here.

use std::error::Error as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use pg_tenancy::ErrorKind;
use pg_tenancy::clerk::{SessionTokenVerifier, TokenError};

use pg_tenancy::testing::DevTokenIssuer as DevIssuer;

use crate::shared::unix_now;

const ISS: &str = "https://clerk.example.test";
const ORIGIN: &str = "https://app.example.test";

struct Keys {
    issuer: DevIssuer,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            issuer: DevIssuer::generate(ISS).unwrap(),
        }
    }

    fn jwks(&self) -> String {
        self.issuer.jwks().to_string()
    }

    fn verifier(&self) -> SessionTokenVerifier {
        SessionTokenVerifier::from_jwks_json(&self.jwks(), ISS)
            .unwrap()
            .with_authorized_parties([ORIGIN])
    }

    /// Valid v2 claims: member of org_acme, azp = ORIGIN.
    fn claims(&self) -> Value {
        let mut c = self
            .issuer
            .claims("user_alice", Some(("org_acme", "admin", Some("acme"))), 60);
        c["azp"] = json!(ORIGIN);
        c
    }

    fn sign(&self, claims: &Value) -> String {
        self.issuer.sign(claims)
    }
}

async fn refused(verifier: &SessionTokenVerifier, token: &str) -> TokenError {
    verifier.verify(token).await.expect_err("refused")
}

#[tokio::test]
async fn v1_and_v2_claims_verify_to_the_same_session() {
    let keys = Keys::new();
    let v = keys.verifier();
    let v2 = v.verify(&keys.sign(&keys.claims())).await.unwrap();
    let now = unix_now();
    let v1 = json!({
        "azp": ORIGIN, "iss": ISS, "sub": "user_alice", "iat": now, "nbf": now - 10,
        "exp": now + 60, "org_id": "org_acme", "org_role": "org:admin", "org_slug": "acme",
    });
    let v1 = v.verify(&keys.sign(&v1)).await.unwrap();
    assert_eq!(v1.user_id.as_str(), "user_alice");
    assert_eq!(
        (
            v1.org_external_id.as_deref(),
            v1.org_role.as_deref(),
            v1.org_slug.as_deref()
        ),
        (Some("org_acme"), Some("org:admin"), Some("acme"))
    );
    assert_eq!(v1.user_and_org(), v2.user_and_org());
    assert_eq!(v1.org_role, v2.org_role);
}

#[tokio::test]
async fn each_claim_check_refuses_with_its_own_error() {
    let keys = Keys::new();
    let v = keys.verifier();
    let now = unix_now();
    let good = keys.claims();
    assert!(
        v.verify(&keys.sign(&good)).await.is_ok(),
        "positive control"
    );
    let with = |key: &str, value: Value| {
        let mut c = good.clone();
        c[key] = value;
        keys.sign(&c)
    };
    let without = |key: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(key);
        keys.sign(&c)
    };
    type Expect = fn(&TokenError) -> bool;
    let cases: Vec<(String, Expect)> = vec![
        (with("exp", json!(now - 60)), |e| {
            matches!(e, TokenError::Expired)
        }),
        (with("nbf", json!(now + 60)), |e| {
            matches!(e, TokenError::NotYetValid)
        }),
        (
            without("exp"),
            |e| matches!(e, TokenError::InvalidClaim(c) if c == "exp"),
        ),
        (
            without("nbf"),
            |e| matches!(e, TokenError::InvalidClaim(c) if c == "nbf"),
        ),
        (
            without("sub"),
            |e| matches!(e, TokenError::InvalidClaim(c) if c == "sub"),
        ),
        (with("exp", json!("soon")), |e| {
            matches!(e, TokenError::InvalidClaim(_))
        }),
        (with("iss", json!("https://evil.example")), |e| {
            matches!(e, TokenError::WrongIssuer)
        }),
        (
            without("iss"),
            |e| matches!(e, TokenError::InvalidClaim(c) if c == "iss"),
        ),
        (with("azp", json!("https://evil.example")), |e| {
            matches!(e, TokenError::ForeignAuthorizedParty)
        }),
        (with("sts", json!("pending")), |e| {
            matches!(e, TokenError::PendingSession)
        }),
    ];
    for (token, expected) in cases {
        let e = refused(&v, &token).await;
        assert!(expected(&e), "got {e:?}");
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    }
    // What is allowed: no azp at all, and pending sessions when asked for.
    assert!(v.verify(&without("azp")).await.is_ok());
    let pending = with("sts", json!("pending"));
    assert!(
        v.clone()
            .allow_pending_sessions(true)
            .verify(&pending)
            .await
            .is_ok()
    );
    // An empty allow-list refuses every token that names an azp.
    let bare = SessionTokenVerifier::from_jwks_json(&keys.jwks(), ISS).unwrap();
    assert!(matches!(
        refused(&bare, &keys.sign(&good)).await,
        TokenError::ForeignAuthorizedParty
    ));
}

#[tokio::test]
async fn wrong_key_wrong_kid_none_and_hs256_are_refused() {
    let keys = Keys::new();
    let v = keys.verifier();
    let claims = keys.claims();
    // Another key under the same kid.
    let other = DevIssuer::generate(ISS).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(keys.issuer.kid().to_owned());
    let pem = other_pem(&other);
    let forged = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        refused(&v, &forged).await,
        TokenError::BadSignature
    ));
    // Another key under its own kid.
    let e = refused(&v, &other.sign(&claims)).await;
    assert!(
        matches!(&e, TokenError::UnknownKey(Some(k)) if k == other.kid()),
        "{e:?}"
    );
    // alg none, no signature.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let e = refused(&v, &none).await;
    assert!(
        matches!(&e, TokenError::UnsupportedAlgorithm(a) if a == "none"),
        "{e:?}"
    );
    // HS256 keyed with the public key (the classic confusion): a verifier that let the header
    // choose the algorithm would accept it, as the control shows.
    let public_pem = keys_public_pem(&keys);
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(keys.issuer.kid().to_owned());
    let confused = jsonwebtoken::encode(
        &hs,
        &claims,
        &EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .unwrap();
    let naive = jsonwebtoken::decode::<Value>(
        &confused,
        &jsonwebtoken::DecodingKey::from_secret(public_pem.as_bytes()),
        &jsonwebtoken::Validation::new(Algorithm::HS256),
    );
    assert!(
        naive.is_ok(),
        "control: the token is a valid HS256 token for that secret"
    );
    let e = refused(&v, &confused).await;
    assert!(
        matches!(&e, TokenError::UnsupportedAlgorithm(a) if a == "HS256"),
        "{e:?}"
    );
}

fn other_pem(issuer: &DevIssuer) -> String {
    issuer.private_pem().to_owned()
}

fn keys_public_pem(keys: &Keys) -> String {
    keys.issuer.public_pem().to_owned()
}

#[tokio::test]
async fn truncated_garbled_and_oversized_tokens_are_refused_before_any_key_is_used() {
    let keys = Keys::new();
    let v = keys.verifier();
    let token = keys.sign(&keys.claims());
    assert!(v.verify(&token).await.is_ok());
    // Cut inside the signature: still three parts; the signature does not decode or verify.
    for cut in [1, 4, 8, 100] {
        let e = refused(&v, &token[..token.len() - cut]).await;
        assert!(
            matches!(e, TokenError::BadSignature | TokenError::Malformed(_)),
            "{e:?}"
        );
    }
    // Cut inside the payload: two parts.
    let cut = &token[..token.find('.').unwrap() + 10];
    assert!(matches!(refused(&v, cut).await, TokenError::Malformed(_)));
    for bad in ["", "a.b.c.d", "!!!.e30.x", "e30.e30", "bm90IGpzb24.e30.x"] {
        let e = refused(&v, bad).await;
        assert!(
            matches!(e, TokenError::Malformed(_) | TokenError::Missing),
            "{bad:?}: {e:?}"
        );
    }
    // A header without alg.
    let no_alg = format!("{}.e30.x", URL_SAFE_NO_PAD.encode("{\"typ\":\"JWT\"}"));
    assert!(matches!(
        refused(&v, &no_alg).await,
        TokenError::Malformed(_)
    ));
    // Oversized: a validly signed 9 KiB token, refused by length, accepted with a higher limit.
    let mut big = keys.claims();
    big["padding"] = json!("x".repeat(9 * 1024));
    let big = keys.sign(&big);
    let e = refused(&v, &big).await;
    assert!(matches!(e, TokenError::TooLarge { max: 8192, .. }), "{e:?}");
    assert!(
        v.clone()
            .with_max_token_len(16 * 1024)
            .verify(&big)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_static_pem_verifies_whatever_the_kid() {
    let keys = Keys::new();
    let v = SessionTokenVerifier::from_pem(&keys_public_pem(&keys), ISS)
        .unwrap()
        .with_authorized_parties([ORIGIN]);
    assert!(v.verify(&keys.sign(&keys.claims())).await.is_ok());
    let other = DevIssuer::generate(ISS).unwrap();
    assert!(matches!(
        refused(&v, &other.sign(&keys.claims())).await,
        TokenError::BadSignature
    ));
    for refused in [
        SessionTokenVerifier::from_pem("not a pem", ISS).unwrap_err(),
        SessionTokenVerifier::from_jwks_json("{\"keys\": []}", ISS).unwrap_err(),
    ] {
        assert_eq!(refused.code(), "keys_unavailable");
    }
}

/// A JWKS endpoint whose key set the test swaps, counting fetches. An empty body is answered
/// `503 Service Unavailable`.
struct JwksServer {
    url: String,
    hits: Arc<AtomicUsize>,
    body: Arc<Mutex<String>>,
}

async fn jwks_server(initial: String) -> JwksServer {
    let hits = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(Mutex::new(initial));
    let (h, b) = (hits.clone(), body.clone());
    let router = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let (h, b) = (h.clone(), b.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let body = b.lock().unwrap().clone();
                let status = if body.is_empty() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                };
                (status, body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    JwksServer { url, hits, body }
}

#[tokio::test]
async fn a_jwks_url_is_cached_and_refreshed_on_an_unknown_kid_at_most_once_per_interval() {
    let (old, new) = (Keys::new(), Keys::new());
    let server = jwks_server(old.jwks()).await;
    let v = SessionTokenVerifier::from_jwks_url(&server.url, ISS)
        .unwrap()
        .with_authorized_parties([ORIGIN])
        .with_refresh_interval(Duration::from_secs(1));
    let old_token = old.sign(&old.claims());
    for _ in 0..5 {
        v.verify(&old_token).await.unwrap();
    }
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "fetched once, then cached"
    );

    // The issuer rotates keys. Right after the first fetch, an unknown kid does not fetch
    // again (rate limit)...
    *server.body.lock().unwrap() = new.jwks();
    let new_token = new.sign(&new.claims());
    assert!(matches!(
        refused(&v, &new_token).await,
        TokenError::UnknownKey(_)
    ));
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    // ...after the interval it does, once, however many tokens ask.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let results = futures_join(&v, &new_token, 8).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
    // Tokens of a key no longer published are refused by kid, and trigger no fetch within the
    // interval.
    assert!(matches!(
        refused(&v, &old_token).await,
        TokenError::UnknownKey(_)
    ));
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
}

async fn futures_join(
    v: &SessionTokenVerifier,
    token: &str,
    n: usize,
) -> Vec<Result<pg_tenancy::clerk::SessionClaims, TokenError>> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (v, token) = (v.clone(), token.to_owned());
        set.spawn(async move { v.verify(&token).await });
    }
    set.join_all().await
}

#[tokio::test]
async fn an_unreachable_jwks_url_is_a_500_not_a_401() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    drop(listener);
    let keys = Keys::new();
    let v = SessionTokenVerifier::from_jwks_url(&url, ISS).unwrap();
    let e = refused(&v, &keys.sign(&keys.claims())).await;
    assert!(matches!(e, TokenError::KeysUnavailable(_)), "{e:?}");
    assert_eq!(
        (e.code(), e.kind()),
        ("keys_unavailable", ErrorKind::Internal)
    );
    assert_eq!(e.to_string(), "session token keys unavailable");
    // What failed, then the HTTP client's own error, as sources.
    let what = e.source().expect("what failed");
    assert_eq!(what.to_string(), "fetching the JWKS");
    let cause = what.source().expect("the HTTP client's error");
    assert!(cause.is::<reqwest::Error>(), "{cause:?}");
}

/// `keys` signing `claims` under `kid` (none: no `kid` in the header).
fn sign_with_kid(keys: &Keys, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    let key = EncodingKey::from_rsa_pem(keys.issuer.private_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &keys.claims(), &key).unwrap()
}

#[tokio::test]
async fn with_no_keys_held_every_token_is_a_500_until_the_jwks_url_recovers() {
    let issuers = [Keys::new(), Keys::new(), Keys::new()];
    let server = jwks_server(String::new()).await;
    let v = SessionTokenVerifier::from_jwks_url(&server.url, ISS)
        .unwrap()
        .with_authorized_parties([ORIGIN])
        .with_refresh_interval(Duration::from_secs(2));
    // Three keys' tokens, each under its own kid, then one under a kid no key has and one
    // without a kid.
    let mut tokens: Vec<String> = issuers.iter().map(|k| k.sign(&k.claims())).collect();
    let (made_up, no_kid) = (
        sign_with_kid(&issuers[0], Some("kid_nobody_has")),
        sign_with_kid(&issuers[0], None),
    );
    tokens.extend([made_up.clone(), no_kid.clone()]);

    // The first fetch fails; during the back-off every token is a 500, whatever its kid,
    // without another fetch.
    for token in &tokens {
        let e = refused(&v, token).await;
        assert!(matches!(e, TokenError::KeysUnavailable(_)), "{e:?}");
        assert_eq!(
            (e.code(), e.kind()),
            ("keys_unavailable", ErrorKind::Internal)
        );
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("the JWKS URL answered 503 Service Unavailable")
        );
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);

    // The URL recovers, publishing the three keys: still the back-off, then one fetch, and the
    // same tokens verify.
    let published: Vec<Value> = issuers
        .iter()
        .flat_map(|k| k.issuer.jwks()["keys"].as_array().unwrap().clone())
        .collect();
    *server.body.lock().unwrap() = json!({ "keys": published }).to_string();
    assert!(matches!(
        refused(&v, &tokens[1]).await,
        TokenError::KeysUnavailable(_)
    ));
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for (i, token) in tokens[..3].iter().enumerate() {
        let claims = v
            .verify(token)
            .await
            .unwrap_or_else(|e| panic!("{i}: {e:?}"));
        assert_eq!(claims.user_id.as_str(), "user_alice");
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);

    // Keys are held now: a kid they do not know is the client's fault again (401), and asks
    // no fetch within the interval.
    for (token, kid) in [(&made_up, Some("kid_nobody_has")), (&no_kid, None)] {
        let e = refused(&v, token).await;
        assert!(
            matches!(&e, TokenError::UnknownKey(k) if k.as_deref() == kid),
            "{e:?}"
        );
        assert_eq!(
            (e.code(), e.kind()),
            ("unknown_key", ErrorKind::Unauthenticated)
        );
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
}
