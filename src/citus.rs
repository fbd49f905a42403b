//! Scale-out on Citus: the coordinator's one-time set-up, run after the migrations.
//!
//! On Citus the policies of a distributed table run on the workers, in the shard queries, so
//! the unit's context has to reach them: [`SETUP`] makes every entry send it on (as `SET
//! LOCAL`, which Citus propagates with `citus.propagate_set_commands = 'local'`, in the same
//! `BEGIN` round trip), with the session settings the entry checked and the unit's distributed
//! transaction, the only one in which a worker takes the context (a context left at session
//! level on a worker connection is void in every later transaction). The context functions
//! of tenant policies become PL/pgSQL there (the workers plan every shard statement again,
//! and would parse an inlined body each time). It also creates
//! `tenancy_distribute(table)`, which distributes a tenant table by `organization_id`,
//! colocated with the others. The crate's own tables stay on the coordinator. See
//! `docs/scaling.md` for the recipe as tested, and for what the workers' checks cost.
//!
//! ```sql
//! -- as the migrations' owner, on the coordinator, once:
//! \set ON_ERROR_STOP on                   -- psql: stop at the first refusal
//! \i src/citus.sql                       -- or execute pg_tenancy::citus::SETUP
//! SELECT tenancy_distribute('projects');  -- each tenant table, policies in the bare form
//! ```
//!
//! Hardened mode is refused on Citus (its seal is not verified on the workers).

/// The set-up SQL (`src/citus.sql`): run it once on the coordinator, after the migrations, as
/// the role that ran them. It refuses a database without the `citus` extension, and one in
/// hardened mode.
pub const SETUP: &str = include_str!("citus.sql");
