//! The migration files work as plain SQL for a non-superuser owner, and produce the promised
//! catalog state.

use pg_tenancy::migrations::{MIGRATOR, SERVICE_TABLES};
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
