//! The per-unit cost of `pg-tenancy` on a Citus cluster (a coordinator and two workers on this
//! machine, `testing::CitusCluster`) against the same on one server, in one run: a unit with
//! one router query (the tenant column in its `WHERE`, so Citus sends it to one shard) against
//! the plain transaction an application without Row-Level Security would run (as the
//! superuser, which bypasses the policies), on loopback. Interleaved rounds, medians.
//!
//! Lines: `ratio.citus.read_unit_vs_plain_read_tx`, `ratio.citus.write_unit_vs_plain_tx`, and
//! the same ratios on one server (`ratio.single.*`) measured in the same run for comparison.
//! Without Citus installed it says so and measures nothing (`TENANCY_REQUIRE_CITUS` makes that
//! a failure).
//!
//! Latency on a shared machine moves with whatever else runs (each statement waits for a core
//! three times: client, coordinator, worker), so the same rounds also sum the CPU time the
//! servers spent on them: every backend connected to the bench's database, on every node
//! (`/proc/<pid>/schedstat`, nanoseconds on a CPU), divided by the units run. Lines:
//! `cpu.{citus,single}.<case>` (server CPU per unit), `cpu.{citus,single}.write_unit_extra` and
//! `read_unit_extra` (what the unit adds to its plain transaction), and
//! `ratio.cpu.citus_extra_vs_single_extra.{write,read}_unit`: what the crate costs the servers
//! on Citus against what it costs one server (1.0: the same).

#[path = "support/mod.rs"]
mod support;

use std::time::Instant;

use pg_tenancy::audit::{PolicyOptions, policy_sql_with};
use pg_tenancy::testing::{CitusCluster, HarnessError, TestCluster, TestDatabase};
use pg_tenancy::{Error, OrgContext, OrgId, Role, TenantPool, UserId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use uuid::Uuid;

const TABLE: &str = "CREATE TABLE projects (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    name            text NOT NULL,
    PRIMARY KEY (organization_id, id))";

/// One measured set-up: the tenant pool, the superuser's pool, and the unit's target row.
struct Bench {
    tenant: TenantPool,
    plain: PgPool,
    ctx: OrgContext,
    org: Uuid,
    project: Uuid,
}

#[derive(Clone, Copy, PartialEq)]
enum Case {
    ReadUnit,
    PlainReadTx,
    WriteUnit,
    PlainTx,
}

const READ: &str = "SELECT name FROM projects WHERE organization_id = $1 AND id = $2";
const WRITE: &str = "UPDATE projects SET name = name WHERE organization_id = $1 AND id = $2";

