//! Signature verification: the official known-answer vectors, a cross-check against the
//! `standardwebhooks` crate, and 100,000 random header/body combinations checked against a
//! reference model.

use crate::common::unix_now;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use pg_tenancy::ErrorKind;
use pg_tenancy::webhook::{Header, Secret, Verifier, WebhookError, WebhookHeaders};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

fn vectors() -> Vec<Value> {
    let text = include_str!("../data/webhook-vectors.json");
    let doc: Value = serde_json::from_str(text).unwrap();
    doc["vectors"].as_array().unwrap().clone()
}

fn payload(v: &Value) -> Vec<u8> {
    match &v["payload"] {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Object(o) => o["repeat"]
            .as_str()
            .unwrap()
            .repeat(o["count"].as_u64().unwrap() as usize)
            .into_bytes(),
        other => panic!("payload {other}"),
    }
}

fn class(e: &WebhookError) -> &'static str {
    match e {
        WebhookError::MissingHeader(Header::Id) => "MissingHeader(id)",
        WebhookError::MissingHeader(Header::Timestamp) => "MissingHeader(timestamp)",
        WebhookError::MissingHeader(Header::Signature) => "MissingHeader(signature)",
        WebhookError::InvalidTimestamp => "InvalidTimestamp",
        WebhookError::TimestampTooOld => "TimestampTooOld",
        WebhookError::TimestampTooNew => "FutureTimestamp",
        WebhookError::NoMatchingSignature => "InvalidSignature",
        WebhookError::EmptySecret => "EmptySecret",
        WebhookError::InvalidSecret => "InvalidSecret",
        _ => "other",
    }
}

#[test]
fn every_known_answer_vector_passes() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 20);
    for v in &vectors {
        let id = v["id"].as_str().unwrap();
        let secret = v["secret"].as_str().unwrap();
        let body = payload(v);
        match v["kind"].as_str().unwrap() {
            "sign" => {
                let ts = v["timestamp"].as_i64().unwrap();
                let got =
                    Secret::new(secret)
                        .unwrap()
                        .sign(v["msg_id"].as_str().unwrap(), ts, &body);
                assert_eq!(got, v["expected_signature"].as_str().unwrap(), "{id}");
            }
            "new_secret" => {
                let got = Verifier::new(secret)
                    .map(|_| "ok")
                    .unwrap_or_else(|e| class(&e));
                assert_eq!(got, v["expected"].as_str().unwrap(), "{id}");
            }
            "verify" => {
                let h = v["headers"].as_object().unwrap();
                let headers = WebhookHeaders::from_pairs(
                    h.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())),
                );
                let got = Verifier::new(secret)
                    .unwrap()
                    .verify_at(&headers, &body, v["now"].as_i64().unwrap())
                    .map(|_| "ok")
                    .unwrap_or_else(|e| class(&e));
                assert_eq!(got, v["expected"].as_str().unwrap(), "{id}");
            }
            other => panic!("unknown kind {other}"),
        }
    }
}

