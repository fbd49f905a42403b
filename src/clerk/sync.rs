//! Applying Clerk's events to the database, as service units: idempotent by message id and
//! tolerant of any delivery order.

use std::time::Duration;

use sqlx::PgConnection;

use super::event::{Event, Organization, OrganizationMembership, PayloadError};
use super::roles::RoleMapping;
use crate::error::{Error, ErrorKind};
use crate::webhook::{Verifier, WebhookError, WebhookHeaders};
use crate::{OrgId, ServicePool};

/// What applying a delivery did. Every outcome means: answer 2xx (Svix counts the delivery
/// as done).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Written: the event's state is now stored (an insert, or an update to a newer state).
    Applied,
    /// Valid, but older than (or the same as) the stored state, or about a deleted
    /// organization: nothing to change.
    Unchanged,
    /// This message id was applied before.
    Duplicate,
    /// An event type the sync does not handle.
    Ignored,
}

/// Why a delivery was refused. Nothing was written.
///
/// Answer with [`SyncError::kind`]'s status, the one mapping every error of the crate uses:
/// 400 for a delivery that fails verification or parsing (Svix does not retry those
/// usefully), 500 for a database failure or a misconfigured verifier (Svix retries).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// Signature verification failed.
    #[error("webhook refused")]
    Signature(#[from] WebhookError),
    /// The payload is unusable.
    #[error("payload refused")]
    Payload(#[from] PayloadError),
    /// The database failed; nothing was written.
    #[error("sync failed in the database")]
    Database(#[from] Error),
}

impl SyncError {
    /// [`ErrorKind::BadRequest`] for the sender's mistakes, [`ErrorKind::Internal`] for a
    /// database failure (whatever its own kind: the sender is not at fault, a retry may
    /// succeed) or a configuration mistake in the verifier.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SyncError::Signature(e) => e.kind(),
            SyncError::Payload(e) => e.kind(),
            SyncError::Database(_) => ErrorKind::Internal,
        }
    }
}

impl From<sqlx::Error> for SyncError {
    fn from(e: sqlx::Error) -> Self {
        SyncError::Database(Error::Database(e))
    }
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
    #[must_use = "a builder method returns the changed value; the original is consumed"]
    pub fn with_roles(mut self, roles: RoleMapping) -> Self {
        self.roles = roles;
        self
    }

    /// Verifies (system clock), parses and applies one delivery.
    ///
    /// # Errors
    /// [`SyncError::Signature`] when the delivery fails verification, [`SyncError::Payload`]
    /// when its body is not a usable Clerk event, [`SyncError::Database`] when applying it
    /// fails (nothing is written). Answer with `e.kind().http_status()`.
    pub async fn handle(
        &self,
        headers: &WebhookHeaders<'_>,
        body: &[u8],
    ) -> Result<Outcome, SyncError> {
        self.handle_at(headers, body, crate::util::unix_now()).await
    }

    /// [`ClerkSync::handle`] with an explicit clock (unix seconds).
    ///
    /// # Errors
    /// As [`ClerkSync::handle`].
    pub async fn handle_at(
        &self,
        headers: &WebhookHeaders<'_>,
        body: &[u8],
        now: i64,
    ) -> Result<Outcome, SyncError> {
        let delivery = crate::trace::Delivery::start();
        delivery
            .run(async {
                let verified = self.verifier.verify_at(headers, body, now)?;
                delivery.verified(verified.id);
                let event = Event::parse(body)?;
                delivery.parsed(event.type_name());
                self.apply(verified.id, &event).await
            })
            .await
    }

