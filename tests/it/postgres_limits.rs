//! What PostgreSQL itself leaves open to SQL running as the application role, and the
//! deployment settings that limit it (`docs/security.md`, "What PostgreSQL itself leaves
//! open"): planner statistics, same-role signals, role self-administration. Each test shows the
//! opening first (the positive control), then the mitigation working beside it.

use std::time::{Duration, Instant};

use pg_tenancy::audit::{PolicyOptions, policy_sql_with};
use pg_tenancy::testing::{TestCluster, TestDatabase};
use pg_tenancy::{Error, OrgContext, Role, TenantPool};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use crate::common::{As, world};

/// Runs `sql` (several statements) on a connection made with `options`.
async fn run(options: &PgConnectOptions, sql: &str) {
    let mut conn = PgConnection::connect_with(options).await.unwrap();
    conn.execute(AssertSqlSafe(sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn.close().await.unwrap();
}

/// The cluster's superuser, on `db` (to read `pg_stats`, which hides tables with Row-Level
/// Security from everyone else, and to create roles).
fn admin(db: &TestDatabase) -> PgConnectOptions {
    TestCluster::global()
        .unwrap()
        .admin_options()
        .database(db.name())
}

/// Whether `pg_stats` holds statistics of `table.column`.
async fn has_statistics(db: &TestDatabase, table: &str, column: &str) -> bool {
    let mut conn = PgConnection::connect_with(&admin(db)).await.unwrap();
    let found = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_stats
                         WHERE schemaname = 'public' AND tablename = $1 AND attname = $2)",
    )
    .bind(table)
    .bind(column)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    found
}

/// `EXPLAIN sql` in a read unit as `ctx` (the application role's pool).
async fn plan(pool: &TenantPool, ctx: &OrgContext, sql: &str) -> String {
    let explain = format!("EXPLAIN {sql}");
    pool.with_rls_read(ctx, async |tx| {
        let lines: Vec<String> = sqlx::query_scalar(AssertSqlSafe(explain.clone()))
            .fetch_all(&mut *tx)
            .await?;
        Ok::<_, Error>(lines.join("\n"))
    })
    .await
    .unwrap()
}

/// The planner's row estimate for the plan's top node.
fn rows(plan: &str) -> f64 {
    let first = plan.lines().next().unwrap();
    let after = first
        .split(" rows=")
        .nth(1)
        .unwrap_or_else(|| panic!("{plan}"));
    after.split(' ').next().unwrap().parse().unwrap()
}

/// The scan nodes of a plan, on one line.
fn scans(plan: &str) -> String {
    plan.lines()
        .filter(|l| l.contains(" Scan "))
        .map(|l| l.trim().trim_start_matches("->").trim())
        .collect::<Vec<_>>()
        .join("; ")
}

async fn estimate(pool: &TenantPool, ctx: &OrgContext, sql: &str) -> f64 {
    rows(&plan(pool, ctx, sql).await)
}

