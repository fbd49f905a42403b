//! Keeping organizations and memberships in step with Clerk, through its (Svix-signed)
//! webhooks.
//!
//! [`ClerkSync::handle`] verifies, parses and applies one delivery and returns an [`Outcome`]
//! (answer 2xx) or a [`SyncError`] whose [`http_status`](SyncError::http_status) is 400 for a
//! bad signature or payload and 500 for a database failure, so that Svix retries.
//!
//! | event | effect | status |
//! |---|---|---|
//! | `organization.created` / `.updated` | organization inserted, or updated if the event's `updated_at` is newer than the stored one; a deleted organization stays deleted (only its name is refreshed) | 200 |
//! | `organization.deleted` | tombstone: `deleted_at` set, slug freed, memberships removed; tenant data kept; permanent | 200 |
//! | `organizationMembership.created` / `.updated` | the embedded organization is created or refreshed as above; the membership (Clerk `orgmem_...` id) is inserted or updated with the mapped role if its `updated_at` is newer, or if it is a newer membership of the same user (re-invited); ignored if that membership id was deleted | 200 |
//! | `organizationMembership.deleted` | that membership removed, and its id remembered so a late `created`/`updated` cannot restore it; a newer membership of the same user stays | 200 |
//! | the same `svix-id` again | nothing ([`Outcome::Duplicate`]) | 200 |
//! | any other event type | nothing ([`Outcome::Ignored`]) | 200 |
//! | missing header, bad timestamp, no matching signature | nothing | 400 |
//! | malformed JSON, missing field, wrong type, unusable id | nothing | 400 |
//! | database failure | nothing (rolled back) | 500 |
//!
//! Every change runs through the RLS path with the event's organization as the context
//! ([`OrgId::from_external_id`], the same mapping request authorization uses); no role bypasses
//! Row-Level Security.
//!
//! **Owners.** Clerk has no owner role. By default the organization's creator (`created_by`)
//! becomes [`Role::Owner`] while Clerk gives them `org:admin`; turn that off with
//! [`RoleMapping::with_creator_as_owner`].

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use sqlx::PgConnection;

use crate::error::Error;
use crate::webhook::{Verifier, WebhookError, WebhookHeaders};
use crate::{OrgContext, OrgId, Role, ServicePool, UserId};

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
    pub fn with_role(mut self, clerk_role: &str, role: Role) -> Self {
        self.roles.insert(clerk_role.to_owned(), role);
        self
    }

    /// Whether the organization's creator holding an admin role becomes owner. Default: `true`.
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

/// The user and active organization from a Clerk session token's claims (v1 `org_id` /
/// `org_role`, or v2 `o: { id, rol }`), read **after** your JWT library verified the token.
///
/// ```
/// use tenancy::clerk::SessionClaims;
///
/// let claims = serde_json::json!({
///     "sub": "user_2h8op3Isl1QR7tKu5FGNfaLKEoU", "v": 2,
///     "o": { "id": "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S", "rol": "admin" }
/// });
/// let session = SessionClaims::from_verified_claims(&claims)?;
/// let (user, org) = session.user_and_org().expect("an active organization");
/// // Then: let ctx = pool.authorize(&user, org).await?;  (the role from the database)
/// # Ok::<(), tenancy::clerk::PayloadError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionClaims {
    /// `sub`.
    pub user_id: UserId,
    /// The active organization's Clerk id, if one is active.
    pub org_external_id: Option<String>,
    /// The active organization's role key as Clerk names it (`org:admin`; v2's `admin` is
    /// given its `org:` prefix back).
    pub org_role: Option<String>,
}

impl SessionClaims {
    /// Reads the claims of a verified token. Never call this on an unverified token: the
    /// result is trusted.
    pub fn from_verified_claims(claims: &Value) -> Result<Self, PayloadError> {
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        let sub = text(claims, "sub").ok_or(PayloadError::Invalid {
            field: "sub",
            reason: "absent",
        })?;
        let user_id = UserId::new(sub).map_err(|_| PayloadError::Invalid {
            field: "sub",
            reason: "not a usable user id",
        })?;
        let (org, role) = match claims.get("o") {
            // v2: compact, the role without its `org:` prefix.
            Some(o) => (text(o, "id"), text(o, "rol").map(|r| format!("org:{r}"))),
            None => (text(claims, "org_id"), text(claims, "org_role")),
        };
        Ok(SessionClaims {
            user_id,
            org_external_id: org.filter(|o| !o.is_empty()),
            org_role: role,
        })
    }