async fn run(b: &Bench, case: Case) {
    match case {
        Case::ReadUnit => {
            b.tenant
                .with_rls_read(&b.ctx, async |tx| {
                    sqlx::query(READ)
                        .bind(b.org)
                        .bind(b.project)
                        .fetch_one(tx)
                        .await?;
                    Ok::<_, Error>(())
                })
                .await
                .unwrap();
        }
        Case::WriteUnit => {
            let n = b
                .tenant
                .with_rls(&b.ctx, async |tx| {
                    Ok::<_, Error>(
                        sqlx::query(WRITE)
                            .bind(b.org)
                            .bind(b.project)
                            .execute(tx)
                            .await?
                            .rows_affected(),
                    )
                })
                .await
                .unwrap();
            assert_eq!(n, 1);
        }
        Case::PlainReadTx | Case::PlainTx => {
            let begin = if case == Case::PlainReadTx {
                "BEGIN READ ONLY"
            } else {
                "BEGIN"
            };
            let mut tx = b.plain.begin_with(begin).await.unwrap();
            let sql = if case == Case::PlainReadTx {
                READ
            } else {
                WRITE
            };
            sqlx::query(sql)
                .bind(b.org)
                .bind(b.project)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }
}

async fn pool(options: PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .unwrap()
}

/// `projects` in `db` (distributed there when `citus`), one organization with a member and
/// 100 projects, and the pools.
async fn bench(db: &TestDatabase, admin: PgConnectOptions, citus: bool) -> Bench {
    let mut owner = PgConnection::connect_with(&db.owner_options())
        .await
        .unwrap();
    owner.execute(TABLE).await.unwrap();
    let options = if citus {
        PolicyOptions::default().for_citus()
    } else {
        PolicyOptions::default()
    };
    owner
        .execute(sqlx::AssertSqlSafe(policy_sql_with("projects", &options)))
        .await
        .unwrap();
    owner.close().await.unwrap();
    db.grant_app(&["projects"]).await.unwrap();
    let tenant = db.app_pool(4).await.unwrap();
    let org = OrgId::from_external_id("org_bench");
    let user = UserId::new("user_bench").unwrap();
    let owner_ctx = tenant
        .create_organization(org, "bench", Some("bench"), &user)
        .await
        .unwrap();
    let project = tenant
        .with_rls(&owner_ctx, async |tx| {
            // Row by row: Citus runs INSERT ... SELECT into a distributed table as a COPY,
            // which Row-Level Security refuses ("COPY FROM not supported with row-level
            // security").
            for i in 0..100 {
                sqlx::query("INSERT INTO projects (organization_id, name) VALUES ($1, $2)")
                    .bind(org.as_uuid())
                    .bind(format!("p{i}"))
                    .execute(&mut *tx)
                    .await?;
            }
            Ok::<Uuid, Error>(
                sqlx::query_scalar("SELECT id FROM projects ORDER BY id LIMIT 1")
                    .fetch_one(&mut *tx)
                    .await?,
            )
        })
        .await
        .unwrap();
    Bench {
        tenant,
        plain: pool(admin.database(db.name())).await,
        ctx: OrgContext::from_verified_session(org, user, Role::Member),
        org: *org.as_uuid(),
        project,
    }
}

/// Nanoseconds on a CPU, so far, of every server process serving database `db` on this
/// machine (its title is `postgres: <user> <db> ...`): the pools' backends, and on Citus the
/// backends the coordinator opened on the workers. Also the part of it spent by the children
/// of the postmaster `coordinator`. Linux only; `None` elsewhere.
fn server_cpu_ns(db: &str, coordinator: u32) -> Option<[u64; 2]> {
    let mut total = [0, 0];
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let title = String::from_utf8_lossy(&cmdline);
        if title.split_whitespace().nth(2) != Some(db) || !title.starts_with("postgres: ") {
            continue;
        }
        let ns = std::fs::read_to_string(entry.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        total[0] += ns;
        if parent_pid(entry.file_name().to_str().unwrap_or("")) == Some(coordinator) {
            total[1] += ns;
        }
    }
    Some(total)
}

/// The parent of process `pid` (`/proc/<pid>/stat`'s fourth field, after the parenthesized
/// name).
fn parent_pid(pid: &str) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Median seconds per unit of each case, from interleaved rounds, and the servers' CPU seconds
/// per unit of each case over all rounds, all nodes and the coordinator's share (`None` where
/// the processes cannot be read).
async fn measure(b: &Bench, db: &str, cases: &[Case]) -> (Vec<f64>, Option<Vec<[f64; 2]>>) {
    let (rounds, per_round) = if support::fast() { (3, 30) } else { (15, 300) };
    for case in cases {
        for _ in 0..20 {
            run(b, *case).await;
        }
    }
    // The postmaster of the server the pools connect to (on Citus, the coordinator).
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&b.plain)
        .await
        .unwrap();
    let coordinator = parent_pid(&backend.to_string()).unwrap_or(0);
    let mut times = vec![Vec::new(); cases.len()];
    let mut cpu = Some(vec![[0_u64; 2]; cases.len()]);
    for _ in 0..rounds {
        for (i, case) in cases.iter().enumerate() {
            let before = server_cpu_ns(db, coordinator);
            let t = Instant::now();
            for _ in 0..per_round {
                run(b, *case).await;
            }
            times[i].push(t.elapsed().as_secs_f64() / f64::from(per_round));
            match (cpu.as_mut(), before, server_cpu_ns(db, coordinator)) {
                (Some(sums), Some(before), Some(after)) => {
                    for k in 0..2 {
                        sums[i][k] += after[k].saturating_sub(before[k]);
                    }
                }
                _ => cpu = None,
            }
        }
    }
    let units = f64::from(rounds * per_round);
    (
        times.iter_mut().map(|v| support::median_of(v)).collect(),
        cpu.map(|sums| {
            sums.iter()
                .map(|ns| ns.map(|ns| ns as f64 / 1e9 / units))
                .collect()
        }),
    )
}