#[tokio::test]
async fn planner_statistics_show_other_organizations_values_until_the_column_has_none() {
    let w = world(As::App).await;
    let owner = w.db.owner_options();
    run(
        &owner,
        &format!(
            "CREATE TABLE ledger (organization_id uuid NOT NULL,
                                  id uuid NOT NULL DEFAULT gen_random_uuid(),
                                  customer text NOT NULL, PRIMARY KEY (organization_id, id));
             {}",
            policy_sql_with(
                "ledger",
                &PolicyOptions::default().with_grant(w.db.app_role())
            )
        ),
    )
    .await;
    // A's customers: 200 names, each once. B's: one customer, 300 times (a frequent value).
    for (org, insert) in [
        (
            &w.a,
            "INSERT INTO ledger (organization_id, customer)
             SELECT $1, 'alpha customer ' || g FROM generate_series(1, 200) g",
        ),
        (
            &w.b,
            "INSERT INTO ledger (organization_id, customer)
             SELECT $1, 'Beta Secret Customer' FROM generate_series(1, 300)",
        ),
    ] {
        let id = org.id;
        w.pool
            .with_rls(&org.ctx(Role::Member), async |tx| {
                sqlx::query(insert)
                    .bind(id.as_uuid())
                    .execute(&mut *tx)
                    .await?;
                Ok::<_, Error>(())
            })
            .await
            .unwrap();
    }
    run(&owner, "ANALYZE ledger").await;
    let a = w.a.ctx(Role::Member);
    let (pool, b) = (&w.pool, w.b.id);
    let where_customer = |value: &str| format!("SELECT * FROM ledger WHERE customer = '{value}'");
    // The rows themselves stay A's.
    let visible: i64 = w
        .pool
        .with_rls_read(&a, async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar("SELECT count(*) FROM ledger WHERE customer LIKE 'Beta%'")
                    .fetch_one(&mut *tx)
                    .await?,
            )
        })
        .await
        .unwrap();
    assert_eq!(visible, 0);
    // The opening: inside A's unit, a value only B has is estimated at B's frequency; one
    // that exists nowhere at one row. B's id likewise, and `<` against a guess tells on which
    // side of it B's id lies (a binary search).
    let secret = estimate(pool, &a, &where_customer("Beta Secret Customer")).await;
    let nowhere = estimate(pool, &a, &where_customer("Nobody At All")).await;
    assert!(secret >= 50.0 * nowhere, "{secret} vs {nowhere}");
    println!("estimated rows in A's unit: B's value {secret}, a value nowhere {nowhere}");
    let by_id = |op: &str| format!("SELECT * FROM ledger WHERE organization_id {op} '{b}'");
    let below = estimate(pool, &a, &by_id("<")).await;
    let up_to = estimate(pool, &a, &by_id("<=")).await;
    assert!(up_to >= below + 50.0, "{below} vs {up_to}");

    // SET STATISTICS 0 alone: ANALYZE skips the column from now on, but the statistics it
    // gathered before stay, and so does the opening.
    run(
        &owner,
        "ALTER TABLE ledger ALTER COLUMN customer SET STATISTICS 0; ANALYZE ledger",
    )
    .await;
    assert!(has_statistics(&w.db, "ledger", "customer").await);
    let secret = estimate(pool, &a, &where_customer("Beta Secret Customer")).await;
    assert!(secret >= 50.0 * nowhere, "{secret} vs {nowhere}");
    // Altering the column to its own type drops them (no rewrite): no statistics for it,
    // while the other columns keep theirs, and the two values are estimated alike.
    run(
        &owner,
        "ALTER TABLE ledger ALTER COLUMN customer TYPE text; ANALYZE ledger",
    )
    .await;
    assert!(!has_statistics(&w.db, "ledger", "customer").await);
    assert!(has_statistics(&w.db, "ledger", "organization_id").await);
    let secret = estimate(pool, &a, &where_customer("Beta Secret Customer")).await;
    let nowhere = estimate(pool, &a, &where_customer("Nobody At All")).await;
    assert_eq!(secret, nowhere);
}

/// The plan of the policy's own query in a unit as `ctx`, and the median of 21 runs of it
/// (each timed alone, in one unit).
async fn tenant_query(pool: &TenantPool, ctx: &OrgContext) -> (String, Duration, i64) {
    const QUERY: &str = "SELECT count(*), max(body) FROM wide";
    let plan = plan(pool, ctx, QUERY).await;
    let (mut times, count) = pool
        .with_rls_read(ctx, async |tx| {
            let mut times = Vec::new();
            let mut count = 0;
            for _ in 0..21 {
                let start = Instant::now();
                let (n, _): (i64, Option<String>) =
                    sqlx::query_as(QUERY).fetch_one(&mut *tx).await?;
                times.push(start.elapsed());
                count = n;
            }
            Ok::<_, Error>((times, count))
        })
        .await
        .unwrap();
    times.sort();
    (plan, times[10], count)
}

