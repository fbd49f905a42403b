//! `cargo run --example actix_app -- --dev`
//!
//! The example API on actix-web 4, the same routes and answers as `axum_app` (without the
//! page): Clerk session tokens verified by `pg_tenancy::clerk`, contexts from
//! `pg_tenancy::web::actix`'s extractors, every unit of work under Row-Level Security, Clerk's
//! webhooks synced. Without `DATABASE_URL` it starts a throwaway PostgreSQL. See the README.

#[path = "../shared/mod.rs"]
mod shared;

mod app;

use std::process::ExitCode;

fn main() -> ExitCode {
    let options = match shared::Options::from_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("actix_app: {e}");
            return ExitCode::from(2);
        }
    };
    actix_web::rt::System::new().block_on(async move {
        let started = match shared::start(options).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("actix_app could not start: {e}");
                return ExitCode::FAILURE;
            }
        };
        let app = started.app.clone();
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new().configure(app::configure(app.clone()))
        })
        .workers(2)
        .listen(started.listener);
        let served = match server {
            Ok(server) => server.run().await,
            Err(e) => Err(e),
        };
        drop(started.database);
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("actix_app: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
