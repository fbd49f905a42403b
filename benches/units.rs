//! The per-unit cost of `tenancy`'s safety, against what an application would otherwise
//! write, measured in one run on the throwaway PostgreSQL:
//!
//! 1. units of work with one point query by id, on loopback TCP and through a proxy adding
//!    0.5 ms each way, with round trips counted exactly at a proxy;
//! 2. throughput of 64 tasks on a pool of 16;
//! 3. the policy's cost on 1,000,000 projects over 1,000 organizations (scaled down in fast
//!    mode), with the plans' node types.
//!
//! Baselines (`autocommit`, `plain_tx`, the `explicit_where` listing, and the lookup of
//! `seed_authorized`) connect as a role with BYPASSRLS and filter explicitly: what an
//! application without RLS would run. Every pool has the same settings (4 connections,
//! `test_before_acquire(false)`).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tenancy::testing::{TcpProxy, TestCluster, TestDatabase};
use tenancy::{ContextKey, Error, OrgContext, OrgId, Role, TenantPool, UserId};
use tokio::runtime::Runtime;
use uuid::Uuid;

const Q_RLS: &str = "SELECT name FROM projects WHERE id = $1";
const Q_EXPLICIT: &str = "SELECT name FROM projects WHERE organization_id = $1 AND id = $2";
/// The article's context statement, with what today's policies also want: the context bound
/// to its transaction.
const SET_CONTEXT: &str = "SELECT set_config('app.current_org_id', $1, true), \
                           set_config('app.current_unit', transaction_timestamp()::text, true)";

struct Fixture {
    db: TestDatabase,
    bypass_role: (String, String),
    ctx: OrgContext,
    project: Uuid,
    /// The same data in a second database in hardened mode, its key and its project id.
    hardened: Option<(TestDatabase, ContextKey, Uuid)>,
}

#[derive(Clone)]
struct Pools {
    tenant: TenantPool,
    app: PgPool,
    bypass: PgPool,
    /// A hardened pool on the hardened copy, and the project id there.
    hardened: Option<(TenantPool, Uuid)>,
    /// The article's membership lookup runs on a connection of its own (as a bypassing role:
    /// the article's lookup ran without a tenant context), so that its pool's release ping,
    /// which runs concurrently and off the caller's path, does not enter the round-trip count.
    lookup: Arc<tokio::sync::Mutex<PgConnection>>,
}

async fn pool(options: PgConnectOptions, max: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(max)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .unwrap()
}

async fn pools(f: &Fixture, addr: SocketAddr, max: u32) -> Pools {
    let app = pool(f.db.app_options_at(addr), max).await;
    let bypass_opts =
        f.db.app_options_at(addr)
            .username(&f.bypass_role.0)
            .password(&f.bypass_role.1);
    let hardened = match &f.hardened {
        Some((db, key, project)) => Some((
            TenantPool::hardened(pool(db.app_options_at(addr), max).await, key.clone())
                .await
                .unwrap(),
            *project,
        )),
        None => None,
    };
    Pools {
        hardened,
        tenant: TenantPool::new(app.clone()).await.unwrap(),
        app,
        lookup: Arc::new(tokio::sync::Mutex::new(
            PgConnection::connect_with(&bypass_opts).await.unwrap(),
        )),
        bypass: pool(bypass_opts, max).await,
    }
}

/// A role that bypasses RLS (not superuser), with the same grants as the application role.
async fn bypass_role(db: &TestDatabase) -> (String, String) {
    let cluster = TestCluster::global().unwrap();
    let name = format!("{}_bypass", db.name());
    let mut admin = PgConnection::connect_with(&cluster.admin_options().database(db.name()))
        .await
        .unwrap();
    let password = Uuid::new_v4().simple().to_string();
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "CREATE ROLE {name} LOGIN BYPASSRLS PASSWORD '{password}'"
        )))
        .await
        .unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {name}"
        )))
        .await
        .unwrap();
    (name, password)
}

async fn fixture() -> Fixture {
    let mut f = unhardened_fixture().await;
    let copy = unhardened_fixture().await;
    let key = ContextKey::generate();
    copy.db.harden(&key, 1).await.unwrap();
    f.hardened = Some((copy.db, key, copy.project));
    f
}

