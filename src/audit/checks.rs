//! One function per family of checks: each turns catalog rows into findings, in the order the
//! report lists them within a severity.

use std::collections::{HashMap, HashSet};

use super::catalog::{
    CitusTable, ConnectingRole, ForeignKey, Function, Index, KeyTable, OutwardKey, Policy,
    StatisticsColumn, Table, View,
};
use super::expr::{called_functions, check_policy_expr, sets_at_session_level};
use super::generator::policy_statements;
use super::{Finding, Severity};

/// The tenant tables by oid.
pub(super) fn by_oid(tables: &[Table]) -> HashMap<i64, &Table> {
    tables.iter().map(|t| (t.oid, t)).collect()
}

/// The connecting role: superuser, `BYPASSRLS`, owner of tenant tables, `TEMP`.
pub(super) fn role(role: &ConnectingRole, tables: &[Table]) -> Vec<Finding> {
    let (name, r) = (&role.name, &role.quoted);
    let mut findings = Vec::new();
    if role.superuser {
        findings.push(Finding::new(
            Severity::Error,
            "role_superuser",
            format!("role {name}"),
            "a superuser bypasses every Row-Level Security policy: all rows of all organizations",
            format!("-- connect the application as a role without SUPERUSER:\nALTER ROLE {r} NOSUPERUSER;"),
        ));
    }
    if role.bypass {
        findings.push(Finding::new(
            Severity::Error,
            "role_bypassrls",
            format!("role {name}"),
            "BYPASSRLS skips every policy: all rows of all organizations",
            format!("ALTER ROLE {r} NOBYPASSRLS;"),
        ));
    }
    let owned: Vec<&str> = tables
        .iter()
        .filter(|t| t.mine)
        .map(|t| t.name.as_str())
        .collect();
    if !owned.is_empty() {
        findings.push(Finding::new(
            Severity::Warning,
            "role_owns_tenant_tables",
            format!("role {name}"),
            &format!(
                "owns {}: FORCE keeps the policies on, but an owner can ALTER TABLE ... DISABLE ROW LEVEL SECURITY or drop a policy",
                owned.join(", ")
            ),
            "-- connect the application as a role that owns nothing, with DML grants only:\n\
             -- CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS; GRANT SELECT, INSERT, UPDATE, DELETE ON ... TO app;"
                .to_owned(),
        ));
    }
    if role.temp {
        findings.push(Finding::new(
            Severity::Warning,
            "role_can_create_temp",
            format!("role {name}"),
            "temporary tables let SQL in one unit shadow names for later units on the same pooled connection",
            "REVOKE TEMPORARY ON DATABASE <database> FROM PUBLIC;  -- and from this role if granted".to_owned(),
        ));
    }
    findings
}

/// Row-Level Security enabled and forced on every tenant table.
pub(super) fn row_level_security(tables: &[Table]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for t in tables {
        if !t.rls {
            findings.push(Finding::new(
                Severity::Error,
                "rls_disabled",
                t.name.clone(),
                "Row-Level Security is off: every query sees every organization's rows",
                format!("ALTER TABLE {} ENABLE ROW LEVEL SECURITY;\nALTER TABLE {0} FORCE ROW LEVEL SECURITY;", t.name),
            ));
        } else if !t.forced {
            findings.push(Finding::new(
                Severity::Error,
                "rls_not_forced",
                t.name.clone(),
                "without FORCE the table's owner skips the policies; an app connected as the owner sees every organization",
                format!("ALTER TABLE {} FORCE ROW LEVEL SECURITY;", t.name),
            ));
        }
    }
    findings
}

/// The policies the audit reads: permissive, applying to the connecting role, not marked
/// `tenancy-audit: allow`, on a tenant table (with that table).
fn checked<'a>(
    policies: &'a [Policy],
    tables: &HashMap<i64, &'a Table>,
) -> impl Iterator<Item = (&'a Policy, &'a Table)> {
    policies.iter().filter_map(|p| {
        let t = *tables.get(&p.relid)?;
        (p.applies && !p.allowed && p.permissive).then_some((p, t))
    })
}

/// The functions the checked policies call, whose bodies [`policies`] reads for the setting.
pub(super) fn functions_called(policies: &[Policy], tables: &HashMap<i64, &Table>) -> Vec<String> {
    let mut names = HashSet::new();
    for (p, _) in checked(policies, tables) {
        for expr in [&p.qual, &p.check].into_iter().flatten() {
            names.extend(called_functions(expr));
        }
    }
    names.into_iter().collect()
}

