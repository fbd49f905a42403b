//! Round trips per unit of work, counted exactly at a TCP proxy in front of the server.

use std::time::Duration;

use pg_tenancy::testing::{TcpProxy, TestCluster};
use pg_tenancy::{Error, Role};

use crate::common::{As, world};

/// Round trips the caller waits for, measured on a current-thread runtime so the pool's
/// release task (which flushes a queued ROLLBACK) cannot run before the count is read.
#[tokio::test(flavor = "current_thread")]
async fn units_of_work_cost_the_designed_round_trips() {
    let w = world(As::App).await;
    let server = TestCluster::global()
        .unwrap()
        .tcp_address()
        .expect("harness TCP listener");
    let proxy = TcpProxy::start(server, Duration::ZERO).unwrap();
    let pool = w.db.app_pool_at(proxy.addr(), 1).await.unwrap();
    let ctx = w.a.ctx(Role::Member);
    let id = w.a.project;
    let query = "SELECT name FROM projects WHERE id = $1";

    // Runs `$unit` once to warm up (prepares statements on this connection), then five times
    // counting; every count must agree.
    macro_rules! count {
        ($label:expr, $unit:expr) => {{
            $unit;
            let mut counts = Vec::new();
            for _ in 0..5 {
                // Let the previous unit's release (ping, queued ROLLBACK) finish first.
                tokio::time::sleep(Duration::from_millis(5)).await;
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
            let _: String = sqlx::query_scalar(query).bind(id).fetch_one(tx).await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap()
    );
    let read = count!(
        "read unit",
        pool.with_rls_read(&ctx, async |tx| {
            let _: String = sqlx::query_scalar(query).bind(id).fetch_one(tx).await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap()
    );
    let member = count!(
        "with_member unit",
        pool.with_member(ctx.user_id(), ctx.org_id(), Role::Member, async |tx| {
            let _: String = sqlx::query_scalar(query).bind(id).fetch_one(tx).await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap()
    );
    let authorize = count!(
        "authorize",
        pool.authorize(ctx.user_id(), ctx.org_id()).await.unwrap()
    );
    println!(
        "round trips: write {write}, read {read}, with_member {member}, authorize {authorize}"
    );
    assert_eq!((write, read, member, authorize), (3, 2, 3, 1));
}