/// The cost of hiding the tenant column's statistics (`cargo test --test it
/// postgres_limits::the_tenant -- --nocapture` prints the figures): the policy compares it with
/// a value known only at run time (`(SELECT tenancy_current_org_id())`), so the planner uses
/// its number of distinct values, not its frequent values.
#[tokio::test]
async fn the_tenant_predicate_keeps_its_index_without_statistics_on_the_tenant_column() {
    let w = world(As::App).await;
    let owner = w.db.owner_options();
    // 1,000 organizations (A and 999 others) of 100 rows each, filled before the policy.
    run(
        &owner,
        &format!(
            "CREATE TABLE wide (organization_id uuid NOT NULL,
                                id uuid NOT NULL DEFAULT gen_random_uuid(),
                                body text NOT NULL, PRIMARY KEY (organization_id, id));
             INSERT INTO wide (organization_id, body)
             SELECT o, md5(g::text)
               FROM (SELECT gen_random_uuid() FROM generate_series(1, 999)
                     UNION ALL SELECT '{}'::uuid) orgs(o), generate_series(1, 100) g;
             {}
             ANALYZE wide;",
            w.a.id,
            policy_sql_with(
                "wide",
                &PolicyOptions::default()
                    .with_grant(w.db.app_role())
                    .with_hidden_statistics("body")
            )
        ),
    )
    .await;
    let a = w.a.ctx(Role::Member);
    let uses_the_index = |plan: &str| plan.contains("Index") && !plan.contains("Seq Scan");
    let (with_plan, with_median, n) = tenant_query(&w.pool, &a).await;
    assert_eq!(n, 100);
    assert!(uses_the_index(&with_plan), "{with_plan}");
    // No statistics on the tenant column: a policy uses it, so the policy goes while the type
    // is altered (what drops the old statistics), in one transaction.
    run(
        &owner,
        "BEGIN;
         DROP POLICY tenant_isolation ON wide;
         ALTER TABLE wide ALTER COLUMN organization_id SET STATISTICS 0,
                          ALTER COLUMN organization_id TYPE uuid;
         CREATE POLICY tenant_isolation ON wide
             USING      (organization_id = (SELECT tenancy_current_org_id()))
             WITH CHECK (organization_id = (SELECT tenancy_current_org_id()));
         COMMIT;
         ANALYZE wide;",
    )
    .await;
    assert!(!has_statistics(&w.db, "wide", "organization_id").await);
    let (without_plan, without_median, n) = tenant_query(&w.pool, &a).await;
    assert_eq!(n, 100);
    assert!(uses_the_index(&without_plan), "{without_plan}");
    println!(
        "tenant predicate on 100,000 rows of 1,000 organizations (100 rows each):\n  \
         with statistics: {} / median {with_median:?}\n  \
         statistics 0:    {} / median {without_median:?}",
        scans(&with_plan),
        scans(&without_plan),
    );
}

/// `EXPLAIN sql` on `conn` inside a switcher unit for `user` (what `TenantPool::memberships`
/// enters).
async fn switcher_plan(conn: &mut PgConnection, user: &str, sql: &str) -> String {
    conn.execute(AssertSqlSafe(format!(
        "BEGIN READ ONLY; CALL tenancy_enter_user('{user}', current_setting('search_path'),
                                                  current_setting('search_path'))"
    )))
    .await
    .unwrap();
    let lines: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN {sql}")))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    conn.execute("ROLLBACK").await.unwrap();
    lines.join("\n")
}

