use pg_tenancy::{Error, ErrorKind, Role};
use sqlx::Row;
use uuid::Uuid;

use crate::common::{As, both_roles, project_orgs_count, sqlstate, world};

both_roles!(
    org_a_cannot_see_org_b,
    org_b_cannot_see_org_a,
    no_where_clause_sees_own_rows_on_every_table,
    insert_into_another_org_fails_on_every_table,
    update_cannot_move_a_row_into_another_org,
    delete_aimed_at_another_org_affects_nothing,
    no_context_sees_no_rows_and_writes_nothing,
    empty_setting_from_an_earlier_transaction_sees_nothing,
    read_unit_refuses_writes,
);

/// The two webhook tables, with what a row of each needs.
const WEBHOOK_TABLES: [(&str, &str); 2] = [
    (
        "membership_tombstones",
        "INSERT INTO membership_tombstones (organization_id, external_id, user_id) \
         VALUES ($1, 'orgmem_' || gen_random_uuid(), 'user_gone')",
    ),
    (
        "webhook_deliveries",
        "INSERT INTO webhook_deliveries (organization_id, message_id, event_type) \
         VALUES ($1, 'msg_' || gen_random_uuid(), 'organization.updated')",
    ),
];

/// One row of each webhook table for A and for B, written by service units (the only path
/// that writes them).
async fn seed_webhook_rows(w: &crate::common::World) -> pg_tenancy::ServicePool {
    let service = w.db.service_pool(1).await.unwrap();
    for org in [w.a.id, w.b.id] {
        service
            .with_org(org, async |tx| {
                for (_, insert) in WEBHOOK_TABLES {
                    sqlx::query(insert)
                        .bind(org.as_uuid())
                        .execute(&mut *tx)
                        .await?;
                }
                Ok::<_, Error>(())
            })
            .await
            .unwrap();
    }
    service
}

/// The webhook tables' rows a unit sees, by table, with no WHERE.
async fn webhook_rows(tx: &mut sqlx::PgConnection) -> Result<Vec<Vec<Uuid>>, Error> {
    let mut seen = Vec::new();
    for (table, _) in WEBHOOK_TABLES {
        seen.push(
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT organization_id FROM {table}"
            )))
            .fetch_all(&mut *tx)
            .await?,
        );
    }
    Ok(seen)
}

/// A missing GRANT: the application role has none on the webhook tables (by design), so the
/// database refuses before any policy runs.
fn assert_no_grant(r: Result<(), Error>, what: &str) {
    let e = r.expect_err(what);
    assert!(sqlstate(&e).as_deref() == Some("42501"), "{what}: {e}");
    assert!(!e.is_rls_violation(), "{what}");
}

#[tokio::test]
async fn webhook_tables_isolate_service_units_and_close_to_members() {
    let w = world(As::Owner).await;
    let service = seed_webhook_rows(&w).await;
    let a = *w.a.id.as_uuid();
    // A service unit for A sees A's rows only, and cannot write B's.
    let seen = service
        .with_org(w.a.id, async |tx| webhook_rows(tx).await)
        .await
        .unwrap();
    assert_eq!(seen, vec![vec![a], vec![a]]);
    for (table, insert) in WEBHOOK_TABLES {
        let r = service
            .with_org(w.a.id, async |tx| {
                sqlx::query(insert)
                    .bind(w.b.id.as_uuid())
                    .execute(tx)
                    .await?;
                Ok::<_, Error>(())
            })
            .await;
        assert_rls_refused(r, table);
    }
    // A member unit of A, even an owner's, as the tables' owner: the policies admit nothing.
    let ctx = w.a.ctx(Role::Owner);
    let seen = w
        .pool
        .with_rls_read(&ctx, async |tx| webhook_rows(tx).await)
        .await
        .unwrap();
    assert_eq!(seen, vec![Vec::<Uuid>::new(), Vec::new()]);
    for (table, insert) in WEBHOOK_TABLES {
        let r = w
            .pool
            .with_rls(&ctx, async |tx| {
                sqlx::query(insert)
                    .bind(w.a.id.as_uuid())
                    .execute(tx)
                    .await?;
                Ok::<_, Error>(())
            })
            .await;
        assert_rls_refused(r, table);
    }
    // As the application role: no GRANT at all, for reads and writes alike.
    let app = world(As::App).await;
    let ctx = app.a.ctx(Role::Owner);
    for (table, insert) in WEBHOOK_TABLES {
        let read = app
            .pool
            .with_rls_read(&ctx, async |tx| webhook_rows(tx).await.map(drop))
            .await;
        assert_no_grant(read, table);
        let write = app
            .pool
            .with_rls(&ctx, async |tx| {
                sqlx::query(insert)
                    .bind(app.a.id.as_uuid())
                    .execute(tx)
                    .await?;
                Ok::<_, Error>(())
            })
            .await;
        assert_no_grant(write, table);
    }
}

