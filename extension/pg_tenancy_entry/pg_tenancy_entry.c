/*
 * pg_tenancy_entry: the default mode's member entry, `tenancy_enter`
 * (migrations/20260101000002_tenancy_context.sql), as a C procedure, `tenancy_enter_c`.
 *
 * A prototype for issue 17 (docs/benchmarks.md, "An entry in C, measured"): the same checks
 * in the same order, the same SQLSTATEs and messages, the same transaction-local settings,
 * with the membership lookup done through the two primary-key indexes directly (no parser,
 * planner or executor, no row-level security: the entry is the authority that decides the
 * context the policies then read). Not shipped, not wired into the crate.
 *
 * Skipped: `tenancy_propagate_context()` (Citus only; nothing on one server).
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_index.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/lockdefs.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(tenancy_enter_c);

/* The settings tenancy_session_settings() joins with '|', in its order (search_path last). */
static const char *const session_setting_names[] = {
	"statement_timeout",
	"lock_timeout",
	"idle_in_transaction_session_timeout",
	"idle_session_timeout",
	"row_security",
	"synchronous_commit",
	"exit_on_error",
	"TimeZone",
	"DateStyle",
	"IntervalStyle",
	"bytea_output",
	"standard_conforming_strings",
	"array_nulls",
	"extra_float_digits",
	"transaction_timeout",
	"search_path",
};

/* tenancy_session_settings(): concat_ws('|', current_setting(...), ...), as one palloc'd string. */
static char *
session_settings(void)
{
	StringInfoData buf;
	size_t		i;

	initStringInfo(&buf);
	for (i = 0; i < lengthof(session_setting_names); i++)
	{
		/*
		 * current_setting(name, true): the same text; NULL only for a setting this server
		 * does not have (transaction_timeout before PostgreSQL 17), which concat_ws skips.
		 */
		char	   *value = GetConfigOptionByName(session_setting_names[i], NULL, true);

		if (value == NULL)
			continue;
		if (i > 0)
			appendStringInfoChar(&buf, '|');
		appendStringInfoString(&buf, value);
	}
	return buf.data;
}

/* transaction_timestamp()::text, as this session prints it (TimeZone, DateStyle). */
static char *
transaction_timestamp_text(void)
{
	return DatumGetCString(DirectFunctionCall1(timestamptz_out,
											   TimestampTzGetDatum(GetCurrentTransactionStartTimestamp())));
}

/* set_config(name, value, true), as set_config_by_name calls it (a NULL value resets). */
static void
set_local(const char *name, const char *value)
{
	(void) set_config_option(name, value,
							 superuser() ? PGC_SUSET : PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
}

/* tenancy_role_rank(role): owner 3, admin 2, member 1, anything else (NULL included) 0. */
static int
role_rank(const char *role)
{
	if (role == NULL)
		return 0;
	if (strcmp(role, "owner") == 0)
		return 3;
	if (strcmp(role, "admin") == 0)
		return 2;
	if (strcmp(role, "member") == 0)
		return 1;
	return 0;
}

static Oid
relation_in(const char *name, Oid schema)
{
	Oid			relid = get_relname_relid(name, schema);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("tenancy: relation \"%s\" not found in schema \"%s\"",
						name, get_namespace_name(schema))));
	return relid;
}

static AttrNumber
column_of(Relation rel, const char *name)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			i;

	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->attnum;
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_COLUMN),
			 errmsg("tenancy: column \"%s\" not found in \"%s\"",
					name, RelationGetRelationName(rel))));
	return InvalidAttrNumber;	/* not reached */
}

/*
 * The index must be the one the lookup assumes: a valid unique btree index without a predicate
 * whose key columns are `columns`, in order (a replaced index of another shape would make the
 * scan keys mean something else, or miss rows).
 */
static void
check_index(Relation index, Relation heap, const char *const *columns, int ncolumns)
{
	int			i;

	if (index->rd_index->indrelid != RelationGetRelid(heap)
		|| index->rd_index->indnkeyatts != ncolumns
		|| !index->rd_index->indisunique
		|| !index->rd_index->indisvalid
		|| !heap_attisnull(index->rd_indextuple, Anum_pg_index_indpred, NULL)
		|| index->rd_rel->relam != BTREE_AM_OID)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tenancy: index \"%s\" is not the lookup's index",
						RelationGetRelationName(index))));
	for (i = 0; i < ncolumns; i++)
		if (index->rd_index->indkey.values[i] != column_of(heap, columns[i]))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("tenancy: index \"%s\" is not the lookup's index",
							RelationGetRelationName(index))));
}

#ifndef TENANCY_PERMISSIONS_FROM_TABLE
/*
 * tenancy_role_permissions(key), the schema's generated SQL function (migration 7), called
 * through fmgr; NULL when it returns NULL. (On PostgreSQL 15 a SQL function called this way
 * is parsed and planned again in every transaction: the largest part of this entry's cost,
 * docs/benchmarks.md.)
 */
