//! Membership checks, the organization switcher, and the connect-time role check.

use pg_tenancy::testing::TestCluster;
use pg_tenancy::{Error, ErrorKind, OrgId, Role, TenantPool, UserId};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection};

use crate::common::{As, world};

#[tokio::test]
async fn authorize_returns_the_database_role() {
    let w = world(As::App).await;
    for (user, role) in [
        (&w.a.owner, Role::Owner),
        (&w.a.admin, Role::Admin),
        (&w.a.member, Role::Member),
    ] {
        let ctx = w.pool.authorize(user, w.a.id).await.unwrap();
        assert_eq!(
            (ctx.org_id(), ctx.user_id(), ctx.role()),
            (w.a.id, user, role)
        );
    }
    let member = w.pool.authorize(&w.a.member, w.a.id).await.unwrap();
    assert!(member.require_role(Role::Member).is_ok());
    let e = member.require_role(Role::Admin).unwrap_err();
    assert!(matches!(
        e,
        Error::InsufficientRole {
            required: Role::Admin,
            actual: Role::Member
        }
    ));
}

#[tokio::test]
async fn authorize_refuses_non_members_and_members_of_another_org() {
    let w = world(As::App).await;
    let stranger = UserId::new("user_stranger").unwrap();
    for (user, org) in [
        (&stranger, w.a.id),
        (&w.b.owner, w.a.id),
        (&w.a.owner, w.b.id),
    ] {
        let e = w.pool.authorize(user, org).await.unwrap_err();
        assert!(matches!(e, Error::NotAMember), "{user} in {org}: {e}");
        assert_eq!(e.kind(), ErrorKind::Forbidden);
    }
    // An organization that does not exist looks the same as one you are not in.
    let e = w
        .pool
        .authorize(&w.a.owner, OrgId::from_external_id("org_none"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotAMember));
    // authorize does not leave its lookup context on the connection.
    assert_eq!(
        crate::common::leftover_context(w.pool.pool()).await,
        (None, 0)
    );
}

#[tokio::test]
async fn with_member_checks_membership_and_role_in_the_begin_round_trip() {
    let w = world(As::App).await;
    let count = async |user: &UserId, org: OrgId, min: Role| {
        w.pool
            .with_member(user, org, min, async |tx| {
                Ok::<i64, Error>(
                    sqlx::query_scalar("SELECT count(*) FROM projects")
                        .fetch_one(tx)
                        .await?,
                )
            })
            .await
    };
    assert_eq!(count(&w.a.member, w.a.id, Role::Member).await.unwrap(), 1);
    assert_eq!(count(&w.a.owner, w.a.id, Role::Admin).await.unwrap(), 1);
    let e = count(&w.a.member, w.a.id, Role::Admin).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::InsufficientRole {
                required: Role::Admin,
                actual: Role::Member
            }
        ),
        "{e}"
    );
    let e = count(&w.b.owner, w.a.id, Role::Member).await.unwrap_err();
    assert!(matches!(e, Error::NotAMember), "{e}");
    // The refused units were rolled back and the connections are usable and clean.
    assert_eq!(count(&w.b.owner, w.b.id, Role::Owner).await.unwrap(), 1);
    assert_eq!(
        crate::common::leftover_context(w.pool.pool()).await,
        (None, 0)
    );
}

#[tokio::test]
async fn refused_with_member_does_not_poison_a_pool_of_one() {
    let w = crate::common::world_with(As::App, 1).await;
    for _ in 0..3 {
        let e = w
            .pool
            .with_member(&w.b.owner, w.a.id, Role::Member, async |_tx| {
                Ok::<(), Error>(())
            })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotAMember));
        assert_eq!(
            crate::common::leftover_context(w.pool.pool()).await,
            (None, 0)
        );
    }
}

/// user_alpha_admin joins beta as a member (beta's owner adds them).
async fn alpha_admin_joins_beta(w: &crate::common::World) {
    w.pool
        .add_member(&w.b.ctx(Role::Owner), &w.a.admin, Role::Member)
        .await
        .unwrap();
}

#[tokio::test]
async fn switcher_lists_own_memberships_and_nothing_else() {
    let w = world(As::App).await;
    alpha_admin_joins_beta(&w).await;
    let list = w.pool.memberships(&w.a.admin).await.unwrap();
    let got: Vec<_> = list
        .iter()
        .map(|m| (m.org_id, m.slug.as_deref(), m.role))
        .collect();
    assert_eq!(
        got,
        vec![
            (w.a.id, Some("alpha"), Role::Admin),
            (w.b.id, Some("beta"), Role::Member)
        ]
    );
    assert!(
        w.pool
            .memberships(&UserId::new("user_nobody").unwrap())
            .await
            .unwrap()
            .is_empty()
    );

    // Inside an organization, the user-scope policies do not apply: alpha's members only.
    let members: Vec<String> = w
        .pool
        .with_rls_read(&w.a.ctx(Role::Admin), async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar("SELECT organization_id::text FROM organization_members")
                    .fetch_all(tx)
                    .await?,
            )
        })
        .await
        .unwrap();
    assert_eq!(members, vec![w.a.id.to_string(); 3]);
}

