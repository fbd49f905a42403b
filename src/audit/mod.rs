//! A catalog audit of a live database: are your tenant tables as safe as `pg-tenancy`'s own?
//!
//! [`audit`] reads the catalog (a handful of queries, whatever the number of tables) and returns
//! a [`Report`] of [`Finding`]s, each with a [`Severity`], the object, why it matters, and the
//! SQL that fixes it. It looks at:
//!
//! - **tenant tables**: every table with the tenant column (`organization_id` by default) in
//!   the audited schemas, plus the ones you name (`organizations` with `id` is included when
//!   it exists): Row-Level Security enabled and forced, at least one policy, every write-admitting
//!   policy with an explicit `WITH CHECK`, an index leading with the tenant column, unique
//!   constraints that include it, foreign keys between tenant tables that include it;
//! - **policies** that apply to the connecting role: each must compare the bare tenant column
//!   with the configured setting read once per statement (`(SELECT tenancy_current_org_id())`,
//!   or `(SELECT current_setting('<setting>', true)::uuid)`). Casts of the column, `COALESCE`
//!   or a top-level `OR`, another setting, `current_setting` without `missing_ok`, and a function
//!   called per row are findings. A policy whose comment contains `tenancy-audit: allow` is
//!   skipped (the shipped switcher and pruning policies carry one, with the reason);
//! - **the connecting role**: superuser, `BYPASSRLS`, owner of tenant tables, `TEMP`; whether
//!   it can read hardened mode's key (`tenancy_context_key`);
//! - **planner statistics** of text-like columns of tenant tables the role can query: they
//!   reach other organizations through `EXPLAIN`'s estimates (opt out per column with a
//!   comment containing `tenancy-audit: allow`, or with
//!   [`AuditOptions::without_column_statistics`]);
//! - **views** over tenant tables without `security_invoker`, materialized views over them;
//!   `SECURITY DEFINER` functions without a pinned `search_path`; functions that set the tenant
//!   setting at session level;
//! - **Citus**, when the database has the `citus` extension: each tenant table of the
//!   application distributed by its tenant column (`citus_not_distributed`), all in one
//!   colocation group (`citus_not_colocated`), without a foreign key to a table Citus keeps on
//!   the coordinator (`citus_foreign_key_to_coordinator`); pg-tenancy's own tables stay on the coordinator
//!   by design. On a distributed table the bare `tenancy_current_org_id()` is no finding
//!   (Citus refuses the sub-select). Unique keys without the tenant column are reported
//!   everywhere (`unique_without_tenant`); a foreign key Citus cannot keep it refuses itself.
//!
//! Use it three ways: [`TenantPool::audited`](crate::TenantPool::audited) refuses to serve when
//! there are errors; `testing::assert_audit_clean` fails a test with the findings; and the
//! command line `pg-tenancy audit <DATABASE_URL>` (feature `cli`). [`policy_sql`] prints the SQL
//! that gives a table the shape the audit expects ([`policy_sql_with`] also grants it to the
//! application role).

// `report`: what the audit returns; `catalog`: the reads; `checks`: one function per family of
// findings; `expr`: the policy-expression reader; `generator`: `policy_sql` and friends.
mod catalog;
mod checks;
mod expr;
mod generator;
mod report;

pub use generator::{
    PolicyOptions, policy_sql, policy_sql_for, policy_sql_for_with, policy_sql_with,
};
pub use report::{Finding, Report, Severity};

use sqlx::PgPool;

use crate::error::Result;

