//! A new user's first program (`tests/downstream`) connects and works as the README says: its
//! `Cargo.toml` names `pg-tenancy` and `tokio` (the default features bring sqlx's runtime) and
//! sqlx for its `migrate!` macro; it applies pg-tenancy's migrations and its own (a tenant table
//! of its own) as the owner, grants the application role, and runs isolated units. Built in its
//! own target directory, run against an empty database of the throwaway PostgreSQL.

use std::process::Command;

use pg_tenancy::testing::TestDatabase;

#[test]
fn a_new_users_program_with_its_own_tenant_table_works() {
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
    let db = rt
        .block_on(TestDatabase::create_empty())
        .expect("test database");
    let run = Command::new(format!("{target}/debug/tenancy-downstream-check"))
        .env("OWNER_DATABASE_URL", db.owner_url())
        .env("DATABASE_URL", db.app_url())
        .env("APP_ROLE", db.app_role())
        .output()
        .expect("running the downstream program");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the downstream program failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("downstream: connected; 1 membership, role owner; own table isolated"),
        "{stdout}"
    );
}