#[test]
fn tampering_with_any_part_is_rejected() {
    let v = Verifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let body = br#"{"test": 2432232314}"#;
    let sig = v.sign("msg_1", 1614265330, body);
    let ok = WebhookHeaders {
        id: Some("msg_1"),
        timestamp: Some("1614265330"),
        signature: Some(&sig),
    };
    assert!(v.verify_at(&ok, body, 1614265330).is_ok());
    let bad_id = WebhookHeaders {
        id: Some("msg_2"),
        ..ok
    };
    let bad_ts = WebhookHeaders {
        timestamp: Some("1614265331"),
        ..ok
    };
    let v1a = sig.replacen("v1,", "v1a,", 1);
    let bad_version = WebhookHeaders {
        signature: Some(&v1a),
        ..ok
    };
    for (what, h, b) in [
        ("id", bad_id, &body[..]),
        ("timestamp", bad_ts, &body[..]),
        ("version", bad_version, &body[..]),
        ("body", ok, &br#"{"test": 2432232315}"#[..]),
    ] {
        assert_eq!(
            v.verify_at(&h, b, 1614265330),
            Err(WebhookError::NoMatchingSignature),
            "{what}"
        );
    }
    // Header names are case-insensitive, and webhook-* works as svix-*.
    let mixed = WebhookHeaders::from_pairs([
        ("Webhook-Id", "msg_1"),
        ("WEBHOOK-TIMESTAMP", "1614265330"),
        ("Webhook-Signature", sig.as_str()),
    ]);
    assert!(v.verify_at(&mixed, body, 1614265330).is_ok());
}

#[test]
fn rotation_accepts_any_configured_secret() {
    let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let new = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let both = Verifier::with_secrets([new, old]).unwrap();
    for s in [old, new] {
        let sig = Verifier::new(s).unwrap().sign("m", 10, b"{}");
        let h = WebhookHeaders {
            id: Some("m"),
            timestamp: Some("10"),
            signature: Some(&sig),
        };
        assert!(both.verify_at(&h, b"{}", 10).is_ok());
    }
    assert_eq!(
        Verifier::with_secrets(Vec::<String>::new()).unwrap_err(),
        WebhookError::EmptySecret
    );
    assert_eq!(
        Verifier::with_secrets([new, "whsec_%"]).unwrap_err(),
        WebhookError::InvalidSecret
    );
}

#[test]
fn configuration_mistakes_are_internal_and_bad_deliveries_are_bad_requests() {
    // The operator's mistakes: 500, never "400 to the sender".
    for e in [
        Verifier::new("").unwrap_err(),
        Verifier::new("whsec_").unwrap_err(),
        Verifier::new("whsec_%").unwrap_err(),
        Verifier::from_secrets([]).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
    }
    // The sender's: 400.
    let v = Verifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let no_headers = v
        .verify_at(&WebhookHeaders::default(), b"{}", 10)
        .unwrap_err();
    assert_eq!(no_headers.kind(), ErrorKind::BadRequest);
    let forged = WebhookHeaders {
        id: Some("m"),
        timestamp: Some("10"),
        signature: Some("v1,AAAA"),
    };
    let e = v.verify_at(&forged, b"{}", 10).unwrap_err();
    assert_eq!(
        (e.clone(), e.kind()),
        (WebhookError::NoMatchingSignature, ErrorKind::BadRequest)
    );
    // Raw key bytes (a vault) verify what the same key as `whsec_` text signed.
    let raw =
        Verifier::from_secrets([Secret::from_bytes(b"raw key from a vault").unwrap()]).unwrap();
    let text = format!("whsec_{}", B64.encode(b"raw key from a vault"));
    let sig = Verifier::new(&text).unwrap().sign("m", 10, b"{}");
    let signed = WebhookHeaders {
        signature: Some(&sig),
        ..forged
    };
    assert!(raw.verify_at(&signed, b"{}", 10).is_ok());
    assert_eq!(
        v.verify_at(&signed, b"{}", 10).unwrap_err(),
        WebhookError::NoMatchingSignature
    );
}

fn random_text(rng: &mut StdRng, max: usize) -> String {
    let n = rng.random_range(0..=max);
    (0..n)
        .map(|_| match rng.random_range(0..10) {
            0 => char::from_u32(rng.random_range(0x80..0x2FFF)).unwrap_or('é'),
            1 => ' ',
            2 => ',',
            _ => rng.random_range(b'!'..=b'~') as char,
        })
        .collect()
}

#[test]
fn cross_check_with_the_standardwebhooks_crate() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for i in 0..500 {
        let key: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
        let secret = format!("whsec_{}", B64.encode(&key));
        // Header values are visible ASCII on the wire.
        let id: String = format!("msg_{}", random_text(&mut rng, 20))
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .collect();
        let body = random_text(&mut rng, 2000);
        let ts = unix_now() - rng.random_range(-200..200);
        let ours = Verifier::new(&secret).unwrap();
        let theirs = standardwebhooks::Webhook::new(&secret).unwrap();

        // Same signature from both.
        let sig_theirs = theirs.sign(&id, ts, body.as_bytes()).unwrap();
        assert_eq!(ours.sign(&id, ts, body.as_bytes()), sig_theirs, "case {i}");

        // Theirs signs, ours verifies.
        let ts_text = ts.to_string();
        let h = WebhookHeaders {
            id: Some(&id),
            timestamp: Some(&ts_text),
            signature: Some(&sig_theirs),
        };
        assert!(ours.verify(&h, body.as_bytes()).is_ok(), "case {i}");

        // Ours signs, theirs verifies (it reads the unbranded webhook-* names).
        let mut map = http::HeaderMap::new();
        map.insert("webhook-id", id.parse().unwrap());
        map.insert("webhook-timestamp", ts_text.parse().unwrap());
        map.insert(
            "webhook-signature",
            ours.sign(&id, ts, body.as_bytes()).parse().unwrap(),
        );
        theirs
            .verify(body.as_bytes(), &map)
            .unwrap_or_else(|e| panic!("case {i}: {e}"));

        // And both refuse a modified body.
        let other = format!("{body}x");
        assert!(ours.verify(&h, other.as_bytes()).is_err());
        assert!(theirs.verify(other.as_bytes(), &map).is_err());
    }
}