/// Policies: an explicit `WITH CHECK` on every write-admitting policy, at least one policy per
/// table, and each expression compared with the tenant setting as the expression reader wants.
pub(super) fn policies(
    tables: &[Table],
    policies: &[Policy],
    bodies: &HashMap<String, String>,
    setting: &str,
) -> Vec<Finding> {
    let by_oid = by_oid(tables);
    let mut findings = Vec::new();
    for (p, t) in checked(policies, &by_oid) {
        if matches!(p.cmd.as_str(), "*" | "w") && p.check.is_none() {
            findings.push(Finding::new(
                Severity::Error,
                "policy_without_with_check",
                format!("policy {} on {}", p.name, t.name),
                "a policy that admits writes needs an explicit WITH CHECK: without it the USING expression is reused implicitly, and a later change to USING silently changes which rows may be written",
                format!(
                    "ALTER POLICY {} ON {} WITH CHECK ({} = (SELECT tenancy_current_org_id()));",
                    p.name, t.name, t.column
                ),
            ));
        }
    }
    let with_policy: HashSet<i64> = policies.iter().map(|p| p.relid).collect();
    for t in tables {
        if t.rls && !with_policy.contains(&t.oid) {
            findings.push(Finding::new(
                Severity::Error,
                "no_policy",
                t.name.clone(),
                "Row-Level Security is on without a policy: nothing is visible or writable, so the application will be tempted to connect around it",
                policy_statements(&t.name, &t.column, &t.index_name),
            ));
        }
    }
    findings.extend(policy_expressions(&by_oid, policies, bodies, setting));
    findings
}

/// The findings of the expression reader, one per policy and code (`USING` and `WITH CHECK`
/// alike).
fn policy_expressions(
    tables: &HashMap<i64, &Table>,
    policies: &[Policy],
    bodies: &HashMap<String, String>,
    setting: &str,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut reported = HashSet::new();
    for (p, t) in checked(policies, tables) {
        let object = format!("policy {} on {}", p.name, t.name);
        for expr in [&p.qual, &p.check].into_iter().flatten() {
            for (severity, code, why) in check_policy_expr(expr, &t.column, setting, bodies) {
                if reported.insert((object.clone(), code)) {
                    let fix = format!(
                        "ALTER POLICY ... ON {} USING ({c} = (SELECT tenancy_current_org_id())) WITH CHECK ({c} = (SELECT tenancy_current_org_id()));\n-- ({object}: replace the expression; keep any role condition with AND)",
                        t.name,
                        c = t.column
                    );
                    findings.push(Finding::new(severity, code, object.clone(), why, fix));
                }
            }
        }
    }
    findings
}

/// Indexes: one leading with the tenant column; unique keys that include it.
pub(super) fn indexes(tables: &[Table], indexes: &[Index]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for t in tables {
        let mine = indexes.iter().filter(|i| i.relid == t.oid);
        if !mine.clone().any(|i| i.keys.first() == Some(&t.attnum)) {
            findings.push(Finding::new(
                Severity::Warning,
                "no_tenant_index",
                t.name.clone(),
                "no index leads with the tenant column: every policy check is a sequential scan",
                format!(
                    "CREATE INDEX ON {} ({});  -- or lead the primary key with it",
                    t.name, t.column
                ),
            ));
        }
        // A table whose tenant column alone is unique holds one row per organization (the
        // organizations table): its other unique keys are global by nature.
        let per_organization = mine
            .clone()
            .any(|i| i.unique && i.keys.as_slice() == [t.attnum]);
        for i in mine {
            if i.unique && !per_organization && !i.keys.contains(&t.attnum) {
                findings.push(Finding::new(
                    Severity::Warning,
                    "unique_without_tenant",
                    format!("index {} on {}", i.name, t.name),
                    "a unique key without the tenant column lets one organization learn that a value exists in another (the insert fails), and cannot be kept by Citus when distributed by organization",
                    format!(
                        "-- recreate it with the tenant column first, e.g.:\n-- ALTER TABLE {} ADD UNIQUE ({}, ...);",
                        t.name, t.column
                    ),
                ));
            }
        }
    }
    findings
}

