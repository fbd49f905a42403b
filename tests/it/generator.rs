//! The policy generator on names PostgreSQL reserves, and its `GRANT`: a table literally named
//! `order` made tenant-safe by the generated SQL passes the audit and the isolation kit, where
//! the old bare-name SQL did not even parse; the generated `GRANT` is what lets the application
//! role use a new table.

use pg_tenancy::audit::{AuditOptions, PolicyOptions, policy_sql, policy_sql_with};
use pg_tenancy::testing::{TableUnderTest, TestDatabase, assert_audit_clean, check_isolation};
use pg_tenancy::{Error, OrgContext, OrgId, TenantPool, UserId};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Executor, PgPool};

use crate::common::{As, both_roles, sqlstate};

/// A user's table named with a reserved word, as its owner would create it.
const CREATE_ORDER: &str = r#"CREATE TABLE "order" (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    body text,
    PRIMARY KEY (organization_id, id))"#;

async fn owner(db: &TestDatabase) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.owner_options())
        .await
        .unwrap()
}

/// Runs `sql` (several statements) as the database owner.
async fn as_owner(db: &TestDatabase, sql: &str) -> Result<(), sqlx::Error> {
    let pool = owner(db).await;
    let result = pool.execute(AssertSqlSafe(sql.to_owned())).await;
    pool.close().await;
    result.map(drop)
}

fn app_role(db: &TestDatabase) -> String {
    db.app_options().get_username().to_owned()
}

/// `order` made tenant-safe and granted to the application role, all by the generator.
async fn with_order() -> TestDatabase {
    let db = TestDatabase::create().await.unwrap();
    let sql = policy_sql_with("order", &PolicyOptions::default().with_grant(app_role(&db)));
    as_owner(&db, &format!("{CREATE_ORDER};\n{sql}"))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    db
}

/// A new organization, and its owner's context (through the request path; no other table
/// involved, so that these tests need nothing but pg-tenancy's migrations and `order`).
async fn org(pool: &TenantPool, slug: &str) -> OrgContext {
    let owner = UserId::new(format!("user_{slug}_owner")).unwrap();
    pool.create_organization(
        OrgId::from_external_id(&format!("org_{slug}")),
        slug,
        Some(slug),
        &owner,
    )
    .await
    .expect("create organization")
}

fn order_under_test() -> TableUnderTest {
    TableUnderTest::new(
        "order",
        "organization_id",
        r#"INSERT INTO "order" (organization_id, body) VALUES ($1, 'kit')"#,
    )
}

