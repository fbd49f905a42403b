//! `cargo run --example quickstart`
//!
//! Starts a throwaway PostgreSQL (or uses `DATABASE_URL`), applies the migrations, creates two
//! organizations, and shows what Row-Level Security does for them, connected as an application
//! role that is neither superuser nor BYPASSRLS. Exits non-zero if any promise fails.

use std::process::ExitCode;

use pg_tenancy::testing::TestDatabase;
use pg_tenancy::{Error, OrgContext, OrgId, Role, TenantPool, UserId};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("\nSome isolation promise FAILED (see above).");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("quickstart could not run: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn project_names(pool: &TenantPool, ctx: &OrgContext) -> Result<Vec<String>, Error> {
    pool.with_rls_read(ctx, async |tx| {
        Ok(
            sqlx::query_scalar(
                "SELECT name FROM projects WHERE organization_id = $1 ORDER BY name",
            )
            .bind(ctx.org_id().as_uuid())
            .fetch_all(tx)
            .await?,
        )
    })
    .await
}

async fn run() -> Result<bool, Box<dyn std::error::Error>> {
    println!("pg-tenancy quickstart");
    println!("=====================");
    let source = if std::env::var_os("DATABASE_URL").is_some() {
        "DATABASE_URL"
    } else {
        "a throwaway PostgreSQL cluster"
    };
    println!("Database: {source}; migrations applied by the (non-superuser) owner.");
    let db = TestDatabase::create().await?;
    // The application's own table (`projects`), from its own migrations, granted to the
    // application role: what a deployment does after pg-tenancy's migrations.
    db.migrate(&sqlx::migrate!("./examples/migrations")).await?;
    db.grant_app(&["projects", "invoices"]).await?;
    let pool = db.app_pool(4).await?;
    println!(
        "Connected as an application role: not superuser, not BYPASSRLS (checked on connect).\n"
    );

    // Users and organizations, as an identity provider would name them.
    let alice = UserId::new("user_alice")?;
    let bob = UserId::new("user_bob")?;
    let carol = UserId::new("user_carol")?;
    let acme = pool
        .create_organization(
            OrgId::from_external_id("org_acme"),
            "Acme",
            Some("acme"),
            &alice,
        )
        .await?;
    let globex = pool
        .create_organization(
            OrgId::from_external_id("org_globex"),
            "Globex",
            Some("globex"),
            &bob,
        )
        .await?;
    pool.add_member(&acme, &carol, Role::Member).await?;
    for (ctx, names) in [
        (&acme, ["Rocket skates", "Giant magnet"]),
        (&globex, ["Doomsday device", "Hammock"]),
    ] {
        pool.with_rls(ctx, async |tx| {
            for name in names {
                sqlx::query("INSERT INTO projects (organization_id, name) VALUES ($1, $2)")
                    .bind(ctx.org_id().as_uuid())
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok::<_, Error>(())
        })
        .await?;
    }
    println!(
        "Created Acme (alice: owner, carol: member) and Globex (bob: owner), two projects each.\n"
    );

    let mut all_ok = true;
    let mut check = |ok: bool, what: &str, detail: String| {
        all_ok &= ok;
        println!(
            "  [{}] {what}\n        {detail}",
            if ok { "ok" } else { "FAILED" }
        );
    };

    // Contexts come from the database membership check, never from the request.
    let alice_ctx = pool.authorize(&alice, acme.org_id()).await?;
    let bob_ctx = pool.authorize(&bob, globex.org_id()).await?;
    let carol_ctx = pool.authorize(&carol, acme.org_id()).await?;

    let a = project_names(&pool, &alice_ctx).await?;
    let g = project_names(&pool, &bob_ctx).await?;
    check(
        a == ["Giant magnet", "Rocket skates"],
        "Acme sees only its own projects",
        format!("{a:?}"),
    );
    check(
        g == ["Doomsday device", "Hammock"],
        "Globex sees only its own projects",
        format!("{g:?}"),
    );

    let forgot_where: Vec<(String, String)> = pool
        .with_rls_read(&alice_ctx, async |tx| {
            Ok::<_, Error>(
                sqlx::query_as("SELECT o.name, p.name FROM projects p JOIN organizations o ON o.id = p.organization_id ORDER BY p.name")
                    .fetch_all(tx)
                    .await?,
            )
        })
        .await?;
    check(
        forgot_where.iter().all(|(org, _)| org == "Acme") && forgot_where.len() == 2,
        "A query that forgot its WHERE still sees only Acme's rows",
        format!("SELECT ... FROM projects JOIN organizations (no WHERE) -> {forgot_where:?}"),
    );

    let planted = pool
        .with_rls(&alice_ctx, async |tx| {
            sqlx::query(
                "INSERT INTO projects (organization_id, name) VALUES ($1, 'Planted by Acme')",
            )
            .bind(globex.org_id().as_uuid())
            .execute(tx)
            .await?;
            Ok::<_, Error>(())
        })
        .await;
    check(
        matches!(&planted, Err(e) if e.is_rls_violation()),
        "A write into the other organization is refused",
        match &planted {
            Err(e) => format!(
                "INSERT into Globex as Acme -> HTTP {} ({})",
                e.kind().http_status(),
                e
            ),
            Ok(()) => "INSERT into Globex as Acme SUCCEEDED".into(),
        },
    );
    let wiped = pool
        .with_rls(&alice_ctx, async |tx| {
            Ok::<_, Error>(
                sqlx::query("DELETE FROM projects WHERE organization_id = $1")
                    .bind(globex.org_id().as_uuid())
                    .execute(tx)
                    .await?
                    .rows_affected(),
            )
        })
        .await?;
    check(
        wiped == 0,
        "A delete aimed at the other organization affects nothing",
        format!("{wiped} rows deleted"),
    );

    let no_ctx: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
        .fetch_one(pool.pool())
        .await?;
    check(
        no_ctx == 0,
        "Without a context, nothing is visible",
        format!("SELECT count(*) FROM projects -> {no_ctx}"),
    );

    let denied = carol_ctx.require_role(Role::Admin);
    check(
        matches!(denied, Err(Error::InsufficientRole { .. })),
        "require_role(Admin) stops a member from an admin action",
        match denied {
            Err(e) => format!("carol -> HTTP {} ({e})", e.kind().http_status()),
            Ok(()) => "carol was allowed".into(),
        },
    );
    let by_member = pool
        .add_member(&carol_ctx, &UserId::new("user_mallory")?, Role::Admin)
        .await;
    check(
        by_member.is_err(),
        "A member cannot add an admin",
        format!(
            "add_member as carol -> {}",
            by_member.map_or_else(|e| e.to_string(), |_| "added".into())
        ),
    );

    // The database does not take the application's word for it: a context for a user who is
    // not a member (a bug, a stale session) is refused before any query runs, and raw SQL in
    // a member's unit cannot promote that member.
    let forged =
        OrgContext::from_verified_session(acme.org_id(), UserId::new("user_mallory")?, Role::Owner);
    let refused = project_names(&pool, &forged).await;
    check(
        matches!(refused, Err(Error::NotAMember)),
        "The database refuses a context its membership does not back",
        match &refused {
            Err(e) => format!(
                "mallory as owner of Acme -> HTTP {} ({e})",
                e.kind().http_status()
            ),
            Ok(names) => format!("mallory saw {names:?}"),
        },
    );
    let promoted = pool
        .with_rls(&carol_ctx, async |tx| {
            Ok::<_, Error>(
                sqlx::query("UPDATE organization_members SET role = 'owner' WHERE user_id = $1")
                    .bind(carol.as_str())
                    .execute(tx)
                    .await?
                    .rows_affected(),
            )
        })
        .await?;
    check(
        promoted == 0,
        "Raw SQL in a member's unit cannot promote the member",
        format!("UPDATE organization_members SET role = 'owner' as carol -> {promoted} rows"),
    );

    let switcher = pool.memberships(&alice).await?;
    check(
        switcher.len() == 1 && switcher[0].org_id == acme.org_id(),
        "The organization switcher lists only alice's own organizations",
        format!(
            "{:?}",
            switcher
                .iter()
                .map(|m| (&m.name, m.role))
                .collect::<Vec<_>>()
        ),
    );

    println!(
        "\n{}",
        if all_ok {
            "All isolation checks passed."
        } else {
            "Isolation checks FAILED."
        }
    );
    Ok(all_ok)
}
