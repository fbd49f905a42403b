//! Hardened mode: SQL injected into a unit cannot switch its context.

use pg_tenancy::{ContextKey, Error, ErrorKind, OrgId, Role, TenantPool, UserId};
use sqlx::{Connection, Executor, PgConnection};

use crate::common::{
    As, World, backend_pid, service_project_orgs, visible_project_orgs, world, world_with,
};

/// A world whose database is then hardened; `pool` stays the unhardened one (now refused),
/// the hardened pool is returned beside it.
async fn hardened_world() -> (World, TenantPool) {
    let w = world(As::App).await;
    let key = ContextKey::generate();
    let pool = w.db.harden(&key, 2).await.unwrap();
    (w, pool)
}

/// An injection inside a unit of A: switch every setting to B (as the default mode allows),
/// then count B's projects and try to write there.
async fn injected_switch(pool: &TenantPool, w: &World) -> (i64, Result<u64, Error>) {
    let b = w.b.id.to_string();
    pool.with_rls(&w.a.ctx(Role::Member), async |tx| {
        sqlx::query(
            "SELECT set_config('app.current_org_id', $1, true), \
                    set_config('app.current_user_id', $2, true), \
                    set_config('app.current_org_role', 'owner', true), \
                    set_config('app.current_unit', transaction_timestamp()::text, true)",
        )
        .bind(&b)
        .bind(w.b.owner.as_str())
        .execute(&mut *tx)
        .await?;
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
            .fetch_one(&mut *tx)
            .await?;
        let wrote = sqlx::query(
            "INSERT INTO projects (organization_id, name) VALUES ($1::uuid, 'planted')",
        )
        .bind(&b)
        .execute(&mut *tx)
        .await
        .map(|r| r.rows_affected())
        .map_err(Error::from);
        Ok::<_, Error>((seen, wrote))
    })
    .await
    .unwrap_or_else(|e| (0, Err(e)))
}

#[tokio::test]
async fn default_mode_lets_an_injection_switch_the_context() {
    // The threat hardened mode exists for, shown on the default mode: this is not a bug of the
    // default mode but its documented limit (docs/security.md).
    let w = world(As::App).await;
    let (seen, wrote) = injected_switch(&w.pool, &w).await;
    assert_eq!(seen, 1, "B's project is visible after set_config");
    assert_eq!(wrote.unwrap(), 1);
}

#[tokio::test]
async fn hardened_mode_keeps_an_injection_in_its_organization() {
    let (w, pool) = hardened_world().await;
    // Positive control: the unit sees and writes its own organization.
    let own: i64 = pool
        .with_rls(&w.a.ctx(Role::Member), async |tx| {
            sqlx::query(
                "INSERT INTO projects (organization_id, name) SELECT id, 'mine' FROM organizations",
            )
            .execute(&mut *tx)
            .await?;
            Ok::<_, Error>(
                sqlx::query_scalar("SELECT count(*) FROM projects")
                    .fetch_one(&mut *tx)
                    .await?,
            )
        })
        .await
        .unwrap();
    assert_eq!(own, 2);
    let (seen, wrote) = injected_switch(&pool, &w).await;
    assert_eq!(seen, 0, "the switched settings are not sealed: no rows");
    assert!(wrote.unwrap_err().is_rls_violation());
    // Role checks still hold, and the role policies see the sealed role.
    let e = pool
        .with_rls(&w.a.ctx(Role::Member), async |tx| {
            Ok::<_, Error>(
                sqlx::query("UPDATE organization_members SET role = 'owner'")
                    .execute(tx)
                    .await?
                    .rows_affected(),
            )
        })
        .await
        .unwrap();
    assert_eq!(e, 0);
    // Forged contexts are refused as in the default mode; the switcher, bootstrap, authorize
    // and with_member work signed.
    let mallory = UserId::new("user_mallory").unwrap();
    let forged =
        pg_tenancy::OrgContext::from_verified_session(w.a.id, mallory.clone(), Role::Owner);
    assert!(matches!(pool.begin(&forged).await, Err(Error::NotAMember)));
    assert_eq!(pool.memberships(&w.a.owner).await.unwrap().len(), 1);
    let fresh = OrgId::from_uuid(uuid::Uuid::new_v4());
    let ctx = pool
        .create_organization(fresh, "Fresh", None, &mallory)
        .await
        .unwrap();
    pool.add_member(&ctx, &UserId::new("user_friend").unwrap(), Role::Admin)
        .await
        .unwrap();
    assert_eq!(
        pool.authorize(&mallory, fresh).await.unwrap().role(),
        Role::Owner
    );
    let n: i64 = pool
        .with_member(&w.b.member, w.b.id, Role::Member, async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar("SELECT count(*) FROM projects")
                    .fetch_one(tx)
                    .await?,
            )
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Service units are sealed by their role.
    let service = w.db.service_pool(1).await.unwrap();
    assert_eq!(
        service_project_orgs(&service, w.b.id).await,
        vec![*w.b.id.as_uuid()]
    );
}