/// The columns the crate's migration keeps without statistics
/// (`organizations.name/slug/external_id/created_by`, `organization_members.user_id/external_id`):
/// as shipped, probes of their histograms from A's unit all look alike, while with statistics
/// they tell where other organizations' values lie (the control); and the crate's own lookups
/// on them stay index scans, as the application role, either way.
#[tokio::test]
async fn the_crates_text_columns_tell_nothing_and_its_lookups_stay_index_scans() {
    let w = world(As::App).await;
    // 2,000 more organizations of five members each, written as the superuser (no policy, no
    // trigger: bulk data, not a request).
    run(
        &admin(&w.db),
        "SET session_replication_role = replica;
         INSERT INTO organizations (id, name, slug, external_id)
         SELECT gen_random_uuid(), 'Org ' || g, 'bulk-' || g, 'org_bulk_' || g
           FROM generate_series(1, 2000) g;
         INSERT INTO organization_members (organization_id, user_id, role, external_id)
         SELECT o.id, 'user_' || o.slug || '_' || r,
                CASE r WHEN 1 THEN 'owner' ELSE 'member' END, 'orgmem_' || o.slug || '_' || r
           FROM organizations o, generate_series(1, 5) r WHERE o.slug LIKE 'bulk-%';",
    )
    .await;
    let member = w.a.member.as_str().to_owned();
    let lookups = [
        (
            "switcher",
            format!(
                "SELECT o.id, o.name, o.slug, o.external_id, m.role FROM organization_members m
                 JOIN organizations o ON o.id = m.organization_id
                 WHERE m.user_id = '{member}' AND o.deleted_at IS NULL ORDER BY o.name, o.id"
            ),
        ),
        (
            "membership",
            format!(
                "SELECT role FROM organization_members
                 WHERE organization_id = '{}' AND user_id = '{member}'",
                w.a.id
            ),
        ),
        (
            "membership by provider id",
            format!(
                "SELECT user_id FROM organization_members
                 WHERE organization_id = '{}' AND external_id = 'orgmem_x'",
                w.a.id
            ),
        ),
        (
            "organization by slug",
            "SELECT id FROM organizations WHERE slug = 'alpha'".to_owned(),
        ),
        (
            "organization by provider id",
            "SELECT id FROM organizations WHERE external_id = 'org_alpha'".to_owned(),
        ),
    ];
    let mut app = PgConnection::connect_with(&w.db.app_options())
        .await
        .unwrap();
    let a = w.a.ctx(Role::Member);
    let mut figures = Vec::new();
    for statistics in ["0 (as shipped)", "default"] {
        if statistics == "default" {
            run(
                &w.db.owner_options(),
                "ALTER TABLE organizations ALTER COLUMN name SET STATISTICS -1,
                     ALTER COLUMN slug SET STATISTICS -1, ALTER COLUMN external_id SET STATISTICS -1,
                     ALTER COLUMN created_by SET STATISTICS -1;
                 ALTER TABLE organization_members ALTER COLUMN user_id SET STATISTICS -1,
                     ALTER COLUMN external_id SET STATISTICS -1;",
            )
            .await;
        }
        run(
            &w.db.owner_options(),
            "ANALYZE organizations; ANALYZE organization_members",
        )
        .await;
        assert_eq!(
            has_statistics(&w.db, "organization_members", "user_id").await,
            statistics == "default"
        );
        for (name, sql) in &lookups {
            let plan = if *name == "switcher" {
                switcher_plan(&mut app, &member, sql).await
            } else {
                plan(&w.pool, &a, sql).await
            };
            assert!(
                plan.contains("Index") && !plan.contains("Seq Scan"),
                "{name}, statistics {statistics}:\n{plan}"
            );
            figures.push(format!("{name}, statistics {statistics}: {}", scans(&plan)));
        }
        // What the statistics would tell A's unit: where other organizations' names and
        // members' ids lie (a histogram probe). Without them, two probes look alike.
        for (table, column, low, high) in [
            ("organizations", "name", "Org 1", "Org 9"),
            (
                "organization_members",
                "user_id",
                "user_bulk-1",
                "user_bulk-9",
            ),
        ] {
            let probe = |bound: &str| format!("SELECT * FROM {table} WHERE {column} < '{bound}'");
            let (low, high) = (
                estimate(&w.pool, &a, &probe(low)).await,
                estimate(&w.pool, &a, &probe(high)).await,
            );
            figures.push(format!(
                "{table}.{column} < probes, statistics {statistics}: {low} vs {high}"
            ));
            if statistics == "default" {
                assert!(high > low, "{table}.{column}: {low} vs {high}");
            } else {
                assert_eq!(low, high, "{table}.{column}");
            }
        }
    }
    app.close().await.unwrap();
    println!("{}", figures.join("\n"));
}

