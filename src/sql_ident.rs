//! The crate's one way to put a name into SQL built from strings.
//!
//! PostgreSQL folds unquoted names to lower case and refuses reserved words (`order`, `user`) as
//! bare names; a quoted name is taken literally. So every name is quoted, always, rather than
//! guessing when quotes are needed (a guess without the server's keyword list is how
//! `policy_sql("order")` once printed invalid SQL). Names read back from the catalog for display
//! are quoted by the server's own `quote_ident()` instead, where they must match how PostgreSQL
//! prints them (the audit compares them with deparsed policy expressions).

/// `name` as a quoted identifier: `"name"`, with every embedded `"` doubled. Safe for any
/// string without a NUL byte (which PostgreSQL refuses in any query text).
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `table` or `schema.table` (as a user types it, unquoted) with each part quoted: split at the
/// first `.`, so a schema name cannot hold one but a table name can.
pub(crate) fn quote_qualified(name: &str) -> String {
    match name.split_once('.') {
        Some((schema, table)) => format!("{}.{}", quote_ident(schema), quote_ident(table)),
        None => quote_ident(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_quoted_and_taken_literally() {
        // Plain, keyword, mixed case, leading digit, embedded quote, empty.
        assert_eq!(quote_ident("notes"), r#""notes""#);
        assert_eq!(quote_ident("order"), r#""order""#);
        assert_eq!(quote_ident("user"), r#""user""#);
        assert_eq!(quote_ident("Notes"), r#""Notes""#);
        assert_eq!(quote_ident("1x"), r#""1x""#);
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(quote_ident(r#"""#), r#""""""#);
        assert_eq!(quote_ident("a.b"), r#""a.b""#);
        // An attempt to close the quote and append SQL stays inside the name.
        assert_eq!(
            quote_ident(r#"x"; DROP TABLE t; --"#),
            r#""x""; DROP TABLE t; --""#
        );
    }

    #[test]
    fn qualified_names_quote_each_part() {
        assert_eq!(quote_qualified("order"), r#""order""#);
        assert_eq!(quote_qualified("app.Notes"), r#""app"."Notes""#);
        assert_eq!(quote_qualified("public.order"), r#""public"."order""#);
        // Split at the first dot only.
        assert_eq!(quote_qualified("app.a.b"), r#""app"."a.b""#);
        assert_eq!(quote_qualified(r#"s"x.t"y"#), r#""s""x"."t""y""#);
    }
}
