//! PostgreSQL restarts during load (a cluster of the test's own): units fail while it is down,
//! the pool recovers by itself, every unit reported committed is present exactly once, and
//! none reported failed is half-applied.
//!
//! With `DATABASE_URL` set there is no cluster of the test's own to restart: the test prints
//! `SKIPPED <test>: <reason>` on stderr (seen with `cargo test -- --nocapture`) and passes,
//! unless `TENANCY_REQUIRE_RESTART` is set (`.ci/run` sets it), when it fails.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pg_tenancy::testing::{TestCluster, TestDatabase};
use pg_tenancy::{Error, OrgId, Role, TenantPool};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::common::seed_org;
use crate::support::skip::skip_or_fail;

#[derive(Default)]
struct Outcomes {
    committed: Vec<(OrgId, Uuid, Instant)>,
    failed: Vec<(OrgId, Uuid)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_under_load_loses_no_commit_and_half_applies_nothing() {
    let cluster = match TestCluster::dedicated() {
        Ok(c) => Arc::new(c),
        Err(e) if std::env::var_os("DATABASE_URL").is_some() => {
            skip_or_fail(
                "TENANCY_REQUIRE_RESTART",
                &format!("no cluster of its own: {e}"),
            );
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let db = TestDatabase::create_in(&cluster).await.unwrap();
    crate::common::with_projects(&db).await;
    let pool = PgPoolOptions::new()
        .max_connections(6)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(db.app_options())
        .await
        .unwrap();
    let pool = TenantPool::new(pool).await.unwrap();
    let orgs = [
        seed_org(&pool, "alpha").await,
        seed_org(&pool, "beta").await,
    ];

    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let stop = Instant::now() + Duration::from_secs(6);
    let mut workers = Vec::new();
    for n in 0..8 {
        let (pool, org, outcomes) = (pool.clone(), orgs[n % 2].clone(), outcomes.clone());
        workers.push(tokio::spawn(async move {
            while Instant::now() < stop {
                // One unit = two rows named after it: both or neither must exist.
                let unit = Uuid::new_v4();
                let result = pool
                    .with_rls(&org.ctx(Role::Member), async |tx| {
                        for _ in 0..2 {
                            sqlx::query(
                                "INSERT INTO projects (organization_id, name) VALUES ($1, $2)",
                            )
                            .bind(org.id)
                            .bind(unit.to_string())
                            .execute(&mut *tx)
                            .await?;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        Ok::<_, Error>(())
                    })
                    .await;
                {
                    let mut o = outcomes.lock().unwrap();
                    match result {
                        Ok(()) => o.committed.push((org.id, unit, Instant::now())),
                        Err(_) => o.failed.push((org.id, unit)),
                    }
                }
                if Instant::now() < stop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let restarting = cluster.clone();
    let restarted_at = tokio::task::spawn_blocking(move || {
        restarting.restart(Duration::from_millis(800)).unwrap();
        Instant::now()
    })
    .await
    .unwrap();
    for w in workers {
        w.await.unwrap();
    }

    let o = std::mem::take(&mut *outcomes.lock().unwrap());
    assert!(
        !o.failed.is_empty(),
        "units failed while the server was down"
    );
    let after = o
        .committed
        .iter()
        .filter(|(_, _, t)| *t > restarted_at)
        .count();
    assert!(
        after > 0,
        "the pool recovered by itself and units committed after the restart"
    );
    for org in &orgs {
        let names: Vec<String> = pool
            .with_rls_read(&org.ctx(Role::Member), async |tx| {
                Ok::<_, Error>(
                    sqlx::query_scalar("SELECT name FROM projects")
                        .fetch_all(tx)
                        .await?,
                )
            })
            .await
            .unwrap();
        let count = |unit: &Uuid| names.iter().filter(|n| **n == unit.to_string()).count();
        for (o_org, unit, _) in &o.committed {
            if *o_org == org.id {
                assert_eq!(count(unit), 2, "a committed unit is present exactly once");
            }
        }
        for (o_org, unit) in &o.failed {
            if *o_org == org.id {
                let n = count(unit);
                assert!(
                    n == 0 || n == 2,
                    "a failed unit is half-applied ({n} of 2 rows)"
                );
            }
        }
    }
    println!(
        "tenancy-restart: {} committed ({after} after the restart), {} failed",
        o.committed.len(),
        o.failed.len()
    );
}
