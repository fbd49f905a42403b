//! Feature sets the lints alone do not prove: `tests/features/`, a program on pg-tenancy's
//! core only (`default-features = false, features = ["runtime-tokio"]`), builds and runs units
//! of work; and with a global subscriber recording every callsite, span and event, nothing at
//! all comes from pg-tenancy without its `tracing` feature, while the same program built with
//! the feature (the positive control) records a `tenancy.unit` span for each unit.
//!
//! Both builds share one target directory, `feature-check` under cargo's (`CARGO_TARGET_DIR`,
//! or `target/`): the second build compiles pg-tenancy and the program again, nothing else.

use std::process::Command;

use pg_tenancy::testing::TestDatabase;

/// Builds the program (with `features`, its own) and runs it against `url`; its stdout.
fn build_and_run(features: &[&str], url: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let manifest = format!("{root}/tests/features/Cargo.toml");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{root}/target"));
    let target = format!("{target}/feature-check");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = Command::new(cargo)
        .args(["build", "--quiet", "--manifest-path", &manifest])
        .args(["--target-dir", &target])
        .args(["--features", &features.join(",")])
        .output()
        .expect("running cargo");
    assert!(
        build.status.success(),
        "building the feature check with {features:?} failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let run = Command::new(format!("{target}/debug/tenancy-feature-check"))
        .env("DATABASE_URL", url)
        .output()
        .expect("running the feature check");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "the feature check with {features:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

/// The value of the line `name: value` in `output`.
fn line<'a>(output: &'a str, name: &str) -> &'a str {
    output
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {name:?} in:\n{output}"))
}

#[test]
fn the_core_alone_runs_and_without_the_tracing_feature_emits_nothing_at_all() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let off_db = rt.block_on(TestDatabase::create()).expect("test database");
    let on_db = rt.block_on(TestDatabase::create()).expect("test database");

    // The core alone connects and runs its units; pg-tenancy registers no callsite, opens no
    // span and emits no event.
    let off = build_and_run(&[], &off_db.app_url());
    assert_eq!(line(&off, "built with tracing"), "false", "{off}");
    assert_eq!(line(&off, "units"), "3 run (2 committed, 1 refused)");
    assert_eq!(line(&off, "pg_tenancy callsites"), "[]", "{off}");
    assert_eq!(line(&off, "pg_tenancy spans"), "[]", "{off}");
    assert_eq!(line(&off, "pg_tenancy events"), "[]", "{off}");

    // Positive control: the same program, the same recorder, with the feature on.
    let on = build_and_run(&["tracing"], &on_db.app_url());
    assert_eq!(line(&on, "built with tracing"), "true", "{on}");
    assert_eq!(line(&on, "units"), "3 run (2 committed, 1 refused)");
    assert_eq!(
        line(&on, "pg_tenancy spans"),
        r#"["tenancy.unit", "tenancy.unit", "tenancy.unit"]"#,
        "{on}"
    );
}
