//! The policy-expression reader: what a policy compares, as `pg_get_expr` prints it, and
//! whether a function body sets the tenant setting at session level.
//!
//! It reads PostgreSQL's own deparsed text (normalized: one space around operators, names
//! quoted by the server's `quote_ident` rules), not arbitrary SQL.

use std::collections::HashMap;

use super::Severity;

/// Strips balanced outer parentheses.
fn strip_parens(mut s: &str) -> &str {
    loop {
        let t = s.trim();
        if t.starts_with('(') && t.ends_with(')') && closes_at_end(t) {
            s = &t[1..t.len() - 1];
        } else {
            return t;
        }
    }
}

/// Whether the parenthesis opening `s` closes at its last character.
fn closes_at_end(s: &str) -> bool {
    let mut depth = 0i32;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    return i == s.len() - 1;
                }
            }
            _ => {}
        }
    }
    false
}

/// Splits `s` on a top-level boolean operator (` AND ` / ` OR `), outside parentheses and
/// quotes.
fn split_top(s: &str, op: &str) -> Vec<String> {
    let (mut parts, mut depth, mut quoted, mut start) = (Vec::new(), 0i32, false, 0);
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth -= 1,
            _ if !quoted && depth == 0 && s[i..].starts_with(op) => {
                parts.push(s[start..i].trim().to_owned());
                i += op.len();
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(s[start..].trim().to_owned());
    parts
}

/// The settings `current_setting` reads in `s`, each with whether `missing_ok` is true.
fn settings_read(s: &str) -> Vec<(String, bool)> {
    let mut found = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find("current_setting(") {
        rest = &rest[at + "current_setting(".len()..];
        let Some(name) = rest.strip_prefix('\'').and_then(|r| r.split('\'').next()) else {
            continue;
        };
        let args_end = rest.find(')').unwrap_or(rest.len());
        let args = &rest[..args_end];
        let missing_ok = args.split(',').nth(1).is_some_and(|a| a.trim() == "true");
        found.push((name.to_owned(), missing_ok));
    }
    found
}

/// Function names called in an expression (identifiers followed by `(`), minus SQL's own.
pub(super) fn called_functions(s: &str) -> Vec<String> {
    let mut names = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    for i in 0..chars.len() {
        if chars[i] != '(' || i == 0 {
            continue;
        }
        let end = i;
        let mut start = i;
        while start > 0 && (chars[start - 1].is_ascii_alphanumeric() || chars[start - 1] == '_') {
            start -= 1;
        }
        if start < end {
            let name: String = chars[start..end].iter().collect();
            let keyword = matches!(
                name.to_ascii_uppercase().as_str(),
                "IN" | "ANY" | "ALL" | "ARRAY" | "EXISTS" | "AND" | "OR" | "NOT" | "SELECT"
            );
            if !keyword {
                names.push(name);
            }
        }
    }
    names
}

/// A finding about a policy expression: `(severity, code, why)`.
pub(super) type ExprFinding = (Severity, &'static str, &'static str);

/// Findings for one policy expression on a table whose tenant column, as PostgreSQL prints it
/// (`quote_ident`), is `column`.
pub(super) fn check_policy_expr(
    expr: &str,
    column: &str,
    setting: &str,
    bodies: &HashMap<String, String>,
) -> Vec<ExprFinding> {
    let mut out = Vec::new();
    if expr.to_ascii_lowercase().contains("coalesce(") {
        out.push((
            Severity::Error,
            "policy_fails_open",
            "COALESCE in a policy substitutes a default when the context is missing: no context must mean no rows, never a default organization's (or all) rows",
        ));
    }
    match tenant_comparison(expr, column) {
        Some(rhs) => out.extend(check_current_org(&rhs, setting, bodies)),
        None => out.push(without_comparison(expr, column)),
    }
    out
}

/// What a top-level conjunct compares the bare `column` with (`column = x` or `x = column`).
fn tenant_comparison(expr: &str, column: &str) -> Option<String> {
    split_top(strip_parens(expr), " AND ").iter().find_map(|c| {
        let c = strip_parens(c);
        let (l, r) = c.split_once(" = ")?;
        if l.trim() == column {
            Some(r.trim().to_owned())
        } else if r.trim() == column {
            Some(l.trim().to_owned())
        } else {
            None
        }
    })
}

/// Why an expression that never compares the bare `column` does not isolate.
fn without_comparison(expr: &str, column: &str) -> ExprFinding {
    let cast = [format!("({column})::"), format!("{column}::")]
        .iter()
        .any(|p| expr.contains(p.as_str()));
    if cast {
        (
            Severity::Warning,
            "policy_casts_column",
            "the policy casts the tenant column (e.g. ::text): the index on it cannot serve the policy, so every query scans the table",
        )
    } else if split_top(strip_parens(expr), " OR ").len() > 1 {
        (
            Severity::Error,
            "policy_fails_open",
            "the tenant comparison sits under a top-level OR: rows of other organizations pass whenever the other branch is true",
        )
    } else {
        (
            Severity::Error,
            "policy_fails_open",
            "the policy does not compare the bare tenant column with the current organization: it does not isolate by organization",
        )
    }
}

/// Findings about `rhs`, what the tenant column is compared with: read once per statement, from
/// `setting` (directly or in a called function's body), with `missing_ok`.
fn check_current_org(
    rhs: &str,
    setting: &str,
    bodies: &HashMap<String, String>,
) -> Vec<ExprFinding> {
    let mut out = Vec::new();
    if !rhs.starts_with("( SELECT ") && !rhs.starts_with("(SELECT ") {
        out.push((
            Severity::Warning,
            "policy_per_row_function",
            "the current organization is computed per row, not once per statement: wrap it as (SELECT tenancy_current_org_id()) so the planner evaluates it once and compares the bare indexed column with a constant",
        ));
    }
    let mut read = settings_read(rhs);
    for f in called_functions(rhs) {
        if let Some(body) = bodies.get(&f) {
            read.extend(settings_read(body));
        }
    }
    if read.is_empty() || !read.iter().any(|(name, _)| name == setting) {
        out.push((
            Severity::Error,
            "policy_other_setting",
            "the policy does not read the configured tenant setting: the context TenantPool sets is not what it compares with",
        ));
    } else if read.iter().any(|(name, ok)| name == setting && !ok) {
        out.push((
            Severity::Warning,
            "policy_setting_not_missing_ok",
            "current_setting without missing_ok (true) raises an error when no context is set instead of returning no rows",
        ));
    }
    out
}

/// Whether a function body sets `setting` at session level (`set_config(..., false)`, or `SET`
/// without `LOCAL`).
pub(super) fn sets_at_session_level(source: &str, setting: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    let name = setting.to_ascii_lowercase();
    let quoted = format!("'{name}'");
    let mut rest = lower.as_str();
    while let Some(at) = rest.find("set_config(") {
        rest = &rest[at + "set_config(".len()..];
        let call = rest.split(')').next().unwrap_or("");
        if call.trim_start().starts_with(&quoted)
            && call.rsplit(',').next().is_some_and(|a| a.trim() == "false")
        {
            return true;
        }
    }
    lower.lines().any(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        words
            .windows(2)
            .any(|w| w[0] == "set" && (w[1] == name || w[1].trim_matches('"') == name))
            || words
                .windows(3)
                .any(|w| w[0] == "set" && w[1] == "session" && w[2].trim_matches('"') == name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(expr: &str) -> Vec<&'static str> {
        let mut bodies = HashMap::new();
        bodies.insert(
            "tenancy_current_org_id".to_owned(),
            "SELECT NULLIF(pg_catalog.current_setting('app.current_org_id', true), '')::uuid"
                .to_owned(),
        );
        check_policy_expr(expr, "organization_id", "app.current_org_id", &bodies)
            .into_iter()
            .map(|f| f.1)
            .collect()
    }

    #[test]
    fn policy_expressions_as_postgres_deparses_them() {
        let shipped =
            "(organization_id = ( SELECT tenancy_current_org_id() AS tenancy_current_org_id))";
        assert!(codes(shipped).is_empty());
        let with_role = "((organization_id = ( SELECT tenancy_current_org_id() AS tenancy_current_org_id)) AND ((( SELECT tenancy_current_org_role() AS tenancy_current_org_role) = 'owner'::text) OR (user_id = 'x'::text)))";
        assert!(codes(with_role).is_empty());
        assert_eq!(
            codes("((organization_id)::text = current_setting('app.current_org_id'::text))"),
            ["policy_casts_column"]
        );
        assert_eq!(
            codes("((organization_id = tenancy_current_org_id()) OR (x = 1))"),
            ["policy_fails_open"]
        );
        assert_eq!(
            codes(
                "(organization_id = (COALESCE(current_setting('app.current_org_id'::text, true), '0'::text))::uuid)"
            ),
            ["policy_fails_open", "policy_per_row_function"]
        );
        assert_eq!(
            codes("(organization_id = tenancy_current_org_id())"),
            ["policy_per_row_function"]
        );
        assert_eq!(
            codes(
                "(organization_id = ( SELECT (current_setting('app.tenant'::text, true))::uuid AS current_setting))"
            ),
            ["policy_other_setting"]
        );
        assert_eq!(
            codes(
                "(organization_id = ( SELECT (current_setting('app.current_org_id'::text))::uuid AS current_setting))"
            ),
            ["policy_setting_not_missing_ok"]
        );
        assert_eq!(codes("(user_id = 'x'::text)"), ["policy_fails_open"]);
    }

    #[test]
    fn session_level_settings_are_recognized() {
        let s = "app.current_org_id";
        assert!(sets_at_session_level(
            "PERFORM set_config('app.current_org_id', x, false);",
            s
        ));
        assert!(!sets_at_session_level(
            "PERFORM set_config('app.current_org_id', x, true);",
            s
        ));
        assert!(sets_at_session_level("SET app.current_org_id = 'x';", s));
        assert!(sets_at_session_level(
            "set session app.current_org_id to 'x';",
            s
        ));
        assert!(!sets_at_session_level(
            "SET LOCAL app.current_org_id = 'x';",
            s
        ));
        assert!(!sets_at_session_level(
            "PERFORM set_config('app.other', x, false);",
            s
        ));
    }
}