async fn unhardened_fixture() -> Fixture {
    let db = TestDatabase::create().await.unwrap();
    let tenant = db.app_pool(2).await.unwrap();
    let user = UserId::new("user_bench").unwrap();
    let mut ctx = None;
    let mut project = Uuid::nil();
    for i in 0..10 {
        let org = OrgId::from_external_id(&format!("org_bench_{i}"));
        let c = tenant
            .create_organization(org, &format!("Bench {i}"), None, &user)
            .await
            .unwrap();
        let ids: Vec<Uuid> = tenant
            .with_rls(&c, async |tx| {
                let mut ids = Vec::new();
                for p in 0..100 {
                    ids.push(
                        sqlx::query_scalar("INSERT INTO projects (organization_id, name) VALUES ($1, $2) RETURNING id")
                            .bind(org.as_uuid())
                            .bind(format!("project {p}"))
                            .fetch_one(&mut *tx)
                            .await?,
                    );
                }
                Ok::<_, Error>(ids)
            })
            .await
            .unwrap();
        if i == 3 {
            project = ids[42];
            ctx = Some(tenant.authorize(&user, org).await.unwrap());
        }
    }
    let bypass_role = bypass_role(&db).await;
    let mut owner = PgConnection::connect_with(&db.owner_options())
        .await
        .unwrap();
    owner.execute("ANALYZE").await.unwrap();
    Fixture {
        db,
        bypass_role,
        ctx: ctx.unwrap(),
        project,
        hardened: None,
    }
}

// ---- the units -------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Autocommit,
    PlainTx,
    SeedPattern,
    WriteUnit,
    ReadUnit,
    AuthorizedUnit,
    SeedAuthorized,
    /// Diagnostic: `write_unit`'s BEGIN batch (the same `tenancy_enter` call) with `plain_tx`'s
    /// query and role, i.e. the context without RLS. Splits `write_unit`'s extra cost over
    /// `plain_tx` into the batch and the policy.
    ContextWithoutRls,
    /// `read_unit` on the hardened copy: signed entry, sealed context.
    HardenedRead,
    /// `write_unit` on the hardened copy.
    HardenedWrite,
    /// A realistic unit: list 20 rows, insert one, update it (`with_rls`, no filters).
    RealisticUnit,
    /// The same work in a plain transaction of the bypassing role, filtered explicitly.
    RealisticPlain,
}

const UNITS: [Case; 12] = [
    Case::Autocommit,
    Case::PlainTx,
    Case::SeedPattern,
    Case::WriteUnit,
    Case::ReadUnit,
    Case::AuthorizedUnit,
    Case::SeedAuthorized,
    Case::ContextWithoutRls,
    Case::HardenedRead,
    Case::HardenedWrite,
    Case::RealisticUnit,
    Case::RealisticPlain,
];

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Autocommit => "autocommit",
            Case::PlainTx => "plain_tx",
            Case::SeedPattern => "seed_pattern",
            Case::WriteUnit => "write_unit",
            Case::ReadUnit => "read_unit",
            Case::AuthorizedUnit => "authorized_unit",
            Case::SeedAuthorized => "seed_authorized",
            Case::ContextWithoutRls => "context_without_rls",
            Case::HardenedRead => "hardened_read",
            Case::HardenedWrite => "hardened_write",
            Case::RealisticUnit => "realistic_unit",
            Case::RealisticPlain => "realistic_plain_tx",
        }
    }
}

