//! The catalog reads: one query per kind of object, whatever the number of tables, all in the
//! audit's one read-only transaction.
//!
//! Names are quoted by the server (`quote_ident()`), so that they read as PostgreSQL prints
//! them: in the report, in the fixes, and as the policy-expression reader must match them in
//! `pg_get_expr`'s output.

use std::collections::HashSet;

use sqlx::PgConnection;

use super::AuditOptions;
use crate::error::Result;

/// A tenant table, as the catalog describes it.
#[derive(sqlx::FromRow)]
pub(super) struct Table {
    pub(super) oid: i64,
    /// `schema.table`, quoted.
    pub(super) name: String,
    /// The tenant column, quoted.
    pub(super) column: String,
    pub(super) attnum: i16,
    pub(super) rls: bool,
    pub(super) forced: bool,
    /// Owned by the connecting role (or a role it is a member of).
    pub(super) mine: bool,
    /// The generator's name for the tenant column's index (`<table>_<column>_idx`), quoted.
    pub(super) index_name: String,
}

/// The connecting role.
#[derive(sqlx::FromRow)]
pub(super) struct ConnectingRole {
    pub(super) name: String,
    pub(super) quoted: String,
    pub(super) superuser: bool,
    pub(super) bypass: bool,
    pub(super) temp: bool,
}

/// A policy on a tenant table.
#[derive(sqlx::FromRow)]
pub(super) struct Policy {
    pub(super) relid: i64,
    /// Quoted.
    pub(super) name: String,
    /// `pg_policy.polcmd`: `*` all, `r` select, `a` insert, `w` update, `d` delete.
    pub(super) cmd: String,
    pub(super) permissive: bool,
    pub(super) qual: Option<String>,
    pub(super) check: Option<String>,
    /// Applies to the connecting role (`PUBLIC`, or a role it is a member of).
    pub(super) applies: bool,
    /// Its comment contains `tenancy-audit: allow`.
    pub(super) allowed: bool,
}

/// An index on a tenant table.
#[derive(sqlx::FromRow)]
pub(super) struct Index {
    pub(super) relid: i64,
    /// Quoted.
    pub(super) name: String,
    pub(super) unique: bool,
    pub(super) keys: Vec<i16>,
}

/// A foreign key between two tenant tables.
#[derive(sqlx::FromRow)]
pub(super) struct ForeignKey {
    /// Quoted.
    pub(super) name: String,
    pub(super) from: i64,
    pub(super) to: i64,
    pub(super) keys: Vec<i16>,
    pub(super) refs: Vec<i16>,
}

/// A view or materialized view over a tenant table.
#[derive(sqlx::FromRow)]
pub(super) struct View {
    /// `schema.view`, quoted.
    pub(super) name: String,
    /// `v` or `m`.
    pub(super) kind: String,
    pub(super) invoker: bool,
}

/// A function or procedure in an audited schema.
#[derive(sqlx::FromRow)]
pub(super) struct Function {
    /// `schema.name(argument types)`, quoted.
    pub(super) signature: String,
    pub(super) definer: bool,
    pub(super) config: Option<Vec<String>>,
    pub(super) source: String,
}

/// The schemas to audit: the options' or the connection's `current_schemas(false)`.
pub(super) async fn schemas(
    conn: &mut PgConnection,
    options: &AuditOptions,
) -> Result<Vec<String>> {
    Ok(match &options.schemas {
        Some(s) => s.clone(),
        None => {
            sqlx::query_scalar("SELECT unnest(current_schemas(false))::text")
                .fetch_all(conn)
                .await?
        }
    })
}

