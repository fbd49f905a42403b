//! 1. Round trips, counted at a proxy, and latency on loopback and at 1 ms RTT.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pg_tenancy::testing::TcpProxy;
use tokio::runtime::Runtime;

use crate::*;

// ---- 1. round trips and latency ----------------------------------------------------------

/// Round trips the caller waits for: one connection per pool (every statement prepared after
/// the warm-up), on a current-thread runtime so that the pool's release task (which flushes a
/// read unit's queued ROLLBACK) cannot run before the count is read.
pub(crate) fn round_trips(f: &Fixture, server: SocketAddr) -> Vec<(Case, u64)> {
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

pub(crate) fn latency(
    c: &mut criterion::Criterion,
    rt: &Runtime,
    f: &Fixture,
    label: &str,
    addr: SocketAddr,
) {
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

pub(crate) fn interleaved(label: &str, unit: Case) -> String {
    format!("{label}/{}/interleaved", unit.name())
}

pub(crate) fn latency_section(
    c: &mut criterion::Criterion,
    rt: &Runtime,
    f: &Fixture,
    server: SocketAddr,
) {
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
            Case::SetConfigTx,
            Case::ReadUnit,
        ),
        (
            "ratio.rtt1ms.authorized_unit_vs_seed_authorized",
            "rtt1ms",
            Case::AuthorizedUnit,
            Case::LookupThenTx,
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