async fn seed_pattern(p: &Pools, ctx: &OrgContext, id: Uuid) -> String {
    // The article's withRLS: BEGIN; SELECT set_config(...); query; COMMIT.
    let mut tx = p.app.begin().await.unwrap();
    sqlx::query(SET_CONTEXT)
        .bind(ctx.org_id().to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let name: String = sqlx::query_scalar(Q_RLS)
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    name
}

async fn run(unit: Case, p: &Pools, ctx: &OrgContext, id: Uuid) -> String {
    let org = *ctx.org_id().as_uuid();
    match unit {
        Case::Autocommit => sqlx::query_scalar(Q_EXPLICIT)
            .bind(org)
            .bind(id)
            .fetch_one(&p.bypass)
            .await
            .unwrap(),
        Case::PlainTx => explicit_tx(p, None, org, id).await,
        Case::SeedPattern => seed_pattern(p, ctx, id).await,
        Case::ContextWithoutRls => {
            let batch = format!(
                "BEGIN; CALL tenancy_enter('{}', '{}', '{}', true, \
                 pg_catalog.current_setting('search_path'), pg_catalog.current_setting('search_path'))",
                ctx.org_id(),
                ctx.user_id(),
                ctx.role(),
            );
            explicit_tx(p, Some(batch), org, id).await
        }
        Case::HardenedRead | Case::HardenedWrite => {
            let (pool, id) = p.hardened.as_ref().expect("hardened pool");
            if unit == Case::HardenedRead {
                pool.with_rls_read(ctx, async |tx| point_query(tx, *id).await)
                    .await
                    .unwrap()
            } else {
                pool.with_rls(ctx, async |tx| point_query(tx, *id).await)
                    .await
                    .unwrap()
            }
        }
        Case::RealisticUnit => p
            .tenant
            .with_rls(ctx, async |tx| realistic(tx, None).await)
            .await
            .unwrap(),
        Case::RealisticPlain => {
            let mut tx = p.bypass.begin().await.unwrap();
            let name = realistic(&mut tx, Some(org)).await.unwrap();
            tx.commit().await.unwrap();
            name
        }
        Case::WriteUnit => p
            .tenant
            .with_rls(ctx, async |tx| point_query(tx, id).await)
            .await
            .unwrap(),
        Case::ReadUnit => p
            .tenant
            .with_rls_read(ctx, async |tx| point_query(tx, id).await)
            .await
            .unwrap(),
        Case::AuthorizedUnit => p
            .tenant
            .with_member(ctx.user_id(), ctx.org_id(), Role::Member, async |tx| {
                point_query(tx, id).await
            })
            .await
            .unwrap(),
        Case::SeedAuthorized => {
            // The article's requireOrgRole: a lookup, then its withRLS.
            let role: Option<String> = sqlx::query_scalar(
                "SELECT role FROM organization_members WHERE organization_id = $1 AND user_id = $2",
            )
            .bind(org)
            .bind(ctx.user_id().as_str())
            .fetch_optional(&mut *p.lookup.lock().await)
            .await
            .unwrap();
            assert!(role.is_some_and(|r| r.parse::<Role>().unwrap() >= Role::Member));
            seed_pattern(p, ctx, id).await
        }
    }
}

/// The explicit-filter query in a transaction of the bypassing role, begun with `BEGIN` or
/// with `begin`.
async fn explicit_tx(p: &Pools, begin: Option<String>, org: Uuid, id: Uuid) -> String {
    let mut tx = match begin {
        None => p.bypass.begin().await.unwrap(),
        Some(sql) => p.bypass.begin_with(sqlx::AssertSqlSafe(sql)).await.unwrap(),
    };
    let name = sqlx::query_scalar(Q_EXPLICIT)
        .bind(org)
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    name
}

/// The realistic unit's work: list 20 projects, insert one, rename it. `org` filters and
/// supplies the organization explicitly (the plain transaction); `None` leaves both to the
/// policy and the context (the tenancy unit).
async fn realistic(tx: &mut PgConnection, org: Option<Uuid>) -> Result<String, Error> {
    let listed: Vec<(Uuid, String)> = match org {
        Some(org) => {
            sqlx::query_as(
                "SELECT id, name FROM projects WHERE organization_id = $1 ORDER BY id LIMIT 20",
            )
            .bind(org)
            .fetch_all(&mut *tx)
            .await?
        }
        None => {
            sqlx::query_as("SELECT id, name FROM projects ORDER BY id LIMIT 20")
                .fetch_all(&mut *tx)
                .await?
        }
    };
    let id: Uuid = match org {
        Some(org) => {
            sqlx::query_scalar(
                "INSERT INTO projects (organization_id, name) VALUES ($1, 'new') RETURNING id",
            )
            .bind(org)
            .fetch_one(&mut *tx)
            .await?
        }
        None => {
            sqlx::query_scalar(
                "INSERT INTO projects (organization_id, name) \
                 VALUES (tenancy_current_org_id(), 'new') RETURNING id",
            )
            .fetch_one(&mut *tx)
            .await?
        }
    };
    let renamed = match org {
        Some(org) => sqlx::query(
            "UPDATE projects SET name = 'renamed' WHERE organization_id = $1 AND id = $2",
        )
        .bind(org)
        .bind(id),
        None => sqlx::query("UPDATE projects SET name = 'renamed' WHERE id = $1").bind(id),
    }
    .execute(&mut *tx)
    .await?
    .rows_affected();
    assert_eq!((listed.len(), renamed), (20, 1));
    Ok(listed[0].1.clone())
}

/// The units' one query, with no tenant filter: the policy supplies it.
async fn point_query(tx: &mut PgConnection, id: Uuid) -> Result<String, Error> {
    Ok(sqlx::query_scalar(Q_RLS).bind(id).fetch_one(tx).await?)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---- 1. round trips and latency ----------------------------------------------------------

/// Round trips the caller waits for: one connection per pool (every statement prepared after
/// the warm-up), on a current-thread runtime so that the pool's release task (which flushes a
/// read unit's queued ROLLBACK) cannot run before the count is read.
fn round_trips(f: &Fixture, server: SocketAddr) -> Vec<(Case, u64)> {
    let proxy = TcpProxy::start(server, Duration::ZERO).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let p = pools(f, proxy.addr(), 1).await;
        let mut out = Vec::new();
        for unit in UNITS {
            run(unit, &p, &f.ctx, f.project).await; // prepares statements
            let mut counts = Vec::new();
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(20)).await; // previous release done
                let before = proxy.stats().round_trips();
                run(unit, &p, &f.ctx, f.project).await;
                counts.push(proxy.stats().round_trips() - before);
            }
            counts.sort();
            assert_eq!(
                counts.first(),
                counts.last(),
                "{}: unstable round trips {counts:?}",
                unit.name()
            );
            out.push((unit, counts[0]));
        }
        out
    })
}