/// The tenant tables in `schemas`: those with the tenant column and those the options name,
/// each once, in `schema, table` order.
pub(super) async fn tables(
    conn: &mut PgConnection,
    schemas: &[String],
    options: &AuditOptions,
) -> Result<Vec<Table>> {
    // `[schema.]table[:column]` as the key the query matches: `schema|table|column` (the schema
    // empty when not given).
    let named_keys: Vec<String> = options
        .tables
        .iter()
        .map(|t| {
            let (table, column) = t.split_once(':').unwrap_or((t, &options.column));
            let (schema, table) = table.split_once('.').unwrap_or(("", table));
            format!("{schema}|{table}|{column}")
        })
        .collect();
    let rows: Vec<Table> = sqlx::query_as(
        "SELECT c.oid::int8 AS oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name,
                quote_ident(a.attname) AS column, a.attnum,
                c.relrowsecurity AS rls, c.relforcerowsecurity AS forced,
                pg_has_role(current_user, c.relowner, 'USAGE') AS mine,
                quote_ident(c.relname || '_' || a.attname || '_idx') AS index_name
           FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY ($1)
            AND (a.attname = $2
                 OR ('|' || c.relname || '|' || a.attname) = ANY ($3)
                 OR (n.nspname || '|' || c.relname || '|' || a.attname) = ANY ($3))
          ORDER BY n.nspname, c.relname",
    )
    .bind(schemas)
    .bind(&options.column)
    .bind(&named_keys)
    .fetch_all(conn)
    .await?;
    let mut seen = HashSet::new();
    Ok(rows.into_iter().filter(|t| seen.insert(t.oid)).collect())
}

/// The connecting role's attributes and `TEMP` right.
pub(super) async fn connecting_role(conn: &mut PgConnection) -> Result<ConnectingRole> {
    Ok(sqlx::query_as(
        "SELECT current_user::text AS name, quote_ident(current_user) AS quoted,
                rolsuper AS superuser, rolbypassrls AS bypass,
                has_database_privilege(current_database(), 'TEMP') AS temp
           FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(conn)
    .await?)
}

/// The policies on the tables `oids`, by table and name.
pub(super) async fn policies(conn: &mut PgConnection, oids: &[i64]) -> Result<Vec<Policy>> {
    Ok(sqlx::query_as(
        "SELECT p.polrelid::int8 AS relid, quote_ident(p.polname) AS name, p.polcmd::text AS cmd,
                p.polpermissive AS permissive,
                pg_get_expr(p.polqual, p.polrelid) AS qual,
                pg_get_expr(p.polwithcheck, p.polrelid) AS check,
                (0::oid = ANY (p.polroles)
                 OR EXISTS (SELECT 1 FROM unnest(p.polroles) r(oid)
                             WHERE pg_has_role(current_user, r.oid, 'MEMBER'))) AS applies,
                coalesce(obj_description(p.oid, 'pg_policy'), '') LIKE '%tenancy-audit: allow%'
                  AS allowed
           FROM pg_policy p WHERE p.polrelid = ANY ($1::int8[]::oid[])
          ORDER BY p.polrelid, p.polname",
    )
    .bind(oids)
    .fetch_all(conn)
    .await?)
}

/// The bodies of the functions named `names` (any schema), by name.
pub(super) async fn function_bodies(
    conn: &mut PgConnection,
    names: Vec<String>,
) -> Result<Vec<(String, String)>> {
    Ok(
        sqlx::query_as("SELECT proname::text, prosrc FROM pg_proc WHERE proname = ANY ($1)")
            .bind(names)
            .fetch_all(conn)
            .await?,
    )
}

/// The indexes on the tables `oids`.
pub(super) async fn indexes(conn: &mut PgConnection, oids: &[i64]) -> Result<Vec<Index>> {
    Ok(sqlx::query_as(
        "SELECT i.indrelid::int8 AS relid, quote_ident(ic.relname) AS name,
                i.indisunique AS unique, ARRAY(SELECT unnest(i.indkey::int2[])) AS keys
           FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
          WHERE i.indrelid = ANY ($1::int8[]::oid[])",
    )
    .bind(oids)
    .fetch_all(conn)
    .await?)
}

/// The foreign keys from one of the tables `oids` to another.
pub(super) async fn foreign_keys(conn: &mut PgConnection, oids: &[i64]) -> Result<Vec<ForeignKey>> {
    Ok(sqlx::query_as(
        "SELECT quote_ident(conname) AS name, conrelid::int8 AS from, confrelid::int8 AS to,
                conkey AS keys, confkey AS refs
           FROM pg_constraint
          WHERE contype = 'f' AND conrelid = ANY ($1::int8[]::oid[])
            AND confrelid = ANY ($1::int8[]::oid[])",
    )
    .bind(oids)
    .fetch_all(conn)
    .await?)
}

/// The views and materialized views whose rules read one of the tables `oids`, each once, by
/// name.
pub(super) async fn views(conn: &mut PgConnection, oids: &[i64]) -> Result<Vec<View>> {
    Ok(sqlx::query_as(
        "SELECT DISTINCT name, kind, invoker FROM (
           SELECT quote_ident(vn.nspname) || '.' || quote_ident(v.relname) AS name,
                  v.relkind::text AS kind,
                  coalesce(v.reloptions::text[] && ARRAY['security_invoker=true', 'security_invoker=on', 'security_invoker=1'], false) AS invoker
             FROM pg_class v
             JOIN pg_namespace vn ON vn.oid = v.relnamespace
             JOIN pg_rewrite rw ON rw.ev_class = v.oid
             JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
                             AND d.refclassid = 'pg_class'::regclass
            WHERE v.relkind IN ('v', 'm') AND d.refobjid = ANY ($1::int8[]::oid[])) s
          ORDER BY name",
    )
    .bind(oids)
    .fetch_all(conn)
    .await?)
}

