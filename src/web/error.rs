//! [`ApiError`]: the answer to every failed request, and the one table of the codes the crate
//! answers with.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::error::{Error, ErrorKind};

/// Every code the crate itself answers with, and its HTTP status: the one table
/// (docs/web.md's "Error codes" lists the same, and a test holds them together). A code of
/// your own goes through [`ApiError::new`], its status from the [`ErrorKind`] you give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    BadRequest,
    MalformedBody,
    InvalidUserId,
    InvalidRole,
    Unauthenticated,
    MissingToken,
    NoActiveOrganization,
    NotAMember,
    InsufficientRole,
    MissingPermission,
    Forbidden,
    NotFound,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidBody,
    Internal,
    ServerMisconfigured,
}

impl Code {
    /// Every code, for the test that checks the table against the documentation.
    #[cfg(test)]
    pub(crate) const ALL: [Code; 18] = [
        Code::BadRequest,
        Code::MalformedBody,
        Code::InvalidUserId,
        Code::InvalidRole,
        Code::Unauthenticated,
        Code::MissingToken,
        Code::NoActiveOrganization,
        Code::NotAMember,
        Code::InsufficientRole,
        Code::MissingPermission,
        Code::Forbidden,
        Code::NotFound,
        Code::Conflict,
        Code::PayloadTooLarge,
        Code::UnsupportedMediaType,
        Code::InvalidBody,
        Code::Internal,
        Code::ServerMisconfigured,
    ];

    /// The table: the code's text and its HTTP status.
    pub(crate) const fn entry(self) -> (&'static str, u16) {
        match self {
            Code::BadRequest => ("bad_request", 400),
            Code::MalformedBody => ("malformed_body", 400),
            Code::InvalidUserId => ("invalid_user_id", 400),
            Code::InvalidRole => ("invalid_role", 400),
            Code::Unauthenticated => ("unauthenticated", 401),
            Code::MissingToken => ("missing_token", 401),
            Code::NoActiveOrganization => ("no_active_organization", 403),
            Code::NotAMember => ("not_a_member", 403),
            Code::InsufficientRole => ("insufficient_role", 403),
            Code::MissingPermission => ("missing_permission", 403),
            Code::Forbidden => ("forbidden", 403),
            Code::NotFound => ("not_found", 404),
            Code::Conflict => ("conflict", 409),
            Code::PayloadTooLarge => ("payload_too_large", 413),
            Code::UnsupportedMediaType => ("unsupported_media_type", 415),
            Code::InvalidBody => ("invalid_body", 422),
            Code::Internal => ("internal", 500),
            Code::ServerMisconfigured => ("server_misconfigured", 500),
        }
    }
}

/// An error answer: status, stable code, and a message safe to show. Its JSON body is
/// `{"error": <code>, "message": <message>}`.
///
/// The cause, when there is one (a database failure behind a 500), stays inside:
/// [`source`](StdError::source) returns it, the body never shows it, and the adapters log
/// every 5xx answer with its cause as one `tracing` error event (see
/// [`web`](crate::web#logging)). Equality compares status, code and message.
#[derive(Clone)]
pub struct ApiError {
    status: u16,
    code: &'static str,
    message: String,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("status", &self.status)
            .field("code", &self.code)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl PartialEq for ApiError {
    fn eq(&self, other: &Self) -> bool {
        (self.status, self.code, &self.message) == (other.status, other.code, &other.message)
    }
}

impl Eq for ApiError {}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl StdError for ApiError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl ApiError {
    /// An error of `kind` (its status) with `code` and `message`: for codes of your own.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: kind.http_status(),
            code,
            message: message.into(),
            source: None,
        }
    }

    /// An error with one of the crate's codes, its status from the table.
    pub(crate) fn coded(code: Code, message: impl Into<String>) -> Self {
        let (code, status) = code.entry();
        ApiError {
            status,
            code,
            message: message.into(),
            source: None,
        }
    }

    /// Keeps `source` as the cause: logged with a 5xx answer, never shown to the client.
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// 413 `payload_too_large`: a body over `limit` bytes.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::coded(
            Code::PayloadTooLarge,
            format!("the body exceeds {limit} bytes"),
        )
    }

    /// 415 `unsupported_media_type`: a body without `Content-Type: application/json`.
    pub fn unsupported_media_type() -> Self {
        Self::coded(
            Code::UnsupportedMediaType,
            "expected a request with Content-Type: application/json",
        )
    }

    /// 400 `malformed_body`: a body that is not JSON (a syntax error, cut short, not UTF-8, or
    /// not readable).
    pub fn malformed_body(message: impl Into<String>) -> Self {
        Self::coded(Code::MalformedBody, message)
    }

    /// 422 `invalid_body`: JSON of the wrong shape (a missing field, a wrong type).
    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::coded(Code::InvalidBody, message)
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::coded(Code::BadRequest, message)
    }

    /// 404 `not_found`.
    pub fn not_found() -> Self {
        Self::coded(Code::NotFound, "no such resource")
    }

    /// 403 `no_active_organization`: the session has no organization (onboarding: create or
    /// choose one).
    pub fn no_active_organization() -> Self {
        Self::coded(
            Code::NoActiveOrganization,
            "the session has no active organization: create or choose one",
        )
    }

    /// 500 `server_misconfigured`, naming what is missing and how to add it.
    pub fn misconfigured(message: impl Into<String>) -> Self {
        Self::coded(Code::ServerMisconfigured, message)
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The JSON body (never the cause).
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.code, "message": self.message })
    }

    /// What the adapters do with an answer before sending it: a 5xx is logged, once, as a
    /// `tracing` error event with the status, the code and the cause's chain. Nothing else is
    /// logged (a 4xx is the client's, and its message is already in the answer).
    #[cfg(any(feature = "axum", feature = "actix-web"))]
    pub(crate) fn log_if_server_error(&self) {
        if self.status < 500 {
            return;
        }
        let mut chain = String::new();
        let mut cause = StdError::source(self);
        while let Some(e) = cause {
            if !chain.is_empty() {
                chain.push_str(": ");
            }
            chain.push_str(&e.to_string());
            cause = e.source();
        }
        tracing::error!(
            status = self.status,
            code = self.code,
            message = %self.message,
            cause = %chain,
            "pg-tenancy answered a server error"
        );
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (code, message) = match &e {
            Error::Unauthenticated => (Code::Unauthenticated, e.to_string()),
            Error::NotAMember => (Code::NotAMember, e.to_string()),
            Error::InsufficientRole { .. } => (Code::InsufficientRole, e.to_string()),
            // The permission's key is no secret: the message names it.
            Error::MissingPermission { .. } => (Code::MissingPermission, e.to_string()),
            Error::InvalidUserId => (Code::InvalidUserId, e.to_string()),
            Error::InvalidRole(_) => (Code::InvalidRole, "invalid role".to_owned()),
            // Database text stays in the server's logs.
            _ => match e.kind() {
                ErrorKind::Forbidden => (Code::Forbidden, "not allowed".to_owned()),
                ErrorKind::NotFound => (Code::NotFound, "no such resource".to_owned()),
                ErrorKind::Conflict => (Code::Conflict, "conflicts with existing data".to_owned()),
                ErrorKind::BadRequest => (Code::BadRequest, "bad request".to_owned()),
                _ => (Code::Internal, "internal error".to_owned()),
            },
        };
        ApiError::coded(code, message).with_source(e)
    }
}