fn latency(c: &mut criterion::Criterion, rt: &Runtime, f: &Fixture, label: &str, addr: SocketAddr) {
    let p = rt.block_on(pools(f, addr, 4));
    let mut group = c.benchmark_group(label);
    for unit in UNITS {
        let name = format!("{label}/{}", unit.name());
        group.bench_function(unit.name(), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (p, name) = (p.clone(), name.clone());
                let (ctx, id) = (f.ctx.clone(), f.project);
                async move {
                    let t = Instant::now();
                    for _ in 0..iters {
                        std::hint::black_box(run(unit, &p, &ctx, id).await);
                    }
                    let e = t.elapsed();
                    support::record(&name, e, iters);
                    e
                }
            })
        });
    }
    group.finish();

    // The printed figures come from an interleaved A/B measurement on the same pools: each
    // round times a batch of every unit, in a rotating order, so that drift on a shared
    // machine (other tenants, autovacuum, frequency changes) hits all units alike. The
    // figure is the median over rounds of each batch's time per unit.
    let (rounds, batch) = match (support::fast(), label) {
        (true, _) => (5, 10),
        (false, "loopback") => (41, 200),
        (false, _) => (41, 20),
    };
    rt.block_on(async {
        for round in 0..rounds {
            for k in 0..UNITS.len() {
                let unit = UNITS[(round + k) % UNITS.len()];
                let t = Instant::now();
                for _ in 0..batch {
                    std::hint::black_box(run(unit, &p, &f.ctx, f.project).await);
                }
                support::record(&interleaved(label, unit), t.elapsed(), batch as u64);
            }
        }
    });
}

fn interleaved(label: &str, unit: Case) -> String {
    format!("{label}/{}/interleaved", unit.name())
}

// ---- 2. concurrency ----------------------------------------------------------------------