/// The verdict an independent model expects, using the `standardwebhooks` crate's signer as
/// the oracle for the tag.
fn model(secret: &str, h: &WebhookHeaders<'_>, body: &str, now: i64) -> &'static str {
    let (Some(id), Some(ts), Some(sig)) = (h.id, h.timestamp, h.signature) else {
        return if h.id.is_none() {
            "MissingHeader(id)"
        } else if h.timestamp.is_none() {
            "MissingHeader(timestamp)"
        } else {
            "MissingHeader(signature)"
        };
    };
    let Some(ts_num) = (!ts.is_empty() && ts.len() <= 19 && ts.bytes().all(|b| b.is_ascii_digit()))
        .then(|| ts.parse::<i64>().ok())
        .flatten()
    else {
        return "InvalidTimestamp";
    };
    if now - ts_num > 300 {
        return "TimestampTooOld";
    }
    if ts_num - now > 300 {
        return "FutureTimestamp";
    }
    // Signed content uses the timestamp text; for canonical digits that is `ts_num`.
    let expected = standardwebhooks::Webhook::new(secret)
        .unwrap()
        .sign(id, ts_num, body.as_bytes())
        .unwrap();
    let canonical = ts_num.to_string() == ts;
    if canonical && sig.split_ascii_whitespace().any(|e| e == expected) {
        "ok"
    } else {
        "InvalidSignature"
    }
}

#[test]
fn a_hundred_thousand_random_inputs_never_panic_and_match_the_model() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let v = Verifier::new(secret).unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    let now = 1_700_000_000;
    let mut verdicts = std::collections::BTreeMap::<&str, u32>::new();
    for _ in 0..100_000 {
        let body = random_text(&mut rng, 64);
        let id = random_text(&mut rng, 12);
        let ts_num = now + rng.random_range(-400..400);
        let ts = match rng.random_range(0..6) {
            0 => random_text(&mut rng, 12),
            1 => format!("{ts_num}.0"),
            2 => format!("-{ts_num}"),
            3 => format!("0{ts_num}"),
            _ => ts_num.to_string(),
        };
        let good = v.sign(&id, ts_num, body.as_bytes());
        let sig = match rng.random_range(0..7) {
            0 => random_text(&mut rng, 80),
            1 => {
                let mut b = good.clone().into_bytes();
                let i = rng.random_range(0..b.len());
                b[i] = rng.random_range(b'!'..=b'~');
                String::from_utf8(b).unwrap()
            }
            2 => format!("v1a,{} {}", &good[3..], random_text(&mut rng, 10)),
            3 => format!("{} {good}", random_text(&mut rng, 30)),
            4 => good.replace(',', ""),
            _ => good.clone(),
        };
        let pick = |rng: &mut StdRng, s: String| (rng.random_range(0..12) != 0).then_some(s);
        let (id, ts, sig) = (pick(&mut rng, id), pick(&mut rng, ts), pick(&mut rng, sig));
        let h = WebhookHeaders {
            id: id.as_deref(),
            timestamp: ts.as_deref(),
            signature: sig.as_deref(),
        };
        let got = v
            .verify_at(&h, body.as_bytes(), now)
            .map(|_| "ok")
            .unwrap_or_else(|e| class(&e));
        assert_eq!(got, model(secret, &h, &body, now), "{h:?} body {body:?}");
        *verdicts.entry(got).or_default() += 1;
    }
    // The generator reaches every verdict, so the model is exercised on each.
    for k in [
        "ok",
        "InvalidSignature",
        "InvalidTimestamp",
        "TimestampTooOld",
        "FutureTimestamp",
        "MissingHeader(id)",
    ] {
        assert!(
            verdicts.get(k).copied().unwrap_or(0) > 100,
            "{k}: {verdicts:?}"
        );
    }
}

#[test]
fn http_header_maps_are_read_case_insensitively() {
    let v = Verifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let body = br#"{"test": 2432232314}"#;
    let sig = v.sign("msg_1", 1614265330, body);
    let mut map = http::HeaderMap::new();
    for (name, value) in [
        ("Svix-Id", "msg_1"),
        ("SVIX-TIMESTAMP", "1614265330"),
        ("svix-Signature", sig.as_str()),
    ] {
        map.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let headers = WebhookHeaders::from_header_map(&map);
    assert_eq!(v.verify_at(&headers, body, 1614265330).unwrap().id, "msg_1");
    // A value that is not visible ASCII counts as missing, not as a panic.
    map.insert(
        "svix-id",
        http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
    );
    let headers = WebhookHeaders::from_header_map(&map);
    assert_eq!(
        v.verify_at(&headers, body, 1614265330),
        Err(WebhookError::MissingHeader(Header::Id))
    );
}
