//! Clerk's organization and membership events, parsed.

use serde::Deserialize;
use serde_json::Value;

use crate::{ErrorKind, OrgId, UserId};

/// An organization as Clerk's events carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Organization {
    /// Clerk's id, `org_...`.
    pub external_id: String,
    /// Display name.
    pub name: String,
    /// Slug, if any.
    pub slug: Option<String>,
    /// The creating user's id.
    pub created_by: Option<String>,
    /// Clerk's `updated_at`, unix milliseconds: the version.
    pub updated_at: i64,
}

impl Organization {
    /// The organization's `OrgId`.
    pub fn org_id(&self) -> OrgId {
        OrgId::from_external_id(&self.external_id)
    }
}

/// A membership as Clerk's events carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OrganizationMembership {
    /// Clerk's membership id, `orgmem_...`: a user removed and invited again gets a new one.
    pub external_id: String,
    /// Clerk's `created_at`, unix milliseconds.
    pub created_at: i64,
    /// Clerk's role key (`org:admin`, `org:member`, `org:<custom>`, legacy `admin`...).
    pub role: String,
    /// The organization, in full.
    pub organization: Organization,
    /// The member.
    pub user_id: UserId,
    /// Clerk's `updated_at`, unix milliseconds: the version.
    pub updated_at: i64,
}

/// A role as Clerk's `role.*` events carry it: instance-wide, with the permissions it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoleDefinition {
    /// Clerk's role id, `role_...`.
    pub external_id: String,
    /// The role key memberships carry (`org:admin`, `org:<custom>`).
    pub key: String,
    /// The permissions it grants.
    pub permissions: Vec<PermissionDefinition>,
    /// Clerk's `updated_at`, unix milliseconds: the version.
    pub updated_at: i64,
}

/// A permission as Clerk's `permission.*` and `role.*` events carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PermissionDefinition {
    /// Clerk's permission id, `perm_...`.
    pub external_id: String,
    /// Its key, `org:<feature>:<permission>`: what policies and tokens name.
    pub key: String,
    /// Clerk's `updated_at`, unix milliseconds: the version.
    pub updated_at: i64,
}

/// Whether an upsert event was a creation or an update (they are applied alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `*.created`
    Created,
    /// `*.updated`
    Updated,
}

/// A parsed Clerk event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// `organization.created` / `organization.updated`.
    Organization(Change, Organization),
    /// `organization.deleted`.
    OrganizationDeleted {
        /// Clerk's id, `org_...`.
        external_id: String,
    },
    /// `organizationMembership.created` / `.updated`.
    OrganizationMembership(Change, OrganizationMembership),
    /// `organizationMembership.deleted`.
    MembershipDeleted(OrganizationMembership),
    /// `role.created` / `role.updated`: instance-wide, no organization.
    Role(Change, RoleDefinition),
    /// `role.deleted`.
    RoleDeleted {
        /// Clerk's id, `role_...`.
        external_id: String,
    },
    /// `permission.created` / `permission.updated`: instance-wide, no organization.
    Permission(Change, PermissionDefinition),
    /// `permission.deleted`.
    PermissionDeleted {
        /// Clerk's id, `perm_...`.
        external_id: String,
    },
    /// Any other event type: acknowledged, not applied.
    Other {
        /// The event's `type`.
        event_type: String,
    },
}

impl Event {
    /// The organization the event is about, if any.
    pub fn org_id(&self) -> Option<OrgId> {
        match self {
            Event::Organization(_, o) => Some(o.org_id()),
            Event::OrganizationDeleted { external_id } => {
                Some(OrgId::from_external_id(external_id))
            }
            Event::OrganizationMembership(_, m) | Event::MembershipDeleted(m) => {
                Some(m.organization.org_id())
            }
            Event::Role(..)
            | Event::RoleDeleted { .. }
            | Event::Permission(..)
            | Event::PermissionDeleted { .. }
            | Event::Other { .. } => None,
        }
    }

    pub(crate) fn type_name(&self) -> &str {
        match self {
            Event::Organization(Change::Created, _) => "organization.created",
            Event::Organization(Change::Updated, _) => "organization.updated",
            Event::OrganizationDeleted { .. } => "organization.deleted",
            Event::OrganizationMembership(Change::Created, _) => "organizationMembership.created",
            Event::OrganizationMembership(Change::Updated, _) => "organizationMembership.updated",
            Event::MembershipDeleted(_) => "organizationMembership.deleted",
            Event::Role(Change::Created, _) => "role.created",
            Event::Role(Change::Updated, _) => "role.updated",
            Event::RoleDeleted { .. } => "role.deleted",
            Event::Permission(Change::Created, _) => "permission.created",
            Event::Permission(Change::Updated, _) => "permission.updated",
            Event::PermissionDeleted { .. } => "permission.deleted",
            Event::Other { event_type } => event_type,
        }
    }
}

