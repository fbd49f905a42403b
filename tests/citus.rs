//! The same guarantees on a real Citus cluster (a coordinator and two workers, started by
//! `pg_tenancy::testing::CitusCluster`): a tenant table distributed by `organization_id`
//! (`tenancy_distribute`), its policies running on the workers with the context the entry
//! propagates. Each case runs as the application role (neither superuser nor BYPASSRLS) and as
//! the tables' owner.
//!
//! Without a PostgreSQL that has Citus installed, each test prints `SKIPPED <test>: <reason>`;
//! under `TENANCY_REQUIRE_CITUS` (set by `.ci/run`, which builds Citus) it fails instead.

#[path = "support/mod.rs"]
#[allow(dead_code)] // Shared with the other test binaries; this one only skips.
mod support;

use pg_tenancy::audit::{AuditOptions, PolicyOptions, policy_sql_with};
use pg_tenancy::testing::{CitusCluster, HarnessError, TestDatabase};
use pg_tenancy::{Error, OrgContext, OrgId, Role, TenantPool, UserId};
use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The tenant table as a user writes it; the generator's Citus form (`pg-tenancy policy
/// projects --citus`) gives it its policy (the bare call: Citus refuses a subquery in a
/// policy) and distributes it (`tenancy_distribute`).
const PROJECTS: &str = "
CREATE TABLE projects (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    name            text NOT NULL,
    PRIMARY KEY (organization_id, id)
)";

/// Projects each organization starts with: enough to land on both workers' shards.
const PROJECTS_PER_ORG: usize = 6;

/// The cluster, or why it did not start (and whether that is Citus's absence).
static CLUSTER: OnceCell<Result<CitusCluster, (bool, String)>> = OnceCell::const_new();

/// The process's Citus cluster, or `None` (after `SKIPPED`) when Citus is not installed.
async fn cluster() -> Option<&'static CitusCluster> {
    let started = CLUSTER
        .get_or_init(|| async {
            CitusCluster::start()
                .await
                .map_err(|e| (matches!(e, HarnessError::NoCitus), e.to_string()))
        })
        .await;
    match started {
        Ok(c) => Some(c),
        Err((true, reason)) => {
            support::skip::skip_or_fail("TENANCY_REQUIRE_CITUS", reason);
            None
        }
        Err((false, e)) => panic!("the Citus cluster did not start: {e}"),
    }
}

#[derive(Debug, Clone, Copy)]
enum As {
    App,
    Owner,
}

struct Org {
    id: OrgId,
    owner: UserId,
    member: UserId,
}

impl Org {
    fn ctx(&self, role: Role) -> OrgContext {
        let user = if role == Role::Owner {
            &self.owner
        } else {
            &self.member
        };
        OrgContext::from_verified_session(self.id, user.clone(), role)
    }
}

struct World {
    db: TestDatabase,
    pool: TenantPool,
    a: Org,
    b: Org,
}

/// A fresh database on the cluster with `projects` distributed, and two organizations, each
/// with an owner, a member and [`PROJECTS_PER_ORG`] projects written through units.
async fn world(role: As) -> Option<World> {
    let cluster = cluster().await?;
    let db = cluster.create_database().await.expect("Citus database");
    let mut owner = PgConnection::connect_with(&db.owner_options())
        .await
        .unwrap();
    owner.execute(PROJECTS).await.expect("create projects");
    let policy = policy_sql_with("projects", &PolicyOptions::default().for_citus());
    owner
        .execute(sqlx::AssertSqlSafe(policy))
        .await
        .expect("policy and distribution");
    owner.close().await.unwrap();
    db.grant_app(&["projects"]).await.unwrap();
    let pool = match role {
        As::App => db.app_pool(4).await,
        As::Owner => db.owner_pool(4).await,
    }
    .expect("tenant pool");
    let a = seed(&pool, "alpha").await;
    let b = seed(&pool, "beta").await;
    Some(World { db, pool, a, b })
}

