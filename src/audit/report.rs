//! What the audit returns: [`Report`], its [`Finding`]s and their [`Severity`], as text
//! (`Display`) and as JSON (`Serialize`).

use std::fmt;

use serde::Serialize;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth fixing; not a hole by itself (slow policies, a role with more rights than needed).
    Warning,
    /// Isolation can fail: fix before serving.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One thing the audit found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// A stable code (`rls_not_forced`, ...).
    pub code: &'static str,
    /// The object (`public.notes`, `policy p on public.notes`, `role app`).
    pub object: String,
    /// Why it matters.
    pub why: String,
    /// SQL that fixes it (or a comment saying what to do, where no statement can).
    pub fix: String,
}

impl Finding {
    pub(super) fn new(
        severity: Severity,
        code: &'static str,
        object: String,
        why: &str,
        fix: String,
    ) -> Self {
        Finding {
            severity,
            code,
            object,
            why: why.to_owned(),
            fix,
        }
    }
}

/// What the audit found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The tenant tables audited (`schema.table`, quoted as PostgreSQL prints them:
    /// `public.notes`, `public."order"`).
    pub tables: Vec<String>,
    /// The findings, errors first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    /// Whether there is at least one error.
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// The codes of the findings, in order (for tests).
    pub fn codes(&self) -> Vec<&'static str> {
        self.findings.iter().map(|f| f.code).collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self.errors().count();
        writeln!(
            f,
            "pg-tenancy audit: {} tenant table(s), {} error(s), {} warning(s)",
            self.tables.len(),
            errors,
            self.findings.len() - errors
        )?;
        for finding in &self.findings {
            writeln!(
                f,
                "\n{} [{}] {}\n  why: {}\n  fix:\n{}",
                finding.severity,
                finding.code,
                finding.object,
                finding.why,
                indent(&finding.fix)
            )?;
        }
        Ok(())
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
