//! Clerk sync against the real database: the example payloads, duplicates, out-of-order
//! deliveries, a permutation property, and malformed input.

use pg_tenancy::clerk::{ClerkSync, Outcome, Pruned, Retention, SyncError};
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
    // A name the database cannot store (a NUL byte in text): the insert fails in the database.
    let mut body: Value = serde_json::from_slice(&example("organization.created")).unwrap();
    body["data"]["name"] = json!("Acme\u{0}Corp");
    let e = deliver(&sync, "m1", body.to_string().as_bytes())
        .await
        .unwrap_err();
    assert!(matches!(e, SyncError::Database(_)), "{e}");
    assert_eq!(e.kind().http_status(), 500);
    // Rolled back: no organization, and the delivery was not recorded, so a retry may apply.
    assert_eq!(state(&pool, ACME).await.0, None);
    assert_eq!(
        deliver(&sync, "m1", &example("organization.created"))
            .await
            .unwrap(),
        Outcome::Applied
    );
}

/// An `organization.created` / `.updated` event of `org` at version `v` (unix ms).
fn org_event(kind: &str, org: &str, slug: &str, v: i64) -> Vec<u8> {
    json!({"type": format!("organization.{kind}"), "object": "event",
           "data": {"object": "organization", "id": org, "name": org, "slug": slug,
                    "created_by": format!("user_{org}"), "created_at": 1_700_000_000_000i64,
                    "updated_at": v}})
    .to_string()
    .into_bytes()
}

/// A membership event of `org`'s creator, embedding `org` at version `v` with `slug`.
fn creator_event(org: &str, slug: &str, v: i64) -> Vec<u8> {
    json!({"type": "organizationMembership.created", "object": "event",
           "data": {"object": "organization_membership", "id": format!("orgmem_{org}"),
                    "role": "org:admin",
                    "organization": {"object": "organization", "id": org, "name": org,
                                     "slug": slug, "created_by": format!("user_{org}"),
                                     "created_at": 1_700_000_000_000i64, "updated_at": v},
                    "public_user_data": {"user_id": format!("user_{org}")},
                    "created_at": v, "updated_at": v}})
    .to_string()
    .into_bytes()
}

fn slug_of(state: &(Option<OrgRow>, Vec<(String, String)>, Vec<String>)) -> Option<&str> {
    state.0.as_ref().and_then(|o| o.slug.as_deref())
}