/// The functions and procedures in `schemas`.
pub(super) async fn functions(
    conn: &mut PgConnection,
    schemas: &[String],
) -> Result<Vec<Function>> {
    Ok(sqlx::query_as(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' ||
                pg_get_function_identity_arguments(p.oid) || ')' AS signature,
                p.prosecdef AS definer, p.proconfig AS config, p.prosrc AS source
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = ANY ($1) AND p.prokind IN ('f', 'p')",
    )
    .bind(schemas)
    .fetch_all(conn)
    .await?)
}

/// A text-like column of a tenant table whose values the planner keeps statistics of.
#[derive(sqlx::FromRow)]
pub(super) struct StatisticsColumn {
    /// `schema.table`, quoted.
    pub(super) table: String,
    /// Quoted.
    pub(super) column: String,
    /// `format_type`, plus `COLLATE ...` when the column's collation is not its type's: what
    /// `ALTER COLUMN ... TYPE` must repeat to keep the column as it is.
    pub(super) declared: String,
}

/// The columns of the tenant `tables` of the string category (`text`, `varchar`, `char`,
/// `citext`, ...), other than each table's tenant column, that the connecting role may `SELECT`
/// (so can plan queries on), whose statistics target is not 0, and whose comment does not
/// contain `tenancy-audit: allow`.
pub(super) async fn statistics_columns(
    conn: &mut PgConnection,
    tables: &[Table],
) -> Result<Vec<StatisticsColumn>> {
    let oids: Vec<i64> = tables.iter().map(|t| t.oid).collect();
    let tenant_columns: Vec<i16> = tables.iter().map(|t| t.attnum).collect();
    Ok(sqlx::query_as(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS table,
                quote_ident(a.attname) AS column,
                format_type(a.atttypid, a.atttypmod)
                  || CASE WHEN a.attcollation <> ty.typcollation
                          THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END
                  AS declared
           FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_type ty ON ty.oid = a.atttypid
          JOIN unnest($1::int8[], $2::int2[]) t(oid, tenant_column) ON t.oid::oid = a.attrelid
          WHERE a.attnum > 0 AND NOT a.attisdropped
            AND ty.typcategory = 'S' AND a.attnum <> t.tenant_column
            AND coalesce(a.attstattarget::int, -1) <> 0
            AND has_column_privilege(a.attrelid, a.attnum, 'SELECT')
            AND coalesce(col_description(a.attrelid, a.attnum), '') NOT LIKE '%tenancy-audit: allow%'
          ORDER BY n.nspname, c.relname, a.attnum",
    )
    .bind(oids)
    .bind(tenant_columns)
    .fetch_all(conn)
    .await?)
}

