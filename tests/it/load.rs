//! Load with a ledger, and a cancellation storm.
//!
//! Short in CI; longer runs are configured by environment (docs/reliability.md):
//! `TENANCY_LOAD_SECS` (default 3) and `TENANCY_STORM_UNITS` (default 2000), e.g.
//! `TENANCY_LOAD_SECS=120 cargo test --release --test it load:: -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pg_tenancy::{Error, OrgContext, OrgId, Role, TenantPool, UserId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::common::{As, Org, leftover_context, seed_org, world_with};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Ledger {
    /// Per organization: the projects that must exist (seeded ones included).
    projects: HashMap<OrgId, BTreeSet<Uuid>>,
    /// Per organization: the members added by the load that must exist.
    members: HashMap<OrgId, BTreeSet<String>>,
}

#[derive(Default)]
struct Tally {
    units: u64,
    latencies_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
    crossings: Vec<String>,
    refused_cross_writes: u64,
}

async fn projects_of(pool: &TenantPool, ctx: &OrgContext) -> Result<Vec<(Uuid, OrgId)>, Error> {
    pool.with_rls_read(ctx, async |tx| {
        Ok(sqlx::query_as("SELECT id, organization_id FROM projects")
            .fetch_all(tx)
            .await?)
    })
    .await
}