fn throughput(rt: &Runtime, p: &Pools, f: &Fixture, unit: Case, window: Duration) -> f64 {
    rt.block_on(async {
        let done = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + window;
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (p, ctx, id, done) = (p.clone(), f.ctx.clone(), f.project, done.clone());
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        run(unit, &p, &ctx, id).await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let start = Instant::now();
        for t in tasks {
            t.await.unwrap();
        }
        done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
    })
}

// ---- 3. policy cost ----------------------------------------------------------------------

struct PolicyFixture {
    pools: Pools,
    orgs: Vec<OrgId>,
    user: UserId,
}

async fn policy_fixture(server: SocketAddr, orgs: usize, per_org: usize) -> PolicyFixture {
    let db = TestDatabase::create().await.unwrap();
    let cluster = TestCluster::global().unwrap();
    let mut admin = PgConnection::connect_with(&cluster.admin_options().database(db.name()))
        .await
        .unwrap();
    let ids: Vec<OrgId> = (0..orgs)
        .map(|i| OrgId::from_external_id(&format!("org_policy_{i}")))
        .collect();
    let uuids: Vec<Uuid> = ids.iter().map(|o| *o.as_uuid()).collect();
    // Bulk load as the cluster's superuser (setup only; measurements never use it).
    sqlx::query(
        "INSERT INTO organizations (id, name) SELECT id, id::text FROM unnest($1::uuid[]) AS id",
    )
    .bind(&uuids)
    .execute(&mut admin)
    .await
    .unwrap();
    // The listing's user is a member of every organization (every unit checks membership).
    sqlx::query(
        "INSERT INTO organization_members (organization_id, user_id, role) \
         SELECT id, 'user_policy', 'member' FROM unnest($1::uuid[]) AS id",
    )
    .bind(&uuids)
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO projects (organization_id, name) \
         SELECT o, 'project ' || g FROM unnest($1::uuid[]) AS o, generate_series(1, $2) AS g",
    )
    .bind(&uuids)
    .bind(per_org as i32)
    .execute(&mut admin)
    .await
    .unwrap();
    let app_role = db.app_options().get_username().to_owned();
    // A copy of the table under the article's policy (text cast, no bare column).
    for sql in [
        "CREATE TABLE projects_seed_policy AS SELECT * FROM projects".to_owned(),
        "ALTER TABLE projects_seed_policy ADD PRIMARY KEY (organization_id, id)".to_owned(),
        "ALTER TABLE projects_seed_policy ENABLE ROW LEVEL SECURITY".to_owned(),
        "ALTER TABLE projects_seed_policy FORCE ROW LEVEL SECURITY".to_owned(),
        "CREATE POLICY seed_policy ON projects_seed_policy \
         USING (organization_id::text = current_setting('app.current_org_id', true))"
            .to_owned(),
        format!("GRANT SELECT ON projects_seed_policy TO {app_role}"),
        "CREATE TABLE projects_role_policy AS SELECT * FROM projects".to_owned(),
        "ALTER TABLE projects_role_policy ADD PRIMARY KEY (organization_id, id)".to_owned(),
        "ALTER TABLE projects_role_policy ENABLE ROW LEVEL SECURITY".to_owned(),
        "ALTER TABLE projects_role_policy FORCE ROW LEVEL SECURITY".to_owned(),
        "CREATE POLICY role_policy ON projects_role_policy \
         USING (organization_id = (SELECT tenancy_current_org_id()) \
                AND (SELECT tenancy_current_org_role()) IN ('member', 'admin', 'owner'))"
            .to_owned(),
        format!("GRANT SELECT ON projects_role_policy TO {app_role}"),
        "VACUUM ANALYZE projects_role_policy".to_owned(),
        "VACUUM ANALYZE projects".to_owned(),
        "VACUUM ANALYZE projects_seed_policy".to_owned(),
    ] {
        admin.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
    }
    let bypass_role = bypass_role(&db).await;
    let user = UserId::new("user_policy").unwrap();
    let f = Fixture {
        db,
        bypass_role,
        ctx: OrgContext::from_verified_session(ids[0], user.clone(), Role::Member),
        project: Uuid::nil(),
        hardened: None,
    };
    PolicyFixture {
        pools: pools(&f, server, 4).await,
        orgs: ids,
        user,
    }
}