    /// Applies an event already verified and parsed, recording `message_id` (the `svix-id`) in
    /// the same transaction so that a second delivery changes nothing.
    ///
    /// # Errors
    /// [`SyncError::Database`] when the database fails; nothing is written, so a retry may
    /// apply it.
    pub async fn apply(&self, message_id: &str, event: &Event) -> Result<Outcome, SyncError> {
        let Some(org) = event.org_id() else {
            return self.apply_instance_event(event).await;
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

    /// The instance-wide events (`role.*`, `permission.*`): the role definitions every entry
    /// reads, in a service unit entered without an organization. Idempotent and order-tolerant
    /// by the events' own versions (`updated_at`, and a deleted id stays deleted), so no
    /// delivery record is kept: a second delivery finds nothing newer to apply.
    async fn apply_instance_event(&self, event: &Event) -> Result<Outcome, SyncError> {
        let query = match event {
            Event::Role(_, r) => {
                sqlx::query_scalar::<_, bool>("SELECT tenancy_sync_role($1, $2, $3, $4, $5, $6)")
                    .bind(&r.external_id)
                    .bind(&r.key)
                    .bind(
                        r.permissions
                            .iter()
                            .map(|p| p.external_id.as_str())
                            .collect::<Vec<_>>(),
                    )
                    .bind(
                        r.permissions
                            .iter()
                            .map(|p| p.key.as_str())
                            .collect::<Vec<_>>(),
                    )
                    .bind(
                        r.permissions
                            .iter()
                            .map(|p| p.updated_at)
                            .collect::<Vec<_>>(),
                    )
                    .bind(r.updated_at)
            }
            Event::RoleDeleted { external_id } => {
                sqlx::query_scalar("SELECT tenancy_sync_role_deleted($1)").bind(external_id)
            }
            Event::Permission(_, p) => {
                sqlx::query_scalar("SELECT tenancy_sync_permission($1, $2, $3)")
                    .bind(&p.external_id)
                    .bind(&p.key)
                    .bind(p.updated_at)
            }
            Event::PermissionDeleted { external_id } => {
                sqlx::query_scalar("SELECT tenancy_sync_permission_deleted($1)").bind(external_id)
            }
            _ => return Ok(Outcome::Ignored),
        };
        let mut tx = self.service.begin_maintenance().await?;
        let changed = query.fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(if changed {
            Outcome::Applied
        } else {
            Outcome::Unchanged
        })
    }

    /// Deletes delivery records received more than `older_than` ago, across organizations,
    /// in a service unit entered without an organization (whose policies admit reading and
    /// deleting delivery records, nothing else). Keep more than Svix's retry window (days); a
    /// month is a sensible default. Returns how many were deleted.
    ///
    /// # Errors
    /// A database error (for example a login outside `tenancy_service`, or the migrations not
    /// applied).
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

    /// Prunes the sync's bookkeeping older than `keep` says, in one service unit entered
    /// without an organization (whose policies admit reading and deleting these records,
    /// nothing else): delivery records and membership tombstones, which only matter while Svix
    /// may still deliver (or retry) an event (about a day and a half), and the identity
    /// provider's membership removals, which only matter while a session token issued before
    /// them may still be valid (minutes). Removals made in the application stay (they stand
    /// until the provider confirms a newer membership); a deleted organization's go when it is
    /// deleted. Call it periodically (the example apps do, hourly).
    ///
    /// # Errors
    /// A database error (for example a login outside `tenancy_service`, or the migrations not
    /// applied); nothing is deleted then.
    pub async fn prune(&self, keep: &Retention) -> Result<Pruned, Error> {
        let mut tx = self.service.begin_maintenance().await?;
        let mut counts = [0u64; 3];
        for (n, (table, column, extra, age)) in [
            ("webhook_deliveries", "received_at", "", keep.deliveries),
            ("membership_tombstones", "deleted_at", "", keep.tombstones),
            (
                "membership_removals",
                "removed_at",
                " AND NOT local",
                keep.removals,
            ),
        ]
        .into_iter()
        .enumerate()
        {
            counts[n] = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE {column} < now() - make_interval(secs => $1){extra}"
            )))
            .bind(age.as_secs_f64())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(Pruned {
            deliveries: counts[0],
            tombstones: counts[1],
            removals: counts[2],
        })
    }
}

/// How long [`ClerkSync::prune`] keeps each kind of record. The defaults: deliveries and
/// tombstones 30 days (Svix retries a delivery for about a day and a half; a late event
/// after the tombstone is gone would apply again), the provider's removals 1 day (a session
/// token lives minutes; a removal older than every valid token refuses nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Delivery records (`webhook_deliveries`): a message id pruned is no longer a duplicate.
    pub deliveries: Duration,
    /// Tombstones of deleted provider memberships (`membership_tombstones`).
    pub tombstones: Duration,
    /// The provider's membership removals (`membership_removals`, not the application's).
    pub removals: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: Duration = Duration::from_secs(24 * 3600);
        Retention {
            deliveries: DAY * 30,
            tombstones: DAY * 30,
            removals: DAY,
        }
    }
}

impl Retention {
    /// The same age for every kind of record.
    pub fn all(age: Duration) -> Self {
        Retention {
            deliveries: age,
            tombstones: age,
            removals: age,
        }
    }
}