#[cfg(feature = "clerk-jwt")]
impl From<crate::clerk::TokenError> for ApiError {
    fn from(e: crate::clerk::TokenError) -> Self {
        let message = match e.kind() {
            ErrorKind::Internal => "session keys unavailable".to_owned(),
            _ => e.to_string(),
        };
        ApiError::new(e.kind(), e.code(), message).with_source(e)
    }
}

/// A missing session token: 401 `missing_token`.
pub(crate) fn missing_token() -> ApiError {
    ApiError::coded(
        Code::MissingToken,
        "no session token: send Authorization: Bearer <token> or the __session cookie",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_never_carry_database_text_but_keep_it_as_their_source() {
        let db = Error::Database(sqlx::Error::Protocol("secret detail".into()));
        let e = ApiError::from(db);
        assert_eq!((e.status(), e.code()), (500, "internal"));
        assert!(!e.body().to_string().contains("secret"));
        assert!(!e.to_string().contains("secret"));
        let source = StdError::source(&e).expect("the cause is kept");
        assert!(source.to_string().contains("secret detail"), "{source}");
        assert!(source.downcast_ref::<Error>().is_some());
        let e = ApiError::from(Error::Database(sqlx::Error::RowNotFound));
        assert_eq!((e.status(), e.code()), (404, "not_found"));
        let e = ApiError::from(Error::NotAMember);
        assert_eq!(e.body()["error"], "not_a_member");
        assert_eq!(e.status(), 403);
        assert_eq!(ApiError::no_active_organization().status(), 403);
        // A made error has no cause.
        assert!(StdError::source(&ApiError::not_found()).is_none());
    }

    #[test]
    fn the_table_agrees_with_the_core_kinds() {
        let samples = [
            Error::NotAMember,
            Error::InsufficientRole {
                required: crate::Role::Admin,
                actual: crate::Role::Member,
            },
            Error::MissingPermission {
                permission: "org:invoices:write".into(),
            },
            Error::InvalidUserId,
            Error::InvalidRole("x".into()),
            Error::Unauthenticated,
            Error::MissingSchema,
            Error::Database(sqlx::Error::RowNotFound),
            Error::Database(sqlx::Error::PoolTimedOut),
        ];
        for e in samples {
            let status = e.kind().http_status();
            assert_eq!(ApiError::from(e).status(), status);
        }
        assert_eq!(ApiError::payload_too_large(10).status(), 413);
        let e = ApiError::from(Error::MissingPermission {
            permission: "org:invoices:write".into(),
        });
        assert_eq!(
            e.body(),
            serde_json::json!({
                "error": "missing_permission",
                "message": "missing permission org:invoices:write"
            })
        );
    }

    /// Every code of the table is in docs/web.md's table, in its status's row (the token
    /// errors' codes, `clerk::TokenError::code`, are listed there beside them).
    #[test]
    fn the_documented_codes_are_the_table() {
        let doc = include_str!("../../docs/web.md");
        let rows: Vec<(u16, &str)> = doc
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("| ")?;
                let (status, codes) = rest.split_once(" | ")?;
                Some((status.parse().ok()?, codes))
            })
            .collect();
        for code in Code::ALL {
            let (text, status) = code.entry();
            let row = rows
                .iter()
                .find(|(s, _)| *s == status)
                .unwrap_or_else(|| panic!("docs/web.md has no row for {status}"));
            assert!(
                row.1.contains(&format!("`{text}`")),
                "docs/web.md's {status} row lacks `{text}`"
            );
        }
    }
}