static char *
role_permissions(Oid schema, const char *key)
{
	Oid			argtype = TEXTOID;
	Oid			fn = GetSysCacheOid3(PROCNAMEARGSNSP, Anum_pg_proc_oid,
									 CStringGetDatum("tenancy_role_permissions"),
									 PointerGetDatum(buildoidvector(&argtype, 1)),
									 ObjectIdGetDatum(schema));
	FmgrInfo	finfo;
	LOCAL_FCINFO(call, 1);
	Datum		result;

	if (!OidIsValid(fn))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("tenancy: function tenancy_role_permissions(text) not found in schema \"%s\"",
						get_namespace_name(schema))));
	fmgr_info(fn, &finfo);
	InitFunctionCallInfoData(*call, &finfo, 1, DEFAULT_COLLATION_OID, NULL, NULL);
	call->args[0].value = CStringGetTextDatum(key);
	call->args[0].isnull = false;
	result = FunctionCallInvoke(call);
	return call->isnull ? NULL : TextDatumGetCString(result);
}
#else
/*
 * An experiment, off by default (`make PG_CPPFLAGS=-DTENANCY_PERMISSIONS_FROM_TABLE`): the
 * value tenancy_role_permissions(key) is generated from, read from tenancy_roles through
 * tenancy_roles_pkey: `permissions` of the row with that key, '' without one. The generated
 * function is one CASE over the rows whose permissions are not '' (rebuilt by every statement
 * that writes the table, in its transaction), so the two answer alike; the function reads the
 * definitions as last committed, this read under a snapshot taken now.
 */
static char *
role_permissions(Oid schema, const char *key)
{
	static const char *const roles_key[] = {"key"};
	Relation	roles = table_open(relation_in("tenancy_roles", schema), AccessShareLock);
	Relation	roles_pkey = index_open(relation_in("tenancy_roles_pkey", schema), AccessShareLock);
	Snapshot	snapshot;
	ScanKeyData skey;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	char	   *permissions = "";

	check_index(roles_pkey, roles, roles_key, 1);
	snapshot = RegisterSnapshot(GetTransactionSnapshot());
	ScanKeyEntryInitialize(&skey, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   roles_pkey->rd_indcollation[0], F_TEXTEQ, CStringGetTextDatum(key));
	slot = table_slot_create(roles, NULL);
	scan = index_beginscan(roles, roles_pkey, snapshot, 1, 0);
	index_rescan(scan, &skey, 1, NULL, 0);
	if (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		Datum		value = slot_getattr(slot, column_of(roles, "permissions"), &isnull);

		if (!isnull)
			permissions = TextDatumGetCString(value);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snapshot);
	index_close(roles_pkey, NoLock);
	table_close(roles, NoLock);
	return permissions;
}
#endif

/* tenancy_enter_c(org uuid, member text, required text, act_as_required boolean,
 *                 session_expected text): see tenancy_enter. */