/// Why a payload could not be used. Nothing was written. Its [`kind`](PayloadError::kind) is
/// [`ErrorKind::BadRequest`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Not JSON, or not the shape of a Clerk event (the source names the field).
    #[error("malformed event")]
    Malformed(#[source] serde_json::Error),
    /// A field is present but unusable (empty id, invalid user id).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field's path.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}

impl PayloadError {
    /// Always [`ErrorKind::BadRequest`]: the sender's payload is unusable.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::BadRequest
    }
}

impl Event {
    /// Parses a Clerk event body (the JSON a webhook delivers).
    ///
    /// # Errors
    /// [`PayloadError`] when the body is not JSON of a Clerk event's shape, or a field is
    /// unusable. Unknown event types are not an error: [`Event::Other`].
    pub fn parse(body: &[u8]) -> Result<Event, PayloadError> {
        #[derive(Deserialize)]
        struct Envelope {
            #[serde(rename = "type")]
            event_type: String,
            data: Value,
        }
        let env: Envelope = serde_json::from_slice(body).map_err(malformed)?;
        let change = |s: &str| {
            if s.ends_with(".created") {
                Change::Created
            } else {
                Change::Updated
            }
        };
        Ok(match env.event_type.as_str() {
            t @ ("organization.created" | "organization.updated") => {
                Event::Organization(change(t), organization(env.data)?)
            }
            "organization.deleted" => Event::OrganizationDeleted {
                external_id: deleted_id(env.data)?,
            },
            t @ ("role.created" | "role.updated") => Event::Role(change(t), role(env.data)?),
            "role.deleted" => Event::RoleDeleted {
                external_id: deleted_id(env.data)?,
            },
            t @ ("permission.created" | "permission.updated") => {
                let raw: RawPermission = serde_json::from_value(env.data).map_err(malformed)?;
                Event::Permission(change(t), permission(raw)?)
            }
            "permission.deleted" => Event::PermissionDeleted {
                external_id: deleted_id(env.data)?,
            },
            t @ ("organizationMembership.created" | "organizationMembership.updated") => {
                Event::OrganizationMembership(change(t), membership(env.data)?)
            }
            "organizationMembership.deleted" => Event::MembershipDeleted(membership(env.data)?),
            _ => Event::Other {
                event_type: env.event_type,
            },
        })
    }
}

fn malformed(e: serde_json::Error) -> PayloadError {
    PayloadError::Malformed(e)
}

fn non_empty(s: String, field: &'static str) -> Result<String, PayloadError> {
    if s.is_empty() {
        Err(PayloadError::Invalid {
            field,
            reason: "empty",
        })
    } else {
        Ok(s)
    }
}

/// The id of a `DeletedObject` (Clerk's `*.deleted` payloads, where `id` is optional).
fn deleted_id(data: Value) -> Result<String, PayloadError> {
    #[derive(Deserialize)]
    struct Deleted {
        id: Option<String>,
    }
    let d: Deleted = serde_json::from_value(data).map_err(malformed)?;
    let external_id = d.id.ok_or(PayloadError::Invalid {
        field: "data.id",
        reason: "absent",
    })?;
    non_empty(external_id, "data.id")
}

#[derive(Deserialize)]
struct RawPermission {
    id: String,
    key: String,
    updated_at: i64,
}

/// A permission key as the database stores it: not empty, no comma, no white space (the
/// entries set a unit's permissions as one comma-separated text).
fn permission_key(key: String, field: &'static str) -> Result<String, PayloadError> {
    let key = non_empty(key, field)?;
    if key.contains(',') || key.chars().any(char::is_whitespace) {
        return Err(PayloadError::Invalid {
            field,
            reason: "holds a comma or white space",
        });
    }
    Ok(key)
}

fn permission(raw: RawPermission) -> Result<PermissionDefinition, PayloadError> {
    Ok(PermissionDefinition {
        external_id: non_empty(raw.id, "data.id")?,
        key: permission_key(raw.key, "data.key")?,
        updated_at: raw.updated_at,
    })
}

