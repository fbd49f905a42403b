//! The per-unit cost of `pg-tenancy`'s safety, against what an application would otherwise
//! write, measured in one run on the throwaway PostgreSQL:
//!
//! 1. units of work with one point query by id, on loopback TCP and through a proxy adding
//!    0.5 ms each way, with round trips counted exactly at a proxy;
//! 2. throughput of 64 tasks on a pool of 16;
//! 3. the policy's cost on 1,000,000 projects over 1,000 organizations (scaled down in fast
//!    mode), with the plans' node types.
//!
//! Baselines (`autocommit`, `plain_tx`, the `explicit_where` listing, and the lookup of
//! `lookup_then_tx`) connect as a role with BYPASSRLS and filter explicitly: what an
//! application without RLS would run. Every pool has the same settings (4 connections,
//! `test_before_acquire(false)`).
//!
//! Files: `fixture.rs` (data and pools), `cases.rs` (the units), `latency.rs`, `concurrency.rs`
//! and `policy.rs` (the three sections). "The article" is the one this crate grew from (see
//! the README's anti-patterns); its patterns are the `set_config_tx`, `lookup_then_tx` and
//! `text_cast_policy` baselines.

#[path = "../support/mod.rs"]
mod support;

mod cases;
mod concurrency;
mod fixture;
mod latency;
mod policy;

pub(crate) use cases::*;
pub(crate) use concurrency::*;
pub(crate) use fixture::*;
pub(crate) use latency::*;
pub(crate) use policy::*;

use pg_tenancy::testing::TestCluster;
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
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