Datum
tenancy_enter_c(PG_FUNCTION_ARGS)
{
	/* The SQL procedure is not STRICT: a NULL argument fails where the SQL one fails. */
	pg_uuid_t  *org = PG_ARGISNULL(0) ? NULL : PG_GETARG_UUID_P(0);
	char	   *member = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *required = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	/* CASE WHEN act_as_required: NULL takes the ELSE branch, as false does. */
	bool		act_as_required = PG_ARGISNULL(3) ? false : PG_GETARG_BOOL(3);
	char	   *session_expected = PG_ARGISNULL(4) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(4));
	char	   *lock_before = GetConfigOptionByName("lock_timeout", NULL, false);
	char	   *unit = transaction_timestamp_text();
	char	   *entered_unit = GetConfigOptionByName("app.current_unit", NULL, true);
	bool		entered = entered_unit != NULL && strcmp(entered_unit, unit) == 0;
	char	   *settings;
	Oid			temp_schema;
	Oid			temp_toast_schema;
	Oid			schema;
	char	   *found_role = NULL;
	char	   *found_key = NULL;
	char	   *found_perms = NULL;
	int			rank_required;
	int			rank_found;

	/* The session: same role, same settings, no temporary schema, not entered yet. */
	settings = session_settings();
	GetTempNamespaceState(&temp_schema, &temp_toast_schema);
	if (GetUserId() != GetSessionUserId()
		|| session_expected == NULL || strcmp(settings, session_expected) != 0
		|| OidIsValid(temp_schema)
		|| entered)
	{
		if (entered)
			ereport(ERROR,
					(errcode(MAKE_SQLSTATE('T', 'N', 'C', '0', '9')),
					 errmsg("tenancy: this transaction already entered a unit")));
		ereport(ERROR,
				(errcode(MAKE_SQLSTATE('T', 'N', 'C', '0', '5')),
				 errmsg("tenancy: session not clean (role, settings or temporary objects)")));
	}

	set_local("app.current_unit", unit);
	set_local("app.current_org_id",
			  org ? DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(org))) : NULL);
	set_local("app.current_user_id", member);
	set_local("lock_timeout", "2s");

	/*
	 * The membership of (org, member) in a live organization: organization_members_pkey, then
	 * organizations_pkey, under a snapshot taken after their locks (as a statement's). The
	 * tables are locked whatever the arguments, as the SQL lookup's planning locks them; a
	 * NULL org or member matches no row (the SQL's `=` is never true for NULL).
	 */
	schema = get_func_namespace(fcinfo->flinfo->fn_oid);
	{
		static const char *const member_key[] = {"organization_id", "user_id"};
		static const char *const org_key[] = {"id"};
		Relation	members = table_open(relation_in("organization_members", schema), AccessShareLock);
		Relation	members_pkey = index_open(relation_in("organization_members_pkey", schema), AccessShareLock);
		Relation	orgs = table_open(relation_in("organizations", schema), AccessShareLock);
		Relation	orgs_pkey = index_open(relation_in("organizations_pkey", schema), AccessShareLock);
		Snapshot	snapshot;
		ScanKeyData keys[2];
		IndexScanDesc scan;
		TupleTableSlot *slot;

		check_index(members_pkey, members, member_key, 2);
		check_index(orgs_pkey, orgs, org_key, 1);
		snapshot = RegisterSnapshot(GetTransactionSnapshot());

		if (org != NULL && member != NULL)
		{
			ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, InvalidOid,
								   members_pkey->rd_indcollation[0], F_UUID_EQ, UUIDPGetDatum(org));
			ScanKeyEntryInitialize(&keys[1], 0, 2, BTEqualStrategyNumber, InvalidOid,
								   members_pkey->rd_indcollation[1], F_TEXTEQ, CStringGetTextDatum(member));
			slot = table_slot_create(members, NULL);
			scan = index_beginscan(members, members_pkey, snapshot, 2, 0);
			index_rescan(scan, keys, 2, NULL, 0);
			if (index_getnext_slot(scan, ForwardScanDirection, slot))
			{
				bool		isnull;
				Datum		value;

				value = slot_getattr(slot, column_of(members, "role"), &isnull);
				if (!isnull)
					found_role = TextDatumGetCString(value);
				value = slot_getattr(slot, column_of(members, "role_key"), &isnull);
				if (!isnull)
					found_key = TextDatumGetCString(value);
			}
			index_endscan(scan);
			ExecDropSingleTupleTableSlot(slot);

			if (found_role != NULL)
			{
				bool		live = false;

				ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, InvalidOid,
									   orgs_pkey->rd_indcollation[0], F_UUID_EQ, UUIDPGetDatum(org));
				slot = table_slot_create(orgs, NULL);
				scan = index_beginscan(orgs, orgs_pkey, snapshot, 1, 0);
				index_rescan(scan, keys, 1, NULL, 0);
				if (index_getnext_slot(scan, ForwardScanDirection, slot))
				{
					bool		isnull;

					(void) slot_getattr(slot, column_of(orgs, "deleted_at"), &isnull);
					live = isnull;
				}
				index_endscan(scan);
				ExecDropSingleTupleTableSlot(slot);
				if (!live)
				{
					found_role = NULL;
					found_key = NULL;
				}
			}
		}
		UnregisterSnapshot(snapshot);
		/* Locks are kept to the end of the transaction, as a statement's are. */
		index_close(orgs_pkey, NoLock);
		table_close(orgs, NoLock);
		index_close(members_pkey, NoLock);
		table_close(members, NoLock);
	}

	/* The permissions of coalesce(role_key, role). */
	if (found_role != NULL)
		found_perms = role_permissions(schema, found_key ? found_key : found_role);

	rank_required = role_rank(required);
	rank_found = role_rank(found_role);
	if (found_role == NULL)
		ereport(ERROR,
				(errcode(MAKE_SQLSTATE('T', 'N', 'C', '0', '1')),
				 errmsg("tenancy: not a member of this organization")));
	if (rank_required == 0)
		/* RAISE prints a NULL parameter as <NULL>. */
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("tenancy: unknown role %s", required ? required : "<NULL>")));
	/* An unranked membership role compares as NULL in SQL: not below. */
	if (rank_found != 0 && rank_found < rank_required)
		ereport(ERROR,
				(errcode(MAKE_SQLSTATE('T', 'N', 'C', '0', '2')),
				 errmsg("tenancy: role below the required role"),
				 errdetail("%s", found_role)));

	/* The permissions of the membership's role, unless the unit acts with a lower role. */
	set_local("app.current_org_role", act_as_required ? required : found_role);
	set_local("app.current_permissions",
			  act_as_required && strcmp(required, found_role) != 0 ? ""
			  : (found_perms ? found_perms : ""));
	set_local("lock_timeout", lock_before);
	/* tenancy_propagate_context() is not called: nothing on one server (Citus only). */

	PG_RETURN_VOID();
}