/// Foreign keys between tenant tables: each pairs the two tenant columns.
pub(super) fn foreign_keys(tables: &[Table], keys: &[ForeignKey]) -> Vec<Finding> {
    let by_oid = by_oid(tables);
    let mut findings = Vec::new();
    for fk in keys {
        let (Some(child), Some(parent)) = (by_oid.get(&fk.from), by_oid.get(&fk.to)) else {
            continue;
        };
        let aligned = fk
            .keys
            .iter()
            .zip(&fk.refs)
            .any(|(k, r)| *k == child.attnum && *r == parent.attnum);
        if !aligned {
            findings.push(Finding::new(
                Severity::Error,
                "foreign_key_crosses_tenants",
                format!("foreign key {} on {}", fk.name, child.name),
                &format!(
                    "it references {} without the tenant column: a row of one organization can point at another's",
                    parent.name
                ),
                format!(
                    "-- make both keys composite (pg-tenancy policy {} prints the statements):\n\
                     -- ALTER TABLE {} ADD UNIQUE ({}, <key>);\n\
                     -- ALTER TABLE {} ADD FOREIGN KEY ({}, <column>) REFERENCES {1} ({2}, <key>);",
                    child.name, parent.name, parent.column, child.name, child.column
                ),
            ));
        }
    }
    findings
}

/// Views over tenant tables: `security_invoker`; no materialized view.
pub(super) fn views(views: &[View]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for v in views {
        let view = &v.name;
        if v.kind == "m" {
            findings.push(Finding::new(
                Severity::Error,
                "materialized_view_over_tenant_table",
                view.clone(),
                "a materialized view stores every organization's rows and has no Row-Level Security",
                format!("DROP MATERIALIZED VIEW {view};  -- or keep it out of the application role's reach"),
            ));
        } else if !v.invoker {
            findings.push(Finding::new(
                Severity::Error,
                "view_not_security_invoker",
                view.clone(),
                "a view runs with its owner's rights: the policies apply to the owner, not to the querying role (a superuser or BYPASSRLS owner sees everything)",
                format!("ALTER VIEW {view} SET (security_invoker = true);"),
            ));
        }
    }
    findings
}

/// Functions: `SECURITY DEFINER` with a pinned `search_path`; none setting the tenant setting
/// at session level.
pub(super) fn functions(functions: &[Function], setting: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    for f in functions {
        let function = &f.signature;
        let pinned = f
            .config
            .as_ref()
            .is_some_and(|c| c.iter().any(|s| s.starts_with("search_path=")));
        if f.definer && !pinned {
            findings.push(Finding::new(
                Severity::Error,
                "definer_without_search_path",
                format!("function {function}"),
                "a SECURITY DEFINER function without a pinned search_path resolves names through the caller's search path: the caller can substitute objects and run them with the owner's rights",
                format!("ALTER FUNCTION {function} SET search_path = pg_catalog, <schema>, pg_temp;"),
            ));
        }
        if sets_at_session_level(&f.source, setting) {
            findings.push(Finding::new(
                Severity::Error,
                "session_level_setting",
                format!("function {function}"),
                "it sets the tenant setting at session level: on a pooled connection the next borrower inherits the organization",
                format!(
                    "-- use set_config('{setting}', ..., true) (transaction-local), or let TenantPool set it"
                ),
            ));
        }
    }
    findings
}

/// Hardened mode's key: out of reach of the connecting role. It can read it when it holds
/// `SELECT` and the policies do not stop it: Row-Level Security off on the table, or the role
/// owns it (RLS is enabled, not forced, so that its owner's `SECURITY DEFINER` functions read
/// it), or the role bypasses RLS.
pub(super) fn context_key(role: &ConnectingRole, keys: &[KeyTable]) -> Vec<Finding> {
    let r = &role.quoted;
    let mut findings = Vec::new();
    for k in keys {
        let bypass = role.superuser || role.bypass;
        if k.rls && !k.mine && !bypass {
            continue;
        }
        let t = &k.name;
        let mut fix = Vec::new();
        if !k.mine {
            fix.push(format!(
                "REVOKE ALL ON {t} FROM {r};  -- and from PUBLIC and the roles {r} is a member of"
            ));
        }
        if !k.rls {
            fix.push(format!(
                "ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;  -- no policy: only its owner reads it"
            ));
        }
        if k.mine || bypass {
            fix.push(
                "-- connect the application as a role that neither owns the key table nor bypasses RLS"
                    .to_owned(),
            );
        }
        let fix = fix.join("\n");
        findings.push(Finding::new(
            Severity::Error,
            "context_key_readable",
            t.clone(),
            "the connecting role can read hardened mode's key: SQL injected into a unit can sign any context (any organization, any role), and hardened mode is void",
            fix,
        ));
    }
    findings
}