/// The switcher's own policy on `organizations` (the user's organizations as one array):
/// a plain `SELECT` of every organization in a switcher unit returns exactly the user's, for a
/// user in two organizations, in one, and in none; and inside an organization, only it.
#[tokio::test]
async fn switcher_reads_exactly_the_users_organizations() {
    let w = world(As::App).await;
    let mut app = PgConnection::connect_with(&w.db.app_options())
        .await
        .unwrap();
    let settings: String = sqlx::query_scalar("SELECT tenancy_session_settings()")
        .fetch_one(&mut app)
        .await
        .unwrap();
    alpha_admin_joins_beta(&w).await;
    let mut switcher = async |user: &str| -> Vec<String> {
        app.execute(sqlx::AssertSqlSafe(format!(
            "BEGIN READ ONLY; CALL tenancy_enter_user('{user}', tenancy_session_settings(), '{settings}')"
        )))
        .await
        .unwrap();
        let ids = sqlx::query_scalar("SELECT id::text FROM organizations ORDER BY id")
            .fetch_all(&mut app)
            .await
            .unwrap();
        app.execute("ROLLBACK").await.unwrap();
        ids
    };
    let mut both = vec![w.a.id.to_string(), w.b.id.to_string()];
    both.sort();
    assert_eq!(switcher(w.a.admin.as_str()).await, both);
    assert_eq!(
        switcher(w.b.member.as_str()).await,
        vec![w.b.id.to_string()]
    );
    assert!(switcher("user_nobody").await.is_empty());
    let inside: Vec<String> = w
        .pool
        .with_rls_read(&w.a.ctx(Role::Admin), async |tx| {
            Ok::<_, Error>(
                sqlx::query_scalar("SELECT id::text FROM organizations")
                    .fetch_all(tx)
                    .await?,
            )
        })
        .await
        .unwrap();
    assert_eq!(inside, vec![w.a.id.to_string()]);
}

#[tokio::test]
async fn connect_refuses_a_superuser_and_a_bypassrls_role() {
    let cluster = TestCluster::global().unwrap();
    let db = crate::common::database().await;
    let admin = cluster.admin_options().database(db.name());
    let is_superuser: bool = {
        let mut c = PgConnection::connect_with(&admin).await.unwrap();
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    if is_superuser {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(admin.clone())
            .await
            .unwrap();
        let e = TenantPool::new(pool).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::UnsafeDatabaseRole {
                    reason: "superuser",
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(e.kind(), ErrorKind::Internal);
    }

    let role = format!("{}_bypass", db.name());
    let mut c = PgConnection::connect_with(&admin).await.unwrap();
    c.execute(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} LOGIN BYPASSRLS PASSWORD 'bypass'"
    )))
    .await
    .expect("creating a BYPASSRLS role needs a superuser: set DATABASE_URL to one, or unset it");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.app_options().username(&role).password("bypass"))
        .await
        .unwrap();
    let e = TenantPool::new(pool.clone()).await.unwrap_err();
    assert!(
        matches!(&e, Error::UnsafeDatabaseRole { reason: "bypassrls", role: r } if *r == role),
        "{e}"
    );
    // Only the explicitly named escape hatch accepts it, and keeps the role as it is.
    let tools_only = TenantPool::dangerously_skip_role_check(pool);
    let bypasses: bool =
        sqlx::query_scalar("SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(tools_only.pool())
            .await
            .unwrap();
    assert!(bypasses);
    // It runs no unit: it read no search_path to expect, and the session check refuses that.
    let ctx = pg_tenancy::OrgContext::from_verified_session(
        OrgId::from_external_id("org_x"),
        UserId::new("user_x").unwrap(),
        Role::Member,
    );
    let e = tools_only.begin_read(&ctx).await.unwrap_err();
    assert_eq!(crate::common::sqlstate(&e).as_deref(), Some("TNC05"), "{e}");

    // The harness's own roles pass.
    db.app_pool(1).await.unwrap();
    db.owner_pool(1).await.unwrap();
}