async fn project_orgs(w: &crate::common::World, ctx: &pg_tenancy::OrgContext) -> Vec<(Uuid, Uuid)> {
    w.pool
        .with_rls(ctx, async |tx| {
            // Deliberately no WHERE clause.
            let rows = sqlx::query("SELECT organization_id, id FROM projects")
                .fetch_all(tx)
                .await?;
            Ok::<_, Error>(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
        .await
        .unwrap()
}

async fn org_a_cannot_see_org_b(role: As) {
    let w = world(role).await;
    let seen = project_orgs(&w, &w.a.ctx(Role::Member)).await;
    assert_eq!(seen, vec![(*w.a.id.as_uuid(), w.a.project)]);
}

async fn org_b_cannot_see_org_a(role: As) {
    let w = world(role).await;
    let seen = project_orgs(&w, &w.b.ctx(Role::Member)).await;
    assert_eq!(seen, vec![(*w.b.id.as_uuid(), w.b.project)]);
    // And a direct lookup of A's project by id finds nothing.
    let n: i64 = w
        .pool
        .with_rls_read(&w.b.ctx(Role::Owner), async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar("SELECT count(*) FROM projects WHERE id = $1")
                    .bind(w.a.project)
                    .fetch_one(tx)
                    .await?,
            )
        })
        .await
        .unwrap();
    assert_eq!(n, 0);
}

async fn no_where_clause_sees_own_rows_on_every_table(role: As) {
    let w = world(role).await;
    let (orgs, members): (Vec<Uuid>, Vec<Uuid>) = w
        .pool
        .with_rls_read(&w.a.ctx(Role::Member), async |tx| {
            let orgs = sqlx::query_scalar("SELECT id FROM organizations")
                .fetch_all(&mut *tx)
                .await?;
            let members = sqlx::query_scalar("SELECT organization_id FROM organization_members")
                .fetch_all(&mut *tx)
                .await?;
            Ok::<_, Error>((orgs, members))
        })
        .await
        .unwrap();
    assert_eq!(orgs, vec![*w.a.id.as_uuid()]);
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m == w.a.id.as_uuid()));
}

fn assert_rls_refused(r: Result<(), Error>, what: &str) {
    let e = r.expect_err(what);
    assert!(e.is_rls_violation(), "{what}: {e}");
    assert_eq!(e.kind(), ErrorKind::Forbidden, "{what}");
}

async fn insert_into_another_org_fails_on_every_table(role: As) {
    let w = world(role).await;
    let ctx = w.a.ctx(Role::Owner);
    let b = *w.b.id.as_uuid();
    let cases = [
        (
            "organizations",
            "INSERT INTO organizations (id, name) VALUES ($1, 'forged')",
        ),
        (
            "organization_members",
            "INSERT INTO organization_members (organization_id, user_id, role) VALUES ($1, 'user_intruder', 'owner')",
        ),
        (
            "projects",
            "INSERT INTO projects (organization_id, name) VALUES ($1, 'planted')",
        ),
    ];
    for (table, sql) in cases {
        let r = w
            .pool
            .with_rls(&ctx, async |tx| {
                sqlx::query(sql).bind(b).execute(tx).await?;
                Ok::<_, Error>(())
            })
            .await;
        assert_rls_refused(r, table);
    }
    // B is unchanged.
    let b_projects = project_orgs_count(&w, &w.b.ctx(Role::Owner)).await;
    assert_eq!(b_projects, 1);
}

