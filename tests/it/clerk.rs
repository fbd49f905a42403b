//! Clerk sync against the real database: the example payloads, duplicates, out-of-order
//! deliveries, a permutation property, and malformed input.

use pg_tenancy::clerk::{ClerkSync, Outcome, SyncError};
use pg_tenancy::testing::TestDatabase;
use pg_tenancy::webhook::{Verifier, WebhookHeaders};
use pg_tenancy::{Error, OrgId, Role, ServicePool, UserId};
use proptest::prelude::*;
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NOW: i64 = 1_716_883_300;

fn example(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/data/clerk-events/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(path).unwrap()
}

async fn sync_for(db: &TestDatabase) -> (ClerkSync, ServicePool) {
    let service = db.service_pool(4).await.unwrap();
    (
        ClerkSync::new(service.clone(), Verifier::new(SECRET).unwrap()),
        service,
    )
}

/// Signs `body` as Svix would and hands it to the sync.
async fn deliver(sync: &ClerkSync, id: &str, body: &[u8]) -> Result<Outcome, SyncError> {
    let sig = Verifier::new(SECRET).unwrap().sign(id, NOW, body);
    let ts = NOW.to_string();
    let headers = WebhookHeaders {
        id: Some(id),
        timestamp: Some(&ts),
        signature: Some(&sig),
    };
    sync.handle_at(&headers, body, NOW).await
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct OrgRow {
    name: String,
    slug: Option<String>,
    deleted: bool,
    version: Option<i64>,
}

/// The synced state of one organization, read through RLS in a service unit of that
/// organization.
async fn state(
    pool: &ServicePool,
    external_id: &str,
) -> (Option<OrgRow>, Vec<(String, String)>, Vec<String>) {
    let org = OrgId::from_external_id(external_id);
    pool.with_org(org, async |tx| {
        let row: Option<(String, Option<String>, bool, Option<i64>)> = sqlx::query_as(
            "SELECT name, slug, deleted_at IS NOT NULL, external_updated_at FROM organizations",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let members: Vec<(String, String)> =
            sqlx::query_as("SELECT user_id, role FROM organization_members ORDER BY user_id")
                .fetch_all(&mut *tx)
                .await?;
        let tombstones: Vec<String> = sqlx::query_scalar(
            "SELECT external_id FROM membership_tombstones ORDER BY external_id",
        )
        .fetch_all(&mut *tx)
        .await?;
        Ok::<_, Error>((
            row.map(|(name, slug, deleted, version)| OrgRow {
                name,
                slug,
                deleted,
                version,
            }),
            members,
            tombstones,
        ))
    })
    .await
    .unwrap()
}

const ACME: &str = "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S";
const JANE: &str = "user_2h8op3Isl1QR7tKu5FGNfaLKEoU";

#[tokio::test]
async fn each_example_payload_applies_with_the_expected_rows() {
    let db = crate::common::database().await;
    let (sync, pool) = sync_for(&db).await;

    assert_eq!(
        deliver(&sync, "msg_1", &example("organization.created"))
            .await
            .unwrap(),
        Outcome::Applied
    );
    let (org, members, _) = state(&pool, ACME).await;
    let org = org.unwrap();
    assert_eq!(
        (org.name.as_str(), org.slug.as_deref(), org.deleted),
        ("Acme Corp", Some("acme-corp"), false)
    );
    assert!(members.is_empty());

    assert_eq!(
        deliver(&sync, "msg_2", &example("organization.updated"))
            .await
            .unwrap(),
        Outcome::Applied
    );
    let org = state(&pool, ACME).await.0.unwrap();
    assert_eq!(
        (org.name.as_str(), org.slug.as_deref()),
        ("Acme Corp Updated", Some("acme-corp-updated"))
    );
    assert_eq!(org.version, Some(1716883500000));

    assert_eq!(
        deliver(&sync, "msg_3", &example("organizationMembership.created"))
            .await
            .unwrap(),
        Outcome::Applied
    );
    let (org, members, _) = state(&pool, ACME).await;
    // The embedded organization (updated_at ...200000) is older than the stored one: kept.
    assert_eq!(org.unwrap().name, "Acme Corp Updated");
    assert_eq!(members, vec![(JANE.to_owned(), "member".to_owned())]);

    assert_eq!(
        deliver(&sync, "msg_4", &example("organizationMembership.updated"))
            .await
            .unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        state(&pool, ACME).await.1,
        vec![(JANE.to_owned(), "admin".to_owned())]
    );
    // Request authorization agrees with the sync: same OrgId, role from the database.
    let ctx = db
        .app_pool(1)
        .await
        .unwrap()
        .authorize(&UserId::new(JANE).unwrap(), OrgId::from_external_id(ACME))
        .await
        .unwrap();
    assert_eq!(ctx.role(), Role::Admin);

    assert_eq!(
        deliver(&sync, "msg_5", &example("organizationMembership.deleted"))
            .await
            .unwrap(),
        Outcome::Applied
    );
    let (_, members, tombstones) = state(&pool, ACME).await;
    assert!(members.is_empty());
    assert_eq!(
        tombstones,
        vec!["orgmem_2g7np7Hrk0SN6kj5EDMLDaKNL0S".to_owned()]
    );

    assert_eq!(
        deliver(&sync, "msg_6", &example("organization.deleted"))
            .await
            .unwrap(),
        Outcome::Applied
    );
    let org = state(&pool, ACME).await.0.unwrap();
    assert!(org.deleted);
    assert_eq!(org.slug, None, "the slug is freed");
    let e = db
        .app_pool(1)
        .await
        .unwrap()
        .authorize(&UserId::new(JANE).unwrap(), OrgId::from_external_id(ACME))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotAMember));
}