/// A login role with a password, a member of `group` (`None`: of no role): its name and
/// password.
async fn login_role(db: &TestDatabase, name: &str, group: Option<&str>) -> (String, String) {
    let role = format!("{}_{name}", db.name());
    let password = uuid::Uuid::new_v4().simple().to_string();
    let member_of = group.map(|g| format!("IN ROLE {g}")).unwrap_or_default();
    run(
        &admin(db),
        &format!(
            "CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{password}' {member_of}"
        ),
    )
    .await;
    (role, password)
}

/// `base` logging in as `login`.
fn as_login(base: PgConnectOptions, (role, password): &(String, String)) -> PgConnectOptions {
    base.username(role).password(password)
}

async fn pid(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// `SELECT f(pid)` on `conn`: `Ok(signalled)` or the SQLSTATE of the refusal.
async fn signal(conn: &mut PgConnection, f: &str, pid: i32) -> Result<bool, String> {
    sqlx::query_scalar(AssertSqlSafe(format!("SELECT {f}($1)")))
        .bind(pid)
        .fetch_one(conn)
        .await
        .map_err(|e| {
            e.as_database_error()
                .and_then(|d| d.code())
                .map(|c| c.into_owned())
                .unwrap_or_else(|| e.to_string())
        })
}

/// Whether `conn` is gone (terminated), within a few seconds.
async fn terminated(conn: &mut PgConnection) -> bool {
    for _ in 0..50 {
        if conn.execute("SELECT 1").await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_role_signals_its_own_sessions_and_a_second_login_role_cannot() {
    let db = crate::common::database().await;
    // The deployment's shape: a NOLOGIN group holds the grants; each pool (or service) logs in
    // as its own member of it.
    let group = format!("{}_requests", db.name());
    run(
        &admin(&db),
        &format!(
            "CREATE ROLE {group} NOLOGIN NOSUPERUSER NOBYPASSRLS;
             GRANT SELECT, INSERT, UPDATE, DELETE
                ON organizations, organization_members, projects TO {group};"
        ),
    )
    .await;
    let pool_a = as_login(
        db.app_options(),
        &login_role(&db, "pool_a", Some(&group)).await,
    );
    let pool_b = as_login(
        db.app_options(),
        &login_role(&db, "pool_b", Some(&group)).await,
    );
    let mut victim = PgConnection::connect_with(&pool_a).await.unwrap();
    let victim_pid = pid(&mut victim).await;
    victim.execute("SELECT 'victim-marker'").await.unwrap();

    // Another login role: its sessions can neither cancel nor terminate pool_a's (42501), nor
    // read their statements in pg_stat_activity.
    let mut other = PgConnection::connect_with(&pool_b).await.unwrap();
    for f in ["pg_cancel_backend", "pg_terminate_backend"] {
        assert_eq!(
            signal(&mut other, f, victim_pid).await,
            Err("42501".to_owned()),
            "{f}"
        );
    }
    let seen: String = sqlx::query_scalar("SELECT query FROM pg_stat_activity WHERE pid = $1")
        .bind(victim_pid)
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert_eq!(seen, "<insufficient privilege>");
    victim.execute("SELECT 1").await.unwrap();

    // The opening (the same login role): another session of pool_a reads the statement,
    // cancels and terminates.
    let mut same = PgConnection::connect_with(&pool_a).await.unwrap();
    let seen: String = sqlx::query_scalar("SELECT query FROM pg_stat_activity WHERE pid = $1")
        .bind(victim_pid)
        .fetch_one(&mut same)
        .await
        .unwrap();
    assert_eq!(seen, "SELECT 1");
    assert_eq!(
        signal(&mut same, "pg_cancel_backend", victim_pid).await,
        Ok(true)
    );
    assert_eq!(
        signal(&mut same, "pg_terminate_backend", victim_pid).await,
        Ok(true)
    );
    assert!(terminated(&mut victim).await);

    // The shape matters: a login role that is a member of another (not a sibling) holds its
    // rights, signals included.
    let mut victim = PgConnection::connect_with(&pool_a).await.unwrap();
    let victim_pid = pid(&mut victim).await;
    run(
        &admin(&db),
        &format!(
            "GRANT {} TO {}",
            pool_a.get_username(),
            pool_b.get_username()
        ),
    )
    .await;
    assert_eq!(
        signal(&mut other, "pg_terminate_backend", victim_pid).await,
        Ok(true)
    );
    assert!(terminated(&mut victim).await);
    other.close().await.unwrap();
    same.close().await.unwrap();
}

#[tokio::test]
async fn a_role_changes_its_own_settings_and_password_and_what_limits_it() {
    let db = crate::common::database().await;
    let app = db.app_options();
    // Settings that matter, pinned by the application in its connect options: the client's
    // options take precedence over role-level settings.
    let pinned = app.clone().options([
        ("default_transaction_read_only", "off"),
        ("search_path", "public"),
    ]);
    // The opening: one statement of the application role changes every new connection's
    // settings, for every organization.
    run(
        &app,
        "ALTER ROLE CURRENT_USER SET default_transaction_read_only = on;
         ALTER ROLE CURRENT_USER SET search_path = nowhere",
    )
    .await;
    let write = "UPDATE organizations SET name = name WHERE false";
    let mut plain = PgConnection::connect_with(&app).await.unwrap();
    let path: String = sqlx::query_scalar("SHOW search_path")
        .fetch_one(&mut plain)
        .await
        .unwrap();
    assert_eq!(path, "nowhere");
    let e = plain.execute(write).await.unwrap_err();
    // (`nowhere` hides the table: qualified, the write fails as read-only.)
    assert_eq!(
        e.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("42P01"),
        "{e}"
    );
    let e = plain
        .execute("UPDATE public.organizations SET name = name WHERE false")
        .await
        .unwrap_err();
    assert_eq!(
        e.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("25006"),
        "{e}"
    );
    plain.close().await.unwrap();
    // Pinned: the role's settings do not apply.
    let mut conn = PgConnection::connect_with(&pinned).await.unwrap();
    let path: String = sqlx::query_scalar("SHOW search_path")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(path, "public");
    conn.execute(write).await.unwrap();
    conn.close().await.unwrap();
    run(&pinned, "ALTER ROLE CURRENT_USER RESET ALL").await;

    // The password: the role changes its own, and the application's next password login
    // fails; another login role (another pool or service) still logs in.
    let tcp = TestCluster::global().unwrap().tcp_address().unwrap();
    let other = as_login(
        db.app_options_at(tcp),
        &login_role(&db, "other_pool", None).await,
    );
    PgConnection::connect_with(&db.app_options_at(tcp))
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let changed = uuid::Uuid::new_v4().simple().to_string();
    run(
        &app,
        &format!("ALTER ROLE CURRENT_USER PASSWORD '{changed}'"),
    )
    .await;
    let e = PgConnection::connect_with(&db.app_options_at(tcp))
        .await
        .unwrap_err();
    assert_eq!(
        e.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("28P01"),
        "{e}"
    );
    PgConnection::connect_with(&other)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
}