/// Planner statistics of text-like columns: under Row-Level Security PostgreSQL still uses a
/// column's statistics for leakproof operators (`=`, `<`, ...), so `EXPLAIN`'s row estimates in
/// one organization's unit reveal other organizations' frequent values and histogram bounds.
pub(super) fn statistics(columns: &[StatisticsColumn]) -> Vec<Finding> {
    columns
        .iter()
        .map(|c| {
            let (t, col) = (&c.table, &c.column);
            Finding::new(
                Severity::Warning,
                "column_statistics_visible",
                format!("column {col} of {t}"),
                "the planner keeps statistics of its values (most common values, histogram bounds) and uses them under Row-Level Security: EXPLAIN's row estimates inside one organization's unit reveal other organizations' values",
                format!(
                    "ALTER TABLE {t} ALTER COLUMN {col} SET STATISTICS 0;\n\
                     -- statistics already gathered stay until the column is altered (same type: no rewrite;\n\
                     -- refused while a policy uses the column):\n\
                     ALTER TABLE {t} ALTER COLUMN {col} TYPE {};\n\
                     -- or, if its values are no secret between organizations:\n\
                     -- COMMENT ON COLUMN {t}.{col} IS 'tenancy-audit: allow. <why>';",
                    c.declared
                ),
            )
        })
        .collect()
}

/// On Citus: each tenant table of the application distributed by its tenant column, all in
/// one colocation group (pg-tenancy's own tables stay on the coordinator by design,
/// src/citus.sql). Returns the findings and the distributed tenant tables' oids (whose
/// policies must use the bare call: Citus refuses the sub-select).
pub(super) fn citus(
    tables: &[Table],
    placed: &[CitusTable],
    outward: &[OutwardKey],
) -> (Vec<Finding>, HashSet<i64>) {
    let own = |t: &Table| {
        let bare = t.name.rsplit_once('.').map_or(t.name.as_str(), |(_, n)| n);
        crate::migrations::SERVICE_TABLES.contains(&bare)
    };
    let mut findings = Vec::new();
    let mut distributed = HashSet::new();
    let mut groups: Vec<i64> = Vec::new();
    for t in tables.iter().filter(|t| !own(t)) {
        match placed.iter().find(|p| p.oid == t.oid) {
            Some(p) if p.method == "h" => {
                distributed.insert(t.oid);
                if !groups.contains(&p.colocation) {
                    groups.push(p.colocation);
                }
                if groups.first() != Some(&p.colocation) {
                    findings.push(Finding::new(
                        Severity::Warning,
                        "citus_not_colocated",
                        t.name.clone(),
                        "not colocated with the other tenant tables: a join between them on the tenant column cannot run on one worker",
                        format!(
                            "SELECT update_distributed_table_colocation('{}', colocate_with => '<another tenant table>');",
                            t.name.replace('\'', "''")
                        ),
                    ));
                }
            }
            _ => findings.push(Finding::new(
                Severity::Warning,
                "citus_not_distributed",
                t.name.clone(),
                "on Citus, this tenant table is not distributed by its tenant column: it stays on the coordinator and does not scale out",
                format!(
                    "-- its policies in the bare form first (pg-tenancy policy <table> --citus), then:\nSELECT tenancy_distribute('{}', '{}');",
                    t.name.replace('\'', "''"),
                    t.column.replace('\'', "''")
                ),
            )),
        }
    }
    // A foreign key to a table that is neither distributed nor a reference table: Citus cannot
    // keep it from a distributed table (it refuses to distribute the table while it exists).
    // The key to organizations is tenancy_distribute's to drop (the policy and the entry keep
    // the organization live).
    let by_oid = by_oid(tables);
    for key in outward {
        let Some(child) = by_oid.get(&key.from) else {
            continue;
        };
        if own(child) || key.to_name.ends_with(".organizations") {
            continue;
        }
        let target = placed.iter().find(|p| p.oid == key.to);
        if target.is_some_and(|p| p.method == "h" || p.reference) {
            continue;
        }
        findings.push(Finding::new(
            Severity::Warning,
            "citus_foreign_key_to_coordinator",
            format!("foreign key {} on {}", key.name, child.name),
            &format!(
                "it references {}, which is neither distributed nor a reference table: Citus cannot keep it from a distributed table, so the table cannot be distributed while it exists",
                key.to_name
            ),
            format!(
                "SELECT create_reference_table('{}');  -- a copy on every worker, if it is the instance's, not an organization's; else drop the key",
                key.to_name.replace('\'', "''")
            ),
        ));
    }
    (findings, distributed)
}
