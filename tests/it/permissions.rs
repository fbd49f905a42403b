//! Permissions checked by the database: a role's permissions (`tenancy_roles`), set by the
//! service path, reach every unit of its members at the entry, and a permission-guarded policy
//! (the generator's `--write-permission`) admits a write only while the role grants it.

use pg_tenancy::audit::{PolicyOptions, policy_sql_with};
use pg_tenancy::clerk::{Change, ClerkSync, Event, Outcome};
use pg_tenancy::webhook::Verifier;
use pg_tenancy::{ContextKey, Error, OrgContext, OrgId, Role, ServicePool, TenantPool, UserId};
use uuid::Uuid;

use crate::common::{As, World, world};

const WRITE: &str = "org:invoices:write";

/// A world with the example application's `invoices` table (the generator's
/// `--write-permission org:invoices:write` form: members read, writing needs the permission),
/// granted to both roles.
async fn invoices_world(role: As) -> (World, ServicePool) {
    let w = world(role).await;
    w.db.grant_app(&["invoices"]).await.unwrap();
    w.db.grant_service(&["invoices"]).await.unwrap();
    let service = w.db.service_pool(2).await.unwrap();
    (w, service)
}

/// Inserts an invoice in the context's organization; the number of rows written.
async fn insert(pool: &TenantPool, ctx: &OrgContext) -> Result<u64, Error> {
    pool.with_rls(ctx, async |tx| {
        Ok(sqlx::query(
            "INSERT INTO invoices (organization_id, number, amount_cents) \
             VALUES ((SELECT tenancy_current_org_id()), 'INV', 10)",
        )
        .execute(tx)
        .await?
        .rows_affected())
    })
    .await
}

/// One value read in a read unit of `ctx`.
async fn read_one<T>(pool: &TenantPool, ctx: &OrgContext, sql: &'static str) -> T
where
    T: Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    pool.with_rls_read(ctx, async |tx| {
        Ok::<_, Error>(sqlx::query_scalar(sql).fetch_one(tx).await?)
    })
    .await
    .unwrap()
}

async fn count(pool: &TenantPool, ctx: &OrgContext) -> i64 {
    read_one(pool, ctx, "SELECT count(*) FROM invoices").await
}