async fn seed(pool: &TenantPool, slug: &str) -> Org {
    let id = OrgId::from_external_id(&format!("org_{slug}"));
    let org = Org {
        id,
        owner: UserId::new(format!("user_{slug}_owner")).unwrap(),
        member: UserId::new(format!("user_{slug}_member")).unwrap(),
    };
    let owner = pool
        .create_organization(id, slug, Some(slug), &org.owner)
        .await
        .expect("create organization");
    pool.add_member(&owner, &org.member, Role::Member)
        .await
        .expect("add member");
    pool.with_rls(&org.ctx(Role::Member), async |tx| {
        for i in 0..PROJECTS_PER_ORG {
            sqlx::query("INSERT INTO projects (organization_id, name) VALUES ($1, $2)")
                .bind(id.as_uuid())
                .bind(format!("{slug} {i}"))
                .execute(&mut *tx)
                .await?;
        }
        Ok::<_, Error>(())
    })
    .await
    .expect("seed projects");
    org
}

/// The organization of every project a unit as `ctx` sees, with no `WHERE` (every shard).
async fn visible(pool: &TenantPool, ctx: &OrgContext) -> Result<Vec<Uuid>, Error> {
    pool.with_rls_read(ctx, async |tx| {
        Ok(sqlx::query_scalar("SELECT organization_id FROM projects")
            .fetch_all(tx)
            .await?)
    })
    .await
}

