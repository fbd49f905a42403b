//! The migration files work as plain SQL for a non-superuser owner, and produce the promised
//! catalog state.

use sqlx::{Connection, PgConnection};
use tenancy::migrations::{APP_TABLES, MIGRATOR};
use tenancy::testing::TestDatabase;

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
    for file in files {
        // What `psql -f` does: send the file's statements, outside any migration tool.
        let sql = std::fs::read_to_string(&file).unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    // The owner has neither SUPERUSER nor CREATEROLE (asserted above), so files that applied
    // cannot have created roles.
    assert_catalog(&mut conn).await;
    // The embedded migrator produces the same catalog.
    let migrated = TestDatabase::create().await.unwrap();
    let mut conn = PgConnection::connect_with(&migrated.owner_options())
        .await
        .unwrap();
    assert_catalog(&mut conn).await;
}

/// Every app table: RLS enabled and forced, every policy has USING, and every policy that
/// admits writes has WITH CHECK.
async fn assert_catalog(conn: &mut PgConnection) {
    for table in APP_TABLES {
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
        let policies: Vec<(String, String, bool, bool)> = sqlx::query_as(
            "SELECT policyname::text, cmd, qual IS NOT NULL, with_check IS NOT NULL \
             FROM pg_policies WHERE tablename = $1",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        assert!(
            policies
                .iter()
                .any(|p| p.0 == "tenant_isolation" && p.1 == "ALL" && p.2 && p.3),
            "{table}: {policies:?}"
        );
        for (name, cmd, using, check) in &policies {
            assert!(*using, "{table}.{name} has no USING");
            // DELETE policies cannot have WITH CHECK: nothing is written.
            let writes = !matches!(cmd.as_str(), "SELECT" | "DELETE");
            assert!(
                !writes || *check,
                "{table}.{name} admits writes without WITH CHECK"
            );
        }
    }
}
