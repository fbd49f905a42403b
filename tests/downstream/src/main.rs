//! A first program, as a new user writes it: `Cargo.toml` names `pg-tenancy` and `tokio`, nothing
//! else. It must connect and run units of work (`DATABASE_URL`: an application role).

use pg_tenancy::{OrgId, TenantPool, UserId};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")?;
    let pool = TenantPool::connect(&url).await?;
    let user = UserId::new("user_downstream")?;
    let org = OrgId::from_external_id("org_downstream");
    let ctx = pool
        .create_organization(org, "Downstream", None, &user)
        .await?;
    let memberships = pool.memberships(&user).await?;
    let authorized = pool.authorize(&user, org).await?;
    assert_eq!(memberships.len(), 1);
    assert_eq!(authorized.role(), ctx.role());
    println!(
        "downstream: connected; {} membership, role {}",
        memberships.len(),
        authorized.role()
    );
    Ok(())
}