#[derive(Clone, Copy)]
enum Listing {
    Rls,
    ExplicitWhere,
    SeedPolicy,
    /// The tenant policy and a role condition (`tenancy_current_org_role()`), on a copy.
    RolePolicy,
}

async fn listing(kind: Listing, p: &Pools, org: OrgId, user: &UserId) -> usize {
    match kind {
        Listing::Rls | Listing::RolePolicy => {
            let ctx = OrgContext::from_verified_session(org, user.clone(), Role::Member);
            let sql = if matches!(kind, Listing::Rls) {
                "SELECT id, name FROM projects"
            } else {
                "SELECT id, name FROM projects_role_policy"
            };
            p.tenant
                .with_rls_read(&ctx, async |tx| {
                    Ok::<_, Error>(sqlx::query(sql).fetch_all(tx).await?.len())
                })
                .await
                .unwrap()
        }
        Listing::ExplicitWhere => {
            let mut tx = p.bypass.begin_with("BEGIN READ ONLY").await.unwrap();
            sqlx::query("SELECT id, name FROM projects WHERE organization_id = $1")
                .bind(org.as_uuid())
                .fetch_all(&mut *tx)
                .await
                .unwrap()
                .len()
        }
        Listing::SeedPolicy => {
            let mut tx = p.app.begin_with("BEGIN READ ONLY").await.unwrap();
            sqlx::query(SET_CONTEXT)
                .bind(org.to_string())
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("SELECT id, name FROM projects_seed_policy")
                .fetch_all(&mut *tx)
                .await
                .unwrap()
                .len()
        }
    }
}

/// Node types of the plan, outermost first, as PostgreSQL reports them.
async fn plan(p: &Pools, kind: Listing, org: OrgId) -> String {
    let (pool, sql, set) = match kind {
        Listing::Rls => (
            &p.app,
            "EXPLAIN (FORMAT JSON) SELECT id, name FROM projects",
            true,
        ),
        Listing::ExplicitWhere => (
            &p.bypass,
            "EXPLAIN (FORMAT JSON) SELECT id, name FROM projects WHERE organization_id = $1",
            false,
        ),
        Listing::SeedPolicy => (
            &p.app,
            "EXPLAIN (FORMAT JSON) SELECT id, name FROM projects_seed_policy",
            true,
        ),
        Listing::RolePolicy => (
            &p.app,
            "EXPLAIN (FORMAT JSON) SELECT id, name FROM projects_role_policy",
            true,
        ),
    };
    let mut tx = pool.begin().await.unwrap();
    if set {
        sqlx::query(SET_CONTEXT)
            .bind(org.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let q = sqlx::query_scalar::<_, sqlx::types::JsonValue>(sql);
    let q = if set { q } else { q.bind(org.as_uuid()) };
    let json = q.fetch_one(&mut *tx).await.unwrap();
    let mut nodes = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        if let Some(t) = v.get("Node Type").and_then(|t| t.as_str()) {
            out.push(t.to_owned());
        }
        for child in v
            .get("Plans")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            walk(child, out);
        }
    }
    walk(&json[0]["Plan"], &mut nodes);
    nodes.join(" > ")
}

fn main() {
    let mut c = support::criterion();
    let rt = runtime();
    let server = TestCluster::global()
        .expect("throwaway PostgreSQL")
        .tcp_address()
        .expect("TCP listener");
    let f = rt.block_on(fixture());

    // 1. Round trips, counted at a proxy.
    if support::section("round_trips") {
        for (unit, n) in round_trips(&f, server) {
            support::report(&format!("round_trips.{}", unit.name()), n);
        }
    }
    if support::section("latency") {
        latency_section(&mut c, &rt, &f, server);
    }
    if support::section("concurrent") {
        concurrent_section(&rt, &f, server);
    }
    if support::section("policy") {
        policy_section(&mut c, &rt, server);
    }
    c.final_summary();
}

