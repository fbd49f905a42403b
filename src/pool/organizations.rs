//! The organization side of [`TenantPool`]: [`authorize`](TenantPool::authorize),
//! [`create_organization`](TenantPool::create_organization),
//! [`add_member`](TenantPool::add_member), [`memberships`](TenantPool::memberships) and the
//! [`Membership`] the switcher lists.

use sqlx::{AssertSqlSafe, PgConnection};

use super::TenantPool;
use super::entry::{Access, Entry};
use crate::context::OrgContext;
use crate::error::{Error, Result};
use crate::ids::{OrgId, UserId};
use crate::role::Role;

/// One of a user's memberships, as the organization switcher lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Membership {
    /// The organization.
    pub org_id: OrgId,
    /// Its display name.
    pub name: String,
    /// Its slug, if it has one.
    pub slug: Option<String>,
    /// The identity provider's id for it (Clerk: `org_...`), if it has one: what a switcher
    /// asks the provider to make active.
    pub external_id: Option<String>,
    /// The user's role there.
    pub role: Role,
}

impl TenantPool {
    /// Checks in the database that `user` is a member of `org` and returns the context.
    ///
    /// One round trip: an autocommit `SELECT ... FROM tenancy_member_access(...)`, a function
    /// that sets the context for its own lookup (transaction-locally, restoring the previous
    /// values before it returns) and answers the role of this one pair and the permissions
    /// that role grants now ([`OrgContext::permissions`]). [`Error::NotAMember`] when there is
    /// no such membership, or no such organization.
    ///
    /// # Errors
    /// [`Error::NotAMember`] when `user` is not a member of the live organization `org`; a
    /// database error otherwise.
    pub async fn authorize(&self, user: &UserId, org: OrgId) -> Result<OrgContext> {
        // One simple-protocol message with validated literals (the prefix is a quoted
        // identifier read from the catalog, `OrgId` a uuid, `UserId` without quote or
        // backslash): no named statement that an SQL-level PREPARE left on the session by an
        // earlier unit could stand in for, and still one round trip.
        // Hardened mode: the lookup is signed like an entry (expiry a number, signature hex).
        let signed = self.units.signer().map_or_else(String::new, |signer| {
            let expiry = signer.expiry();
            let signature = signer.key.sign(&crate::hardened::encode(&[
                "role",
                &org.to_string(),
                user.as_str(),
                &expiry.to_string(),
            ]));
            format!(", {expiry}, '{signature}'")
        });
        let sql = format!(
            "SELECT role, permissions FROM {}tenancy_member_access('{org}', '{}'{signed})",
            self.units.schema_prefix,
            user.as_str()
        );
        let row = sqlx::raw_sql(AssertSqlSafe(sql))
            .fetch_one(&self.units.pool)
            .await?;
        let role: Option<String> = sqlx::Row::try_get(&row, 0)?;
        let role: Role = role.ok_or(Error::NotAMember)?.parse()?;
        let permissions: Option<Vec<String>> = sqlx::Row::try_get(&row, 1)?;
        Ok(OrgContext::from_verified_session(org, user.clone(), role)
            .with_permissions(permissions.unwrap_or_default()))
    }

    /// Creates an organization with `owner` as its owner, in one unit of work whose context is
    /// the new organization, and returns the owner's context.
    ///
    /// Use [`OrgId::from_external_id`] for an identity provider's organization, or
    /// `OrgId::from_uuid(Uuid::new_v4())` for your own.
    ///
    /// This is the one request path that acts without a membership: the database
    /// (`tenancy_enter_new_organization`) admits it only for an id that has never been used,
    /// and the unit may create that organization and its owner, nothing else.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`](crate::ErrorKind) if the id (even of a deleted organization) or
    /// the slug is taken.
    pub async fn create_organization(
        &self,
        org: OrgId,
        name: &str,
        slug: Option<&str>,
        owner: &UserId,
    ) -> Result<OrgContext> {
        let mut tx = self
            .units
            .start(
                Access::ReadWrite,
                Entry::NewOrganization { org, user: owner },
            )
            .await?;
        sqlx::query("INSERT INTO organizations (id, name, slug) VALUES ($1, $2, $3)")
            .bind(org)
            .bind(name)
            .bind(slug)
            .execute(&mut *tx)
            .await?;
        insert_member(&mut tx, org, owner, Role::Owner).await?;
        tx.commit().await?;
        Ok(OrgContext::from_verified_session(
            org,
            owner.clone(),
            Role::Owner,
        ))
    }

    /// Adds `user` to `ctx`'s organization with `role`. Needs an admin, and an owner to add an
    /// owner ([`Error::InsufficientRole`] otherwise). The policies on `organization_members`
    /// enforce the same rule in the database.
    ///
    /// # Errors
    /// [`Error::NotAMember`] / [`Error::InsufficientRole`] when the database does not admit
    /// `ctx` with admin rights (owner rights to add an owner); a database error (a refused
    /// write, or `user` already a member: [`ErrorKind::Conflict`](crate::ErrorKind::Conflict)).
    pub async fn add_member(&self, ctx: &OrgContext, user: &UserId, role: Role) -> Result<()> {
        let required = Role::Admin.max(role);
        if !ctx.role_is_least() {
            ctx.require_role(required)?;
            return self
                .with_rls(ctx, async |tx| {
                    insert_member(tx, ctx.org_id(), user, role).await
                })
                .await;
        }
        // A context from a session token: the token's role may be below the database's (an
        // owner's Clerk token says admin), so the entry requires the role instead, and the
        // unit acts with the membership's.
        let entry = Entry::Member {
            org: ctx.org_id(),
            user: ctx.user_id(),
            role: required.max(ctx.role()),
            act_as_claimed: false,
        };
        crate::trace::unit("write", Some(ctx.org_id()), async {
            let mut tx = self.start_for(Access::ReadWrite, entry, ctx).await?;
            insert_member(&mut tx, ctx.org_id(), user, role).await?;
            tx.commit().await
        })
        .await
    }

    /// The organizations `user` belongs to, for an organization switcher, read before any
    /// organization is chosen: a `READ ONLY` unit with only `app.current_user_id` set, which
    /// the `own_memberships` / `own_organizations` policies allow to read the user's own
    /// memberships and nothing else.
    ///
    /// # Errors
    /// A database error.
    pub async fn memberships(&self, user: &UserId) -> Result<Vec<Membership>> {
        let mut tx = self
            .units
            .start(Access::ReadOnly, Entry::User { user })
            .await?;
        type Row = (OrgId, String, Option<String>, Option<String>, Role);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT o.id, o.name, o.slug, o.external_id, m.role FROM organization_members m \
             JOIN organizations o ON o.id = m.organization_id \
             WHERE m.user_id = $1 AND o.deleted_at IS NULL ORDER BY o.name, o.id",
        )
        .bind(user)
        .fetch_all(&mut *tx)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(org_id, name, slug, external_id, role)| Membership {
                org_id,
                name,
                slug,
                external_id,
                role,
            })
            .collect())
    }
}

async fn insert_member(tx: &mut PgConnection, org: OrgId, user: &UserId, role: Role) -> Result<()> {
    sqlx::query(
        "INSERT INTO organization_members (organization_id, user_id, role) VALUES ($1, $2, $3)",
    )
    .bind(org)
    .bind(user)
    .bind(role)
    .execute(tx)
    .await?;
    Ok(())
}
