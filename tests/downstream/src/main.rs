//! A new user's first program, as the README tells it: pg-tenancy's migrations, then the
//! user's own (`invoices`) beside them, the grants, and units of work as the application role.
//! It must connect, keep each organization's invoices to itself, and refuse a write into
//! another organization.
//!
//! Environment: `OWNER_DATABASE_URL` (the database owner: runs the migrations and grants),
//! `DATABASE_URL` (the application role) and `APP_ROLE` (its name).

use pg_tenancy::{Error, OrgId, TenantPool, UserId};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the owner: pg-tenancy's migrations, then ours, then the grants.
    let owner = pg_tenancy::sqlx::PgPool::connect(&std::env::var("OWNER_DATABASE_URL")?).await?;
    pg_tenancy::migrations::migrate(&owner).await?;
    sqlx::migrate!().run(&owner).await?;
    let grant: String = pg_tenancy::sqlx::query_scalar(
        "SELECT format('GRANT SELECT, INSERT, UPDATE, DELETE
                          ON organizations, organization_members, invoices TO %I', $1::text)",
    )
    .bind(std::env::var("APP_ROLE")?)
    .fetch_one(&owner)
    .await?;
    pg_tenancy::sqlx::raw_sql(pg_tenancy::sqlx::AssertSqlSafe(grant))
        .execute(&owner)
        .await?;
    owner.close().await;

    // As the application role.
    let pool = TenantPool::connect(&std::env::var("DATABASE_URL")?).await?;
    let alice = UserId::new("user_alice")?;
    let bob = UserId::new("user_bob")?;
    let acme = pool
        .create_organization(OrgId::from_external_id("org_acme"), "Acme", None, &alice)
        .await?;
    let globex = pool
        .create_organization(OrgId::from_external_id("org_globex"), "Globex", None, &bob)
        .await?;
    for (ctx, cents) in [(&acme, 100_i64), (&globex, 200)] {
        let org = *ctx.org_id().as_uuid();
        pool.with_rls(ctx, async move |tx| {
            pg_tenancy::sqlx::query(
                "INSERT INTO invoices (organization_id, amount_cents) VALUES ($1, $2)",
            )
            .bind(org)
            .bind(cents)
            .execute(&mut *tx)
            .await?;
            Ok::<_, Error>(())
        })
        .await?;
    }
    // A query that forgot its WHERE still sees one organization's invoices.
    let seen: Vec<i64> = pool
        .with_rls_read(&acme, async |tx| {
            Ok::<_, Error>(
                pg_tenancy::sqlx::query_scalar("SELECT amount_cents FROM invoices")
                    .fetch_all(&mut *tx)
                    .await?,
            )
        })
        .await?;
    assert_eq!(seen, [100], "Acme sees only its own invoice");
    // A write into another organization fails.
    let into_globex = *globex.org_id().as_uuid();
    let refused = pool
        .with_rls(&acme, async move |tx| {
            pg_tenancy::sqlx::query(
                "INSERT INTO invoices (organization_id, amount_cents) VALUES ($1, 1)",
            )
            .bind(into_globex)
            .execute(&mut *tx)
            .await?;
            Ok::<_, Error>(())
        })
        .await
        .expect_err("a write into another organization must fail");
    assert!(refused.is_rls_violation(), "{refused}");
    let memberships = pool.memberships(&alice).await?;
    println!(
        "downstream: connected; {} membership, role {}; own table isolated",
        memberships.len(),
        acme.role()
    );
    Ok(())
}
