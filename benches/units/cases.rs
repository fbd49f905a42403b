//! The units of work measured, and what each one runs.

use pg_tenancy::{Error, OrgContext, Role};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::*;

// ---- the units -------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Case {
    Autocommit,
    PlainTx,
    /// The article's unit: `BEGIN; SELECT set_config(...)`, the query, `COMMIT` (its lines
    /// keep their first name, `seed_pattern`).
    SetConfigTx,
    WriteUnit,
    ReadUnit,
    AuthorizedUnit,
    /// The article's role check: a membership lookup, then [`Case::SetConfigTx`] (lines:
    /// `seed_authorized`).
    LookupThenTx,
    /// Diagnostic: `write_unit`'s BEGIN batch (the same `tenancy_enter` call) with `plain_tx`'s
    /// query and role, i.e. the context without RLS. Splits `write_unit`'s extra cost over
    /// `plain_tx` into the batch and the policy.
    ContextWithoutRls,
    /// `read_unit` on the hardened copy: signed entry, sealed context.
    HardenedRead,
    /// `write_unit` on the hardened copy.
    HardenedWrite,
    /// A realistic unit: list 20 rows, insert one, update it (`with_rls`, no filters).
    RealisticUnit,
    /// The same work in a plain transaction of the bypassing role, filtered explicitly.
    RealisticPlain,
    /// `write_unit`'s query on a table whose policy asks for a permission the role grants.
    PermissionUnit,
}

pub(crate) const UNITS: [Case; 12] = [
    Case::Autocommit,
    Case::PlainTx,
    Case::SetConfigTx,
    Case::WriteUnit,
    Case::ReadUnit,
    Case::AuthorizedUnit,
    Case::LookupThenTx,
    Case::ContextWithoutRls,
    Case::HardenedRead,
    Case::HardenedWrite,
    Case::RealisticUnit,
    Case::RealisticPlain,
];

impl Case {
    /// The unit's name in `tenancy-bench:` lines, stable for the tools that read them (so the
    /// article's units keep their first names there).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Case::Autocommit => "autocommit",
            Case::PlainTx => "plain_tx",
            Case::SetConfigTx => "seed_pattern",
            Case::WriteUnit => "write_unit",
            Case::ReadUnit => "read_unit",
            Case::AuthorizedUnit => "authorized_unit",
            Case::LookupThenTx => "seed_authorized",
            Case::ContextWithoutRls => "context_without_rls",
            Case::HardenedRead => "hardened_read",
            Case::HardenedWrite => "hardened_write",
            Case::RealisticUnit => "realistic_unit",
            Case::RealisticPlain => "realistic_plain_tx",
            Case::PermissionUnit => "permission_unit",
        }
    }
}