    /// The user and the active organization's `OrgId` (the same mapping the webhook sync
    /// uses), to pass to [`TenantPool::authorize`](crate::TenantPool::authorize) or [`TenantPool::with_member`](crate::TenantPool::with_member).
    pub fn user_and_org(&self) -> Option<(UserId, OrgId)> {
        let org = self.org_external_id.as_deref()?;
        Some((self.user_id.clone(), OrgId::from_external_id(org)))
    }

    /// A context with the role **as the token states it**, mapped by `roles`, without a
    /// database round trip. The token cannot know that the creator is the owner (see
    /// [`RoleMapping`]), so this never yields [`Role::Owner`]; and it is as fresh as the
    /// token. Use [`TenantPool::authorize`](crate::TenantPool::authorize) when the role must come from the database.
    pub fn org_context_trusting_token_role(&self, roles: &RoleMapping) -> Option<OrgContext> {
        let (user, org) = self.user_and_org()?;
        let role = roles
            .role_for(self.org_role.as_deref()?, false)
            .min(Role::Admin);
        Some(OrgContext::from_verified_session(org, user, role))
    }
}

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
pub struct Membership {
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
    Membership(Change, Membership),
    /// `organizationMembership.deleted`.
    MembershipDeleted(Membership),
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
            Event::Membership(_, m) | Event::MembershipDeleted(m) => Some(m.organization.org_id()),
            Event::Other { .. } => None,
        }
    }

    fn type_name(&self) -> &str {
        match self {
            Event::Organization(Change::Created, _) => "organization.created",
            Event::Organization(Change::Updated, _) => "organization.updated",
            Event::OrganizationDeleted { .. } => "organization.deleted",
            Event::Membership(Change::Created, _) => "organizationMembership.created",
            Event::Membership(Change::Updated, _) => "organizationMembership.updated",
            Event::MembershipDeleted(_) => "organizationMembership.deleted",
            Event::Other { event_type } => event_type,
        }
    }
}

/// Why a payload could not be used. Nothing was written. HTTP 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Not JSON, or not the shape of a Clerk event (the message names the field).
    #[error("malformed event: {0}")]
    Malformed(String),
    /// A field is present but unusable (empty id, invalid user id).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field's path.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}

/// What applying a delivery did. Every outcome means: answer 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The database changed.
    Applied,
    /// Valid, but older than (or the same as) the stored state, or about a deleted
    /// organization: nothing to change.
    Unchanged,
    /// This message id was applied before.
    Duplicate,
    /// An event type the sync does not handle.
    Ignored,
}

impl Outcome {
    /// The status to answer with: 200.
    pub const fn http_status(self) -> u16 {
        200
    }
}

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// Signature verification failed (HTTP 400).
    #[error(transparent)]
    Signature(#[from] WebhookError),
    /// The payload is unusable (HTTP 400).
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The database failed; nothing was written (HTTP 500, so that Svix retries).
    #[error(transparent)]
    Database(#[from] Error),
}

impl SyncError {
    /// 400 for signature and payload problems, 500 for database failures.
    pub fn http_status(&self) -> u16 {
        match self {
            SyncError::Signature(_) | SyncError::Payload(_) => 400,
            SyncError::Database(_) => 500,
        }
    }
}

impl From<sqlx::Error> for SyncError {
    fn from(e: sqlx::Error) -> Self {
        SyncError::Database(Error::Database(e))
    }
}

/// Parses a Clerk event body.
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
        "organization.deleted" => {
            #[derive(Deserialize)]
            struct Deleted {
                id: Option<String>,
            }
            let d: Deleted = serde_json::from_value(env.data).map_err(malformed)?;
            let external_id = d.id.ok_or(PayloadError::Invalid {
                field: "data.id",
                reason: "absent",
            })?;
            Event::OrganizationDeleted {
                external_id: non_empty(external_id, "data.id")?,
            }
        }
        t @ ("organizationMembership.created" | "organizationMembership.updated") => {
            Event::Membership(change(t), membership(env.data)?)
        }
        "organizationMembership.deleted" => Event::MembershipDeleted(membership(env.data)?),
        _ => Event::Other {
            event_type: env.event_type,
        },
    })
}

