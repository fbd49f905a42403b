//! No tenant context survives a unit of work on a pooled connection, whatever way it ends.
//! Every case but `concurrent_units_see_only_their_own_org` (four connections shared by 48
//! tasks) uses a pool of ONE connection, so the next borrower gets the same session.

use std::time::Duration;

use pg_tenancy::testing::{TcpProxy, TestCluster};
use pg_tenancy::{Error, Role};

use crate::common::{As, leftover_context, project_orgs_count, sqlstate, world_with};

async fn one_connection_world() -> crate::common::World {
    world_with(As::App, 1).await
}

async fn assert_clean(w: &crate::common::World, after: &str) {
    assert_eq!(
        leftover_context(w.pool.pool()).await,
        (None, 0),
        "context left after {after}"
    );
}

#[tokio::test]
async fn nothing_survives_commit() {
    let w = one_connection_world().await;
    w.pool
        .with_rls(&w.a.ctx(Role::Admin), async |tx| {
            sqlx::query("INSERT INTO projects (organization_id, name) VALUES ($1, 'new')")
                .bind(w.a.id.as_uuid())
                .execute(tx)
                .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    assert_clean(&w, "commit").await;
}

#[tokio::test]
async fn nothing_survives_explicit_rollback() {
    let w = one_connection_world().await;
    let mut tx = w.pool.begin(&w.a.ctx(Role::Admin)).await.unwrap();
    sqlx::query("DELETE FROM projects")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_clean(&w, "rollback").await;
}

#[tokio::test]
async fn nothing_survives_an_error_and_the_write_is_undone() {
    let w = one_connection_world().await;
    let r: Result<(), Error> = w
        .pool
        .with_rls(&w.a.ctx(Role::Admin), async |tx| {
            sqlx::query("DELETE FROM projects")
                .execute(&mut *tx)
                .await?;
            Err(Error::NotAMember)
        })
        .await;
    assert!(matches!(r, Err(Error::NotAMember)));
    assert_clean(&w, "an error").await;
    let n: i64 = w
        .pool
        .with_rls_read(&w.a.ctx(Role::Member), async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar("SELECT count(*) FROM projects")
                    .fetch_one(tx)
                    .await?,
            )
        })
        .await
        .unwrap();
    assert_eq!(n, 1, "the closure's delete was rolled back");
}

#[tokio::test]
async fn nothing_survives_a_panic() {
    let w = one_connection_world().await;
    let pool = w.pool.clone();
    let ctx = w.a.ctx(Role::Admin);
    let joined = tokio::spawn(async move {
        pool.with_rls(&ctx, async |tx| {
            sqlx::query("DELETE FROM projects").execute(tx).await?;
            panic!("handler bug");
            #[allow(unreachable_code)]
            Ok::<_, Error>(())
        })
        .await
    })
    .await;
    assert!(joined.unwrap_err().is_panic());
    assert_clean(&w, "a panic").await;
}

#[tokio::test]
async fn nothing_survives_a_future_dropped_mid_query() {
    let w = one_connection_world().await;
    let r = tokio::time::timeout(
        Duration::from_millis(100),
        w.pool.with_rls(&w.a.ctx(Role::Admin), async |tx| {
            sqlx::query("SELECT pg_sleep(1)").execute(tx).await?;
            Ok::<_, Error>(())
        }),
    )
    .await;
    assert!(r.is_err(), "the timeout fired");
    assert_clean(&w, "a dropped future").await;
}

#[tokio::test]
async fn nothing_survives_a_dropped_read_unit() {
    let w = one_connection_world().await;
    let n: i64 = w
        .pool
        .with_rls_read(&w.a.ctx(Role::Member), async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar("SELECT count(*) FROM projects")
                    .fetch_one(tx)
                    .await?,
            )
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
    // The read unit ended by being dropped: its ROLLBACK was queued, not awaited.
    assert_clean(&w, "a dropped read-only unit").await;
    // And through the guard API, dropped without commit or rollback.
    let tx = w.pool.begin_read(&w.b.ctx(Role::Member)).await.unwrap();
    drop(tx);
    assert_clean(&w, "a dropped read-only guard").await;
}