pub(crate) async fn set_config_tx(p: &Pools, ctx: &OrgContext, id: Uuid) -> String {
    // The article's withRLS: BEGIN; SELECT set_config(...); query; COMMIT.
    let mut tx = p.app.begin().await.unwrap();
    sqlx::query(SET_CONTEXT)
        .bind(ctx.org_id().to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let name: String = sqlx::query_scalar(Q_RLS)
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    name
}

pub(crate) async fn run(unit: Case, p: &Pools, ctx: &OrgContext, id: Uuid) -> String {
    let org = *ctx.org_id().as_uuid();
    match unit {
        Case::Autocommit => sqlx::query_scalar(Q_EXPLICIT)
            .bind(org)
            .bind(id)
            .fetch_one(&p.bypass)
            .await
            .unwrap(),
        Case::PlainTx => explicit_tx(p, None, org, id).await,
        Case::SetConfigTx => set_config_tx(p, ctx, id).await,
        Case::ContextWithoutRls => {
            let batch = format!(
                "BEGIN; CALL tenancy_enter('{}', '{}', '{}', true, '{}')",
                ctx.org_id(),
                ctx.user_id(),
                ctx.role(),
                p.bypass_settings,
            );
            explicit_tx(p, Some(batch), org, id).await
        }
        Case::HardenedRead | Case::HardenedWrite => {
            let (pool, id) = p.hardened.as_ref().expect("hardened pool");
            if unit == Case::HardenedRead {
                pool.with_rls_read(ctx, async |tx| point_query(tx, *id).await)
                    .await
                    .unwrap()
            } else {
                pool.with_rls(ctx, async |tx| point_query(tx, *id).await)
                    .await
                    .unwrap()
            }
        }
        Case::RealisticUnit => p
            .tenant
            .with_rls(ctx, async |tx| realistic(tx, None).await)
            .await
            .unwrap(),
        Case::RealisticPlain => {
            let mut tx = p.bypass.begin().await.unwrap();
            let name = realistic(&mut tx, Some(org)).await.unwrap();
            tx.commit().await.unwrap();
            name
        }
        Case::WriteUnit => p
            .tenant
            .with_rls(ctx, async |tx| point_query(tx, id).await)
            .await
            .unwrap(),
        Case::PermissionUnit => p
            .tenant
            .with_rls(ctx, async |tx| {
                Ok::<_, Error>(
                    sqlx::query_scalar(Q_PERMITTED)
                        .bind(id)
                        .fetch_one(tx)
                        .await?,
                )
            })
            .await
            .unwrap(),
        Case::ReadUnit => p
            .tenant
            .with_rls_read(ctx, async |tx| point_query(tx, id).await)
            .await
            .unwrap(),
        Case::AuthorizedUnit => p
            .tenant
            .with_member(ctx.user_id(), ctx.org_id(), Role::Member, async |tx| {
                point_query(tx, id).await
            })
            .await
            .unwrap(),
        Case::LookupThenTx => {
            // The article's requireOrgRole: a lookup, then its withRLS.
            let role: Option<String> = sqlx::query_scalar(
                "SELECT role FROM organization_members WHERE organization_id = $1 AND user_id = $2",
            )
            .bind(org)
            .bind(ctx.user_id().as_str())
            .fetch_optional(&mut *p.lookup.lock().await)
            .await
            .unwrap();
            assert!(role.is_some_and(|r| r.parse::<Role>().unwrap() >= Role::Member));
            set_config_tx(p, ctx, id).await
        }
    }
}

/// The explicit-filter query in a transaction of the bypassing role, begun with `BEGIN` or
/// with `begin`.
pub(crate) async fn explicit_tx(p: &Pools, begin: Option<String>, org: Uuid, id: Uuid) -> String {
    let mut tx = match begin {
        None => p.bypass.begin().await.unwrap(),
        Some(sql) => p.bypass.begin_with(sqlx::AssertSqlSafe(sql)).await.unwrap(),
    };
    let name = sqlx::query_scalar(Q_EXPLICIT)
        .bind(org)
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    name
}

/// The realistic unit's work: list 20 projects, insert one, rename it. `org` filters and
/// supplies the organization explicitly (the plain transaction); `None` leaves both to the
/// policy and the context (the tenancy unit).
pub(crate) async fn realistic(tx: &mut PgConnection, org: Option<Uuid>) -> Result<String, Error> {
    let listed: Vec<(Uuid, String)> = match org {
        Some(org) => {
            sqlx::query_as(
                "SELECT id, name FROM projects WHERE organization_id = $1 ORDER BY id LIMIT 20",
            )
            .bind(org)
            .fetch_all(&mut *tx)
            .await?
        }
        None => {
            sqlx::query_as("SELECT id, name FROM projects ORDER BY id LIMIT 20")
                .fetch_all(&mut *tx)
                .await?
        }
    };
    let id: Uuid = match org {
        Some(org) => {
            sqlx::query_scalar(
                "INSERT INTO projects (organization_id, name) VALUES ($1, 'new') RETURNING id",
            )
            .bind(org)
            .fetch_one(&mut *tx)
            .await?
        }
        None => {
            sqlx::query_scalar(
                "INSERT INTO projects (organization_id, name) \
                 VALUES (tenancy_current_org_id(), 'new') RETURNING id",
            )
            .fetch_one(&mut *tx)
            .await?
        }
    };
    let renamed = match org {
        Some(org) => sqlx::query(
            "UPDATE projects SET name = 'renamed' WHERE organization_id = $1 AND id = $2",
        )
        .bind(org)
        .bind(id),
        None => sqlx::query("UPDATE projects SET name = 'renamed' WHERE id = $1").bind(id),
    }
    .execute(&mut *tx)
    .await?
    .rows_affected();
    assert_eq!((listed.len(), renamed), (20, 1));
    Ok(listed[0].1.clone())
}

/// The units' one query, with no tenant filter: the policy supplies it.
pub(crate) async fn point_query(tx: &mut PgConnection, id: Uuid) -> Result<String, Error> {
    Ok(sqlx::query_scalar(Q_RLS).bind(id).fetch_one(tx).await?)
}