#[tokio::test]
async fn a_slug_another_organization_holds_never_wedges_the_sync() {
    let db = crate::common::database().await;
    let (sync, pool) = sync_for(&db).await;
    // A signed-in user creates an organization in the application with the slug that the
    // provider's organization carries.
    let app = db.app_pool(1).await.unwrap();
    let squatter = UserId::new("user_squatter").unwrap();
    let squat = OrgId::from_external_id("org_squat");
    let ctx = app
        .create_organization(squat, "Squat", Some("acme-corp"), &squatter)
        .await
        .unwrap();
    // The provider's organization arrives: applied without the slug, and its events apply
    // (its creator becomes owner) instead of failing on every retry.
    assert_eq!(
        deliver(&sync, "s1", &example("organization.created"))
            .await
            .unwrap(),
        Outcome::Applied
    );
    let mut creator: Value =
        serde_json::from_slice(&example("organizationMembership.updated")).unwrap();
    creator["data"]["public_user_data"]["user_id"] = json!("user_2g7np7Hrk0SN6kj5EDMLDaKNL0S");
    assert_eq!(
        deliver(&sync, "s2", creator.to_string().as_bytes())
            .await
            .unwrap(),
        Outcome::Applied
    );
    let now = state(&pool, ACME).await;
    assert_eq!(
        (now.0.as_ref().unwrap().name.as_str(), slug_of(&now)),
        ("Acme Corp", None)
    );
    assert_eq!(
        now.1,
        vec![(
            "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S".to_owned(),
            "owner".to_owned()
        )]
    );
    // Once the squatter lets it go, the organization's next event (at least as new as the
    // stored state; here the same state again, under another message id) sets it.
    app.with_rls(&ctx, async |tx| {
        sqlx::query("UPDATE organizations SET slug = 'squat'")
            .execute(tx)
            .await?;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(
        deliver(&sync, "s3", creator.to_string().as_bytes())
            .await
            .unwrap(),
        Outcome::Applied
    );
    assert_eq!(slug_of(&state(&pool, ACME).await), Some("acme-corp"));
}

#[tokio::test]
async fn two_provider_organizations_swapping_slugs_converge_in_either_order() {
    // In the provider: A is "x" and B is "y" (version 1); then A becomes "y" and B "x"
    // (versions 2 and 3). Deliveries arrive in two different orders; each organization's next
    // event (here its creator's membership, embedding its latest state) completes the swap.
    for (case, order) in [
        ("ab", ["a1", "b1", "a2", "b3"]),
        ("ba", ["a1", "b1", "b3", "a2"]),
    ] {
        let db = crate::common::database().await;
        let (sync, pool) = sync_for(&db).await;
        let (a, b) = (format!("org_a{case}"), format!("org_b{case}"));
        for (n, step) in order.iter().enumerate() {
            let body = match *step {
                "a1" => org_event("created", &a, "x", 1_000),
                "b1" => org_event("created", &b, "y", 1_000),
                "a2" => org_event("updated", &a, "y", 2_000),
                _ => org_event("updated", &b, "x", 3_000),
            };
            let r = deliver(&sync, &format!("{case}{n}"), &body).await.unwrap();
            assert_eq!(r, Outcome::Applied, "{case}: {step}");
        }
        for (org, slug, v) in [(&a, "y", 2_000), (&b, "x", 3_000)] {
            deliver(
                &sync,
                &format!("{case}-{org}"),
                &creator_event(org, slug, v),
            )
            .await
            .unwrap();
        }
        let (sa, sb) = (state(&pool, &a).await, state(&pool, &b).await);
        assert_eq!(
            (slug_of(&sa), slug_of(&sb)),
            (Some("y"), Some("x")),
            "{case}"
        );
        assert_eq!(
            (sa.1.len(), sb.1.len()),
            (1, 1),
            "{case}: the creators are members"
        );
    }
}

#[tokio::test]
async fn an_admin_cannot_detach_their_membership_from_the_providers_removal() {
    let db = crate::common::database().await;
    let (sync, pool) = sync_for(&db).await;
    deliver(&sync, "r1", &example("organizationMembership.updated"))
        .await
        .unwrap();
    let app = db.app_pool(1).await.unwrap();
    let jane = UserId::new(JANE).unwrap();
    let ctx = app
        .authorize(&jane, OrgId::from_external_id(ACME))
        .await
        .unwrap();
    assert_eq!(ctx.role(), Role::Admin);
    // Jane (admin) rewrites her own membership's provider id: refused.
    let e = app
        .with_rls(&ctx, async |tx| {
            sqlx::query(
                "UPDATE organization_members SET external_id = 'orgmem_mine' WHERE user_id = $1",
            )
            .bind(&jane)
            .execute(tx)
            .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), pg_tenancy::ErrorKind::Forbidden, "{e}");
    // The provider's removal finds and removes her.
    assert_eq!(
        deliver(&sync, "r2", &example("organizationMembership.deleted"))
            .await
            .unwrap(),
        Outcome::Applied
    );
    assert!(state(&pool, ACME).await.1.is_empty());
    assert!(matches!(
        app.authorize(&jane, OrgId::from_external_id(ACME)).await,
        Err(Error::NotAMember)
    ));
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

/// How many removals (and how many of them local) and tombstones a service unit of `org`
/// sees.
async fn bookkeeping(pool: &ServicePool, org: OrgId) -> (i64, i64, i64) {
    pool.with_org(org, async |tx| {
        Ok::<_, Error>(
            sqlx::query_as(
                "SELECT (SELECT count(*) FROM membership_removals), \
                        (SELECT count(*) FROM membership_removals WHERE local), \
                        (SELECT count(*) FROM membership_tombstones)",
            )
            .fetch_one(tx)
            .await?,
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn tombstones_and_the_providers_removals_are_pruned_local_removals_stand() {
    let db = crate::common::database().await;
    let (sync, pool) = sync_for(&db).await;
    let acme = OrgId::from_external_id(ACME);
    // The provider adds and removes Jane: a tombstone and the provider's removal.
    for (id, name) in [
        ("b1", "organizationMembership.updated"),
        ("b2", "organizationMembership.deleted"),
    ] {
        deliver(&sync, id, &example(name)).await.unwrap();
    }
    assert_eq!(bookkeeping(&pool, acme).await, (1, 0, 1));
    // An owner removes a member in the application: a local removal.
    let app = db.app_pool(1).await.unwrap();
    let local = OrgId::from_external_id("org_local");
    let (owner, bob) = (
        UserId::new("user_owner").unwrap(),
        UserId::new("user_bob").unwrap(),
    );
    let ctx = app
        .create_organization(local, "Local", None, &owner)
        .await
        .unwrap();
    app.add_member(&ctx, &bob, Role::Member).await.unwrap();
    let remove = async |sql: &'static str| {
        app.with_rls(&ctx, async |tx| {
            sqlx::query(sql).bind(&bob).execute(tx).await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap()
    };
    remove("DELETE FROM organization_members WHERE user_id = $1").await;
    assert_eq!(bookkeeping(&pool, local).await, (1, 1, 0));
    // Younger than the horizon: kept.
    let none = sync
        .prune(&Retention::all(std::time::Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(none, Pruned::default());
    // Older: the deliveries, the tombstone and the provider's removal go; the local removal
    // stands (it is the application's decision, not a record of the past).
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let pruned = sync
        .prune(&Retention::all(std::time::Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(
        (pruned.deliveries, pruned.tombstones, pruned.removals),
        (2, 1, 1)
    );
    assert_eq!(bookkeeping(&pool, acme).await, (0, 0, 0));
    assert_eq!(bookkeeping(&pool, local).await, (1, 1, 0));
    // An organization marked deleted keeps no removals.
    remove("UPDATE organizations SET deleted_at = now() WHERE $1::text IS NOT NULL").await;
    assert_eq!(bookkeeping(&pool, local).await, (0, 0, 0));
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