#[tokio::test]
async fn hardened_mode_refuses_unsigned_pools_bad_signatures_and_visible_contexts() {
    let (w, pool) = hardened_world().await;
    // An unhardened pool is refused at construction...
    let e = TenantPool::new(w.pool.pool().clone()).await.unwrap_err();
    assert!(matches!(e, Error::HardenedModeRequired), "{e}");
    // ...and a pool made before the switch fails closed: its unsigned entry finds no sealed
    // context, so not even the membership is visible to it.
    let e = visible_project_orgs(&w.pool, &w.a.ctx(Role::Member))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotAMember), "{e}");
    // A pool with another key is refused by the database.
    let wrong = TenantPool::hardened(pool.pool().clone(), ContextKey::generate())
        .await
        .unwrap();
    let e = wrong.begin(&w.a.ctx(Role::Member)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
    // The owner's connection has track_activities on: a hardened pool refuses it.
    let owner = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(w.db.owner_options())
        .await
        .unwrap();
    let e = TenantPool::hardened(owner, ContextKey::generate())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ContextVisible { .. }), "{e}");
    // Back to the default mode.
    let mut c = PgConnection::connect_with(&w.db.owner_options())
        .await
        .unwrap();
    c.execute("SELECT tenancy_disable_hardened_mode()")
        .await
        .unwrap();
    c.close().await.unwrap();
    assert!(matches!(
        TenantPool::hardened(pool.pool().clone(), ContextKey::generate()).await,
        Err(Error::HardenedModeOff)
    ));
    let plain = TenantPool::new(pool.pool().clone()).await.unwrap();
    assert_eq!(
        visible_project_orgs(&plain, &w.a.ctx(Role::Member))
            .await
            .unwrap(),
        vec![*w.a.id.as_uuid()]
    );
}

