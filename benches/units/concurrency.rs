//! 2. Throughput of 64 tasks on a pool of 16, interleaved rounds, medians.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::*;

// ---- 2. concurrency ----------------------------------------------------------------------

pub(crate) fn throughput(
    rt: &Runtime,
    p: &Pools,
    f: &Fixture,
    unit: Case,
    window: Duration,
) -> f64 {
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

pub(crate) fn concurrent_section(rt: &Runtime, f: &Fixture, server: SocketAddr) {
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
        Case::PermissionUnit,
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
    let permission = median(Case::PermissionUnit);
    support::report(
        "throughput.concurrent.permission_unit",
        format!("{permission:.0}/s"),
    );
    support::report_ratio(
        "ratio.concurrent.permission_unit_vs_write_unit",
        permission / ours,
    );
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
