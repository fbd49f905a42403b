-- pg_tenancy_entry 0.1: tenancy_enter_c, the default mode's tenancy_enter as a C procedure.
-- Created in the crate's schema (CREATE EXTENSION pg_tenancy_entry SCHEMA <schema>): it reads
-- organization_members, organizations and tenancy_role_permissions() in the schema it lives in.
\echo Use "CREATE EXTENSION pg_tenancy_entry" to load this file. \quit

CREATE PROCEDURE @extschema@.tenancy_enter_c(org uuid, member text, required text,
                                             act_as_required boolean, session_expected text)
    LANGUAGE C
    AS 'MODULE_PATHNAME', 'tenancy_enter_c';
