//! `cargo run --example axum_app -- --dev`
//!
//! The example API on axum 0.8: Clerk session tokens verified by `pg_tenancy::clerk`, contexts
//! from `pg_tenancy::web::axum`'s extractors, every unit of work under Row-Level Security, Clerk's
//! webhooks synced. Without `DATABASE_URL` it starts a throwaway PostgreSQL. `--dev` signs
//! tokens locally (`POST /dev/token`) and serves the page at `/`; without it, set
//! `CLERK_ISSUER` (and `CLERK_AUTHORIZED_PARTIES`, `CLERK_WEBHOOK_SECRET`). See the README.

#[path = "../shared/mod.rs"]
mod shared;

mod app;

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let options = match shared::Options::from_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("axum_app: {e}");
            return ExitCode::from(2);
        }
    };
    let started = match shared::start(options).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("axum_app could not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::from_std(started.listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("axum_app: {e}");
            return ExitCode::FAILURE;
        }
    };
    let router = app::router(started.app);
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    drop(started.database);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("axum_app: {e}");
            ExitCode::FAILURE
        }
    }
}