async fn update_cannot_move_a_row_into_another_org(role: As) {
    let w = world(role).await;
    let ctx = w.a.ctx(Role::Owner);
    let b = *w.b.id.as_uuid();
    for (table, sql) in [
        ("organizations", "UPDATE organizations SET id = $1"),
        (
            "organization_members",
            "UPDATE organization_members SET organization_id = $1",
        ),
        ("projects", "UPDATE projects SET organization_id = $1"),
    ] {
        let r = w
            .pool
            .with_rls(&ctx, async |tx| {
                sqlx::query(sql).bind(b).execute(tx).await?;
                Ok::<_, Error>(())
            })
            .await;
        assert_rls_refused(r, table);
    }
    assert_eq!(project_orgs_count(&w, &ctx).await, 1);
    assert_eq!(project_orgs_count(&w, &w.b.ctx(Role::Owner)).await, 1);
}

async fn delete_aimed_at_another_org_affects_nothing(role: As) {
    let w = world(role).await;
    let ctx = w.a.ctx(Role::Owner);
    let b = *w.b.id.as_uuid();
    for sql in [
        "DELETE FROM organizations WHERE id = $1",
        "DELETE FROM organization_members WHERE organization_id = $1",
        "DELETE FROM projects WHERE organization_id = $1",
        "UPDATE projects SET name = 'defaced' WHERE organization_id = $1",
    ] {
        let affected = w
            .pool
            .with_rls(&ctx, async |tx| {
                Ok::<_, Error>(sqlx::query(sql).bind(b).execute(tx).await?.rows_affected())
            })
            .await
            .unwrap();
        assert_eq!(affected, 0, "{sql}");
    }
    let name: String = w
        .pool
        .with_rls_read(&w.b.ctx(Role::Member), async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar("SELECT name FROM projects")
                    .fetch_one(tx)
                    .await?,
            )
        })
        .await
        .unwrap();
    assert_eq!(name, "beta project");
}

async fn no_context_sees_no_rows_and_writes_nothing(role: As) {
    let w = world(role).await;
    seed_webhook_rows(&w).await;
    let pool = w.pool.pool();
    for table in [
        "organizations",
        "organization_members",
        "projects",
        "membership_tombstones",
        "webhook_deliveries",
    ] {
        // Simple protocol: one message (also through a transaction pooler).
        let n = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(pool)
            .await
            .map(|row| sqlx::Row::get::<i64, _>(&row, 0));
        match (role, table) {
            // The application role has no GRANT on the webhook tables at all.
            (As::App, "membership_tombstones" | "webhook_deliveries") => {
                assert_no_grant(n.map(drop).map_err(Error::from), table)
            }
            _ => assert_eq!(n.unwrap(), 0, "{table} without context"),
        }
    }
    // An OrgId is a uuid: a safe literal.
    let e = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO projects (organization_id, name) VALUES ('{}', 'x')",
        w.a.id
    )))
    .execute(pool)
    .await
    .map_err(Error::from)
    .unwrap_err();
    assert!(e.is_rls_violation(), "{e}");
    let n = sqlx::raw_sql("UPDATE projects SET name = 'x'")
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(n.rows_affected(), 0);
}

async fn empty_setting_from_an_earlier_transaction_sees_nothing(role: As) {
    if crate::bouncer::skip_session_test("a session after its transaction") {
        return;
    }
    let w = world(role).await;
    let mut conn = w.pool.pool().acquire().await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    sqlx::query("SELECT set_config('app.current_org_id', $1, true)")
        .bind(w.a.id.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The setting now exists on this session with value '' (not NULL).
    let setting: Option<String> =
        sqlx::query_scalar("SELECT current_setting('app.current_org_id', true)")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(setting.as_deref(), Some(""));
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

async fn read_unit_refuses_writes(role: As) {
    let w = world(role).await;
    let r = w
        .pool
        .with_rls_read(&w.a.ctx(Role::Owner), async |tx| {
            sqlx::query("DELETE FROM projects").execute(tx).await?;
            Ok::<_, Error>(())
        })
        .await;
    let e = r.unwrap_err();
    assert!(sqlstate(&e).as_deref() == Some("25006"), "{e}");
    assert_eq!(project_orgs_count(&w, &w.a.ctx(Role::Owner)).await, 1);
}
