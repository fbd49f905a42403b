//! [`OrgContext`]: who is acting, in which organization, with which role.

use crate::error::{Error, Result};
use crate::ids::{OrgId, UserId};
use crate::role::Role;

/// The organization, user and role a unit of work runs as.
///
/// The fields are private. The ways to get one:
/// - [`TenantPool::authorize`](crate::TenantPool::authorize), which reads the membership in
///   the database;
/// - [`TenantPool::create_organization`](crate::TenantPool::create_organization), for the
///   owner of the organization it creates;
/// - [`OrgContext::from_verified_session`], whose caller vouches that all three values come
///   from a session the server verified (for example the `org_id` / `org_role` claims of a
///   session token whose signature was checked), and, with the `clerk` feature,
///   `SessionClaims::org_context_trusting_token_role`, which does that for Clerk's claims.
///
/// Whichever way, every unit of work it starts is admitted by the database only for a live
/// membership with at least its role.
///
/// Never build one from anything the client sends: a request body, query string, cookie or
/// header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgContext {
    org: OrgId,
    user: UserId,
    role: Role,
}

impl OrgContext {
    /// Builds a context from values of a **verified** server-side session.
    ///
    /// The name is the contract: call this only with values your server derived from an
    /// authenticated session (a verified session token, a server-side session store). For a
    /// database-checked context use [`TenantPool::authorize`](crate::TenantPool::authorize).
    pub fn from_verified_session(org: OrgId, user: UserId, role: Role) -> Self {
        OrgContext { org, user, role }
    }

    /// The organization.
    pub fn org_id(&self) -> OrgId {
        self.org
    }

    /// The acting user.
    pub fn user_id(&self) -> &UserId {
        &self.user
    }

    /// The user's role in the organization.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Succeeds if the role is at least `min`, else [`Error::InsufficientRole`] (HTTP 403).
    ///
    /// # Errors
    /// [`Error::InsufficientRole`] when the context's role is below `min`.
    pub fn require_role(&self, min: Role) -> Result<()> {
        if self.role >= min {
            Ok(())
        } else {
            Err(Error::InsufficientRole {
                required: min,
                actual: self.role,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn ctx(role: Role) -> OrgContext {
        OrgContext::from_verified_session(
            OrgId::from_external_id("org_a"),
            UserId::new("user_a").unwrap(),
            role,
        )
    }

    #[test]
    fn require_role_follows_the_order() {
        for (have, need, ok) in [
            (Role::Member, Role::Member, true),
            (Role::Member, Role::Admin, false),
            (Role::Member, Role::Owner, false),
            (Role::Admin, Role::Member, true),
            (Role::Admin, Role::Admin, true),
            (Role::Admin, Role::Owner, false),
            (Role::Owner, Role::Owner, true),
        ] {
            let r = ctx(have).require_role(need);
            assert_eq!(r.is_ok(), ok, "{have} needs {need}");
            if let Err(e) = r {
                assert!(matches!(e, Error::InsufficientRole { required, actual }
                    if required == need && actual == have));
                assert_eq!(e.kind(), ErrorKind::Forbidden);
                assert_eq!(e.kind().http_status(), 403);
            }
        }
    }
}
