//! Keeping organizations and memberships in step with Clerk, through its (Svix-signed)
//! webhooks.
//!
//! [`ClerkSync::handle`] verifies, parses and applies one delivery and returns an [`Outcome`]
//! (answer 2xx) or a [`SyncError`] whose [`kind`](SyncError::kind) maps to 400 for a bad
//! signature or payload and to 500 for a database failure (so that Svix retries), through
//! [`ErrorKind::http_status`](crate::ErrorKind::http_status) like every error of the crate.
//!
//! | event | effect | status |
//! |---|---|---|
//! | `organization.created` / `.updated` | organization inserted, or updated if the event's `updated_at` is newer than the stored one; a deleted organization stays deleted (only its name is refreshed). A slug another organization of the database holds is stored as `NULL` instead of failing the event; the organization's next event at least as new sets it once it is free | 200 |
//! | `organization.deleted` | tombstone: `deleted_at` set, slug freed, memberships removed; tenant data kept; permanent | 200 |
//! | `organizationMembership.created` / `.updated` | the embedded organization is created or refreshed as above; the membership (Clerk `orgmem_...` id) is inserted or updated with the mapped role if its `updated_at` is newer, or if it is a newer membership of the same user (re-invited); ignored if that membership id was deleted, or if the application removed the user after the membership was created (`docs/web.md`, "Where membership truth lives") | 200 |
//! | `organizationMembership.deleted` | that membership removed, its id remembered so a late `created`/`updated` cannot restore it, and the removal recorded for membership claims (also when it arrives first); a newer membership of the same user stays | 200 |
//! | the same `svix-id` again | nothing ([`Outcome::Duplicate`]) | 200 |
//! | any other event type | nothing ([`Outcome::Ignored`]) | 200 |
//! | missing header, bad timestamp, no matching signature | nothing | 400 |
//! | malformed JSON, missing field, wrong type, unusable id | nothing | 400 |
//! | database failure | nothing (rolled back) | 500 |
//!
//! Every change runs through the RLS path with the event's organization as the context
//! ([`OrgId::from_external_id`](crate::OrgId::from_external_id), the same mapping request authorization uses); no role bypasses
//! Row-Level Security.
//!
//! The sync's bookkeeping (delivery records, tombstones, the provider's removals) has a
//! bounded lifetime: call [`ClerkSync::prune`] periodically. The identity provider's columns
//! (`external_*`, `created_by`) are written by service units only (request code gets `TNC11`).
//!
//! **Owners.** Clerk has no owner role. By default the organization's creator (`created_by`)
//! becomes [`Role::Owner`](crate::Role::Owner) while Clerk gives them `org:admin`; turn that off with
//! [`RoleMapping::with_creator_as_owner`].

mod event;
#[cfg(feature = "clerk-jwt")]
mod jwt;
mod permissions;
mod roles;
mod session;
mod sync;

pub use event::{
    Change, Event, Organization, OrganizationMembership, PayloadError, PermissionDefinition,
    RoleDefinition,
};
#[cfg(feature = "clerk-jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "clerk-jwt")))]
pub use jwt::{DEFAULT_MAX_TOKEN_LEN, KeysError, SessionTokenVerifier, TokenError};
pub use roles::RoleMapping;
pub use session::SessionClaims;
pub use sync::{ClerkSync, Outcome, Pruned, Retention, SyncError};
