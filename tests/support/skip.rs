//! Tests that cannot run in this environment (no PgBouncer, no browser, no cluster of their
//! own) never pass in silence. Under the `TENANCY_REQUIRE_*` variable that names what they
//! need (`.ci/run` sets `TENANCY_REQUIRE_PGBOUNCER`, `TENANCY_REQUIRE_BROWSER` and
//! `TENANCY_REQUIRE_RESTART`) they fail with the reason; elsewhere they print one line,
//! `SKIPPED <test>: <reason>`, on stderr and return. libtest captures a passing test's
//! output: run `cargo test -- --nocapture` to see the lines.

/// Fails the test with `reason` when the environment variable `required_by` is set; otherwise
/// prints `SKIPPED <test>: <reason>` ([`skipped`]). The caller returns right after.
///
/// # Panics
/// When `required_by` is set.
#[track_caller]
pub(crate) fn skip_or_fail(required_by: &str, reason: &str) {
    assert!(
        std::env::var_os(required_by).is_none(),
        "{required_by} is set, and this test cannot run: {reason}"
    );
    skipped(reason);
}

/// Prints `SKIPPED <test>: <reason>` on stderr, for a test that does not apply here and runs
/// elsewhere in CI (no `TENANCY_REQUIRE_*` can make it apply).
pub(crate) fn skipped(reason: &str) {
    // libtest runs each test on a thread named after it; a `#[tokio::test]` body runs there.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed test thread>");
    eprintln!("SKIPPED {test}: {reason}");
}