fn sqlstate(e: &Error) -> Option<String> {
    match e {
        Error::Database(sqlx::Error::Database(db)) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

async fn unit_permissions(pool: &TenantPool, ctx: &OrgContext) -> Vec<String> {
    read_one(pool, ctx, "SELECT tenancy_current_permissions()").await
}

#[tokio::test]
async fn a_write_needs_the_permission_the_role_holds_at_the_write() {
    for role in [As::App, As::Owner] {
        let (w, service) = invoices_world(role).await;
        let (admin, member) = (w.a.ctx(Role::Admin), w.a.ctx(Role::Member));
        // No role grants it yet: nobody writes, the owner included.
        for ctx in [&w.a.ctx(Role::Owner), &admin, &member] {
            let e = insert(&w.pool, ctx).await.unwrap_err();
            assert!(e.is_rls_violation(), "{role:?}: {e}");
        }
        // Admins get it (memberships the application made: their role names the role).
        service
            .set_role_permissions("admin", [WRITE, "org:invoices:read"])
            .await
            .unwrap();
        assert_eq!(insert(&w.pool, &admin).await.unwrap(), 1);
        assert_eq!(
            unit_permissions(&w.pool, &admin).await,
            ["org:invoices:read", WRITE]
        );
        let e = insert(&w.pool, &member).await.unwrap_err();
        assert!(e.is_rls_violation(), "{e}");
        assert!(unit_permissions(&w.pool, &member).await.is_empty());
        // Every member reads; the permission is per organization: B's admin writes B's only.
        assert_eq!(count(&w.pool, &member).await, 1);
        assert_eq!(insert(&w.pool, &w.b.ctx(Role::Admin)).await.unwrap(), 1);
        assert_eq!(count(&w.pool, &member).await, 1);
        // Control: members get it too, and write.
        service
            .set_role_permissions("member", [WRITE])
            .await
            .unwrap();
        assert_eq!(insert(&w.pool, &member).await.unwrap(), 1);
        // Taken away from admins: the same context writes no more (the database's view at the
        // write, not the application's).
        service
            .set_role_permissions("admin", ["org:invoices:read"])
            .await
            .unwrap();
        let e = insert(&w.pool, &admin).await.unwrap_err();
        assert!(e.is_rls_violation(), "{e}");
        // Nor update or delete another's rows.
        let changed = w
            .pool
            .with_rls(&admin, async |tx| {
                Ok::<_, Error>(
                    sqlx::query("UPDATE invoices SET amount_cents = 0")
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                        + sqlx::query("DELETE FROM invoices")
                            .execute(&mut *tx)
                            .await?
                            .rows_affected(),
                )
            })
            .await
            .unwrap();
        assert_eq!(changed, 0);
        assert_eq!(count(&w.pool, &member).await, 2);
    }
}

/// A unit that acts with a lower role than its membership holds gets no permissions (the
/// database does not know what the lower role's key would grant); one acting with its
/// membership's role gets them.
#[tokio::test]
async fn a_unit_acting_below_its_membership_gets_no_permissions() {
    let (w, service) = invoices_world(As::App).await;
    service
        .set_role_permissions("owner", [WRITE])
        .await
        .unwrap();
    service
        .set_role_permissions("admin", [] as [&str; 0])
        .await
        .unwrap();
    let owner_as_admin = OrgContext::from_verified_session(w.a.id, w.a.owner.clone(), Role::Admin);
    assert!(unit_permissions(&w.pool, &owner_as_admin).await.is_empty());
    let e = insert(&w.pool, &owner_as_admin).await.unwrap_err();
    assert!(e.is_rls_violation(), "{e}");
    // Control: as the owner it is.
    assert_eq!(
        unit_permissions(&w.pool, &w.a.ctx(Role::Owner)).await,
        [WRITE]
    );
    assert_eq!(insert(&w.pool, &w.a.ctx(Role::Owner)).await.unwrap(), 1);
    // with_member acts with the membership's role.
    let n = w
        .pool
        .with_member(&w.a.owner, w.a.id, Role::Member, async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar::<_, Vec<String>>("SELECT tenancy_current_permissions()")
                    .fetch_one(tx)
                    .await?,
            )
        })
        .await
        .unwrap();
    assert_eq!(n, [WRITE]);
}

/// The provider's role key on a membership names its permissions, and only the service path
/// writes it: an admin who set their own to a role with more permissions would grant
/// themselves those (TNC11).
#[tokio::test]
async fn only_the_service_path_sets_a_memberships_role_key() {
    let (w, service) = invoices_world(As::App).await;
    service
        .set_role_permissions("org:billing", [WRITE])
        .await
        .unwrap();
    let admin = w.a.ctx(Role::Admin);
    let set_own_key = async |pool: &TenantPool| {
        pool.with_rls(&admin, async |tx| {
            sqlx::query(
                "UPDATE organization_members SET role_key = 'org:billing' WHERE user_id = $1",
            )
            .bind(w.a.admin.as_str())
            .execute(tx)
            .await
            .map_err(Error::from)
        })
        .await
    };
    let e = set_own_key(&w.pool).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("TNC11"), "{e}");
    let e = insert(&w.pool, &admin).await.unwrap_err();
    assert!(e.is_rls_violation(), "{e}");
    // Control: the service path sets it, and the admin's next unit holds the role's permission.
    let member = w.a.admin.clone();
    service
        .with_org(w.a.id, async |tx| {
            sqlx::query(
                "UPDATE organization_members SET role_key = 'org:billing' WHERE user_id = $1",
            )
            .bind(member.as_str())
            .execute(tx)
            .await
            .map_err(Error::from)
        })
        .await
        .unwrap();
    assert_eq!(insert(&w.pool, &admin).await.unwrap(), 1);
}