/// An injection inside a unit of A that turns the unit into B's owner's switcher view
/// (no organization, another user): the memberships it sees.
async fn injected_switcher(pool: &TenantPool, w: &World) -> i64 {
    pool.with_rls(&w.a.ctx(Role::Member), async |tx| {
        sqlx::query(
            "SELECT set_config('app.current_org_id', '', true), \
                    set_config('app.current_user_id', $1, true), \
                    set_config('app.current_unit', transaction_timestamp()::text, true)",
        )
        .bind(w.b.owner.as_str())
        .execute(&mut *tx)
        .await?;
        Ok::<_, Error>(
            sqlx::query_scalar("SELECT count(*) FROM organization_members")
                .fetch_one(&mut *tx)
                .await?,
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn hardened_mode_seals_the_switcher_too() {
    // Default mode: the injection reads B's owner's memberships through the switcher policy.
    let w = world(As::App).await;
    assert_eq!(injected_switcher(&w.pool, &w).await, 1);
    // Hardened mode: the switched user is not sealed, so the switcher sees nothing.
    let (w, pool) = hardened_world().await;
    assert_eq!(injected_switcher(&pool, &w).await, 0);
    // Positive control: the signed switcher unit lists the real user's memberships.
    assert_eq!(pool.memberships(&w.b.owner).await.unwrap().len(), 1);
}

/// Plants a SQL-level prepared statement (which could later replace one the driver prepared)
/// in a unit of `pool` (a pool of one), and tells whether the next unit ran on another backend.
async fn planted_statement_closes_the_session(pool: &TenantPool, w: &World) -> bool {
    let ctx = w.a.ctx(Role::Member);
    let before = backend_pid(pool, &ctx).await;
    // Positive control: a clean unit keeps its connection.
    assert_eq!(backend_pid(pool, &ctx).await, before);
    pool.with_rls(&ctx, async |tx| {
        tx.execute("PREPARE sqlx_s_99 AS SELECT 1").await?;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    backend_pid(pool, &ctx).await != before
}

#[tokio::test]
async fn hardened_mode_closes_a_session_with_a_planted_statement() {
    let w = world(As::App).await;
    let key = ContextKey::generate();
    let pool = w.db.harden(&key, 1).await.unwrap();
    assert!(planted_statement_closes_the_session(&pool, &w).await);
}

#[tokio::test]
async fn default_mode_does_not_look_for_planted_statements() {
    // The same defence absent: the default mode's entry skips the scan (its cost, and what the
    // SQL that plants one can do anyway there: docs/security.md), so the session is kept.
    let w = world_with(As::App, 1).await;
    assert!(!planted_statement_closes_the_session(&w.pool, &w).await);
}

/// The application's key signs entries; tests sign by hand what `TenantPool` signs, to send
/// what an attacker would.
fn sign(key_bytes: &[u8], fields: &[&str]) -> String {
    use hmac::{Hmac, Mac};
    let message = fields
        .iter()
        .map(|f| format!("{}:{f}", f.len()))
        .collect::<Vec<_>>()
        .join("|");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key_bytes).unwrap();
    mac.update(message.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn a_unit_that_outlives_its_signed_context_fails_loudly() {
    let (w, pool) = hardened_world().await;
    let pool = pool.with_context_ttl(std::time::Duration::from_secs(1));
    let ctx = w.a.ctx(Role::Member);
    // Positive control: within its lifetime the unit sees its organization's project.
    assert_eq!(
        visible_project_orgs(&pool, &ctx).await.unwrap(),
        vec![*w.a.id.as_uuid()]
    );
    // Past it, the next statement fails with TNC08 instead of silently reading nothing.
    let e = pool
        .with_rls_read(&ctx, async |tx| {
            sqlx::query("SELECT pg_sleep(2.1)")
                .execute(&mut *tx)
                .await?;
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
                .fetch_one(&mut *tx)
                .await?;
            Ok::<_, Error>(n)
        })
        .await
        .unwrap_err();
    assert_eq!(crate::common::sqlstate(&e).as_deref(), Some("TNC08"), "{e}");
    assert_eq!(e.kind(), ErrorKind::Internal);
}

#[tokio::test]
async fn a_skewed_application_clock_does_not_fail_every_unit() {
    let (w, hardened) = hardened_world().await;
    let key = ContextKey::generate();
    w.db.harden(&key, 1).await.unwrap();
    let ctx = w.a.ctx(Role::Member);
    for skew in [-300, 300] {
        // The offset to the database's clock is measured at start: units run.
        let pool = TenantPool::hardened_with_simulated_skew(
            hardened.pool().clone(),
            key.clone(),
            skew,
            true,
        )
        .await
        .unwrap();
        assert_eq!(
            visible_project_orgs(&pool, &ctx).await.unwrap(),
            vec![*w.a.id.as_uuid()],
            "skew {skew}"
        );
    }
    // Control: an application clock 300 s behind, unmeasured, signs contexts already expired
    // for the database: every entry fails (TNC08).
    let unmeasured =
        TenantPool::hardened_with_simulated_skew(hardened.pool().clone(), key, -300, false)
            .await
            .unwrap();
    let e = visible_project_orgs(&unmeasured, &ctx).await.unwrap_err();
    assert_eq!(crate::common::sqlstate(&e).as_deref(), Some("TNC08"), "{e}");
}

#[tokio::test]
async fn a_signature_covers_its_fields_unambiguously() {
    let w = world(As::App).await;
    let key_bytes = [7_u8; 32];
    let key = ContextKey::from_bytes(&key_bytes).unwrap();
    w.db.harden(&key, 1).await.unwrap();
    let mut c = PgConnection::connect_with(&w.db.app_options())
        .await
        .unwrap();
    let expiry = (std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let (org, user) = (w.a.id.to_string(), w.a.member.as_str().to_owned());
    let signature = sign(
        &key_bytes,
        &["enter", "member", &org, &user, "member", "true", &expiry],
    );
    let enter = async |c: &mut PgConnection, required: &str, act: &str| {
        let mut tx = c.begin().await.unwrap();
        let sql = format!(
            "CALL tenancy_enter_signed('member', '{org}', '{user}', {required}, {act}, \
             tenancy_session_settings(), {expiry}, \
             '{signature}')"
        );
        let r = tx.execute(sqlx::AssertSqlSafe(sql)).await.map(|_| ());
        let role: Option<String> = if r.is_ok() {
            sqlx::query_scalar("SELECT tenancy_current_org_role()")
                .fetch_one(&mut *tx)
                .await
                .unwrap()
        } else {
            None
        };
        tx.rollback().await.ok();
        (r.map_err(Error::from), role)
    };
    // Positive control: the signed fields themselves enter, with the member's role.
    let (entered, role) = enter(&mut c, "'member'", "true").await;
    entered.unwrap();
    assert_eq!(role.as_deref(), Some("member"));
    // The same signature on fields that `concat_ws('|', ...)` encoded alike: a role holding
    // the separator and a NULL flag (which skipped the role check). Refused (TNC06).
    let (refused, _) = enter(&mut c, "'member|true'", "NULL").await;
    let e = refused.unwrap_err();
    assert_eq!(crate::common::sqlstate(&e).as_deref(), Some("TNC06"), "{e}");
}

#[tokio::test]
async fn the_key_stays_out_of_reach_of_a_schema_wide_grant() {
    let (w, _) = hardened_world().await;
    let mut owner = PgConnection::connect_with(&w.db.owner_options())
        .await
        .unwrap();
    // The usual shortcut: every table of the schema to the application role.
    owner
        .execute(sqlx::AssertSqlSafe(format!(
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}",
            w.db.app_role()
        )))
        .await
        .unwrap();
    let mut app = PgConnection::connect_with(&w.db.app_options())
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy_context_key")
        .fetch_one(&mut app)
        .await
        .unwrap();
    assert_eq!(rows, 0, "row security hides the key from a granted role");
    let pool = || async {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(w.db.app_options())
            .await
            .unwrap()
    };
    // Positive control: the hardened pool starts with the grant in place.
    TenantPool::hardened(pool().await, ContextKey::generate())
        .await
        .unwrap();
    // With the defence removed (row security off on the key), the role reads the key and a
    // hardened pool refuses to start, naming the role.
    owner
        .execute("ALTER TABLE tenancy_context_key DISABLE ROW LEVEL SECURITY")
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy_context_key")
        .fetch_one(&mut app)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    let e = TenantPool::hardened(pool().await, ContextKey::generate())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ContextKeyReadable { .. }), "{e}");
}

#[tokio::test]
async fn hardened_mode_answers_membership_lookups_only_when_signed() {
    let (w, pool) = hardened_world().await;
    // Positive control: the hardened pool's authorize signs its lookup.
    assert_eq!(
        pool.authorize(&w.b.owner, w.b.id).await.unwrap().role(),
        Role::Owner
    );
    // The same lookup unsigned, outside any unit (as SQL that cleared its unit's marker would
    // send it): refused.
    let mut c = PgConnection::connect_with(&w.db.app_options())
        .await
        .unwrap();
    let e = sqlx::query_scalar::<_, Option<String>>("SELECT tenancy_member_role($1, $2)")
        .bind(w.b.id.as_uuid())
        .bind(w.b.owner.as_str())
        .fetch_one(&mut c)
        .await
        .map_err(Error::from)
        .unwrap_err();
    assert_eq!(crate::common::sqlstate(&e).as_deref(), Some("TNC06"), "{e}");
}

/// SQL injected into a unit of A: reads the signed entries of other units of the same role
/// that `pg_stat_statements` recorded for B, clears its unit's marker, and replays the first
/// one through `tenancy_enter_sealed` (executable by the role: `tenancy_enter_signed` calls
/// it). Returns how many signed entries of B it found, and B's projects and the role it then
/// sees.
async fn replay_a_recorded_entry(pool: &TenantPool, w: &World) -> (i64, i64, Option<String>) {
    let b = w.b.id.to_string();
    pool.with_rls(&w.a.ctx(Role::Member), async |tx| {
        let recorded: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_statements \
              WHERE query LIKE '%tenancy_enter_signed(''member'', ''' || $1 || '''%'",
        )
        .bind(&b)
        .fetch_one(&mut *tx)
        .await?;
        if recorded == 0 {
            return Ok::<_, Error>((0, 0, None));
        }
        sqlx::query("SELECT set_config('app.current_unit', '', true)")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            r"SELECT tenancy_enter_sealed(m[1], m[2]::uuid, m[3], m[4], m[5]::boolean,
                                          m[6]::bigint, m[7])
                FROM (SELECT pg_catalog.regexp_match(query,
                        $re$tenancy_enter_signed\('(\w+)', '([0-9a-f-]+)', '([^']+)', '(\w+)', (true|false), .*, (\d+), '([0-9a-f]{64})'\)$re$) AS m
                        FROM pg_stat_statements
                       WHERE query LIKE '%tenancy_enter_signed(''member'', ''' || $1 || '''%'
                       LIMIT 1) AS recorded",
        )
        .bind(&b)
        .execute(&mut *tx)
        .await?;
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
            .fetch_one(&mut *tx)
            .await?;
        let role: Option<String> = sqlx::query_scalar("SELECT tenancy_current_org_role()")
            .fetch_one(&mut *tx)
            .await?;
        Ok((recorded, seen, role))
    })
    .await
    .unwrap()
}

/// A hardened world on a cluster of its own that loads `pg_stat_statements`, with the
/// extension created in the database (as a superuser does); `None` when no such cluster can
/// be started here (the test then says why).
async fn world_with_statement_statistics() -> Option<(pg_tenancy::testing::TestCluster, World)> {
    use pg_tenancy::testing::{TestCluster, TestDatabase};
    let cluster =
        match TestCluster::dedicated_with(&["shared_preload_libraries=pg_stat_statements"]) {
            Ok(c) => c,
            Err(e) if std::env::var_os("DATABASE_URL").is_some() => {
                crate::support::skip::skip_or_fail(
                    "TENANCY_REQUIRE_RESTART",
                    &format!("no cluster of its own: {e}"),
                );
                return None;
            }
            Err(e) => panic!("{e}"),
        };
    let db = TestDatabase::create_in(&cluster).await.unwrap();
    crate::common::with_projects(&db).await;
    let pool = db.app_pool(2).await.unwrap();
    let a = crate::common::seed_org(&pool, "alpha").await;
    let b = crate::common::seed_org(&pool, "beta").await;
    let mut admin = PgConnection::connect_with(&cluster.admin_options().database(db.name()))
        .await
        .unwrap();
    admin
        .execute("CREATE EXTENSION pg_stat_statements")
        .await
        .unwrap();
    admin.close().await.unwrap();
    Some((cluster, World { db, pool, a, b }))
}

/// Runs `sql` as the cluster's superuser in `w`'s database.
async fn as_superuser(cluster: &pg_tenancy::testing::TestCluster, w: &World, sql: &str) {
    let mut admin = PgConnection::connect_with(&cluster.admin_options().database(w.db.name()))
        .await
        .unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(sql.to_owned()))
        .await
        .unwrap();
    admin.close().await.unwrap();
}

#[tokio::test]
async fn a_hardened_pool_refuses_a_role_whose_signed_entries_pg_stat_statements_records() {
    let Some((cluster, w)) = world_with_statement_statistics().await else {
        return;
    };
    let key = ContextKey::generate();
    let app = w.db.app_role().to_owned();
    // The defence: with pg_stat_statements tracking utility statements (its default), a
    // hardened pool refuses to start, and says which setting to change.
    let e = w.db.harden(&key, 2).await.expect_err("a refused pool");
    assert!(
        matches!(
            e,
            pg_tenancy::testing::HarnessError::Tenancy(Error::StatementsVisible { ref role })
                if *role == app
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("pg_stat_statements.track_utility = off"),
        "{e}"
    );
    // The other way out: the role may not execute the extension's function (nor read its
    // view, which calls it). The pool starts, and SQL in a unit cannot read the statistics.
    as_superuser(
        &cluster,
        &w,
        "REVOKE EXECUTE ON FUNCTION pg_stat_statements(boolean) FROM PUBLIC",
    )
    .await;
    let revoked = w.db.harden(&key, 1).await.unwrap();
    let e = crate::common::run(
        &revoked,
        &w.a.ctx(Role::Member),
        "SELECT count(*) FROM pg_stat_statements",
    )
    .await
    .unwrap_err();
    assert_eq!(crate::common::sqlstate(&e).as_deref(), Some("42501"), "{e}");
    as_superuser(
        &cluster,
        &w,
        "GRANT EXECUTE ON FUNCTION pg_stat_statements(boolean) TO PUBLIC",
    )
    .await;
    // The mitigation it asks for: utility statements untracked for the role. The pool starts,
    // and an injection finds no signed entry to replay.
    as_superuser(
        &cluster,
        &w,
        &format!("ALTER ROLE {app} SET pg_stat_statements.track_utility = off"),
    )
    .await;
    let options = w.db.app_options();
    // Connections made before `changed` (when set) are closed instead of handed out: the
    // role's settings reach new connections only.
    let changed = std::sync::Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
    let connect = || {
        let changed = changed.clone();
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .before_acquire(move |_, meta| {
                let made_before = changed
                    .lock()
                    .unwrap()
                    .is_some_and(|at| meta.age > at.elapsed());
                Box::pin(async move { Ok(!made_before) })
            })
            .connect_with(options.clone())
    };
    let pool = TenantPool::hardened(connect().await.unwrap(), key.clone())
        .await
        .unwrap();
    crate::common::run(&pool, &w.b.ctx(Role::Owner), "SELECT 1")
        .await
        .unwrap();
    assert_eq!(replay_a_recorded_entry(&pool, &w).await, (0, 0, None));
    // Positive control, the attack without the defence: the same pool once its role's
    // connections record utility statements again (the pool checked when it started; the
    // connections it has are replaced by new ones, which inherit the role's settings). B's
    // owner's unit is recorded with its signature, and A's unit replays it: it reads B's
    // project, as B's owner.
    as_superuser(
        &cluster,
        &w,
        &format!("ALTER ROLE {app} RESET pg_stat_statements.track_utility"),
    )
    .await;
    *changed.lock().unwrap() = Some(std::time::Instant::now());
    crate::common::run(&pool, &w.b.ctx(Role::Owner), "SELECT 1")
        .await
        .unwrap();
    // PostgreSQL 16 and later record a CALL with its constants replaced by placeholders: there
    // the recorded entry holds no signature to replay (the pool refuses all the same, below).
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(pool.pool())
        .await
        .unwrap();
    let expected = if version >= 160_000 {
        (0, 0, None)
    } else {
        (1, 1, Some("owner".to_owned()))
    };
    assert_eq!(replay_a_recorded_entry(&pool, &w).await, expected);
    // Which a pool starting now refuses.
    let e = TenantPool::hardened(connect().await.unwrap(), key)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::StatementsVisible { .. }), "{e}");
}
