//! Hostile bytes into every parser and verifier that takes input from the network, on the
//! stable toolchain: property runs over arbitrary bytes and headers, and over mutations of valid
//! inputs. Nothing may panic, every call must return, and no call may allocate out of
//! proportion to its input (counted by a wrapping global allocator).
//!
//! Short in CI (`cargo test --test fuzz`: 512 cases per target); the long run is
//! `TENANCY_FUZZ_CASES=200000 cargo test --release --test fuzz` (docs/reliability.md).

use std::sync::Mutex;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

use pg_tenancy::clerk::{Event, SessionClaims, SessionTokenVerifier};
use pg_tenancy::web::token_from_request;
use pg_tenancy::webhook::{Verifier, WebhookHeaders};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// The allocator's counters are global: one measured target at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn cases() -> u32 {
    std::env::var("TENANCY_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(512)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// Runs `f` and checks that it allocated at most `16 * input_len + 256 KiB` bytes.
fn bounded<T>(input_len: usize, what: &str, f: impl FnOnce() -> T) -> T {
    let region = Region::new(GLOBAL);
    let out = f();
    let allocated = region.change().bytes_allocated;
    let limit = 16 * input_len + 256 * 1024;
    assert!(
        allocated <= limit,
        "{what}: {allocated} bytes allocated for {input_len} bytes of input"
    );
    out
}

fn valid_event() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/clerk-events/organizationMembership.created.json"
    ))
    .unwrap()
}

/// Arbitrary bytes, or a valid input with a few bytes changed, inserted or removed.
fn bytes_near(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        edits.prop_map(move |edits| {
            let mut v = valid.clone();
            for (at, byte, op) in edits {
                let i = at.index(v.len().max(1));
                match op {
                    0 if !v.is_empty() => {
                        let last = v.len() - 1;
                        v[i.min(last)] = byte;
                    }
                    1 => v.insert(i.min(v.len()), byte),
                    _ if !v.is_empty() => {
                        v.remove(i.min(v.len() - 1));
                    }
                    _ => {}
                }
            }
            v
        }),
    ]
}

#[test]
fn the_clerk_event_parser_takes_any_bytes() {
    let _one = ONE_AT_A_TIME.lock().unwrap();
    runner()
        .run(&bytes_near(valid_event()), |body| {
            let parsed = bounded(body.len(), "Event::parse", || Event::parse(&body));
            // The unmodified event parses; anything else is a typed error or a valid event.
            if body == valid_event() {
                prop_assert!(parsed.is_ok());
            }
            Ok(())
        })
        .unwrap();
    assert!(Event::parse(&valid_event()).is_ok(), "positive control");
}

/// The `v1a` signing key whose public key the fuzzed verifier holds beside [`SECRET`].
fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn v1a(id: &str, ts: &str, body: &[u8]) -> String {
    let mut content = format!("{id}.{ts}.").into_bytes();
    content.extend_from_slice(body);
    let signature = signing_key().sign(&content);
    format!("v1a,{}", B64.encode(signature.to_bytes()))
}

/// A verifier for `v1` and `v1a` at once, so that both paths see every input.
fn both_schemes() -> Verifier {
    let public = B64.encode(signing_key().verifying_key().as_bytes());
    Verifier::with_keys([SECRET.to_owned(), format!("whpk_{public}")]).unwrap()
}

#[test]
fn the_webhook_verifier_takes_any_headers_and_bytes() {
    let _one = ONE_AT_A_TIME.lock().unwrap();
    let verifier = both_schemes();
    let now = 1_716_883_200;
    let header = prop_oneof![
        ".{0,64}",
        "v1,[A-Za-z0-9+/=]{0,64}( v1,[A-Za-z0-9+/=]{0,64}){0,3}",
        "[0-9]{0,12}",
        "(v1a?,[A-Za-z0-9+/=]{80,96} ?){0,6}",
        // Well-formed `v1a` entries, up to twice the cap, with a canonical scalar so that most
        // reach the curve arithmetic and the hash over the signed content.
        prop::collection::vec(any::<([u8; 32], [u8; 32])>(), 1..=16).prop_map(|entries| {
            entries
                .into_iter()
                .map(|(r, mut s)| {
                    s[31] &= 0x0f;
                    format!("v1a,{}", B64.encode([r, s].concat()))
                })
                .collect::<Vec<_>>()
                .join(" ")
        }),
    ];
    let strategy = (
        prop::option::of(header.clone()),
        prop::option::of(header.clone()),
        prop::option::of(header),
        bytes_near(valid_event()),
    );
    runner()
        .run(&strategy, |(id, ts, sig, body)| {
            let headers = WebhookHeaders::from_fn(|name| match name {
                "svix-id" => id.as_deref(),
                "svix-timestamp" => ts.as_deref(),
                "svix-signature" => sig.as_deref(),
                _ => None,
            });
            let len = body.len() + 200;
            let verified = bounded(len, "Verifier::verify_at", || {
                verifier.verify_at(&headers, &body, now).is_ok()
            });
            prop_assert!(!verified, "an unsigned delivery verified");
            Ok(())
        })
        .unwrap();
    // Positive controls: a delivery signed either way verifies.
    let body = valid_event();
    for signature in [
        verifier.sign("msg_1", now, &body),
        v1a("msg_1", "1716883200", &body),
    ] {
        let headers = WebhookHeaders::from_pairs([
            ("svix-id", "msg_1"),
            ("svix-timestamp", "1716883200"),
            ("svix-signature", signature.as_str()),
        ]);
        assert!(verifier.verify_at(&headers, &body, now).is_ok());
    }
}

