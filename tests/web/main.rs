//! End-to-end tests of the two example apps over HTTP (the same cases for both), the session
//! token verifier, and a browser journey through the axum app's page.

#![allow(unreachable_pub)] // The modules share helpers with `pub`; this crate exports nothing.
#[path = "../../examples/shared/mod.rs"]
mod shared;

#[path = "../../examples/axum_app/app.rs"]
mod axum_app;

#[path = "../../examples/actix_app/app.rs"]
mod actix_app;

mod adapters;
mod browser;
mod cases;
mod harness;
mod permissions;
mod requests;
#[path = "../support/mod.rs"]
mod support;
mod tokens;

macro_rules! for_both_apps {
    ($($case:ident),* $(,)?) => {
        mod axum {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let h = crate::harness::Harness::axum().await;
                    crate::cases::$case(&h).await;
                }
            )*
        }
        mod actix {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let h = crate::harness::Harness::actix().await;
                    crate::cases::$case(&h).await;
                }
            )*
        }
    };
}

for_both_apps!(
    health_and_missing_or_bad_tokens_are_401,
    each_organization_sees_only_its_own_projects,
    a_tampered_or_expired_token_is_401,
    another_organizations_project_id_is_404,
    an_organization_id_in_body_query_or_header_never_widens_access,
    a_member_cannot_do_admin_actions,
    an_admin_cannot_grant_owner,
    switching_to_an_organization_the_user_is_not_in_is_refused,
    a_session_without_an_organization_gets_onboarding_answers,
    malformed_ids_and_bodies_are_refused_in_json,
    a_webhook_creates_a_membership_that_then_works_and_a_replay_changes_nothing,
    a_forged_webhook_is_400_and_writes_nothing,
    an_oversized_webhook_is_413,
    a_membership_the_token_claims_before_the_webhook_is_applied_unless_removed_since,
    a_permission_guards_invoice_writes_and_follows_the_role_by_webhook,
);
