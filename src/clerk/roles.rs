//! How Clerk's role keys map to pg-tenancy's [`Role`]s.

use std::collections::HashMap;

use crate::Role;

/// How Clerk's role keys map to [`Role`]s.
///
/// Defaults: `org:admin` and the legacy `admin` -> [`Role::Admin`]; `org:member` and the
/// legacy `basic_member` -> [`Role::Member`]; any other (custom `org:<key>`) -> the least
/// privilege, [`Role::Member`], unless configured with [`RoleMapping::with_role`]. The creator
/// holding an admin role becomes [`Role::Owner`] (default `true`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RoleMapping {
    roles: HashMap<String, Role>,
    creator_as_owner: bool,
}

impl Default for RoleMapping {
    fn default() -> Self {
        let roles = [
            ("org:admin", Role::Admin),
            ("admin", Role::Admin),
            ("org:member", Role::Member),
            ("basic_member", Role::Member),
        ]
        .into_iter()
        .map(|(k, r)| (k.to_owned(), r))
        .collect();
        RoleMapping {
            roles,
            creator_as_owner: true,
        }
    }
}

impl RoleMapping {
    /// Maps a Clerk role key (e.g. `org:billing`) to `role`.
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_role(mut self, clerk_role: &str, role: Role) -> Self {
        self.roles.insert(clerk_role.to_owned(), role);
        self
    }

    /// Whether the organization's creator holding an admin role becomes owner. Default: `true`.
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_creator_as_owner(mut self, yes: bool) -> Self {
        self.creator_as_owner = yes;
        self
    }

    /// The role for a Clerk role key, for the creator or another member.
    pub fn role_for(&self, clerk_role: &str, is_creator: bool) -> Role {
        let role = self.roles.get(clerk_role).copied().unwrap_or(Role::Member);
        if self.creator_as_owner && is_creator && role == Role::Admin {
            Role::Owner
        } else {
            role
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_roles_map_to_least_privilege() {
        let m = RoleMapping::default();
        assert_eq!(m.role_for("org:admin", false), Role::Admin);
        assert_eq!(m.role_for("admin", false), Role::Admin);
        assert_eq!(m.role_for("org:member", false), Role::Member);
        assert_eq!(m.role_for("basic_member", false), Role::Member);
        assert_eq!(m.role_for("org:billing", false), Role::Member);
        assert_eq!(m.role_for("something", false), Role::Member);
        assert_eq!(m.role_for("org:admin", true), Role::Owner);
        assert_eq!(m.role_for("org:member", true), Role::Member);
        let custom = RoleMapping::default()
            .with_role("org:billing", Role::Admin)
            .with_creator_as_owner(false);
        assert_eq!(custom.role_for("org:billing", false), Role::Admin);
        assert_eq!(custom.role_for("org:admin", true), Role::Admin);
    }
}