/// What [`ClerkSync::prune`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Pruned {
    /// Delivery records.
    pub deliveries: u64,
    /// Membership tombstones.
    pub tombstones: u64,
    /// The provider's membership removals.
    pub removals: u64,
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
        Event::OrganizationMembership(_, m) | Event::MembershipDeleted(m) => {
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
        // Instance-wide events never reach here (no organization): apply_instance_event.
        Event::Role(..)
        | Event::RoleDeleted { .. }
        | Event::Permission(..)
        | Event::PermissionDeleted { .. }
        | Event::Other { .. } => Ok(Outcome::Ignored),
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
///
/// A slug another organization of this database holds never fails the event: the state is
/// stored without a slug (`NULL`), and a later event of this organization (any version at
/// least as new) sets it once it is free. The first holder keeps it: a service unit acts
/// inside its own organization only, and when two of the provider's organizations swap a slug,
/// the event that frees it is on its way.
async fn upsert_organization(
    tx: &mut PgConnection,
    org: OrgId,
    o: &Organization,
    source: Source,
) -> Result<OrgState, SyncError> {
    let written = match o.slug.as_deref() {
        None => write_organization(tx, org, o, None, source).await?,
        Some(slug) => {
            sqlx::query("SAVEPOINT tenancy_slug")
                .execute(&mut *tx)
                .await?;
            match write_organization(tx, org, o, Some(slug), source).await {
                Ok(written) => {
                    sqlx::query("RELEASE SAVEPOINT tenancy_slug")
                        .execute(&mut *tx)
                        .await?;
                    written
                }
                Err(sqlx::Error::Database(e))
                    if e.constraint() == Some("organizations_slug_key") =>
                {
                    sqlx::query("ROLLBACK TO SAVEPOINT tenancy_slug")
                        .execute(&mut *tx)
                        .await?;
                    write_organization(tx, org, o, None, source).await?
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
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

/// Inserts, or updates if newer (or if the stored state of the same version or older lacks
/// the slug `slug` brings). `Some(deleted)` when something was written.
async fn write_organization(
    tx: &mut PgConnection,
    org: OrgId,
    o: &Organization,
    slug: Option<&str>,
    source: Source,
) -> Result<Option<bool>, sqlx::Error> {
    // RETURNING yields a row only when something was written.
    sqlx::query_scalar(
        "INSERT INTO organizations AS cur \
             (id, name, slug, external_id, created_by, external_updated_at, external_source) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (id) DO UPDATE \
         SET name = EXCLUDED.name, \
             slug = CASE WHEN cur.deleted_at IS NULL THEN EXCLUDED.slug END, \
             created_by = EXCLUDED.created_by, \
             external_updated_at = EXCLUDED.external_updated_at, \
             external_source = greatest(EXCLUDED.external_source, \
                 CASE WHEN cur.external_updated_at = EXCLUDED.external_updated_at \
                      THEN cur.external_source END) \
         WHERE cur.external_updated_at IS NULL \
            OR (cur.external_updated_at, cur.external_source) \
               < (EXCLUDED.external_updated_at, EXCLUDED.external_source) \
            OR (cur.slug IS NULL AND EXCLUDED.slug IS NOT NULL AND cur.deleted_at IS NULL \
                AND cur.external_updated_at <= EXCLUDED.external_updated_at) \
         RETURNING cur.deleted_at IS NOT NULL",
    )
    .bind(org.as_uuid())
    .bind(&o.name)
    .bind(slug)
    .bind(&o.external_id)
    .bind(&o.created_by)
    .bind(o.updated_at)
    .bind(source as i16)
    .fetch_optional(&mut *tx)
    .await
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
    m: &OrganizationMembership,
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
    // A removal made in the application stands against this membership, or any created
    // before it: only a membership created after the removal brings the user back.
    let removed_here: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM membership_removals \
                         WHERE organization_id = $1 AND user_id = $2 AND local \
                           AND removed_at >= to_timestamp($3 / 1000.0)) \
            AND NOT EXISTS (SELECT 1 FROM organization_members \
                             WHERE organization_id = $1 AND user_id = $2)",
    )
    .bind(org.as_uuid())
    .bind(m.user_id.as_str())
    .bind(m.created_at)
    .fetch_one(&mut *tx)
    .await?;
    if removed_here {
        return Ok(false);
    }
    let is_creator = m.organization.created_by.as_deref() == Some(m.user_id.as_str());
    let role = roles.role_for(&m.role, is_creator);
    // Insert, or take over the row when `m` is newer: the same membership at a later version,
    // a later membership of the user (re-invited), or a row the application added itself.
    let changed = sqlx::query(
        "INSERT INTO organization_members AS cur \
             (organization_id, user_id, role, external_id, external_created_at, external_updated_at, \
              role_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (organization_id, user_id) DO UPDATE \
         SET role = EXCLUDED.role, role_key = EXCLUDED.role_key, external_id = EXCLUDED.external_id, \
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
    .bind((!m.role.is_empty()).then_some(m.role.as_str()))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed == 1 {
        // The user is a member again: the provider confirmed a membership newer than any
        // removal, which no longer refuses claims.
        sqlx::query("DELETE FROM membership_removals WHERE organization_id = $1 AND user_id = $2")
            .bind(org.as_uuid())
            .bind(m.user_id.as_str())
            .execute(&mut *tx)
            .await?;
    }
    Ok(changed == 1)
}

/// Remembers that `m`'s membership was deleted and removes it (or a row the application added
/// for the same user); a newer membership of the user stays. Returns whether anything changed.
async fn delete_membership(
    tx: &mut PgConnection,
    org: OrgId,
    m: &OrganizationMembership,
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