fn latency_section(c: &mut criterion::Criterion, rt: &Runtime, f: &Fixture, server: SocketAddr) {
    // 1. Latency: loopback, and 1 ms round-trip time through the latency proxy.
    let proxy = TcpProxy::start(server, Duration::from_micros(500)).unwrap();
    latency(c, rt, f, "loopback", server);
    latency(c, rt, f, "rtt1ms", proxy.addr());
    let m = |label: &str, unit: Case| support::median_all(&interleaved(label, unit));
    for label in ["loopback", "rtt1ms"] {
        for unit in UNITS {
            support::report_time(&format!("time.{label}.{}", unit.name()), m(label, unit));
        }
    }
    for (name, label, ours, theirs) in [
        (
            "ratio.rtt1ms.read_unit_vs_plain_tx",
            "rtt1ms",
            Case::ReadUnit,
            Case::PlainTx,
        ),
        (
            "ratio.rtt1ms.write_unit_vs_plain_tx",
            "rtt1ms",
            Case::WriteUnit,
            Case::PlainTx,
        ),
        (
            "ratio.rtt1ms.seed_vs_read_unit",
            "rtt1ms",
            Case::SeedPattern,
            Case::ReadUnit,
        ),
        (
            "ratio.rtt1ms.authorized_unit_vs_seed_authorized",
            "rtt1ms",
            Case::AuthorizedUnit,
            Case::SeedAuthorized,
        ),
        (
            "ratio.loopback.write_unit_vs_plain_tx",
            "loopback",
            Case::WriteUnit,
            Case::PlainTx,
        ),
        (
            "ratio.loopback.read_unit_vs_plain_tx",
            "loopback",
            Case::ReadUnit,
            Case::PlainTx,
        ),
        // Diagnostics: the BEGIN batch alone, then the policy alone.
        (
            "ratio.loopback.context_without_rls_vs_plain_tx",
            "loopback",
            Case::ContextWithoutRls,
            Case::PlainTx,
        ),
        (
            "ratio.loopback.write_unit_vs_context_without_rls",
            "loopback",
            Case::WriteUnit,
            Case::ContextWithoutRls,
        ),
        (
            "ratio.rtt1ms.hardened_read_vs_read_unit",
            "rtt1ms",
            Case::HardenedRead,
            Case::ReadUnit,
        ),
        (
            "ratio.loopback.hardened_read_vs_read_unit",
            "loopback",
            Case::HardenedRead,
            Case::ReadUnit,
        ),
        (
            "ratio.rtt1ms.realistic_unit_vs_plain_tx",
            "rtt1ms",
            Case::RealisticUnit,
            Case::RealisticPlain,
        ),
        (
            "ratio.loopback.realistic_unit_vs_plain_tx",
            "loopback",
            Case::RealisticUnit,
            Case::RealisticPlain,
        ),
    ] {
        support::report_ratio(name, m(label, ours) / m(label, theirs));
    }
}

fn concurrent_section(rt: &Runtime, f: &Fixture, server: SocketAddr) {
    // 2. Concurrency: 64 tasks on a pool of 16, alternating runs, median of each.
    let p16 = rt.block_on(pools(f, server, 16));
    let window = if support::fast() {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(5)
    };
    let rounds = if support::fast() { 1 } else { 5 };
    let cases = [
        Case::PlainTx,
        Case::ContextWithoutRls,
        Case::WriteUnit,
        Case::HardenedWrite,
        Case::RealisticPlain,
        Case::RealisticUnit,
    ];
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (i, case) in cases.iter().enumerate() {
            runs[i].push(throughput(rt, &p16, f, *case, window));
        }
    }
    let median = |case: Case| {
        let i = cases.iter().position(|c| *c == case).unwrap();
        support::median_of(&mut runs[i].clone())
    };
    let (ours, plain, context) = (
        median(Case::WriteUnit),
        median(Case::PlainTx),
        median(Case::ContextWithoutRls),
    );
    let (hardened, realistic, realistic_plain) = (
        median(Case::HardenedWrite),
        median(Case::RealisticUnit),
        median(Case::RealisticPlain),
    );
    for (case, value) in [
        (Case::HardenedWrite, hardened),
        (Case::RealisticUnit, realistic),
        (Case::RealisticPlain, realistic_plain),
    ] {
        support::report(
            &format!("throughput.concurrent.{}", case.name()),
            format!("{value:.0}/s"),
        );
    }
    support::report_ratio("ratio.concurrent.hardened_vs_write_unit", hardened / ours);
    support::report_ratio(
        "ratio.concurrent.realistic_unit_vs_plain_tx",
        realistic / realistic_plain,
    );
    support::report("throughput.concurrent.write_unit", format!("{ours:.0}/s"));
    support::report("throughput.concurrent.plain_tx", format!("{plain:.0}/s"));
    support::report(
        "throughput.concurrent.context_without_rls",
        format!("{context:.0}/s"),
    );
    support::report_ratio("ratio.concurrent.write_unit_vs_plain_tx", ours / plain);
    // Where the difference goes: the checked entry (as a role without RLS), then the policies.
    support::report_ratio(
        "ratio.concurrent.context_without_rls_vs_plain_tx",
        context / plain,
    );
    support::report_ratio(
        "ratio.concurrent.write_unit_vs_context_without_rls",
        ours / context,
    );
}

