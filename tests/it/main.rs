//! Integration tests against a real PostgreSQL (the `testing` harness starts one).
//!
//! Isolation cases run twice: as the application role (neither superuser nor BYPASSRLS) and as
//! the tables' owner (subject to the policies only through FORCE ROW LEVEL SECURITY).

mod audit;
mod bouncer;
mod claims;
mod clerk;
mod common;
mod downstream;
mod features;
mod generator;
mod hardened;
mod hostile;
mod isolation;
mod leaks;
mod load;
mod membership;
mod migrations;
mod permissions;
mod postgres_limits;
mod restart;
mod review;
mod round_trips;
mod spans;
#[path = "../support/mod.rs"]
mod support;
mod trust;
mod webhook;