/// Hardened mode seals the permissions with the rest of the context: SQL in a unit that sets
/// them itself holds none (the seal no longer holds); the genuine ones work.
#[tokio::test]
async fn hardened_mode_seals_the_permissions() {
    let (w, service) = invoices_world(As::App).await;
    service
        .set_role_permissions("admin", ["org:invoices:read"])
        .await
        .unwrap();
    service
        .set_role_permissions("member", [WRITE])
        .await
        .unwrap();
    let key = ContextKey::generate();
    let pool = w.db.harden(&key, 2).await.unwrap();
    let org = w.a.id;
    let forged = pool
        .with_rls(&w.a.ctx(Role::Admin), async |tx| {
            sqlx::query(
                "SELECT set_config('app.current_permissions', ',org:invoices:write,', true)",
            )
            .execute(&mut *tx)
            .await?;
            let with: Option<Uuid> =
                sqlx::query_scalar("SELECT tenancy_current_org_id_with('org:invoices:write')")
                    .fetch_one(&mut *tx)
                    .await?;
            let wrote = sqlx::query(
                "INSERT INTO invoices (organization_id, number, amount_cents) VALUES ($1, 'X', 1)",
            )
            .bind(org.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(Error::from);
            Ok::<_, Error>((with, wrote.map(|r| r.rows_affected())))
        })
        .await
        .unwrap();
    assert_eq!(forged.0, None);
    let e = forged.1.unwrap_err();
    assert!(e.is_rls_violation(), "{e}");
    // Control: the member's genuine permission writes, sealed.
    assert_eq!(insert(&pool, &w.a.ctx(Role::Member)).await.unwrap(), 1);
    assert_eq!(
        unit_permissions(&pool, &w.a.ctx(Role::Member)).await,
        [WRITE]
    );
    // And the admin's genuine read permission is there, without the write.
    assert_eq!(
        unit_permissions(&pool, &w.a.ctx(Role::Admin)).await,
        ["org:invoices:read"]
    );
    let e = insert(&pool, &w.a.ctx(Role::Admin)).await.unwrap_err();
    assert!(e.is_rls_violation(), "{e}");
}

/// The generator's permission-guarded table (the example's migration is its output) passes
/// the audit as the application role, and is what the generator prints.
#[tokio::test]
async fn the_generated_policy_passes_the_audit() {
    let (w, _service) = invoices_world(As::App).await;
    let example = std::fs::read_to_string(format!(
        "{}/examples/migrations/20260201000002_invoices.sql",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let generated = policy_sql_with(
        "invoices",
        &PolicyOptions::default()
            .with_write_permission(WRITE)
            .with_hidden_statistics("number"),
    );
    for line in generated
        .lines()
        .filter(|l| !l.starts_with("--") && !l.contains("INDEX"))
    {
        assert!(example.contains(line), "{line}");
    }
    let pool = sqlx::PgPool::connect_with(w.db.app_options())
        .await
        .unwrap();
    let report = pg_tenancy::audit::audit(&pool, &pg_tenancy::audit::AuditOptions::default())
        .await
        .unwrap();
    assert_eq!(report.findings, vec![], "{report}");
}

/// The Clerk sync over `service` (the events are applied as verified).
fn clerk_sync(service: &ServicePool) -> ClerkSync {
    ClerkSync::new(
        service.clone(),
        Verifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
    )
}

fn example(name: &str) -> Event {
    let path = format!(
        "{}/tests/data/clerk-events/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    Event::parse(&std::fs::read(path).unwrap()).unwrap()
}

/// Sets the provider's role key of `user`'s membership in `org`, as the sync does.
async fn set_role_key(service: &ServicePool, org: OrgId, user: &UserId, key: &str) {
    service
        .with_org(org, async |tx| {
            sqlx::query("UPDATE organization_members SET role_key = $1 WHERE user_id = $2")
                .bind(key)
                .bind(user.as_str())
                .execute(tx)
                .await
                .map_err(Error::from)
        })
        .await
        .unwrap();
}

/// Clerk's `role.*` and `permission.*` events (the spec's examples) keep the role definitions:
/// idempotent, an older event changes nothing, a deleted permission is not granted again by a
/// late role event, and a deleted role grants nothing; each takes effect at the next unit.
#[tokio::test]
async fn clerk_role_and_permission_events_keep_the_definitions() {
    let (w, service) = invoices_world(As::App).await;
    let sync = clerk_sync(&service);
    let admin = w.a.ctx(Role::Admin);
    set_role_key(&service, w.a.id, &w.a.admin, "org:content_manager").await;
    assert!(unit_permissions(&w.pool, &admin).await.is_empty());
    let created = example("role.created");
    assert_eq!(sync.apply("m1", &created).await.unwrap(), Outcome::Applied);
    assert_eq!(
        unit_permissions(&w.pool, &admin).await,
        ["org:posts:create"]
    );
    // Again (a retry, or a second delivery): nothing changes.
    assert_eq!(
        sync.apply("m1", &created).await.unwrap(),
        Outcome::Unchanged
    );
    // The update moves the role to its new key, with its new permissions.
    assert_eq!(
        sync.apply("m2", &example("role.updated")).await.unwrap(),
        Outcome::Applied
    );
    assert!(unit_permissions(&w.pool, &admin).await.is_empty());
    set_role_key(&service, w.a.id, &w.a.admin, "editor").await;
    assert_eq!(
        unit_permissions(&w.pool, &admin).await,
        ["org:posts:edit", "org:posts:publish"]
    );
    // The older creation, late: unchanged.
    assert_eq!(
        sync.apply("m1", &created).await.unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(
        unit_permissions(&w.pool, &admin).await,
        ["org:posts:edit", "org:posts:publish"]
    );
    // The permission perm_...0S (org:posts:edit now) is deleted: no role grants it.
    assert_eq!(
        sync.apply("m3", &example("permission.deleted"))
            .await
            .unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        unit_permissions(&w.pool, &admin).await,
        ["org:posts:publish"]
    );
    assert_eq!(
        sync.apply("m3", &example("permission.deleted"))
            .await
            .unwrap(),
        Outcome::Unchanged
    );
    // A role event that still lists it (a late delivery of a newer version) does not grant it.
    let Event::Role(change, mut later) = example("role.updated") else {
        unreachable!()
    };
    later.updated_at += 1000;
    assert_eq!(
        sync.apply("m4", &Event::Role(change, later)).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        unit_permissions(&w.pool, &admin).await,
        ["org:posts:publish"]
    );
    // The role is deleted: it grants nothing, and a late update of its id changes nothing.
    assert_eq!(
        sync.apply("m5", &example("role.deleted")).await.unwrap(),
        Outcome::Applied
    );
    assert!(unit_permissions(&w.pool, &admin).await.is_empty());
    let Event::Role(change, mut late) = example("role.updated") else {
        unreachable!()
    };
    late.updated_at += 5000;
    assert_eq!(
        sync.apply("m6", &Event::Role(change, late)).await.unwrap(),
        Outcome::Unchanged
    );
    assert!(unit_permissions(&w.pool, &admin).await.is_empty());
    // Permission events name a key: created, then renamed. Every provider role granting the
    // id follows; a definition set by SQL (which names keys, not ids) does not.
    service
        .set_role_permissions("editor", ["org:posts:create"])
        .await
        .unwrap();
    let Event::Permission(c, p) = example("permission.created") else {
        unreachable!()
    };
    let mut p = p;
    p.external_id = "perm_other".into();
    assert_eq!(
        sync.apply("m7", &Event::Permission(c, p.clone()))
            .await
            .unwrap(),
        Outcome::Applied
    );
    let Event::Role(change, mut granting) = example("role.created") else {
        unreachable!()
    };
    granting.external_id = "role_granting".into();
    granting.key = "org:granting".into();
    granting.permissions = vec![p.clone()];
    sync.apply("m9", &Event::Role(change, granting))
        .await
        .unwrap();
    set_role_key(&service, w.a.id, &w.a.member, "org:granting").await;
    let member = w.a.ctx(Role::Member);
    assert_eq!(
        unit_permissions(&w.pool, &member).await,
        ["org:posts:create"]
    );
    p.key = "org:posts:write".into();
    p.updated_at += 1;
    assert_eq!(
        sync.apply("m8", &Event::Permission(Change::Updated, p))
            .await
            .unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        unit_permissions(&w.pool, &member).await,
        ["org:posts:write"]
    );
    assert_eq!(
        unit_permissions(&w.pool, &admin).await,
        ["org:posts:create"]
    );
}

/// A role the provider deleted stays deleted when another role takes its key and is deleted
/// in turn: a retried event of the first changes nothing, and a third role on the key gets its
/// own permissions. A permission renamed late changes only the roles that grant its id, not a
/// role granting another permission that took its old key meanwhile.
#[tokio::test]
async fn a_key_taken_over_keeps_every_deleted_roles_tombstone() {
    let (w, service) = invoices_world(As::App).await;
    let sync = clerk_sync(&service);
    let admin = w.a.ctx(Role::Admin);
    set_role_key(&service, w.a.id, &w.a.admin, "org:x").await;
    let Event::Role(change, template) = example("role.created") else {
        unreachable!()
    };
    let Event::Permission(_, perm) = example("permission.created") else {
        unreachable!()
    };
    let permission = |id: &str, key: &str, version: i64| {
        let mut p = perm.clone();
        (p.external_id, p.key, p.updated_at) = (id.into(), key.into(), version);
        p
    };
    let role = |id: &str,
                key: &str,
                grants: Vec<pg_tenancy::clerk::PermissionDefinition>,
                version: i64| {
        let mut r = template.clone();
        (r.external_id, r.key, r.permissions, r.updated_at) =
            (id.into(), key.into(), grants, version);
        Event::Role(change, r)
    };
    let deleted = |id: &str| Event::RoleDeleted {
        external_id: id.into(),
    };
    let first = role("role_1", "org:x", vec![permission("perm_w", WRITE, 1)], 100);
    sync.apply("a", &first).await.unwrap();
    assert_eq!(unit_permissions(&w.pool, &admin).await, [WRITE]);
    sync.apply("b", &deleted("role_1")).await.unwrap();
    sync.apply("c", &role("role_2", "org:x", vec![], 300))
        .await
        .unwrap();
    sync.apply("d", &deleted("role_2")).await.unwrap();
    // A retry of the first role's event: its deletion still stands.
    assert_eq!(sync.apply("a", &first).await.unwrap(), Outcome::Unchanged);
    assert!(unit_permissions(&w.pool, &admin).await.is_empty());
    // The provider's final state: a third role on the key, granting read.
    let third = role(
        "role_3",
        "org:x",
        vec![permission("perm_r", "org:invoices:read", 1)],
        500,
    );
    assert_eq!(sync.apply("e", &third).await.unwrap(), Outcome::Applied);
    assert_eq!(
        unit_permissions(&w.pool, &admin).await,
        ["org:invoices:read"]
    );

    // perm_1 read2 -> write (late), perm_2 takes read2 meanwhile, granted by role_s.
    set_role_key(&service, w.a.id, &w.a.member, "org:s").await;
    let member = w.a.ctx(Role::Member);
    sync.apply(
        "f",
        &role(
            "role_p1",
            "org:p1",
            vec![permission("perm_1", "org:invoices:read2", 10)],
            10,
        ),
    )
    .await
    .unwrap();
    sync.apply(
        "g",
        &role(
            "role_s",
            "org:s",
            vec![permission("perm_2", "org:invoices:read2", 30)],
            40,
        ),
    )
    .await
    .unwrap();
    sync.apply(
        "h",
        &Event::Permission(Change::Updated, permission("perm_1", WRITE, 20)),
    )
    .await
    .unwrap();
    assert_eq!(
        unit_permissions(&w.pool, &member).await,
        ["org:invoices:read2"]
    );
}

/// The sync stores a membership event's role key, and the member's units get that role's
/// permissions.
#[tokio::test]
async fn a_synced_membership_gets_its_roles_permissions() {
    let db = crate::common::database().await;
    let service = db.service_pool(2).await.unwrap();
    let sync = clerk_sync(&service);
    let membership = example("organizationMembership.created");
    let Event::OrganizationMembership(_, m) = &membership else {
        unreachable!()
    };
    let (org, user, key) = (m.organization.org_id(), m.user_id.clone(), m.role.clone());
    service
        .set_role_permissions(&key, ["org:reports:read"])
        .await
        .unwrap();
    assert_eq!(
        sync.apply("m1", &membership).await.unwrap(),
        Outcome::Applied
    );
    let pool = db.app_pool(2).await.unwrap();
    let perms = pool
        .with_member(&user, org, Role::Member, async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar::<_, Vec<String>>("SELECT tenancy_current_permissions()")
                    .fetch_one(tx)
                    .await?,
            )
        })
        .await
        .unwrap();
    assert_eq!(perms, ["org:reports:read"]);
}

/// Deletions before the definitions they end (any delivery order): a role deleted before its
/// creation arrives, and a permission deleted before the role event that lists it, grant
/// nothing. The control: the same events in their own order grant the permission first.
#[tokio::test]
async fn deletions_that_arrive_first_still_win() {
    let (w, service) = invoices_world(As::App).await;
    let sync = clerk_sync(&service);
    let admin = w.a.ctx(Role::Admin);
    set_role_key(&service, w.a.id, &w.a.admin, "org:content_manager").await;
    // Control: created, the admin holds the permission.
    sync.apply("c1", &example("role.created")).await.unwrap();
    assert_eq!(
        unit_permissions(&w.pool, &admin).await,
        ["org:posts:create"]
    );

    let (w, service) = invoices_world(As::App).await;
    let sync = clerk_sync(&service);
    let admin = w.a.ctx(Role::Admin);
    set_role_key(&service, w.a.id, &w.a.admin, "org:content_manager").await;
    assert_eq!(
        sync.apply("d1", &example("role.deleted")).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        sync.apply("c1", &example("role.created")).await.unwrap(),
        Outcome::Unchanged
    );
    assert!(unit_permissions(&w.pool, &admin).await.is_empty());
    // Another role, with the deleted permission: it grants the others only.
    let Event::Role(change, mut other) = example("role.updated") else {
        unreachable!()
    };
    other.external_id = "role_other".into();
    other.key = "org:content_manager".into();
    sync.apply("d2", &example("permission.deleted"))
        .await
        .unwrap();
    assert_eq!(
        sync.apply("c2", &Event::Role(change, other)).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        unit_permissions(&w.pool, &admin).await,
        ["org:posts:publish"]
    );
}

/// A member demoted in the application keeps no permission of the provider's role it had: the
/// request unit that changes the role clears the role key (the role names the permissions from
/// then on). The control: before the demotion, the provider's role grants it.
#[tokio::test]
async fn a_demotion_in_the_application_drops_the_providers_role() {
    let (w, service) = invoices_world(As::App).await;
    service
        .set_role_permissions("org:admin", [WRITE])
        .await
        .unwrap();
    set_role_key(&service, w.a.id, &w.a.admin, "org:admin").await;
    assert_eq!(insert(&w.pool, &w.a.ctx(Role::Admin)).await.unwrap(), 1);
    let admin = w.a.admin.clone();
    w.pool
        .with_rls(&w.a.ctx(Role::Owner), async |tx| {
            sqlx::query("UPDATE organization_members SET role = 'member' WHERE user_id = $1")
                .bind(admin.as_str())
                .execute(tx)
                .await
                .map_err(Error::from)
        })
        .await
        .unwrap();
    let demoted = OrgContext::from_verified_session(w.a.id, w.a.admin.clone(), Role::Member);
    assert!(unit_permissions(&w.pool, &demoted).await.is_empty());
    let e = insert(&w.pool, &demoted).await.unwrap_err();
    assert!(e.is_rls_violation(), "{e}");
    // Nor may a request unit clear the key without changing the role.
    set_role_key(&service, w.a.id, &w.a.member, "org:member").await;
    let e = w
        .pool
        .with_rls(&w.a.ctx(Role::Owner), async |tx| {
            sqlx::query("UPDATE organization_members SET role_key = NULL WHERE user_id = $1")
                .bind(w.a.member.as_str())
                .execute(tx)
                .await
                .map_err(Error::from)
        })
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("TNC11"), "{e}");
}

/// Two deliveries at once (a role's deletion and a late update of it; two versions of it)
/// apply one after the other: the deleted role stays deleted, and the newer version stays.
#[tokio::test]
async fn concurrent_deliveries_apply_one_after_the_other() {
    let (w, service) = invoices_world(As::App).await;
    let sync = clerk_sync(&service);
    let admin = w.a.ctx(Role::Admin);
    set_role_key(&service, w.a.id, &w.a.admin, "org:content_manager").await;
    sync.apply("c", &example("role.created")).await.unwrap();
    let Event::Role(change, role) = example("role.created") else {
        unreachable!()
    };
    for round in 0..10 {
        let (mut newer, mut older) = (role.clone(), role.clone());
        newer.updated_at += 2000 + 10 * round;
        newer.permissions.clear();
        older.updated_at += 1000 + 10 * round;
        let (newer, older) = (Event::Role(change, newer), Event::Role(change, older));
        let (a, b) = tokio::join!(sync.apply("n", &newer), sync.apply("o", &older));
        a.unwrap();
        b.unwrap();
        assert!(
            unit_permissions(&w.pool, &admin).await.is_empty(),
            "round {round}: the newer version (no permissions) stays"
        );
    }
    let (mut late, deleted) = (role.clone(), example("role.deleted"));
    late.updated_at += 100_000;
    let late = Event::Role(change, late);
    let (a, b) = tokio::join!(sync.apply("d", &deleted), sync.apply("l", &late));
    a.unwrap();
    b.unwrap();
    assert!(unit_permissions(&w.pool, &admin).await.is_empty());
}

/// Role definitions are written in READ COMMITTED transactions only: a REPEATABLE READ writer
/// would rebuild what the entries read from a snapshot older than the last writer's commit (a
/// revocation committed meanwhile would come back). Refused with 40001; the control, the same
/// write in READ COMMITTED, applies.
#[tokio::test]
async fn role_definitions_are_written_in_read_committed_only() {
    use sqlx::{Connection, Executor};
    let (w, _service) = invoices_world(As::App).await;
    let mut conn = sqlx::PgConnection::connect_with(&w.db.service_options())
        .await
        .unwrap();
    for (level, refused) in [("REPEATABLE READ", true), ("READ COMMITTED", false)] {
        conn.execute(sqlx::AssertSqlSafe(format!(
            "BEGIN ISOLATION LEVEL {level}; \
             CALL tenancy_enter_service(NULL, tenancy_session_settings(), tenancy_session_settings())"
        )))
        .await
        .unwrap();
        let result = sqlx::query("SELECT tenancy_set_role_permissions('admin', ARRAY['org:x:y'])")
            .execute(&mut conn)
            .await;
        conn.execute("ROLLBACK").await.unwrap();
        match result {
            Err(sqlx::Error::Database(e)) if refused => {
                assert_eq!(e.code().as_deref(), Some("40001"), "{level}: {e}")
            }
            Ok(_) if !refused => {}
            other => panic!("{level}: {other:?}"),
        }
    }
}

/// A membership does not change users: an admin who deleted their own row and moved a
/// member's provider-synced row onto themselves would take its role key's permissions (and
/// the member's removal would go unrecorded). Refused (`TNC11`); the control, the same admin
/// changing that member's role, is allowed.
#[tokio::test]
async fn a_membership_does_not_change_hands() {
    let (w, service) = invoices_world(As::App).await;
    service
        .set_role_permissions("org:billing", [WRITE])
        .await
        .unwrap();
    set_role_key(&service, w.a.id, &w.a.member, "org:billing").await;
    let (admin, member) = (w.a.admin.clone(), w.a.member.clone());
    let taken = w
        .pool
        .with_rls(&w.a.ctx(Role::Admin), async |tx| {
            sqlx::query("DELETE FROM organization_members WHERE user_id = $1")
                .bind(admin.as_str())
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE organization_members SET user_id = $1 WHERE user_id = $2")
                .bind(admin.as_str())
                .bind(member.as_str())
                .execute(&mut *tx)
                .await
                .map_err(Error::from)
        })
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&taken).as_deref(), Some("TNC11"), "{taken}");
    let e = insert(&w.pool, &w.a.ctx(Role::Admin)).await.unwrap_err();
    assert!(e.is_rls_violation(), "{e}");
    let changed = w
        .pool
        .with_rls(&w.a.ctx(Role::Admin), async |tx| {
            sqlx::query("UPDATE organization_members SET role = 'member' WHERE user_id = $1")
                .bind(member.as_str())
                .execute(tx)
                .await
                .map_err(Error::from)
        })
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 1);
}