/// What to audit.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuditOptions {
    /// The tenant column (default `organization_id`).
    pub column: String,
    /// The setting the policies must read (default `app.current_org_id`).
    pub setting: String,
    /// Tables to audit besides those with the tenant column: `table`, `schema.table`, or
    /// either with `:column` (default: `organizations:id`).
    pub tables: Vec<String>,
    /// The schemas to look in (default: the connection's `current_schemas(false)`).
    pub schemas: Option<Vec<String>>,
    /// Report text-like columns of tenant tables whose planner statistics the connecting role
    /// can probe through `EXPLAIN` (`column_statistics_visible`; default on). One column is
    /// exempted by a comment containing `tenancy-audit: allow`.
    pub column_statistics: bool,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            column: "organization_id".into(),
            setting: "app.current_org_id".into(),
            tables: vec!["organizations:id".into()],
            schemas: None,
            column_statistics: true,
        }
    }
}

impl AuditOptions {
    /// Adds a table to audit (`table`, `schema.table`, `table:column`).
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.tables.push(table.into());
        self
    }

    /// Sets the tenant column.
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_column(mut self, column: impl Into<String>) -> Self {
        self.column = column.into();
        self
    }

    /// Does not report `column_statistics_visible` (for a schema whose text columns hold no
    /// secret between organizations).
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn without_column_statistics(mut self) -> Self {
        self.column_statistics = false;
        self
    }

    /// Sets the schemas to audit.
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_schemas<I, S>(mut self, schemas: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.schemas = Some(schemas.into_iter().map(Into::into).collect());
        self
    }
}

/// Audits the database `pool` connects to, as the role it connects as.
///
/// # Errors
/// A database error reading the catalog.
pub async fn audit(pool: &PgPool, options: &AuditOptions) -> Result<Report> {
    // One read-only transaction: one snapshot of the catalog, and one server connection even
    // through a transaction-pooling proxy.
    let mut tx = pool.begin_with("BEGIN READ ONLY").await?;
    let conn = &mut *tx;
    let schemas = catalog::schemas(conn, options).await?;
    let tables = catalog::tables(conn, &schemas, options).await?;
    let oids: Vec<i64> = tables.iter().map(|t| t.oid).collect();

    let role = catalog::connecting_role(conn).await?;
    let mut findings = checks::role(&role, &tables);
    findings.extend(checks::context_key(
        &role,
        &catalog::key_tables(conn, &schemas).await?,
    ));
    findings.extend(checks::row_level_security(&tables));
    let policies = catalog::policies(conn, &oids).await?;
    let called = checks::functions_called(&policies, &checks::by_oid(&tables));
    let bodies = catalog::function_bodies(conn, called).await?;
    findings.extend(checks::policies(
        &tables,
        &policies,
        &bodies.into_iter().collect(),
        &options.setting,
    ));
    findings.extend(checks::indexes(
        &tables,
        &catalog::indexes(conn, &oids).await?,
    ));
    findings.extend(checks::foreign_keys(
        &tables,
        &catalog::foreign_keys(conn, &oids).await?,
    ));
    // A role that bypasses the policies reads the rows themselves: statistics tell it nothing
    // more (its own findings say so).
    if options.column_statistics && !role.superuser && !role.bypass {
        findings.extend(checks::statistics(
            &catalog::statistics_columns(conn, &tables).await?,
        ));
    }
    findings.extend(checks::views(&catalog::views(conn, &oids).await?));
    findings.extend(checks::functions(
        &catalog::functions(conn, &schemas).await?,
        &options.setting,
    ));

    // Citus: placement, and the bare call its distributed tables need is no finding there.
    if let Some(placed) = catalog::citus_tables(conn).await? {
        let outward = catalog::outward_foreign_keys(conn, &oids).await?;
        let (citus, distributed) = checks::citus(&tables, &placed, &outward);
        let names: Vec<&str> = tables
            .iter()
            .filter(|t| distributed.contains(&t.oid))
            .map(|t| t.name.as_str())
            .collect();
        findings.retain(|f| {
            f.code != "policy_per_row_function"
                || !names
                    .iter()
                    .any(|n| f.object.ends_with(&format!(" on {n}")))
        });
        findings.extend(citus);
    }

    // Stable: within a severity, the order above.
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    Ok(Report {
        tables: tables.into_iter().map(|t| t.name).collect(),
        findings,
    })
}
