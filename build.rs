//! `sqlx::migrate!("./migrations")` embeds the migration files when `src/migrations.rs`
//! compiles, and stable Rust cannot tell cargo that it read them: without this, an edited
//! migration is not embedded until some source file changes too.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
