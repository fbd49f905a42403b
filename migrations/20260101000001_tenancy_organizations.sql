-- pg-tenancy 1/7: organizations and their memberships.
--
-- Provides the tables `organizations` and `organization_members`, both with Row-Level Security
-- enabled and forced: until the policies of the later files exist, nobody (the owner included)
-- reads or writes a row. The policies are in ..._03_tenancy_roles.sql (members' requests) and
-- ..._04_tenancy_service.sql (the identity-provider sync).
--
-- The whole set runs as a non-superuser database owner on an empty database, in file-name
-- order: `pg_tenancy::migrations::migrate`, `sqlx migrate run`, or `psql -f`. It creates no
-- roles and no application tables; it needs the NOLOGIN role `tenancy_service` (file 4).

CREATE TABLE organizations (
    id                  uuid        PRIMARY KEY,
    name                text        NOT NULL,
    -- NULL once the organization is deleted (frees the slug) or when the identity provider
    -- has slugs turned off.
    slug                text        UNIQUE,
    -- The identity provider's id (Clerk: `org_...`). `id` is derived from it (UUIDv5), so
    -- request authorization and webhook sync agree without a lookup.
    external_id         text        UNIQUE,
    -- The identity provider's creator of the organization (Clerk: `created_by`).
    created_by          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- Set when the organization is deleted. The row stays as a tombstone (an identity
    -- provider's late events cannot bring it back); nobody is admitted to it any more.
    deleted_at          timestamptz,
    -- The identity provider's `updated_at` (unix ms) of the state the row holds: an older event
    -- never overwrites newer state. NULL for rows the application created itself.
    external_updated_at bigint,
    -- Where that state came from, to break ties at equal `updated_at`: 2 = an organization
    -- event, 1 = the organization embedded in a membership event (a snapshot), 0 = the
    -- application.
    external_source     smallint    NOT NULL DEFAULT 0
);

CREATE TABLE organization_members (
    organization_id     uuid        NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id             text        NOT NULL CHECK (user_id <> ''),
    role                text        NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    -- The identity provider's role key (Clerk: `org:admin`, `org:member`, `org:<custom>`), whose
    -- permissions the unit gets (`tenancy_roles`, ..._07_tenancy_permissions.sql). NULL for a
    -- membership the application made: then `role` names the permissions' role. Written by the
    -- service path only (TNC11); a request unit that changes `role` clears it (the membership's
    -- permissions then follow its new role, not the provider's old one).
    role_key            text        CHECK (role_key <> ''),
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- Which identity-provider membership (Clerk: `orgmem_...`) the row mirrors, and when it was
    -- created and last updated there (unix ms). A user removed and invited again gets a new
    -- membership id: the newer membership wins, and a removed one never comes back.
    external_id         text,
    external_created_at bigint,
    external_updated_at bigint,
    PRIMARY KEY (organization_id, user_id)
);
-- Serves the organization switcher's policy (a user's own memberships).
CREATE INDEX organization_members_user_id_idx ON organization_members (user_id);

ALTER TABLE organizations        ENABLE ROW LEVEL SECURITY;
ALTER TABLE organizations        FORCE  ROW LEVEL SECURITY;
ALTER TABLE organization_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE organization_members FORCE  ROW LEVEL SECURITY;

-- No planner statistics on the text columns whose values are other organizations' business:
-- under Row-Level Security PostgreSQL still uses a column's statistics for leakproof operators
-- (`=`, `<`), so EXPLAIN's row estimates inside one organization's unit would reveal other
-- organizations' names, slugs and user ids (docs/security.md, "What PostgreSQL itself leaves
-- open"). The crate's lookups on these columns stay index scans without them (unique keys, the
-- primary key, organization_members_user_id_idx): tests/it/postgres_limits.rs checks the plans.
-- `role` keeps its statistics: three public values; the audit is told so by the comment.
ALTER TABLE organizations
    ALTER COLUMN name        SET STATISTICS 0,
    ALTER COLUMN slug        SET STATISTICS 0,
    ALTER COLUMN external_id SET STATISTICS 0,
    ALTER COLUMN created_by  SET STATISTICS 0;
ALTER TABLE organization_members
    ALTER COLUMN user_id     SET STATISTICS 0,
    ALTER COLUMN role_key    SET STATISTICS 0,
    ALTER COLUMN external_id SET STATISTICS 0;
COMMENT ON COLUMN organization_members.role IS
    'tenancy-audit: allow. Statistics kept: owner, admin and member are no secret.';