#[tokio::test]
async fn nothing_survives_a_begin_cancelled_at_any_point() {
    // Through a proxy with 20 ms each way, so cancellation can land while the BEGIN batch is
    // at the server but its answer is not yet back: the window where sqlx has not counted
    // the transaction (and would return the connection to the pool inside it).
    let w = one_connection_world().await;
    let server = TestCluster::global().unwrap().tcp_address().unwrap();
    let proxy = TcpProxy::start(server, Duration::from_millis(20)).unwrap();
    let pool = w.db.app_pool_at(proxy.addr(), 1).await.unwrap();
    let ctx = w.a.ctx(Role::Member);
    let mut cancelled = 0;
    for ms in [1, 5, 10, 25, 30, 35, 39, 45, 60, 100] {
        let r = tokio::time::timeout(Duration::from_millis(ms), pool.begin(&ctx)).await;
        cancelled += usize::from(r.is_err());
        drop(r);
        assert_eq!(
            leftover_context(pool.pool()).await,
            (None, 0),
            "context left after a BEGIN cancelled at {ms} ms"
        );
    }
    assert!(
        cancelled >= 5,
        "most timeouts must land inside BEGIN ({cancelled} did)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_units_see_only_their_own_org() {
    let w = world_with(As::App, 4).await;
    let c = crate::common::seed_org(&w.pool, "gamma").await;
    let orgs = [w.a.clone(), w.b.clone(), c];
    let mut tasks = Vec::new();
    for i in 0..48 {
        let org = orgs[i % orgs.len()].clone();
        let pool = w.pool.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..20 {
                let ctx = org.ctx(Role::Member);
                let seen: Vec<uuid::Uuid> = if round % 2 == 0 {
                    pool.with_rls(&ctx, async |tx| {
                        Ok::<_, Error>(
                            sqlx::query_scalar("SELECT organization_id FROM projects")
                                .fetch_all(tx)
                                .await?,
                        )
                    })
                    .await
                } else {
                    pool.with_rls_read(&ctx, async |tx| {
                        Ok::<_, Error>(
                            sqlx::query_scalar("SELECT organization_id FROM projects")
                                .fetch_all(tx)
                                .await?,
                        )
                    })
                    .await
                }
                .unwrap();
                assert_eq!(seen, vec![*org.id.as_uuid()], "task {i} round {round}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Runs a unit of A that sets `setting` for its transaction, waits `pause` on the
/// application's side, then runs `sql`; returns how it failed.
async fn failing_unit(
    w: &crate::common::World,
    setting: &str,
    pause: Duration,
    sql: &str,
) -> Error {
    use sqlx::Executor;
    w.pool
        .with_rls(&w.a.ctx(Role::Member), async |tx| {
            tx.execute(sqlx::AssertSqlSafe(format!("SET LOCAL {setting}")))
                .await?;
            tokio::time::sleep(pause).await;
            tx.execute(sqlx::AssertSqlSafe(sql)).await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err()
}

/// No context is left after `after`, and the next unit is served (A's one project).
async fn assert_clean_and_served(w: &crate::common::World, after: &str) {
    assert_clean(w, after).await;
    assert_eq!(project_orgs_count(w, &w.a.ctx(Role::Member)).await, 1);
}

#[tokio::test]
async fn server_timeouts_inside_a_unit_leave_nothing_behind() {
    use sqlx::{Connection, Executor};
    let w = one_connection_world().await;

    // statement_timeout: the statement is cancelled (57014), the unit rolled back.
    let e = failing_unit(
        &w,
        "statement_timeout = '50ms'",
        Duration::ZERO,
        "SELECT pg_sleep(5)",
    )
    .await;
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{e}");
    assert_clean_and_served(&w, "statement_timeout").await;

    // lock_timeout: the owner holds a lock the unit needs (55P03).
    let mut owner = sqlx::PgConnection::connect_with(&w.db.owner_options())
        .await
        .unwrap();
    owner
        .execute("BEGIN; LOCK TABLE projects IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let e = failing_unit(
        &w,
        "lock_timeout = '50ms'",
        Duration::ZERO,
        "SELECT count(*) FROM projects",
    )
    .await;
    assert_eq!(sqlstate(&e).as_deref(), Some("55P03"), "{e}");
    owner.execute("ROLLBACK").await.unwrap();
    assert_clean_and_served(&w, "lock_timeout").await;

    // idle_in_transaction_session_timeout: the server ends the session while the unit waits
    // on the application; the unit fails, the pool replaces the connection.
    let e = failing_unit(
        &w,
        "idle_in_transaction_session_timeout = '100ms'",
        Duration::from_millis(600),
        "SELECT 1",
    )
    .await;
    assert!(matches!(e, Error::Database(_)), "{e}");
    assert_eq!(e.kind(), pg_tenancy::ErrorKind::Internal, "{e}");
    assert_clean_and_served(&w, "idle_in_transaction_session_timeout").await;
}

#[tokio::test]
async fn a_backend_terminated_mid_unit_fails_typed_and_the_next_unit_is_served() {
    use sqlx::Connection;
    let w = one_connection_world().await;
    let mut admin =
        sqlx::PgConnection::connect_with(&TestCluster::global().unwrap().admin_options())
            .await
            .unwrap();
    let e = w
        .pool
        .with_rls(&w.a.ctx(Role::Member), async |tx| {
            // Positive control: the unit works until its backend is terminated.
            let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
                .fetch_one(&mut *tx)
                .await?;
            assert_eq!(seen, 1);
            let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut *tx)
                .await?;
            let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
                .bind(pid)
                .fetch_one(&mut admin)
                .await?;
            assert!(done);
            sqlx::query("INSERT INTO projects (organization_id, name) VALUES ($1, 'lost')")
                .bind(w.a.id)
                .execute(&mut *tx)
                .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    // 57P01 (admin_shutdown) when the server's notice arrives first, else the closed socket.
    assert!(matches!(e, Error::Database(_)), "{e}");
    assert_eq!(e.kind(), pg_tenancy::ErrorKind::Internal, "{e}");
    if let Some(code) = sqlstate(&e) {
        assert_eq!(code, "57P01", "{e}");
    }
    // Nothing of the unit was written, no context survives, the pool serves again.
    assert_clean_and_served(&w, "pg_terminate_backend").await;
}