#[tokio::test]
async fn a_table_named_order_passes_the_audit_and_bare_names_do_not_parse() {
    // Control: the generator's output with the quotes taken off (what it printed when it left
    // names it thought plain bare) is not valid SQL on this table.
    let db = TestDatabase::create().await.unwrap();
    as_owner(&db, CREATE_ORDER).await.unwrap();
    let quoted = policy_sql("order", "organization_id");
    let bare = quoted.replace('"', "");
    assert!(
        bare.contains("ALTER TABLE order ENABLE ROW LEVEL SECURITY"),
        "{bare}"
    );
    let e = as_owner(&db, &bare).await.unwrap_err();
    let code = e.as_database_error().and_then(|d| d.code());
    assert_eq!(code.as_deref(), Some("42601"), "a syntax error: {e}");
    // The quoted SQL applies to the same table, and the audit, as the application role, finds
    // it (named as PostgreSQL prints it) and nothing wrong with it.
    as_owner(&db, &quoted).await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.app_options())
        .await
        .unwrap();
    let report = assert_audit_clean(&pool, &AuditOptions::default()).await;
    assert!(
        report.tables.iter().any(|t| t == r#"public."order""#),
        "{:?}",
        report.tables
    );
    // The audit's own check still bites on it: without FORCE, the one finding.
    as_owner(&db, r#"ALTER TABLE "order" NO FORCE ROW LEVEL SECURITY"#)
        .await
        .unwrap();
    let report = pg_tenancy::audit::audit(&pool, &AuditOptions::default())
        .await
        .unwrap();
    assert_eq!(report.codes(), ["rls_not_forced"], "{report}");
    assert_eq!(
        report.findings[0].fix,
        r#"ALTER TABLE public."order" FORCE ROW LEVEL SECURITY;"#
    );
}

both_roles!(the_isolation_kit_passes_on_a_table_named_order);

async fn the_isolation_kit_passes_on_a_table_named_order(role: As) {
    let db = with_order().await;
    let pool = match role {
        As::App => db.app_pool(3).await.unwrap(),
        As::Owner => db.owner_pool(3).await.unwrap(),
    };
    let a = org(&pool, "alpha").await;
    let b = org(&pool, "beta").await;
    let table = order_under_test();
    let result = check_isolation(&pool, &a, &b, &table).await;
    assert_eq!(result, Ok(()), "{table:?}");
    // The defence removed (no policy compares the organization): the kit says so.
    as_owner(
        &db,
        r#"DROP POLICY tenant_isolation ON "order";
           CREATE POLICY anything ON "order" USING (true) WITH CHECK (true)"#,
    )
    .await
    .unwrap();
    let failures = check_isolation(&pool, &a, &b, &table).await.unwrap_err();
    assert!(
        failures.iter().any(|f| f.starts_with("cross-tenant read")),
        "{failures:?}"
    );
}

/// Inserts a row into `order` as `ctx` and counts the rows visible: the application role using
/// the table.
async fn use_order(pool: &TenantPool, ctx: &OrgContext) -> Result<i64, Error> {
    let id = ctx.org_id();
    pool.with_rls(ctx, async |tx| {
        sqlx::query(r#"INSERT INTO "order" (organization_id, body) VALUES ($1, 'o')"#)
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await?;
        Ok(sqlx::query_scalar(r#"SELECT count(*) FROM "order""#)
            .fetch_one(&mut *tx)
            .await?)
    })
    .await
}

#[tokio::test]
async fn the_generated_grant_lets_the_application_role_use_the_table() {
    for grant in [false, true] {
        let db = TestDatabase::create().await.unwrap();
        let pool = db.app_pool(2).await.unwrap();
        let org = org(&pool, "alpha").await;
        as_owner(&db, CREATE_ORDER).await.unwrap();
        // Before: a new table is the owner's alone.
        let e = use_order(&pool, &org).await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
        let options = match grant {
            true => PolicyOptions::default().with_grant(app_role(&db)),
            false => PolicyOptions::default(),
        };
        let sql = policy_sql_with("order", &options);
        as_owner(&db, &sql).await.unwrap();
        let after = use_order(&pool, &org).await;
        if grant {
            assert!(
                sql.contains(&format!(r#"TO "{}";"#, app_role(&db))),
                "{sql}"
            );
            assert_eq!(after.unwrap(), 1, "{sql}");
        } else {
            // Without a role named, the SQL only says which GRANT to run.
            assert!(
                sql.contains(
                    r#"-- GRANT SELECT, INSERT, UPDATE, DELETE ON "order" TO <application role>;"#
                ),
                "{sql}"
            );
            let e = after.unwrap_err();
            assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{sql}\n{e}");
        }
    }
}

#[tokio::test]
async fn the_command_line_grants_to_each_role_named() {
    let bin = env!("CARGO_BIN_EXE_pg-tenancy");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    let (code, out) = run(&["policy", "order", "--grant", "app", "--grant", "Reporting"]);
    assert_eq!(code, Some(0), "{out}");
    let options = PolicyOptions::default()
        .with_grant("app")
        .with_grant("Reporting");
    assert_eq!(out, policy_sql_with("order", &options));
    assert!(
        out.ends_with(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON \"order\" TO \"app\";\n\
             GRANT SELECT, INSERT, UPDATE, DELETE ON \"order\" TO \"Reporting\";\n"
        ),
        "{out}"
    );
    assert_eq!(run(&["policy", "order", "--grant"]).0, Some(2));
}

#[tokio::test]
async fn hidden_statistics_keep_the_audit_clean_and_the_command_line_prints_them() {
    // Control: `order` granted to the application role, its `body` with statistics.
    let db = with_order().await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.app_options())
        .await
        .unwrap();
    let report = pg_tenancy::audit::audit(&pool, &AuditOptions::default())
        .await
        .unwrap();
    assert_eq!(report.codes(), ["column_statistics_visible"], "{report}");
    assert_eq!(
        report.findings[0].object,
        r#"column body of public."order""#
    );
    // The generator's option, on the same table: no statistics, no finding.
    let options = PolicyOptions::default().with_hidden_statistics("body");
    let sql = policy_sql_with("order", &options);
    let hide = sql
        .lines()
        .find(|l| l.contains("STATISTICS"))
        .expect("the ALTER");
    assert_eq!(
        hide,
        r#"ALTER TABLE "order" ALTER COLUMN "body" SET STATISTICS 0;"#
    );
    as_owner(&db, hide).await.unwrap();
    let report = assert_audit_clean(&pool, &AuditOptions::default()).await;
    assert_eq!(report.findings, vec![], "{report}");
    // The command line prints the same.
    let bin = env!("CARGO_BIN_EXE_pg-tenancy");
    let out = std::process::Command::new(bin)
        .args(["policy", "order", "--hide-statistics", "body"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), sql);
}