async fn main_async() {
    let cluster = match CitusCluster::start().await {
        Ok(c) => c,
        Err(HarnessError::NoCitus) => {
            assert!(
                std::env::var_os("TENANCY_REQUIRE_CITUS").is_none(),
                "TENANCY_REQUIRE_CITUS is set, and Citus is not installed"
            );
            println!("tenancy-bench: citus = SKIPPED: {}", HarnessError::NoCitus);
            return;
        }
        Err(e) => panic!("the Citus cluster did not start: {e}"),
    };
    let citus_db = cluster.create_database().await.unwrap();
    let citus = bench(&citus_db, cluster.coordinator().admin_options(), true).await;
    let single_db = TestDatabase::create().await.unwrap();
    let single_admin = TestCluster::global().unwrap().admin_options();
    let single = bench(&single_db, single_admin, false).await;
    let cases = [
        Case::ReadUnit,
        Case::PlainReadTx,
        Case::WriteUnit,
        Case::PlainTx,
    ];
    let names = ["read_unit", "plain_read_tx", "write_unit", "plain_tx"];
    let mut extras = Vec::new();
    for (label, b, db) in [
        ("citus", &citus, citus_db.name()),
        ("single", &single, single_db.name()),
    ] {
        let (t, cpu) = measure(b, db, &cases).await;
        for (i, name) in names.iter().enumerate() {
            support::report_time(&format!("time.{label}.{name}"), t[i]);
        }
        support::report_ratio(
            &format!("ratio.{label}.read_unit_vs_plain_read_tx"),
            t[0] / t[1],
        );
        support::report_ratio(
            &format!("ratio.{label}.write_unit_vs_plain_tx"),
            t[2] / t[3],
        );
        if let Some(cpu) = cpu {
            for (i, name) in names.iter().enumerate() {
                support::report_time(&format!("cpu.{label}.{name}"), cpu[i][0]);
            }
            let extra = |unit: usize, plain: usize, k: usize| cpu[unit][k] - cpu[plain][k];
            support::report_time(&format!("cpu.{label}.read_unit_extra"), extra(0, 1, 0));
            support::report_time(&format!("cpu.{label}.write_unit_extra"), extra(2, 3, 0));
            if label == "citus" {
                // The coordinator's part; the rest ran on the workers.
                for (name, unit, plain) in [("read_unit", 0, 1), ("write_unit", 2, 3)] {
                    support::report_time(
                        &format!("cpu.citus.coordinator.{name}_extra"),
                        extra(unit, plain, 1),
                    );
                    support::report_time(
                        &format!("cpu.citus.workers.{name}_extra"),
                        extra(unit, plain, 0) - extra(unit, plain, 1),
                    );
                }
            }
            extras.push((extra(0, 1, 0), extra(2, 3, 0)));
        }
    }
    if let [(citus_read, citus_write), (single_read, single_write)] = extras[..] {
        support::report_ratio(
            "ratio.cpu.citus_extra_vs_single_extra.read_unit",
            citus_read / single_read,
        );
        support::report_ratio(
            "ratio.cpu.citus_extra_vs_single_extra.write_unit",
            citus_write / single_write,
        );
    }
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(main_async());
}
