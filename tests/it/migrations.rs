//! The migration files work as plain SQL for a non-superuser owner, and produce the promised
//! catalog state.

use pg_tenancy::migrations::{MIGRATIONS_TABLE, MIGRATOR, SERVICE_TABLES};
use pg_tenancy::testing::TestDatabase;
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn files_apply_as_plain_sql_in_name_order_as_a_non_superuser_owner() {
    let db = TestDatabase::create_empty().await.unwrap();
    let mut conn = PgConnection::connect_with(&db.owner_options())
        .await
        .unwrap();
    let (superuser, createrole): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(!superuser && !createrole);
    let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert_eq!(files.len(), MIGRATOR.iter().count());
    let search_path = async |conn: &mut PgConnection| -> String {
        sqlx::query_scalar("SELECT current_setting('search_path')")
            .fetch_one(conn)
            .await
            .unwrap()
    };
    let before = search_path(&mut conn).await;
    for file in files {
        // What `psql -f` does: send the file's statements, outside any migration tool.
        let sql = std::fs::read_to_string(&file).unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    // The session goes back as it came: a pooled connection that ran the migrations keeps
    // the caller's search_path.
    assert_eq!(search_path(&mut conn).await, before);
    // The owner has neither SUPERUSER nor CREATEROLE (asserted above), so files that applied
    // cannot have created roles.
    assert_catalog(&mut conn).await;
    // The embedded migrator produces the same catalog, and leaves the search_path alone too.
    let migrated = TestDatabase::create_empty().await.unwrap();
    let mut conn = PgConnection::connect_with(&migrated.owner_options())
        .await
        .unwrap();
    let before = search_path(&mut conn).await;
    MIGRATOR.run(&mut conn).await.unwrap();
    assert_eq!(search_path(&mut conn).await, before);
    assert_catalog(&mut conn).await;
    // What `sqlx migrate run` does with the files: resolve the folder at run time, record in
    // sqlx's default table.
    let cli = TestDatabase::create_empty().await.unwrap();
    let mut conn = PgConnection::connect_with(&cli.owner_options())
        .await
        .unwrap();
    let folder = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"));
    let runtime = sqlx::migrate::Migrator::new(folder).await.unwrap();
    assert_eq!(runtime.iter().count(), MIGRATOR.iter().count());
    runtime.run(&mut conn).await.unwrap();
    assert_catalog(&mut conn).await;
}

/// A user's own `sqlx::migrate!()` runs in the same database after pg-tenancy's: the crate
/// records its migrations in its own table, so sqlx does not refuse versions it does not know.
/// The control: the same two migrators sharing one table fail as users saw ("previously
/// applied but missing").
#[tokio::test]
async fn an_applications_own_migrations_live_beside_the_crates() {
    let db = TestDatabase::create().await.unwrap();
    db.migrate(&crate::common::APP_MIGRATOR).await.unwrap();
    // And again, as every deployment re-runs both: nothing to do, no error.
    pg_tenancy::migrations::migrate(
        &sqlx::PgPool::connect_with(db.owner_options())
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    db.migrate(&crate::common::APP_MIGRATOR).await.unwrap();
    let mut conn = PgConnection::connect_with(&db.owner_options())
        .await
        .unwrap();
    let recorded = async |conn: &mut PgConnection, table: &str| -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(conn)
            .await
            .unwrap()
    };
    assert_eq!(
        recorded(&mut conn, MIGRATIONS_TABLE).await,
        MIGRATOR.iter().count() as i64
    );
    assert_eq!(
        recorded(&mut conn, "_sqlx_migrations").await,
        crate::common::APP_MIGRATOR.iter().count() as i64
    );

    // Control: pg-tenancy's migrations recorded in sqlx's default table, then the app's.
    let shared = TestDatabase::create_empty().await.unwrap();
    let mut conn = PgConnection::connect_with(&shared.owner_options())
        .await
        .unwrap();
    let folder = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"));
    let default_table = sqlx::migrate::Migrator::new(folder).await.unwrap();
    default_table.run(&mut conn).await.unwrap();
    let refused = crate::common::APP_MIGRATOR
        .run(&mut conn)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, sqlx::migrate::MigrateError::VersionMissing(_)),
        "{refused:?}"
    );
}

