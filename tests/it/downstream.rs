//! A program whose `Cargo.toml` names only `pg-tenancy` and `tokio` connects and works: the
//! default features bring sqlx's runtime. Built in its own target directory, run against the
//! throwaway PostgreSQL.

use std::process::Command;

use pg_tenancy::testing::TestDatabase;

#[test]
fn a_program_naming_only_tenancy_and_tokio_connects() {
    let root = env!("CARGO_MANIFEST_DIR");
    let manifest = format!("{root}/tests/downstream/Cargo.toml");
    let target = format!("{root}/target/downstream");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--manifest-path",
            &manifest,
            "--target-dir",
            &target,
        ])
        .output()
        .expect("running cargo");
    assert!(
        build.status.success(),
        "building the downstream program failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDatabase::create()).expect("test database");
    let run = Command::new(format!("{target}/debug/tenancy-downstream-check"))
        .env("DATABASE_URL", db.app_url())
        .output()
        .expect("running the downstream program");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the downstream program failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("downstream: connected; 1 membership, role owner"),
        "{stdout}"
    );
}
