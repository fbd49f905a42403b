//! Webhook verification cost: ours, the `standardwebhooks` crate, and a bare HMAC-SHA256 over
//! the same bytes, for 1 KiB and 256 KiB bodies; and ours for a `v1a` (Ed25519) signature.

mod support;

use std::hint::black_box;
use std::time::Instant;

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};
use pg_tenancy::webhook::{Verifier, WebhookHeaders};
use sha2::Sha256;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn main() {
    let mut c = support::criterion();
    let key =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &SECRET[6..]).unwrap();
    let ours = Verifier::new(SECRET).unwrap();
    let signing_key = SigningKey::from_bytes(&[42; 32]);
    let b64 = base64::engine::general_purpose::STANDARD;
    let public_key = format!(
        "whpk_{}",
        b64.encode(signing_key.verifying_key().as_bytes())
    );
    let ours_v1a = Verifier::with_public_key(&public_key).unwrap();
    let theirs = standardwebhooks::Webhook::new(SECRET).unwrap();
    let mut ratios = Vec::new();
    for (label, size) in [("1kib", 1024usize), ("256kib", 256 * 1024)] {
        let pattern = br#"{"a": 12345}"#;
        let body: Vec<u8> = (0..size).map(|i| pattern[i % pattern.len()]).collect();
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let ts_text = ts.to_string();
        let sig = ours.sign(id, ts, &body);
        let headers = WebhookHeaders {
            id: Some(id),
            timestamp: Some(&ts_text),
            signature: Some(&sig),
        };
        let mut map = http::HeaderMap::new();
        map.insert("webhook-id", id.parse().unwrap());
        map.insert("webhook-timestamp", ts_text.parse().unwrap());
        map.insert("webhook-signature", sig.parse().unwrap());
        assert!(ours.verify(&headers, &body).is_ok() && theirs.verify(&body, &map).is_ok());
        let content = [format!("{id}.{ts}.").as_bytes(), &body].concat();
        let sig_v1a = format!("v1a,{}", b64.encode(signing_key.sign(&content).to_bytes()));
        let headers_v1a = WebhookHeaders {
            signature: Some(&sig_v1a),
            ..headers
        };
        assert!(ours_v1a.verify(&headers_v1a, &body).is_ok());

        let mut group = c.benchmark_group(format!("webhook_{label}"));
        let name = |n: &str| format!("webhook_{label}/{n}");
        // Each routine is timed by criterion over `iters` runs, and the same time is recorded
        // for the same-run medians.
        let mut timed = |id: &str, routine: &dyn Fn()| {
            let key = name(id);
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        routine();
                    }
                    let e = t.elapsed();
                    support::record(&key, e, iters);
                    e
                })
            });
        };
        timed("tenancy", &|| {
            black_box(ours.verify(black_box(&headers), black_box(&body)).unwrap());
        });
        timed("standardwebhooks", &|| {
            theirs.verify(black_box(&body), black_box(&map)).unwrap();
        });
        timed("tenancy_v1a", &|| {
            black_box(
                ours_v1a
                    .verify(black_box(&headers_v1a), black_box(&body))
                    .unwrap(),
            );
        });
        timed("bare_hmac", &|| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(ts_text.as_bytes());
            mac.update(b".");
            mac.update(black_box(&body));
            black_box(mac.finalize());
        });
        group.finish();
        let (o, s, h) = (
            support::median(&name("tenancy")),
            support::median(&name("standardwebhooks")),
            support::median(&name("bare_hmac")),
        );
        support::report_time(&format!("time.webhook.{label}.tenancy"), o);
        support::report_time(&format!("time.webhook.{label}.standardwebhooks"), s);
        support::report_time(&format!("time.webhook.{label}.bare_hmac"), h);
        let a = support::median(&name("tenancy_v1a"));
        support::report_time(&format!("time.webhook.{label}.tenancy_v1a"), a);
        // What a public key costs over a shared secret: informational, no goal.
        support::report_ratio(&format!("ratio.webhook.{label}.v1a_vs_v1"), a / o);
        support::report_ratio(
            &format!("ratio.webhook.{label}.ours_vs_standardwebhooks"),
            s / o,
        );
        support::report_ratio(&format!("ratio.webhook.{label}.ours_vs_bare_hmac"), o / h);
        ratios.push((s / o, o / h));
    }
    // The headline figures are the less favourable of the two sizes.
    support::report_ratio(
        "ratio.webhook.ours_vs_standardwebhooks",
        ratios.iter().map(|r| r.0).fold(f64::INFINITY, f64::min),
    );
    support::report_ratio(
        "ratio.webhook.ours_vs_bare_hmac",
        ratios.iter().map(|r| r.1).fold(0.0, f64::max),
    );
    c.final_summary();
}