/// Every table: RLS enabled and forced; at least one policy with USING and WITH CHECK on the
/// bare tenant column against `(SELECT tenancy_current_org_id())`; every reading policy has
/// USING and every writing policy WITH CHECK.
async fn assert_catalog(conn: &mut PgConnection) {
    for table in SERVICE_TABLES {
        let (enabled, forced): (bool, bool) = sqlx::query_as(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = $1::regclass",
        )
        .bind(table)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert!(
            enabled && forced,
            "{table}: RLS enabled {enabled}, forced {forced}"
        );
        let policies: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT policyname::text, cmd, qual, with_check FROM pg_policies WHERE tablename = $1",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let column = if *table == "organizations" {
            "id"
        } else {
            "organization_id"
        };
        let tenant = format!("({column} = ( SELECT tenancy_current_org_id()");
        assert!(
            policies.iter().any(|(_, _, using, check)| {
                using.as_deref().is_some_and(|u| u.contains(&tenant))
                    && check.as_deref().is_some_and(|c| c.contains(&tenant))
            }),
            "{table}: no policy compares the bare {column} in USING and WITH CHECK: {policies:?}"
        );
        for (name, cmd, using, check) in &policies {
            let reads = matches!(cmd.as_str(), "SELECT" | "UPDATE" | "DELETE" | "ALL");
            let writes = matches!(cmd.as_str(), "INSERT" | "UPDATE" | "ALL");
            assert!(!reads || using.is_some(), "{table}.{name} has no USING");
            assert!(
                !writes || check.is_some(),
                "{table}.{name} admits writes without WITH CHECK"
            );
        }
    }
}

/// The production set-up the docs show (README, `docs/security.md`, the `migrations` module)
/// is exactly the grants the test harness makes (`TestDatabase::create`, from the same lists):
/// the tests run under the documented set-up.
#[test]
fn the_documented_grants_are_the_harness_grants() {
    use pg_tenancy::migrations::APP_TABLES;
    let expected = vec![
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO app",
            APP_TABLES.join(", ")
        ),
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO app_sync",
            SERVICE_TABLES.join(", ")
        ),
        "REVOKE TEMPORARY ON DATABASE app FROM PUBLIC".to_owned(),
    ];
    let read = |path: &str| {
        std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    // The module docs: the `//! ` lines, unprefixed.
    let module: String = read("src/migrations.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
        .collect();
    for (name, text) in [
        ("README.md", read("README.md")),
        ("docs/security.md", read("docs/security.md")),
        ("src/migrations.rs", module),
    ] {
        assert_eq!(granting_block(&text), expected, "{name}");
    }
}

/// The statements of the first ```sql block that grants on `organizations`, without
/// comments, each on one line.
fn granting_block(text: &str) -> Vec<String> {
    let mut blocks = text
        .split("```sql")
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or(""));
    let block = blocks
        .find(|b| b.contains("ON organizations") && b.contains("REVOKE TEMPORARY"))
        .expect("a ```sql block granting on organizations and revoking TEMPORARY");
    let sql: String = block
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    sql.split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

/// The member entry reads the session's settings itself (`tenancy_session_settings()`), the
/// other entries are sent the crate's own expression of them: a pool refuses to start when the
/// two differ (migrations of another version), rather than have every unit refused as unclean.
#[tokio::test]
async fn a_pool_refuses_migrations_whose_session_settings_differ_from_the_crates() {
    let db = crate::common::database().await;
    let connect = || async {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(db.app_options())
            .await
            .unwrap()
    };
    // Control: as shipped, the pool starts and its units enter.
    let pool = pg_tenancy::TenantPool::new(connect().await).await.unwrap();
    drop(pool);
    let mut owner = PgConnection::connect_with(&db.owner_options())
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE OR REPLACE FUNCTION tenancy_session_settings() RETURNS text \
         LANGUAGE sql STABLE AS $$ SELECT pg_catalog.current_setting('search_path') $$",
    )
    .execute(&mut owner)
    .await
    .unwrap();
    let e = pg_tenancy::TenantPool::new(connect().await)
        .await
        .unwrap_err();
    assert!(
        matches!(e, pg_tenancy::Error::MigrationsOutOfDate { .. }),
        "{e}"
    );
}