/// Deletes project `id` in a unit of `ctx`; rows affected.
async fn delete_project(pool: &TenantPool, ctx: &OrgContext, id: Uuid) -> Result<u64, Error> {
    pool.with_rls(ctx, async |tx| {
        Ok(sqlx::query("DELETE FROM projects WHERE id = $1")
            .bind(id)
            .execute(tx)
            .await?
            .rows_affected())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_load_matches_its_ledger_and_never_crosses_organizations() {
    let w = world_with(As::App, 8).await;
    let mut orgs = vec![w.a.clone(), w.b.clone()];
    for slug in ["gamma", "delta", "epsilon", "zeta"] {
        orgs.push(seed_org(&w.pool, slug).await);
    }
    mixed_load(&w.pool, orgs, "direct").await;
}

/// Runs the mixed load on `pool` over `orgs` for `TENANCY_LOAD_SECS`, then checks every
/// organization against the ledger and prints the figures.
pub(crate) async fn mixed_load(pool: &TenantPool, orgs: Vec<Org>, label: &str) {
    let seconds: u64 = env_or("TENANCY_LOAD_SECS", 3);
    let workers: usize = env_or("TENANCY_LOAD_WORKERS", 16);
    let mut ledger = Ledger::default();
    for org in &orgs {
        ledger
            .projects
            .insert(org.id, BTreeSet::from([org.project]));
        ledger.members.insert(org.id, BTreeSet::new());
    }
    let ledger = Arc::new(Mutex::new(ledger));
    // Member changes of one organization are serialized with their ledger update: two
    // workers adding and removing the same user would otherwise record in another order than
    // they committed.
    let member_locks: Arc<HashMap<OrgId, tokio::sync::Mutex<()>>> = Arc::new(
        orgs.iter()
            .map(|o| (o.id, tokio::sync::Mutex::new(())))
            .collect(),
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let orgs = Arc::new(orgs);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();

    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (pool, orgs, ledger, tally) =
            (pool.clone(), orgs.clone(), ledger.clone(), tally.clone());
        let member_locks = member_locks.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(worker as u64);
            while Instant::now() < deadline {
                let i = rng.random_range(0..orgs.len());
                let org = &orgs[i];
                let other = &orgs[(i + 1 + rng.random_range(0..orgs.len() - 1)) % orgs.len()];
                let role = [Role::Member, Role::Admin, Role::Owner][rng.random_range(0..3)];
                let ctx = org.ctx(role);
                let op = rng.random_range(0..100);
                let begun = Instant::now();
                let result: Result<(), Error> = match op {
                    // Reads: every row must belong to the context's organization.
                    0..=44 => match projects_of(&pool, &ctx).await {
                        Ok(rows) => {
                            let foreign: Vec<_> = rows.iter().filter(|(_, o)| *o != org.id).collect();
                            if !foreign.is_empty() {
                                tally.lock().unwrap().crossings.push(format!(
                                    "{} read {} foreign row(s)", org.id, foreign.len()
                                ));
                            }
                            Ok(())
                        }
                        Err(e) => Err(e),
                    },
                    // Writes: a project, recorded once committed.
                    45..=69 => {
                        let id = Uuid::new_v4();
                        let r = pool
                            .with_rls(&ctx, async |tx| {
                                sqlx::query("INSERT INTO projects (organization_id, id, name) VALUES ($1, $2, 'load')")
                                    .bind(org.id)
                                    .bind(id)
                                    .execute(tx)
                                    .await?;
                                Ok::<_, Error>(())
                            })
                            .await;
                        if r.is_ok() {
                            ledger.lock().unwrap().projects.get_mut(&org.id).unwrap().insert(id);
                        }
                        r
                    }
                    // Deletes: an id taken out of the ledger first, put back if the unit fails.
                    70..=79 => {
                        let id = {
                            let mut l = ledger.lock().unwrap();
                            let set = l.projects.get_mut(&org.id).unwrap();
                            let pick = set.iter().nth(rng.random_range(0..set.len().max(1))).copied();
                            if let Some(id) = pick {
                                set.remove(&id);
                            }
                            pick
                        };
                        match id {
                            None => Ok(()),
                            Some(id) => {
                                let r = delete_project(&pool, &ctx, id).await;
                                match r {
                                    Ok(1) => Ok(()),
                                    Ok(n) => {
                                        tally.lock().unwrap().crossings.push(format!("delete of a ledger row affected {n}"));
                                        Ok(())
                                    }
                                    Err(e) => {
                                        ledger.lock().unwrap().projects.get_mut(&org.id).unwrap().insert(id);
                                        Err(e)
                                    }
                                }
                            }
                        }
                    }
                    // Cross-tenant writes that must fail: a move, an insert, a delete.
                    80..=89 => {
                        let victim = ledger.lock().unwrap().projects[&other.id].iter().next().copied();
                        let r = pool
                            .with_rls(&ctx, async |tx| {
                                let moved = sqlx::query("UPDATE projects SET organization_id = $1 WHERE organization_id = $2")
                                    .bind(other.id)
                                    .bind(org.id)
                                    .execute(&mut *tx)
                                    .await;
                                let inserted = sqlx::query("INSERT INTO projects (organization_id, name) VALUES ($1, 'intruder')")
                                    .bind(other.id)
                                    .execute(&mut *tx)
                                    .await;
                                Ok::<_, Error>((moved.map(|r| r.rows_affected()), inserted.is_ok()))
                            })
                            .await;
                        let deleted = match victim {
                            Some(v) => delete_project(&pool, &ctx, v).await.unwrap_or(0),
                            None => 0,
                        };
                        let mut t = tally.lock().unwrap();
                        match r {
                            // The first refused statement aborts the transaction: the unit fails.
                            Err(_) => t.refused_cross_writes += 1,
                            Ok((Ok(n), _)) if n > 0 => t.crossings.push(format!("moved {n} rows to another organization")),
                            Ok((_, true)) => t.crossings.push("inserted into another organization".into()),
                            Ok(_) => t.refused_cross_writes += 1,
                        }
                        if deleted > 0 {
                            t.crossings.push("deleted another organization's project".into());
                        }
                        Ok(())
                    }
                    // Member changes by the owner, recorded once committed.
                    _ => {
                        let _serial = member_locks[&org.id].lock().await;
                        let owner = org.ctx(Role::Owner);
                        let user = UserId::new(format!("user_load_{}", rng.random_range(0..20))).unwrap();
                        let add = rng.random_bool(0.6);
                        if add {
                            let r = pool.add_member(&owner, &user, Role::Member).await;
                            if r.is_ok() {
                                ledger.lock().unwrap().members.get_mut(&org.id).unwrap().insert(user.to_string());
                            }
                            r
                        } else {
                            let r = pool
                                .with_rls(&owner, async |tx| {
                                    Ok::<_, Error>(
                                        sqlx::query("DELETE FROM organization_members WHERE user_id = $1")
                                            .bind(&user)
                                            .execute(tx)
                                            .await?
                                            .rows_affected(),
                                    )
                                })
                                .await;
                            if let Ok(1) = r {
                                ledger.lock().unwrap().members.get_mut(&org.id).unwrap().remove(user.as_str());
                            }
                            r.map(|_| ())
                        }
                    }
                };
                let mut t = tally.lock().unwrap();
                t.units += 1;
                t.latencies_us.push(begun.elapsed().as_micros() as u64);
                if let Err(e) = result {
                    *t.errors.entry(format!("{:?}", e.kind())).or_default() += 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();

    // Every organization's rows equal its ledger exactly.
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    for org in orgs.iter() {
        let rows = projects_of(pool, &org.ctx(Role::Member)).await.unwrap();
        let ids: BTreeSet<Uuid> = rows.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, ledger.projects[&org.id], "projects of {}", org.id);
        let members: BTreeSet<String> = pool
            .with_rls_read(&org.ctx(Role::Member), async |tx| {
                Ok::<_, Error>(
                    sqlx::query_scalar(
                        "SELECT user_id FROM organization_members WHERE user_id LIKE 'user_load_%'",
                    )
                    .fetch_all(tx)
                    .await?,
                )
            })
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(members, ledger.members[&org.id], "members of {}", org.id);
    }
    let mut t = tally.lock().unwrap();
    assert_eq!(t.crossings, Vec::<String>::new());
    assert!(t.refused_cross_writes > 0, "the cross-tenant writes ran");
    t.latencies_us.sort_unstable();
    let pct = |p: f64| t.latencies_us[((t.latencies_us.len() - 1) as f64 * p) as usize];
    println!(
        "tenancy-load ({label}): {} units in {:.1} s ({:.0} units/s) by {workers} workers; \
         p50 {} us, p99 {} us; errors by kind {:?}; refused cross-tenant writes {}; crossings 0",
        t.units,
        elapsed.as_secs_f64(),
        t.units as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        t.errors,
        t.refused_cross_writes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_storm_leaks_no_context_and_the_pool_keeps_serving() {
    let units: usize = env_or("TENANCY_STORM_UNITS", 2000);
    quiet_expected_panics();
    let w = world_with(As::App, 4).await;
    let committed = Arc::new(Mutex::new(Vec::new()));
    let mut rng = StdRng::seed_from_u64(7);
    let mut outcomes: BTreeMap<&str, u64> = BTreeMap::new();
    let mut batch = Vec::new();
    for n in 0..units {
        let (pool, a, b) = (w.pool.clone(), w.a.clone(), w.b.clone());
        let committed = committed.clone();
        let kind = rng.random_range(0..4);
        let timeout = Duration::from_micros(rng.random_range(0..3000));
        let org = if n % 2 == 0 { a } else { b };
        batch.push(tokio::spawn(async move {
            let ctx = org.ctx(Role::Member);
            let id = Uuid::new_v4();
            let unit = pool.with_rls(&ctx, async |tx| {
                sqlx::query(
                    "INSERT INTO projects (organization_id, id, name) VALUES ($1, $2, 'storm')",
                )
                .bind(org.id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                if kind == 2 {
                    panic!("{EXPECTED_PANIC}");
                }
                let seen: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM projects WHERE organization_id <> $1")
                        .bind(org.id)
                        .fetch_one(&mut *tx)
                        .await?;
                assert_eq!(seen, 0, "a unit saw another organization");
                Ok::<_, Error>(())
            });
            let outcome = match kind {
                // Dropped after a random time (a client that went away, a timeout).
                0 | 1 => match tokio::time::timeout(timeout, unit).await {
                    Ok(Ok(())) => "committed",
                    Ok(Err(_)) => "failed",
                    Err(_) => "cancelled",
                },
                _ => match unit.await {
                    Ok(()) => "committed",
                    Err(_) => "failed",
                },
            };
            if outcome == "committed" {
                committed.lock().unwrap().push((org.id, id));
            }
            outcome
        }));
        if batch.len() == 64 || n + 1 == units {
            for task in batch.drain(..) {
                let outcome = task.await.unwrap_or("panicked");
                *outcomes.entry(outcome).or_default() += 1;
            }
        }
    }
    // No context on any of the pool's connections: hold all four at once and look.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(w.pool.pool().acquire().await.unwrap());
    }
    for conn in &mut held {
        let setting: Option<String> = sqlx::query_scalar(
            "SELECT nullif(concat_ws(',', nullif(current_setting('app.current_org_id', true), ''), \
             nullif(current_setting('app.current_user_id', true), ''), \
             nullif(current_setting('app.current_org_role', true), '')), '')",
        )
        .fetch_one(&mut **conn)
        .await
        .unwrap();
        assert_eq!(setting, None);
        // SAVEPOINT fails (25P01) outside a transaction block: the connection is not in one.
        let probe = sqlx::query("SAVEPOINT tenancy_probe")
            .execute(&mut **conn)
            .await;
        let code = match &probe {
            Err(sqlx::Error::Database(db)) => db.code().map(|c| c.into_owned()),
            _ => None,
        };
        assert_eq!(
            code.as_deref(),
            Some("25P01"),
            "a connection was handed out inside a transaction: {probe:?}"
        );
    }
    drop(held);
    assert_eq!(leftover_context(w.pool.pool()).await, (None, 0));
    assert!(w.pool.pool().size() <= 4);
    // Every unit reported committed is there exactly once; nothing else of the storm is.
    let committed = committed.lock().unwrap().clone();
    for org in [&w.a, &w.b] {
        let rows: Vec<Uuid> = w
            .pool
            .with_rls_read(&org.ctx(Role::Member), async |tx| {
                Ok::<_, Error>(
                    sqlx::query_scalar("SELECT id FROM projects WHERE name = 'storm'")
                        .fetch_all(tx)
                        .await?,
                )
            })
            .await
            .unwrap();
        let expected: BTreeSet<Uuid> = committed
            .iter()
            .filter(|(o, _)| *o == org.id)
            .map(|(_, id)| *id)
            .collect();
        let found: BTreeSet<Uuid> = rows.iter().copied().collect();
        assert_eq!(rows.len(), found.len(), "no row twice");
        // A unit cancelled after its COMMIT was sent may have committed without being told:
        // the rows found are the reported ones plus, at most, such units.
        assert!(expected.is_subset(&found), "a reported commit is missing");
        assert!(
            found.len() - expected.len()
                <= outcomes.get("cancelled").copied().unwrap_or(0) as usize
        );
    }
    for key in ["committed", "cancelled", "panicked"] {
        assert!(
            outcomes.get(key).copied().unwrap_or(0) > 0,
            "{key}: {outcomes:?}"
        );
    }
    println!("tenancy-storm: {units} units: {outcomes:?}");
}

const EXPECTED_PANIC: &str = "expected: a storm unit panics midway";

/// The storm's hundreds of deliberate panics would flood the log: this hook drops their
/// message and passes every other panic to the default hook, so other tests' failures still
/// print.
fn quiet_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied());
            if message != Some(EXPECTED_PANIC) {
                default(info);
            }
        }));
    });
}