#[test]
fn the_webhook_verifier_takes_mutated_signed_headers() {
    let _one = ONE_AT_A_TIME.lock().unwrap();
    let verifier = both_schemes();
    let now = 1_716_883_200;
    let valid = valid_event();
    // A genuine header carrying both versions, then a few bytes changed, inserted or removed.
    let signed = format!(
        "{} {}",
        verifier.sign("msg_1", now, &valid),
        v1a("msg_1", "1716883200", &valid)
    );
    let strategy = (
        bytes_near(signed.clone().into_bytes()),
        bytes_near(valid.clone()),
    );
    runner()
        .run(&strategy, |(sig, body)| {
            let Ok(sig) = String::from_utf8(sig) else {
                return Ok(());
            };
            let headers = WebhookHeaders::from_pairs([
                ("svix-id", "msg_1"),
                ("svix-timestamp", "1716883200"),
                ("svix-signature", sig.as_str()),
            ]);
            let len = body.len() + sig.len() + 32;
            let verified = bounded(len, "Verifier::verify_at", || {
                verifier.verify_at(&headers, &body, now).is_ok()
            });
            // Whatever happened to the header, a changed body never verifies.
            prop_assert!(!verified || body == valid, "a changed body verified");
            Ok(())
        })
        .unwrap();
    // Positive control: the unmutated header verifies the unmutated body.
    let headers = WebhookHeaders::from_pairs([
        ("svix-id", "msg_1"),
        ("svix-timestamp", "1716883200"),
        ("svix-signature", signed.as_str()),
    ]);
    assert!(verifier.verify_at(&headers, &valid, now).is_ok());
}

#[test]
fn the_session_token_verifier_and_claims_reader_take_any_input() {
    let _one = ONE_AT_A_TIME.lock().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let jwks = r#"{"keys":[{"kty":"RSA","kid":"k1","use":"sig","alg":"RS256",
        "n":"u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw",
        "e":"AQAB"}]}"#;
    let verifier =
        SessionTokenVerifier::from_jwks_json(jwks, "https://clerk.example.test").unwrap();
    let header = r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#;
    let part = "[A-Za-z0-9_-]{0,300}";
    let token = prop_oneof![
        ".{0,600}",
        (part, part, part).prop_map(|(a, b, c)| format!("{a}.{b}.{c}")),
        (part, part).prop_map(move |(b, c)| {
            use base64::Engine as _;
            let h = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header);
            format!("{h}.{b}.{c}")
        }),
        ".{8000,9000}",
    ];
    runner()
        .run(&token, |token| {
            let refused = bounded(token.len(), "SessionTokenVerifier::verify", || {
                rt.block_on(verifier.verify(&token)).is_err()
            });
            prop_assert!(refused, "a forged token verified");
            let found = bounded(token.len(), "token_from_request", || {
                token_from_request(Some(&token), [token.as_str()]).map(str::len)
            });
            prop_assert!(found.is_none_or(|n| n <= token.len()));
            Ok(())
        })
        .unwrap();
    // The claims reader takes any JSON a verified token could carry.
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    let json = leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("sub".to_owned()),
                        Just("o".to_owned()),
                        Just("org_id".to_owned()),
                        Just("iat".to_owned()),
                        "[a-z]{1,6}"
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    });
    runner()
        .run(&json, |claims| {
            let len = claims.to_string().len();
            let _ = bounded(len, "SessionClaims::from_verified_claims", || {
                SessionClaims::from_verified_claims(&claims).map(|c| c.user_and_org())
            });
            Ok(())
        })
        .unwrap();
}