fn malformed(e: serde_json::Error) -> PayloadError {
    PayloadError::Malformed(e.to_string())
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

fn membership(data: Value) -> Result<Membership, PayloadError> {
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
    Ok(Membership {
        external_id: non_empty(raw.id, "data.id")?,
        created_at: raw.created_at,
        role: raw.role,
        organization: from_raw(raw.organization)?,
        user_id,
        updated_at: raw.updated_at,
    })
}

/// Applies Clerk's organization and membership events to the database, as service units.
#[derive(Debug, Clone)]
pub struct ClerkSync {
    service: ServicePool,
    verifier: Verifier,
    roles: RoleMapping,
}

impl ClerkSync {
    /// A sync writing through `service` (a login in `tenancy_service`), accepting deliveries
    /// signed for `verifier`.
    pub fn new(service: ServicePool, verifier: Verifier) -> Self {
        ClerkSync {
            service,
            verifier,
            roles: RoleMapping::default(),
        }
    }

    /// Replaces the role mapping.
    pub fn with_roles(mut self, roles: RoleMapping) -> Self {
        self.roles = roles;
        self
    }

    /// Verifies (system clock), parses and applies one delivery.
    pub async fn handle(
        &self,
        headers: &WebhookHeaders<'_>,
        body: &[u8],
    ) -> Result<Outcome, SyncError> {
        let verified = self.verifier.verify(headers, body)?;
        let event = parse(body)?;
        self.apply(verified.id, &event).await
    }

    /// [`ClerkSync::handle`] with an explicit clock (unix seconds).
    pub async fn handle_at(
        &self,
        headers: &WebhookHeaders<'_>,
        body: &[u8],
        now: i64,
    ) -> Result<Outcome, SyncError> {
        let verified = self.verifier.verify_at(headers, body, now)?;
        let event = parse(body)?;
        self.apply(verified.id, &event).await
    }

    /// Applies an event already verified and parsed, recording `message_id` (the `svix-id`) in
    /// the same transaction so that a second delivery changes nothing.
    pub async fn apply(&self, message_id: &str, event: &Event) -> Result<Outcome, SyncError> {
        let Some(org) = event.org_id() else {
            return Ok(Outcome::Ignored);
        };
        // The signed delivery is the verified source: a service unit inside its organization.
        self.service
            .with_org(org, async |tx| {
                let fresh = sqlx::query(
                    "INSERT INTO webhook_deliveries (organization_id, message_id, event_type) \
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(org.as_uuid())
                .bind(message_id)
                .bind(event.type_name())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if fresh == 0 {
                    return Ok(Outcome::Duplicate);
                }
                apply_event(tx, org, event, &self.roles).await
            })
            .await
    }

    /// Deletes delivery records received more than `older_than` ago, across organizations,
    /// in a service unit entered without an organization (whose policies admit reading and
    /// deleting delivery records, nothing else). Keep more than Svix's retry window (days); a
    /// month is a sensible default. Returns how many were deleted.
    pub async fn prune_deliveries(&self, older_than: Duration) -> Result<u64, Error> {
        let mut tx = self.service.begin_maintenance().await?;
        let n = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE received_at < now() - make_interval(secs => $1)",
        )
        .bind(older_than.as_secs_f64())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}

async fn apply_event(
    tx: &mut PgConnection,
    org: OrgId,
    event: &Event,
    roles: &RoleMapping,
) -> Result<Outcome, SyncError> {
    match event {
        Event::Organization(_, o) => Ok(upsert_organization(tx, org, o, Source::OrganizationEvent)
            .await?
            .outcome()),
        Event::OrganizationDeleted { external_id } => {
            delete_organization(tx, org, external_id).await
        }
        Event::Membership(_, m) | Event::MembershipDeleted(m) => {
            let org_state = upsert_organization(tx, org, &m.organization, Source::Snapshot).await?;
            if org_state == OrgState::Deleted {
                return Ok(Outcome::Unchanged);
            }
            let changed = if matches!(event, Event::MembershipDeleted(_)) {
                delete_membership(tx, org, m).await?
            } else {
                upsert_membership(tx, org, m, roles).await?
            };
            Ok(if changed || org_state == OrgState::Changed {
                Outcome::Applied
            } else {
                Outcome::Unchanged
            })
        }
        Event::Other { .. } => Ok(Outcome::Ignored),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrgState {
    Changed,
    Unchanged,
    Deleted,
}

impl OrgState {
    fn outcome(self) -> Outcome {
        match self {
            OrgState::Changed => Outcome::Applied,
            OrgState::Unchanged | OrgState::Deleted => Outcome::Unchanged,
        }
    }
}

/// Where an organization's state came from: at equal `updated_at`, an organization event wins
/// over the snapshot embedded in a membership event.
#[derive(Debug, Clone, Copy)]
enum Source {
    Snapshot = 1,
    OrganizationEvent = 2,
}

/// Inserts the organization, or updates it if `o` is newer. A deleted organization keeps its
/// tombstone: only its name and creator follow newer events, never its slug or deletion.
async fn upsert_organization(
    tx: &mut PgConnection,
    org: OrgId,
    o: &Organization,
    source: Source,
) -> Result<OrgState, SyncError> {
    // Insert, or update if newer. RETURNING yields a row only when something was written.
    let written: Option<bool> = sqlx::query_scalar(
        "INSERT INTO organizations AS cur \
             (id, name, slug, external_id, created_by, external_updated_at, external_source) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (id) DO UPDATE \
         SET name = EXCLUDED.name, \
             slug = CASE WHEN cur.deleted_at IS NULL THEN EXCLUDED.slug END, \
             created_by = EXCLUDED.created_by, \
             external_updated_at = EXCLUDED.external_updated_at, \
             external_source = EXCLUDED.external_source \
         WHERE cur.external_updated_at IS NULL \
            OR (cur.external_updated_at, cur.external_source) \
               < (EXCLUDED.external_updated_at, EXCLUDED.external_source) \
         RETURNING cur.deleted_at IS NOT NULL",
    )
    .bind(org.as_uuid())
    .bind(&o.name)
    .bind(&o.slug)
    .bind(&o.external_id)
    .bind(&o.created_by)
    .bind(o.updated_at)
    .bind(source as i16)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(deleted) = written {
        return Ok(if deleted {
            OrgState::Deleted
        } else {
            OrgState::Changed
        });
    }
    let deleted: bool =
        sqlx::query_scalar("SELECT deleted_at IS NOT NULL FROM organizations WHERE id = $1")
            .bind(org.as_uuid())
            .fetch_one(&mut *tx)
            .await?;
    Ok(if deleted {
        OrgState::Deleted
    } else {
        OrgState::Unchanged
    })
}

async fn delete_organization(
    tx: &mut PgConnection,
    org: OrgId,
    external_id: &str,
) -> Result<Outcome, SyncError> {
    let already: Option<bool> =
        sqlx::query_scalar("SELECT deleted_at IS NOT NULL FROM organizations WHERE id = $1")
            .bind(org.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
    if already == Some(true) {
        return Ok(Outcome::Unchanged);
    }
    sqlx::query(
        "INSERT INTO organizations (id, name, slug, external_id, deleted_at) VALUES ($1, '', NULL, $2, now()) \
         ON CONFLICT (id) DO UPDATE SET deleted_at = now(), slug = NULL",
    )
    .bind(org.as_uuid())
    .bind(external_id)
    .execute(&mut *tx)
    .await?;
    for table in ["organization_members", "membership_tombstones"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE organization_id = $1"
        )))
        .bind(org.as_uuid())
        .execute(&mut *tx)
        .await?;
    }
    Ok(Outcome::Applied)
}

/// Inserts or updates the membership if `m` is newer (same membership, later `updated_at`; or a
/// later membership of the same user), unless `m`'s membership was deleted. Returns whether
/// anything changed.
async fn upsert_membership(
    tx: &mut PgConnection,
    org: OrgId,
    m: &Membership,
    roles: &RoleMapping,
) -> Result<bool, SyncError> {
    let deleted: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM membership_tombstones \
         WHERE organization_id = $1 AND external_id = $2)",
    )
    .bind(org.as_uuid())
    .bind(&m.external_id)
    .fetch_one(&mut *tx)
    .await?;
    if deleted {
        return Ok(false);
    }
    let is_creator = m.organization.created_by.as_deref() == Some(m.user_id.as_str());
    let role = roles.role_for(&m.role, is_creator);
    // Insert, or take over the row when `m` is newer: the same membership at a later version,
    // a later membership of the user (re-invited), or a row the application added itself.
    let changed = sqlx::query(
        "INSERT INTO organization_members AS cur \
             (organization_id, user_id, role, external_id, external_created_at, external_updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (organization_id, user_id) DO UPDATE \
         SET role = EXCLUDED.role, external_id = EXCLUDED.external_id, \
             external_created_at = EXCLUDED.external_created_at, \
             external_updated_at = EXCLUDED.external_updated_at \
         WHERE cur.external_id IS NULL \
            OR (cur.external_id = EXCLUDED.external_id \
                AND (cur.external_updated_at IS NULL \
                     OR cur.external_updated_at < EXCLUDED.external_updated_at)) \
            OR (cur.external_id <> EXCLUDED.external_id \
                AND (cur.external_created_at, cur.external_id) \
                    < (EXCLUDED.external_created_at, EXCLUDED.external_id))",
    )
    .bind(org.as_uuid())
    .bind(m.user_id.as_str())
    .bind(role.as_str())
    .bind(&m.external_id)
    .bind(m.created_at)
    .bind(m.updated_at)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// Remembers that `m`'s membership was deleted and removes it (or a row the application added
/// for the same user); a newer membership of the user stays. Returns whether anything changed.
async fn delete_membership(
    tx: &mut PgConnection,
    org: OrgId,
    m: &Membership,
) -> Result<bool, SyncError> {
    let recorded = sqlx::query(
        "INSERT INTO membership_tombstones (organization_id, external_id, user_id) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(org.as_uuid())
    .bind(&m.external_id)
    .bind(m.user_id.as_str())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let removed = sqlx::query(
        "DELETE FROM organization_members WHERE organization_id = $1 AND user_id = $2 \
         AND (external_id = $3 OR external_id IS NULL)",
    )
    .bind(org.as_uuid())
    .bind(m.user_id.as_str())
    .bind(&m.external_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(recorded + removed > 0)
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

    #[test]
    fn session_claims_v1_and_v2_read_alike() {
        let v1: Value = serde_json::from_str(include_str!(
            "../tests/data/clerk-events/session_claims.v1.json"
        ))
        .unwrap();
        let v2: Value = serde_json::from_str(include_str!(
            "../tests/data/clerk-events/session_claims.v2.json"
        ))
        .unwrap();
        let (a, b) = (
            SessionClaims::from_verified_claims(&v1).unwrap(),
            SessionClaims::from_verified_claims(&v2).unwrap(),
        );
        assert_eq!(a, b);
        assert_eq!(a.org_role.as_deref(), Some("org:admin"));
        let (user, org) = a.user_and_org().unwrap();
        assert_eq!(user.as_str(), "user_2h8op3Isl1QR7tKu5FGNfaLKEoU");
        assert_eq!(
            org,
            OrgId::from_external_id("org_2g7np7Hrk0SN6kj5EDMLDaKNL0S")
        );
        let ctx = a
            .org_context_trusting_token_role(&RoleMapping::default())
            .unwrap();
        assert_eq!(ctx.role(), Role::Admin);
        // No active organization: no context. No subject: an error.
        let personal = serde_json::json!({"sub": "user_1"});
        assert_eq!(
            SessionClaims::from_verified_claims(&personal)
                .unwrap()
                .user_and_org(),
            None
        );
        assert!(
            SessionClaims::from_verified_claims(&serde_json::json!({"org_id": "org_1"})).is_err()
        );
        // A custom role in the token maps to least privilege by default.
        let custom = serde_json::json!({"sub": "user_1", "o": {"id": "org_1", "rol": "billing"}});
        let ctx = SessionClaims::from_verified_claims(&custom)
            .unwrap()
            .org_context_trusting_token_role(&RoleMapping::default())
            .unwrap();
        assert_eq!(ctx.role(), Role::Member);
    }

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
            assert!(matches!(parse(body), Err(PayloadError::Malformed(_))), "{}", String::from_utf8_lossy(body));
        }
        let empty_id = br#"{"type": "organization.deleted", "data": {"id": "", "deleted": true}}"#;
        assert!(matches!(
            parse(empty_id),
            Err(PayloadError::Invalid {
                field: "data.id",
                ..
            })
        ));
        let bad_user = br#"{"type": "organizationMembership.created", "data": {"id": "orgmem_1", "created_at": 1, "role": "org:admin", "updated_at": 1,
            "organization": {"id": "org_1", "name": "n", "updated_at": 1}, "public_user_data": {"user_id": "a b"}}}"#;
        assert!(matches!(parse(bad_user), Err(PayloadError::Invalid { .. })));
        assert_eq!(
            parse(br#"{"type": "user.created", "data": {"id": "user_1"}}"#),
            Ok(Event::Other {
                event_type: "user.created".into()
            })
        );
    }
}