fn policy_section(c: &mut criterion::Criterion, rt: &Runtime, server: SocketAddr) {
    // 3. Policy cost.
    let (orgs, per_org) = if support::fast() {
        (1000, 50)
    } else {
        (1000, 1000)
    };
    let pf = rt.block_on(policy_fixture(server, orgs, per_org));
    support::report("policy.rows", orgs * per_org);
    let mut group = c.benchmark_group("policy");
    for (name, kind) in [
        ("rls", Listing::Rls),
        ("explicit_where", Listing::ExplicitWhere),
        ("seed_policy", Listing::SeedPolicy),
        ("role_policy", Listing::RolePolicy),
    ] {
        let key = format!("policy/{name}");
        group.bench_function(name, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (p, orgs, user, key) = (
                    pf.pools.clone(),
                    pf.orgs.clone(),
                    pf.user.clone(),
                    key.clone(),
                );
                async move {
                    let t = Instant::now();
                    for i in 0..iters as usize {
                        let n = listing(kind, &p, orgs[i % orgs.len()], &user).await;
                        assert_eq!(n, per_org);
                    }
                    let e = t.elapsed();
                    support::record(&key, e, iters);
                    e
                }
            })
        });
        support::report(
            &format!("plan.{name}"),
            rt.block_on(plan(&pf.pools, kind, pf.orgs[7])),
        );
    }
    group.finish();
    // Figures from interleaved rounds, as for the unit latencies (see `latency`).
    let kinds = [
        ("rls", Listing::Rls, 50),
        ("explicit_where", Listing::ExplicitWhere, 50),
        ("seed_policy", Listing::SeedPolicy, 2),
        ("role_policy", Listing::RolePolicy, 50),
    ];
    let rounds = if support::fast() { 5 } else { 21 };
    rt.block_on(async {
        let mut next = 0;
        for round in 0..rounds {
            for k in 0..kinds.len() {
                let (name, kind, batch) = kinds[(round + k) % kinds.len()];
                let t = Instant::now();
                for _ in 0..batch {
                    next += 1;
                    listing(kind, &pf.pools, pf.orgs[next % pf.orgs.len()], &pf.user).await;
                }
                support::record(&format!("policy/{name}/interleaved"), t.elapsed(), batch);
            }
        }
    });
    let pm = |n: &str| support::median_all(&format!("policy/{n}/interleaved"));
    for n in ["rls", "explicit_where", "seed_policy", "role_policy"] {
        support::report_time(&format!("time.policy.{n}"), pm(n));
    }
    support::report_ratio(
        "ratio.policy.rls_vs_explicit_where",
        pm("rls") / pm("explicit_where"),
    );
    support::report_ratio(
        "ratio.policy.seed_policy_vs_rls",
        pm("seed_policy") / pm("rls"),
    );
    support::report_ratio(
        "ratio.policy.role_policy_vs_rls",
        pm("role_policy") / pm("rls"),
    );
}