fn sqlstate(e: &Error) -> Option<String> {
    match e {
        Error::Database(sqlx::Error::Database(d)) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

macro_rules! both_roles {
    ($($case:ident),* $(,)?) => {
        mod as_app {
            $(#[tokio::test] async fn $case() { super::$case(super::As::App).await })*
        }
        mod as_owner {
            $(#[tokio::test] async fn $case() { super::$case(super::As::Owner).await })*
        }
    };
}

both_roles!(
    a_query_without_the_tenant_column_returns_only_the_organizations_rows,
    writes_into_another_organization_fail,
    no_unit_sees_no_rows,
    the_entry_refuses_non_members_deleted_organizations_and_escalation,
    planted_context_does_not_reach_the_next_unit,
);

/// A unit's `SELECT` without `WHERE` fans out to every shard (its plan says so) and returns
/// exactly its organization's rows, for each organization; a router query aimed at the other
/// organization returns none. The superuser sees both organizations' rows.
async fn a_query_without_the_tenant_column_returns_only_the_organizations_rows(role: As) {
    let Some(w) = world(role).await else { return };
    let cluster = cluster().await.unwrap();
    // The query has no tenant column to prune with: Citus sends it to every shard.
    let plan: Vec<String> = w
        .pool
        .with_rls_read(&w.a.ctx(Role::Member), async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar("EXPLAIN (COSTS OFF) SELECT organization_id FROM projects")
                    .fetch_all(tx)
                    .await?,
            )
        })
        .await
        .unwrap();
    let shards: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'projects'::regclass",
    )
    .fetch_one(&mut *w.pool.pool().acquire().await.unwrap())
    .await
    .unwrap();
    assert!(
        plan.iter()
            .any(|l| l.contains(&format!("Task Count: {shards}"))),
        "not a fan-out over the {shards} shards: {plan:#?}"
    );
    for (me, other) in [(&w.a, &w.b), (&w.b, &w.a)] {
        let seen = visible(&w.pool, &me.ctx(Role::Member)).await.unwrap();
        assert_eq!(seen.len(), PROJECTS_PER_ORG, "its own rows, all of them");
        assert!(seen.iter().all(|o| o == me.id.as_uuid()), "{seen:?}");
        assert!(!seen.contains(other.id.as_uuid()));
        // Router query aimed at the other organization: nothing.
        let aimed: i64 = w
            .pool
            .with_rls_read(&me.ctx(Role::Member), async |tx| {
                Ok::<_, Error>(
                    sqlx::query_scalar("SELECT count(*) FROM projects WHERE organization_id = $1")
                        .bind(other.id.as_uuid())
                        .fetch_one(tx)
                        .await?,
                )
            })
            .await
            .unwrap();
        assert_eq!(aimed, 0);
    }
    // Positive control: the superuser (BYPASSRLS) sees both organizations' rows.
    let mut admin =
        PgConnection::connect_with(&cluster.coordinator().admin_options().database(w.db.name()))
            .await
            .unwrap();
    let all: i64 = sqlx::query_scalar("SELECT count(DISTINCT organization_id) FROM projects")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(all, 2);
}

/// A unit cannot insert a row for another organization, move its row into one, or delete
/// another's; the same insert for its own organization succeeds (the positive control).
async fn writes_into_another_organization_fail(role: As) {
    let Some(w) = world(role).await else { return };
    let (a, b) = (&w.a, &w.b);
    let insert = |org: Uuid| {
        let ctx = a.ctx(Role::Member);
        let pool = w.pool.clone();
        async move {
            pool.with_rls(&ctx, async |tx| {
                sqlx::query("INSERT INTO projects (organization_id, name) VALUES ($1, 'x')")
                    .bind(org)
                    .execute(&mut *tx)
                    .await?;
                Ok::<_, Error>(())
            })
            .await
        }
    };
    let refused = insert(*b.id.as_uuid()).await.unwrap_err();
    assert_eq!(sqlstate(&refused).as_deref(), Some("42501"), "{refused:?}");
    insert(*a.id.as_uuid()).await.expect("its own organization");

    let moved = w
        .pool
        .with_rls(&a.ctx(Role::Member), async |tx| {
            sqlx::query("UPDATE projects SET organization_id = $1")
                .bind(b.id.as_uuid())
                .execute(&mut *tx)
                .await?;
            Ok::<_, Error>(())
        })
        .await;
    assert!(moved.is_err(), "a row moved into another organization");
    let deleted = w
        .pool
        .with_rls(&a.ctx(Role::Member), async |tx| {
            Ok::<_, Error>(
                sqlx::query("DELETE FROM projects WHERE organization_id = $1")
                    .bind(b.id.as_uuid())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
            )
        })
        .await
        .unwrap();
    assert_eq!(deleted, 0);
    assert_eq!(
        visible(&w.pool, &b.ctx(Role::Member)).await.unwrap().len(),
        PROJECTS_PER_ORG,
        "B's rows are intact"
    );
    assert_eq!(
        visible(&w.pool, &a.ctx(Role::Member)).await.unwrap().len(),
        PROJECTS_PER_ORG + 1,
        "A's own insert landed"
    );
}

/// A transaction that entered no unit sees no row on any shard, also on a connection that
/// served units before; the same connection inside a unit sees its rows.
async fn no_unit_sees_no_rows(role: As) {
    let Some(w) = world(role).await else { return };
    let options = match role {
        As::App => w.db.app_options(),
        As::Owner => w.db.owner_options(),
    };
    let mut conn = PgConnection::connect_with(&options).await.unwrap();
    let count = "SELECT count(*) FROM projects";
    let bare: i64 = sqlx::query_scalar(count)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(bare, 0);
    // Positive control: the same connection, inside a unit entered by hand as the pool does.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("CALL tenancy_enter($1, $2, 'member', true, tenancy_session_settings())")
        .bind(w.a.id.as_uuid())
        .bind(w.a.member.as_str())
        .execute(&mut *tx)
        .await
        .unwrap();
    let inside: i64 = sqlx::query_scalar(count).fetch_one(&mut *tx).await.unwrap();
    assert_eq!(inside, PROJECTS_PER_ORG as i64);
    tx.commit().await.unwrap();
    // And after it, in a transaction of its own: nothing again (the workers' connections
    // served that unit).
    let mut tx = conn.begin().await.unwrap();
    let after: i64 = sqlx::query_scalar(count).fetch_one(&mut *tx).await.unwrap();
    assert_eq!(after, 0);
    tx.commit().await.unwrap();
}

/// On Citus the entry still refuses a user who is not a member, a deleted organization and a
/// member claiming a higher role; the member with its own role enters (the positive control).
async fn the_entry_refuses_non_members_deleted_organizations_and_escalation(role: As) {
    let Some(w) = world(role).await else { return };
    let outsider = OrgContext::from_verified_session(
        w.a.id,
        UserId::new("user_nobody").unwrap(),
        Role::Member,
    );
    assert!(matches!(
        visible(&w.pool, &outsider).await,
        Err(Error::NotAMember)
    ));
    let escalated = OrgContext::from_verified_session(w.a.id, w.a.member.clone(), Role::Admin);
    assert!(matches!(
        visible(&w.pool, &escalated).await,
        Err(Error::InsufficientRole { .. })
    ));
    assert_eq!(
        visible(&w.pool, &w.a.ctx(Role::Member))
            .await
            .unwrap()
            .len(),
        PROJECTS_PER_ORG
    );
    // The owner deletes organization B (soft delete); B's member can no longer enter.
    w.pool
        .with_rls(&w.b.ctx(Role::Owner), async |tx| {
            sqlx::query("UPDATE organizations SET deleted_at = now() WHERE id = $1")
                .bind(w.b.id.as_uuid())
                .execute(&mut *tx)
                .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    assert!(matches!(
        visible(&w.pool, &w.b.ctx(Role::Owner)).await,
        Err(Error::NotAMember)
    ));
    assert_eq!(
        visible(&w.pool, &w.a.ctx(Role::Member))
            .await
            .unwrap()
            .len(),
        PROJECTS_PER_ORG,
        "A is unaffected"
    );
}

/// Hardened mode on Citus: the seal is not verified on the workers (a hardened unit there
/// would see nothing), so enabling it after the set-up is refused (SQLSTATE 0A000, with the
/// reason), and the set-up refuses a database already hardened. Positive controls: with the
/// refusing trigger disabled, the same `harden` succeeds; the set-up runs again on the
/// database while it is not hardened.
#[tokio::test]
async fn hardened_mode_is_refused_on_citus() {
    let Some(w) = world(As::App).await else {
        return;
    };
    let setup = async || {
        let mut owner = PgConnection::connect_with(&w.db.owner_options())
            .await
            .unwrap();
        let done = owner.execute(pg_tenancy::citus::SETUP).await.map(|_| ());
        owner.close().await.unwrap();
        done
    };
    setup()
        .await
        .expect("the set-up runs again while not hardened");
    let refused_as = |e: &sqlx::Error| {
        let e = e.as_database_error().expect("a database error");
        (e.code().map(|c| c.into_owned()), e.message().to_owned())
    };

    let key = pg_tenancy::ContextKey::generate();
    let refused = match w.db.harden(&key, 2).await {
        Err(HarnessError::Database(e)) => refused_as(&e),
        other => panic!("hardened mode was enabled on Citus: {other:?}"),
    };
    assert_eq!(refused.0.as_deref(), Some("0A000"));
    assert!(
        refused
            .1
            .contains("hardened mode is not supported on Citus"),
        "{refused:?}"
    );

    let mut owner = PgConnection::connect_with(&w.db.owner_options())
        .await
        .unwrap();
    owner
        .execute("ALTER TABLE tenancy_context_key DISABLE TRIGGER tenancy_refuse_hardened_mode")
        .await
        .unwrap();
    owner.close().await.unwrap();
    w.db.harden(&key, 2)
        .await
        .expect("without the trigger, hardened mode is enabled");
    let refused = refused_as(
        &setup()
            .await
            .expect_err("the set-up refuses a hardened database"),
    );
    assert_eq!(refused.0.as_deref(), Some("0A000"));
    assert!(
        refused
            .1
            .contains("hardened mode is not supported on Citus"),
        "{refused:?}"
    );
}

/// On Citus a unit costs the caller the round trips it costs on one server (write 3, read 2,
/// `authorize` 1; `tests/it/round_trips.rs`), counted at a TCP proxy in front of the
/// coordinator: the context reaches the workers inside the entry, in the `BEGIN` round trip.
/// Current-thread runtime, so the pool's release task cannot run before a count is read.
#[tokio::test(flavor = "current_thread")]
async fn a_unit_costs_the_same_round_trips_at_the_coordinator() {
    let Some(w) = world(As::App).await else {
        return;
    };
    let server = cluster()
        .await
        .unwrap()
        .coordinator()
        .tcp_address()
        .expect("the coordinator's TCP listener");
    let proxy = pg_tenancy::testing::TcpProxy::start(server, std::time::Duration::ZERO).unwrap();
    let pool = w.db.app_pool_at(proxy.addr(), 1).await.unwrap();
    let ctx = w.a.ctx(Role::Member);
    let query = "SELECT count(*) FROM projects WHERE organization_id = $1";
    let org = *w.a.id.as_uuid();

    macro_rules! count {
        ($label:expr, $unit:expr) => {{
            $unit;
            let mut counts = Vec::new();
            for _ in 0..5 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                let before = proxy.stats().round_trips();
                $unit;
                counts.push(proxy.stats().round_trips() - before);
            }
            counts.dedup();
            assert_eq!(counts.len(), 1, "{}: unstable count {counts:?}", $label);
            counts[0]
        }};
    }
    let write = count!(
        "write unit",
        pool.with_rls(&ctx, async |tx| {
            let n: i64 = sqlx::query_scalar(query).bind(org).fetch_one(tx).await?;
            assert_eq!(n, PROJECTS_PER_ORG as i64);
            Ok::<_, Error>(())
        })
        .await
        .unwrap()
    );
    let read = count!(
        "read unit",
        pool.with_rls_read(&ctx, async |tx| {
            let n: i64 = sqlx::query_scalar(query).bind(org).fetch_one(tx).await?;
            assert_eq!(n, PROJECTS_PER_ORG as i64);
            Ok::<_, Error>(())
        })
        .await
        .unwrap()
    );
    let authorize = count!(
        "authorize",
        pool.authorize(ctx.user_id(), ctx.org_id()).await.unwrap()
    );
    assert_eq!((write, read, authorize), (3, 2, 1));
}

/// The audit knows Citus: a tenant table that is not distributed is `citus_not_distributed`,
/// and its bare-call policy is `policy_per_row_function` (as on one server); distributed with
/// `tenancy_distribute`, both go. The distributed `projects` has neither, and pg-tenancy's own
/// tables (on the coordinator by design) are not reported.
#[tokio::test]
async fn the_audit_reports_tenant_tables_citus_does_not_distribute() {
    let Some(w) = world(As::App).await else {
        return;
    };
    let mut owner = PgConnection::connect_with(&w.db.owner_options())
        .await
        .unwrap();
    owner
        .execute(
            "CREATE TABLE notes (organization_id uuid NOT NULL, id uuid NOT NULL, \
             PRIMARY KEY (organization_id, id))",
        )
        .await
        .unwrap();
    let policy = policy_sql_with("notes", &PolicyOptions::default().for_citus());
    let (shape, distribute) = policy.split_once("SELECT tenancy_distribute").unwrap();
    owner.execute(sqlx::AssertSqlSafe(shape)).await.unwrap();
    w.db.grant_app(&["notes"]).await.unwrap();
    let codes = async || {
        let report = pg_tenancy::audit::audit(w.pool.pool(), &AuditOptions::default())
            .await
            .unwrap();
        report
            .findings
            .iter()
            .map(|f| (f.code, f.object.clone()))
            .collect::<Vec<_>>()
    };
    let on = |found: &[(&str, String)], code: &str, table: &str| {
        found
            .iter()
            .any(|(c, o)| *c == code && o.ends_with(&format!("public.{table}")))
    };
    let before = codes().await;
    assert!(on(&before, "citus_not_distributed", "notes"), "{before:?}");
    assert!(
        on(&before, "policy_per_row_function", "notes"),
        "{before:?}"
    );
    assert!(
        !on(&before, "citus_not_distributed", "projects"),
        "{before:?}"
    );
    assert!(
        !on(&before, "policy_per_row_function", "projects"),
        "{before:?}"
    );
    assert!(
        !before.iter().any(|(c, o)| c.starts_with("citus_")
            && pg_tenancy::migrations::SERVICE_TABLES
                .iter()
                .any(|t| o.ends_with(&format!("public.{t}")))),
        "{before:?}"
    );

    owner
        .execute(sqlx::AssertSqlSafe(format!(
            "SELECT tenancy_distribute{distribute}"
        )))
        .await
        .unwrap();
    owner.close().await.unwrap();
    let after = codes().await;
    assert!(!on(&after, "citus_not_distributed", "notes"), "{after:?}");
    assert!(!on(&after, "policy_per_row_function", "notes"), "{after:?}");
}

/// Leaks through the pooled connection on Citus: SQL in A's unit leaves session-level context
/// values on the coordinator and, through a query pushed down to the shards, on the worker
/// connections the pooled connection keeps (usually: a transaction outside any unit there
/// then sees A's rows, unless Citus opened fresh worker connections for it); the next unit on that connection, B's, still
/// sees exactly B's rows (every entry re-propagates all four settings), and A's next unit
/// exactly A's. A failing unit leaves nothing either.
async fn planted_context_does_not_reach_the_next_unit(role: As) {
    let Some(w) = world(role).await else { return };
    let db_pool = match role {
        As::App => w.db.app_pool(1).await,
        As::Owner => w.db.owner_pool(1).await,
    }
    .unwrap();
    let (a, b) = (*w.a.id.as_uuid(), *w.b.id.as_uuid());
    let planted: i64 = db_pool
        .with_rls(&w.a.ctx(Role::Member), async |tx| {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT set_config('app.current_org_id', $1::text, false), \
                        set_config('app.current_unit', 'planted', false), \
                        set_config('app.current_org_role', 'owner', false) FROM projects) s",
            )
            .bind(a)
            .fetch_one(&mut *tx)
            .await?;
            Ok::<_, Error>(n)
        })
        .await
        .unwrap();
    assert_eq!(planted, PROJECTS_PER_ORG as i64);
    // The premise: the values reached the worker connections. A transaction outside any unit
    // on this connection sees A's rows there (the residual docs/scaling.md describes; if this
    // fails, the workers' liveness check got stricter: update the docs).
    {
        let mut conn = db_pool.pool().acquire().await.unwrap();
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        let outside: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        // Citus may open fresh worker connections for this transaction (it does, now and
        // then, under load), where nothing was planted: then nothing is visible either.
        assert!(
            outside == PROJECTS_PER_ORG as i64 || outside == 0,
            "outside any unit: {outside} rows"
        );
        if outside == 0 {
            println!(
                "NOTE planted_context_does_not_reach_the_next_unit: the planting did not reach the workers' connections this time"
            );
        }
        tx.rollback().await.unwrap();
    }
    let failing = db_pool
        .with_rls(&w.a.ctx(Role::Member), async |tx| {
            sqlx::query("SELECT set_config('app.current_org_id', $1::text, false)")
                .bind(a)
                .execute(&mut *tx)
                .await?;
            sqlx::query("SELECT 1/0").execute(&mut *tx).await?;
            Ok::<_, Error>(())
        })
        .await;
    assert!(failing.is_err());
    let seen = visible(&db_pool, &w.b.ctx(Role::Member)).await.unwrap();
    assert_eq!(seen.len(), PROJECTS_PER_ORG);
    assert!(seen.iter().all(|o| *o == b), "{seen:?}");
    let seen = visible(&db_pool, &w.a.ctx(Role::Member)).await.unwrap();
    assert_eq!(seen.len(), PROJECTS_PER_ORG);
    assert!(seen.iter().all(|o| *o == a), "{seen:?}");
}