#[tokio::test]
async fn the_creator_becomes_owner() {
    let db = crate::common::database().await;
    let (sync, pool) = sync_for(&db).await;
    let mut body: Value =
        serde_json::from_slice(&example("organizationMembership.updated")).unwrap();
    body["data"]["public_user_data"]["user_id"] = json!("user_2g7np7Hrk0SN6kj5EDMLDaKNL0S");
    deliver(&sync, "msg_c", body.to_string().as_bytes())
        .await
        .unwrap();
    assert_eq!(
        state(&pool, ACME).await.1,
        vec![(
            "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S".to_owned(),
            "owner".to_owned()
        )]
    );
}

#[tokio::test]
async fn duplicates_and_out_of_order_deliveries() {
    let db = crate::common::database().await;
    let (sync, pool) = sync_for(&db).await;

    // A membership event for an organization not yet created creates it.
    assert_eq!(
        deliver(&sync, "m_mem", &example("organizationMembership.updated"))
            .await
            .unwrap(),
        Outcome::Applied
    );
    let (org, members, _) = state(&pool, ACME).await;
    assert_eq!(org.unwrap().name, "Acme Corp", "from the embedded snapshot");
    assert_eq!(members, vec![(JANE.to_owned(), "admin".to_owned())]);

    // The same svix-id again: nothing.
    let before = state(&pool, ACME).await;
    assert_eq!(
        deliver(&sync, "m_mem", &example("organizationMembership.updated"))
            .await
            .unwrap(),
        Outcome::Duplicate
    );
    assert_eq!(state(&pool, ACME).await, before);

    // organization.updated at the snapshot's updated_at: the organization event wins the tie.
    assert_eq!(
        deliver(&sync, "m_upd", &example("organization.updated"))
            .await
            .unwrap(),
        Outcome::Applied
    );
    // Then the older created: it changes nothing.
    assert_eq!(
        deliver(&sync, "m_cre", &example("organization.created"))
            .await
            .unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(
        state(&pool, ACME).await.0.unwrap().name,
        "Acme Corp Updated"
    );

    // The older membership.created after the newer update: the role stays admin.
    assert_eq!(
        deliver(&sync, "m_memc", &example("organizationMembership.created"))
            .await
            .unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(
        state(&pool, ACME).await.1,
        vec![(JANE.to_owned(), "admin".to_owned())]
    );

    // Deleted, and deleted again under another delivery id: idempotent.
    assert_eq!(
        deliver(&sync, "m_del1", &example("organization.deleted"))
            .await
            .unwrap(),
        Outcome::Applied
    );
    let after_delete = state(&pool, ACME).await;
    assert_eq!(
        deliver(&sync, "m_del2", &example("organization.deleted"))
            .await
            .unwrap(),
        Outcome::Unchanged
    );
    // A late created / updated / membership after deleted does not bring it back.
    for (id, name) in [
        ("late1", "organization.created"),
        ("late2", "organizationMembership.created"),
    ] {
        assert_eq!(
            deliver(&sync, id, &example(name)).await.unwrap(),
            Outcome::Unchanged,
            "{name}"
        );
    }
    let (org, members, _) = state(&pool, ACME).await;
    assert!(org.unwrap().deleted && members.is_empty());
    assert_eq!(state(&pool, ACME).await.1, after_delete.1);
}

#[tokio::test]
async fn bad_signatures_and_malformed_payloads_leave_the_database_unchanged() {
    let db = crate::common::database().await;
    let (sync, pool) = sync_for(&db).await;
    deliver(&sync, "m0", &example("organization.created"))
        .await
        .unwrap();
    let before = state(&pool, ACME).await;
    let mut wrong_type: Value = serde_json::from_slice(&example("organization.updated")).unwrap();
    wrong_type["data"]["updated_at"] = json!("yesterday");
    let mut no_user: Value =
        serde_json::from_slice(&example("organizationMembership.created")).unwrap();
    no_user["data"]
        .as_object_mut()
        .unwrap()
        .remove("public_user_data");
    let mut no_org_id: Value = serde_json::from_slice(&example("organization.updated")).unwrap();
    no_org_id["data"].as_object_mut().unwrap().remove("id");
    for (i, body) in [
        b"{not json".to_vec(),
        b"[]".to_vec(),
        wrong_type.to_string().into_bytes(),
        no_user.to_string().into_bytes(),
        no_org_id.to_string().into_bytes(),
    ]
    .into_iter()
    .enumerate()
    {
        let e = deliver(&sync, &format!("bad{i}"), &body).await.unwrap_err();
        assert!(matches!(e, SyncError::Payload(_)), "{i}: {e}");
        assert_eq!(e.kind().http_status(), 400);
    }
    // Properly shaped but signed with another secret.
    let body = example("organization.updated");
    let sig = Verifier::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
        .unwrap()
        .sign("forged", NOW, &body);
    let ts = NOW.to_string();
    let h = WebhookHeaders {
        id: Some("forged"),
        timestamp: Some(&ts),
        signature: Some(&sig),
    };
    let e = sync.handle_at(&h, &body, NOW).await.unwrap_err();
    assert!(matches!(e, SyncError::Signature(_)));
    assert_eq!(e.kind().http_status(), 400);
    // Other event types: acknowledged, nothing written.
    let user_created = br#"{"type": "user.created", "object": "event", "data": {"id": "user_1"}}"#;
    assert_eq!(
        deliver(&sync, "other", user_created).await.unwrap(),
        Outcome::Ignored
    );
    assert_eq!(state(&pool, ACME).await, before);
}

#[tokio::test]
async fn database_failures_are_500_and_roll_back() {
    let db = crate::common::database().await;
    let (sync, pool) = sync_for(&db).await;
    // Another organization already holds the slug: the insert fails in the database.
    let taken = OrgId::from_external_id("org_other");
    db.app_pool(1)
        .await
        .unwrap()
        .create_organization(
            taken,
            "Other",
            Some("acme-corp"),
            &UserId::new("user_o").unwrap(),
        )
        .await
        .unwrap();
    let e = deliver(&sync, "m1", &example("organization.created"))
        .await
        .unwrap_err();
    assert!(matches!(e, SyncError::Database(_)), "{e}");
    assert_eq!(e.kind().http_status(), 500);
    // Rolled back: no organization, and the delivery was not recorded, so a retry may apply.
    assert_eq!(state(&pool, ACME).await.0, None);
}

#[tokio::test]
async fn old_delivery_records_are_pruned_without_a_bypass() {
    let db = crate::common::database().await;
    let (sync, _pool) = sync_for(&db).await;
    deliver(&sync, "p1", &example("organization.created"))
        .await
        .unwrap();
    deliver(&sync, "p2", &example("organization.updated"))
        .await
        .unwrap();
    assert_eq!(
        sync.prune_deliveries(std::time::Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(
        sync.prune_deliveries(std::time::Duration::ZERO)
            .await
            .unwrap(),
        2
    );
    // Pruned ids are no longer duplicates (keep records longer than Svix retries).
    assert_eq!(
        deliver(&sync, "p2", &example("organization.updated"))
            .await
            .unwrap(),
        Outcome::Unchanged
    );
}

// ---- permutation property ----------------------------------------------------------------

/// A plausible history for one organization: created, renamed, members added, promoted,
/// removed, re-invited; sometimes deleted at the end. Versions increase along the history.
fn history(org: &str, seed: u64) -> Vec<Value> {
    let mut t: i64 = 1_700_000_000_000;
    let mut next = |step: u64| {
        t += 1000 + (seed % 7 + step) as i64;
        t
    };
    let org_obj = |name: &str, slug: &str, v: i64| {
        json!({"object": "organization", "id": org, "name": name, "slug": slug,
               "created_by": format!("user_{org}_0"), "created_at": 1_700_000_000_000i64, "updated_at": v})
    };
    let mut events = Vec::new();
    let v0 = next(0);
    events.push(
        json!({"type": "organization.created", "data": org_obj("First", &format!("{org}-a"), v0)}),
    );
    let mut current_org = org_obj("First", &format!("{org}-a"), v0);
    let users = 2 + (seed % 3) as usize;
    for u in 0..users {
        let user = format!("user_{org}_{u}");
        let mem_id = format!("orgmem_{org}_{u}_1");
        let c = next(1);
        let role = if u == 0 { "org:admin" } else { "org:member" };
        let mem = |id: &str, role: &str, created: i64, v: i64, o: &Value| {
            json!({"object": "organization_membership", "id": id, "role": role, "organization": o,
                   "public_user_data": {"user_id": user}, "created_at": created, "updated_at": v})
        };
        events.push(json!({"type": "organizationMembership.created", "data": mem(&mem_id, role, c, c, &current_org)}));
        if (seed >> u) & 1 == 1 {
            let v = next(2);
            events.push(json!({"type": "organizationMembership.updated", "data": mem(&mem_id, "org:admin", c, v, &current_org)}));
            if (seed >> (u + 3)) & 1 == 1 {
                events.push(json!({"type": "organizationMembership.deleted", "data": mem(&mem_id, "org:admin", c, v, &current_org)}));
                if (seed >> (u + 6)) & 1 == 1 {
                    let c2 = next(3);
                    let again = format!("orgmem_{org}_{u}_2");
                    events.push(json!({"type": "organizationMembership.created", "data": mem(&again, "org:member", c2, c2, &current_org)}));
                }
            }
        }
        if u == 0 {
            let v = next(4);
            current_org = org_obj("Renamed", &format!("{org}-b"), v);
            events.push(json!({"type": "organization.updated", "data": current_org.clone()}));
        }
    }
    if seed.is_multiple_of(5) {
        events.push(json!({"type": "organization.deleted", "data": {"object": "organization", "id": org, "deleted": true}}));
    }
    events
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Any permutation of a history, with duplicate deliveries, converges to the state that
    /// in-order delivery produces.
    #[test]
    fn any_permutation_with_duplicates_converges(
        seed in 0u64..512,
        order in Just(()).prop_perturb(|_, mut rng| {
            let mut keys: Vec<u32> = (0..64).map(|_| rng.random()).collect();
            keys.push(0);
            keys
        }),
        dups in proptest::collection::vec(0usize..64, 0..6),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let db = crate::common::database().await;
            let (sync, pool) = sync_for(&db).await;
            // Two organizations per case, one applied in order, one permuted.
            let in_order = format!("org_o{seed}");
            let permuted = format!("org_p{seed}");
            let h_in = history(&in_order, seed);
            let h_perm = history(&permuted, seed);
            for (i, e) in h_in.iter().enumerate() {
                deliver(&sync, &format!("in-{i}"), e.to_string().as_bytes()).await.unwrap();
            }
            // Shuffle by random keys, then re-deliver some (same message ids).
            let mut idx: Vec<usize> = (0..h_perm.len()).collect();
            idx.sort_by_key(|&i| order[i % order.len()].wrapping_mul(i as u32 + 1));
            for d in &dups {
                idx.push(idx[d % idx.len()]);
            }
            let mut delivered = std::collections::HashSet::new();
            for i in idx {
                let r = deliver(&sync, &format!("p-{i}"), h_perm[i].to_string().as_bytes()).await.unwrap();
                if delivered.insert(i) {
                    // A first delivery is applied, or is older than what is stored.
                    assert!(matches!(r, Outcome::Applied | Outcome::Unchanged), "{r:?}");
                } else {
                    // The same message id again changes nothing, whatever happened since.
                    assert_eq!(r, Outcome::Duplicate);
                }
            }
            let (o1, m1, t1) = state(&pool, &in_order).await;
            let (o2, m2, t2) = state(&pool, &permuted).await;
            let rename = |s: Option<String>| s.map(|s| s.replace(&permuted, &in_order));
            let o2 = o2.map(|o| OrgRow { slug: rename(o.slug), ..o });
            let m2: Vec<_> = m2.into_iter().map(|(u, r)| (u.replace(&permuted, &in_order), r)).collect();
            let t2: Vec<_> = t2.into_iter().map(|t| t.replace(&permuted, &in_order)).collect();
            assert_eq!(o1, o2, "organization, seed {seed}");
            assert_eq!(m1, m2, "members, seed {seed}");
            assert_eq!(t1, t2, "tombstones, seed {seed}");
            // The state compared is not the empty one on both sides.
            assert!(o1.is_some(), "seed {seed}");
        });
    }
}

#[tokio::test]
async fn every_delivery_has_a_span_with_its_message_event_and_outcome() {
    use crate::spans::{Spans, field};
    let db = crate::common::database().await;
    let (sync, _) = sync_for(&db).await;
    let spans = Spans::start();
    let body = example("organization.created");
    deliver(&sync, "msg_1", &body).await.unwrap();
    deliver(&sync, "msg_1", &body).await.unwrap();
    let forged = WebhookHeaders {
        id: Some("msg_2"),
        timestamp: Some("1"),
        signature: Some("v1,AAAA"),
    };
    assert!(sync.handle_at(&forged, &body, NOW).await.is_err());
    let summary: Vec<_> = spans
        .named("tenancy.webhook")
        .iter()
        .map(|f| {
            (
                field(f, "message_id").map(str::to_owned),
                field(f, "event_type").map(str::to_owned),
                field(f, "outcome").map(str::to_owned),
            )
        })
        .collect();
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        summary,
        vec![
            (s("msg_1"), s("organization.created"), s("Applied")),
            (s("msg_1"), s("organization.created"), s("Duplicate")),
            // Refused before verification: no message id is trusted, none recorded.
            (None, None, s("BadRequest")),
        ]
    );
    // The delivery's service unit nests its own span.
    assert!(!spans.named("tenancy.unit").is_empty());
}