#[test]
fn with_rls_futures_are_send_for_web_frameworks() {
    fn assert_send<T: Send>(_: &T) {}
    async fn handler(pool: TenantPool, ctx: pg_tenancy::OrgContext) -> Result<Vec<String>, Error> {
        pool.with_rls(&ctx, async |tx| {
            let a: Vec<String> = sqlx::query_scalar("SELECT name FROM projects")
                .fetch_all(&mut *tx)
                .await?;
            sqlx::query("SELECT 1").execute(&mut *tx).await?;
            Ok(a)
        })
        .await
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let pool = TenantPool::dangerously_skip_role_check(
        PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap(),
    );
    let ctx = pg_tenancy::OrgContext::from_verified_session(
        OrgId::from_external_id("org_x"),
        UserId::new("user_x").unwrap(),
        Role::Member,
    );
    let fut = handler(pool, ctx);
    assert_send(&fut);
}

#[tokio::test]
async fn ids_and_roles_bind_and_decode_directly() {
    let w = world(As::App).await;
    let rows: Vec<(OrgId, UserId, Role)> = w
        .pool
        .with_rls_read(&w.a.ctx(Role::Admin), async |tx| {
            Ok::<_, Error>(
                sqlx::query_as(
                    "SELECT organization_id, user_id, role FROM organization_members \
                     WHERE organization_id = $1 AND role <> $2 ORDER BY user_id",
                )
                .bind(w.a.id)
                .bind(Role::Member)
                .fetch_all(tx)
                .await?,
            )
        })
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (w.a.id, w.a.admin.clone(), Role::Admin),
            (w.a.id, w.a.owner.clone(), Role::Owner)
        ]
    );
    // Decoding validates: a text that is not a usable user id or role is an error, not a value.
    // (In a transaction: one server connection, also through a transaction pooler.)
    let mut conn = w.pool.pool().begin().await.unwrap();
    let bad_user = sqlx::query_scalar::<_, UserId>("SELECT 'o''hara'")
        .fetch_one(&mut *conn)
        .await;
    assert!(
        matches!(bad_user, Err(sqlx::Error::ColumnDecode { .. })),
        "{bad_user:?}"
    );
    let bad_role = sqlx::query_scalar::<_, Role>("SELECT 'superuser'")
        .fetch_one(&mut *conn)
        .await;
    assert!(
        matches!(bad_role, Err(sqlx::Error::ColumnDecode { .. })),
        "{bad_role:?}"
    );
    let user: UserId = sqlx::query_scalar("SELECT $1::text")
        .bind(&w.a.member)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(user, w.a.member);
}

crate::common::both_roles!(the_identity_providers_columns_are_the_service_paths);

/// Request units write the columns the application owns; the identity provider's (the ids
/// and versions the sync matches and orders events by, and the creator) are refused with
/// TNC11 whatever the role is granted, the table owner's role included. Service units write
/// them.
async fn the_identity_providers_columns_are_the_service_paths(role: As) {
    let w = world(role).await;
    let owner = w.a.ctx(Role::Owner);
    let run = async |sql: String| {
        w.pool
            .with_rls(&owner, async |tx| {
                Ok::<_, Error>(sqlx::query(sqlx::AssertSqlSafe(sql)).execute(tx).await?)
            })
            .await
            .map(|r| r.rows_affected())
    };
    let (org, admin) = (w.a.id.as_uuid(), w.a.admin.as_str());
    // Positive controls: the application's columns.
    for sql in [
        format!("UPDATE organization_members SET role = 'member' WHERE user_id = '{admin}'"),
        "UPDATE organizations SET name = 'Renamed', slug = 'alpha-renamed'".to_owned(),
        format!(
            "INSERT INTO organization_members (organization_id, user_id, role) \
             VALUES ('{org}', 'user_added', 'member')"
        ),
    ] {
        assert_eq!(run(sql.clone()).await.unwrap(), 1, "{sql}");
    }
    // The provider's columns: refused, on update and on insert.
    for sql in [
        format!(
            "UPDATE organization_members SET external_id = 'orgmem_x' WHERE user_id = '{admin}'"
        ),
        format!(
            "UPDATE organization_members SET external_created_at = 9e15 WHERE user_id = '{admin}'"
        ),
        format!(
            "UPDATE organization_members SET external_updated_at = 1 WHERE user_id = '{admin}'"
        ),
        "UPDATE organizations SET external_id = 'org_elsewhere'".to_owned(),
        "UPDATE organizations SET external_updated_at = 9e15".to_owned(),
        "UPDATE organizations SET external_source = 2".to_owned(),
        "UPDATE organizations SET created_by = 'user_someone'".to_owned(),
        format!(
            "INSERT INTO organization_members (organization_id, user_id, role, external_id) \
             VALUES ('{org}', 'user_forged', 'member', 'orgmem_forged')"
        ),
    ] {
        let e = run(sql.clone()).await.unwrap_err();
        let code = match &e {
            Error::Database(sqlx::Error::Database(db)) => db.code().map(|c| c.into_owned()),
            _ => None,
        };
        assert_eq!(code.as_deref(), Some("TNC11"), "{sql}: {e}");
        assert_eq!(e.kind(), ErrorKind::Forbidden, "{sql}");
    }
    // A service unit (the sync's path) writes them.
    let service = w.db.service_pool(1).await.unwrap();
    let n = service
        .with_org(w.a.id, async |tx| {
            Ok::<_, Error>(
                sqlx::query(
                    "UPDATE organization_members SET external_id = 'orgmem_a', \
                     external_created_at = 1, external_updated_at = 1 WHERE user_id = $1",
                )
                .bind(&w.a.admin)
                .execute(tx)
                .await?
                .rows_affected(),
            )
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
}