/// A service unit (`ServicePool::with_org`) on Citus sees the organization's rows of a
/// distributed table and no other's.
#[tokio::test]
async fn a_service_unit_sees_its_organization_only() {
    let Some(w) = world(As::App).await else {
        return;
    };
    w.db.grant_service(&["projects"]).await.unwrap();
    let service = w.db.service_pool(1).await.unwrap();
    for org in [&w.a, &w.b] {
        let seen: Vec<Uuid> = service
            .with_org(org.id, async |tx| {
                Ok::<_, Error>(
                    sqlx::query_scalar("SELECT organization_id FROM projects")
                        .fetch_all(tx)
                        .await?,
                )
            })
            .await
            .unwrap();
        assert_eq!(seen.len(), PROJECTS_PER_ORG);
        assert!(seen.iter().all(|o| o == org.id.as_uuid()), "{seen:?}");
    }
}

/// The load with a ledger on Citus: concurrent write units of both organizations, each
/// reading its projects with no `WHERE` (every shard) and adding 1 to its organization's
/// ledger row; then zero rows of the other organization were ever seen, and each ledger holds
/// exactly its organization's committed units. Two seconds here;
/// `TENANCY_CITUS_LOAD_SECS=60 cargo test --test citus ledger` for a long run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_is_exact_under_load() {
    let Some(w) = world(As::App).await else {
        return;
    };
    let mut owner = PgConnection::connect_with(&w.db.owner_options())
        .await
        .unwrap();
    owner
        .execute(
            "CREATE TABLE ledger (organization_id uuid NOT NULL, units bigint NOT NULL, \
             PRIMARY KEY (organization_id))",
        )
        .await
        .unwrap();
    owner
        .execute(sqlx::AssertSqlSafe(policy_sql_with(
            "ledger",
            &PolicyOptions::default().for_citus(),
        )))
        .await
        .unwrap();
    owner.close().await.unwrap();
    w.db.grant_app(&["ledger"]).await.unwrap();
    for org in [&w.a, &w.b] {
        w.pool
            .with_rls(&org.ctx(Role::Member), async |tx| {
                sqlx::query("INSERT INTO ledger VALUES ($1, 0)")
                    .bind(org.id.as_uuid())
                    .execute(&mut *tx)
                    .await?;
                Ok::<_, Error>(())
            })
            .await
            .unwrap();
    }
    let secs: u64 = std::env::var("TENANCY_CITUS_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let pool = w.pool.clone();
            let org = if i % 2 == 0 { &w.a } else { &w.b };
            let (ctx, id) = (org.ctx(Role::Member), *org.id.as_uuid());
            tokio::spawn(async move {
                let (mut committed, mut crossed) = (0i64, 0usize);
                while std::time::Instant::now() < deadline {
                    let seen = pool
                        .with_rls(&ctx, async |tx| {
                            let seen: Vec<Uuid> =
                                sqlx::query_scalar("SELECT organization_id FROM projects")
                                    .fetch_all(&mut *tx)
                                    .await?;
                            sqlx::query(
                                "UPDATE ledger SET units = units + 1 WHERE organization_id = $1",
                            )
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                            Ok::<_, Error>(seen)
                        })
                        .await
                        .unwrap();
                    assert_eq!(seen.len(), PROJECTS_PER_ORG);
                    crossed += seen.iter().filter(|o| **o != id).count();
                    committed += 1;
                }
                (id, committed, crossed)
            })
        })
        .collect();
    let mut expected = std::collections::HashMap::new();
    for t in tasks {
        let (id, committed, crossed) = t.await.unwrap();
        assert_eq!(crossed, 0, "rows of another organization were seen");
        *expected.entry(id).or_insert(0i64) += committed;
    }
    for org in [&w.a, &w.b] {
        let units: i64 = w
            .pool
            .with_rls_read(&org.ctx(Role::Member), async |tx| {
                Ok::<_, Error>(
                    sqlx::query_scalar("SELECT units FROM ledger")
                        .fetch_one(tx)
                        .await?,
                )
            })
            .await
            .unwrap();
        let want = expected[org.id.as_uuid()];
        assert!(want > 0);
        assert_eq!(units, want, "the ledger of {:?}", org.id);
    }
    eprintln!("ledger: {expected:?} in {secs} s");
}
