//! Shared by the benches: fast mode, criterion settings, same-run medians, and the
//! `tenancy-bench:` report lines.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use criterion::Criterion;

/// `TENANCY_BENCH_FAST=1`: same code paths, seconds instead of minutes, smaller tables.
pub(crate) fn fast() -> bool {
    std::env::var("TENANCY_BENCH_FAST").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `TENANCY_BENCH_ONLY=concurrent,policy` runs only the named sections (`round_trips`,
/// `latency`, `concurrent`, `policy`); unset, all of them.
pub(crate) fn section(name: &str) -> bool {
    match std::env::var("TENANCY_BENCH_ONLY") {
        Ok(only) if !only.is_empty() => only.split(',').any(|s| s.trim() == name),
        _ => true,
    }
}

/// Criterion with the run's settings.
pub(crate) fn criterion() -> Criterion {
    let c = Criterion::default().without_plots();
    if fast() {
        c.sample_size(10)
            .warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_millis(300))
    } else {
        c.sample_size(30)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4))
    }
    .configure_from_args()
}

pub(crate) fn sample_size() -> usize {
    if fast() { 10 } else { 30 }
}

/// Per-iteration times of every sample, by benchmark name, as criterion measured them
/// (through `iter_custom`). The last `sample_size()` samples are the measurement's (the first
/// ones come from warm-up).
static SAMPLES: Mutex<Option<HashMap<String, Vec<f64>>>> = Mutex::new(None);

pub(crate) fn record(name: &str, elapsed: Duration, iters: u64) {
    let mut guard = SAMPLES.lock().unwrap();
    guard
        .get_or_insert_with(HashMap::new)
        .entry(name.to_owned())
        .or_default()
        .push(elapsed.as_secs_f64() / iters.max(1) as f64);
}

/// Median of the measurement samples' per-iteration times, in seconds.
pub(crate) fn median(name: &str) -> f64 {
    let guard = SAMPLES.lock().unwrap();
    let all = guard
        .as_ref()
        .and_then(|m| m.get(name))
        .unwrap_or_else(|| panic!("no samples for {name}"));
    let keep = sample_size().min(all.len());
    let mut v = all[all.len() - keep..].to_vec();
    median_of(&mut v)
}

/// Median of every recorded value (for measurements without a warm-up phase).
pub(crate) fn median_all(name: &str) -> f64 {
    let guard = SAMPLES.lock().unwrap();
    let mut v = guard
        .as_ref()
        .and_then(|m| m.get(name))
        .unwrap_or_else(|| panic!("no samples for {name}"))
        .clone();
    median_of(&mut v)
}

pub(crate) fn median_of(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One report line: `tenancy-bench: <name> = <value>`.
pub(crate) fn report(name: &str, value: impl std::fmt::Display) {
    println!("tenancy-bench: {name} = {value}");
}

pub(crate) fn report_ratio(name: &str, ratio: f64) {
    report(name, format!("{ratio:.3}"));
}

pub(crate) fn report_time(name: &str, seconds: f64) {
    report(name, format!("{:.1}us", seconds * 1e6));
}

/// A fresh test database with pg-tenancy's migrations and the example application's own
/// (`projects`), granted to the application and service roles, as the tests and examples set
/// it up.
pub(crate) async fn database() -> pg_tenancy::testing::TestDatabase {
    let db = pg_tenancy::testing::TestDatabase::create()
        .await
        .expect("test database");
    db.migrate(&sqlx::migrate!("./examples/migrations"))
        .await
        .expect("the example application's migrations");
    db.grant_app(&["projects", "invoices"])
        .await
        .expect("grant");
    db.grant_service(&["projects", "invoices"])
        .await
        .expect("grant");
    db
}