/// Hardened mode's key table (`tenancy_context_key`) in one of `schemas`, when the connecting
/// role holds `SELECT` on it (or on one of its columns).
#[derive(sqlx::FromRow)]
pub(super) struct KeyTable {
    /// `schema.table`, quoted.
    pub(super) name: String,
    pub(super) rls: bool,
    /// Owned by the connecting role (or a role whose rights it inherits).
    pub(super) mine: bool,
}

/// The key tables in `schemas` the connecting role holds `SELECT` on.
pub(super) async fn key_tables(
    conn: &mut PgConnection,
    schemas: &[String],
) -> Result<Vec<KeyTable>> {
    Ok(sqlx::query_as(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name,
                c.relrowsecurity AS rls,
                pg_has_role(current_user, c.relowner, 'USAGE') AS mine
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relname = 'tenancy_context_key' AND c.relkind IN ('r', 'p')
            AND n.nspname = ANY ($1) AND has_any_column_privilege(c.oid, 'SELECT')
          ORDER BY n.nspname",
    )
    .bind(schemas)
    .fetch_all(conn)
    .await?)
}

/// A distributed or reference table of Citus (`pg_dist_partition`).
#[derive(sqlx::FromRow)]
pub(super) struct CitusTable {
    pub(super) oid: i64,
    /// `h` hash-distributed, `n` reference or coordinator-local (Citus's `partmethod`).
    pub(super) method: String,
    pub(super) colocation: i64,
    /// A reference table (a copy on every worker; Citus's `repmodel` `t`).
    pub(super) reference: bool,
}

/// A foreign key from a tenant table to a table outside the tenant tables.
#[derive(sqlx::FromRow)]
pub(super) struct OutwardKey {
    /// Quoted.
    pub(super) name: String,
    pub(super) from: i64,
    pub(super) to: i64,
    /// `schema.table`, quoted.
    pub(super) to_name: String,
}

/// The foreign keys from the tables `oids` to tables not among them.
pub(super) async fn outward_foreign_keys(
    conn: &mut PgConnection,
    oids: &[i64],
) -> Result<Vec<OutwardKey>> {
    Ok(sqlx::query_as(
        "SELECT quote_ident(c.conname) AS name, c.conrelid::int8 AS from, c.confrelid::int8 AS to,
                quote_ident(n.nspname) || '.' || quote_ident(r.relname) AS to_name
           FROM pg_catalog.pg_constraint c
           JOIN pg_catalog.pg_class r ON r.oid = c.confrelid
           JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
          WHERE c.contype = 'f' AND c.conrelid = ANY ($1::int8[]::oid[])
            AND NOT c.confrelid = ANY ($1::int8[]::oid[])",
    )
    .bind(oids)
    .fetch_all(conn)
    .await?)
}

/// Citus's placement of tables, or `None` when the database has no `citus` extension.
pub(super) async fn citus_tables(conn: &mut PgConnection) -> Result<Option<Vec<CitusTable>>> {
    let citus: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !citus {
        return Ok(None);
    }
    Ok(Some(
        sqlx::query_as(
            "SELECT logicalrelid::oid::int8 AS oid, partmethod::text AS method,
                    colocationid::int8 AS colocation, repmodel = 't' AS reference
               FROM pg_catalog.pg_dist_partition",
        )
        .fetch_all(conn)
        .await?,
    ))
}