fn role(data: Value) -> Result<RoleDefinition, PayloadError> {
    #[derive(Deserialize)]
    struct Raw {
        id: String,
        key: String,
        #[serde(default)]
        permissions: Vec<RawPermission>,
        updated_at: i64,
    }
    let raw: Raw = serde_json::from_value(data).map_err(malformed)?;
    Ok(RoleDefinition {
        external_id: non_empty(raw.id, "data.id")?,
        key: non_empty(raw.key, "data.key")?,
        permissions: raw
            .permissions
            .into_iter()
            .map(|p| {
                Ok(PermissionDefinition {
                    external_id: non_empty(p.id, "data.permissions.id")?,
                    key: permission_key(p.key, "data.permissions.key")?,
                    updated_at: p.updated_at,
                })
            })
            .collect::<Result<_, PayloadError>>()?,
        updated_at: raw.updated_at,
    })
}

#[derive(Deserialize)]
struct RawOrganization {
    id: String,
    name: String,
    slug: Option<String>,
    created_by: Option<String>,
    updated_at: i64,
}

fn organization(data: Value) -> Result<Organization, PayloadError> {
    let raw: RawOrganization = serde_json::from_value(data).map_err(malformed)?;
    from_raw(raw)
}

fn from_raw(raw: RawOrganization) -> Result<Organization, PayloadError> {
    Ok(Organization {
        external_id: non_empty(raw.id, "organization.id")?,
        name: raw.name,
        slug: raw.slug.filter(|s| !s.is_empty()),
        created_by: raw.created_by,
        updated_at: raw.updated_at,
    })
}

fn membership(data: Value) -> Result<OrganizationMembership, PayloadError> {
    #[derive(Deserialize)]
    struct PublicUserData {
        user_id: String,
    }
    #[derive(Deserialize)]
    struct Raw {
        id: String,
        created_at: i64,
        role: String,
        organization: RawOrganization,
        public_user_data: PublicUserData,
        updated_at: i64,
    }
    let raw: Raw = serde_json::from_value(data).map_err(malformed)?;
    let user_id = UserId::new(raw.public_user_data.user_id).map_err(|_| PayloadError::Invalid {
        field: "data.public_user_data.user_id",
        reason: "not a usable user id",
    })?;
    Ok(OrganizationMembership {
        external_id: non_empty(raw.id, "data.id")?,
        created_at: raw.created_at,
        role: raw.role,
        organization: from_raw(raw.organization)?,
        user_id,
        updated_at: raw.updated_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_payloads_are_typed_errors() {
        for body in [
            &b"not json"[..],
            br#"{"type": "organization.created"}"#,
            br#"{"type": "organization.created", "data": {"id": "org_1", "name": 5, "updated_at": 1}}"#,
            br#"{"type": "organization.created", "data": {"id": "org_1", "name": "n", "updated_at": "1"}}"#,
            br#"{"type": 7, "data": {}}"#,
            br#"{"type": "organizationMembership.created", "data": {"role": "org:admin", "updated_at": 1}}"#,
        ] {
            let e = Event::parse(body).unwrap_err();
            assert!(matches!(e, PayloadError::Malformed(_)), "{}", String::from_utf8_lossy(body));
            // The JSON error stays the source, not flattened into the message.
            let source = std::error::Error::source(&e).expect("source");
            assert!(source.is::<serde_json::Error>());
            assert_eq!(e.kind(), ErrorKind::BadRequest);
        }
        let empty_id = br#"{"type": "organization.deleted", "data": {"id": "", "deleted": true}}"#;
        assert!(matches!(
            Event::parse(empty_id),
            Err(PayloadError::Invalid {
                field: "data.id",
                ..
            })
        ));
        let bad_user = br#"{"type": "organizationMembership.created", "data": {"id": "orgmem_1", "created_at": 1, "role": "org:admin", "updated_at": 1,
            "organization": {"id": "org_1", "name": "n", "updated_at": 1}, "public_user_data": {"user_id": "a b"}}}"#;
        assert!(matches!(
            Event::parse(bad_user),
            Err(PayloadError::Invalid { .. })
        ));
        assert_eq!(
            Event::parse(br#"{"type": "user.created", "data": {"id": "user_1"}}"#).unwrap(),
            Event::Other {
                event_type: "user.created".into()
            }
        );
    }
}
