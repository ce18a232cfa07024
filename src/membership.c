/*-------------------------------------------------------------------------
 *
 * membership.c
 *	  Who is asking, beside the actor context (actor.c): the session user's
 *	  login and client address, and the roles it holds in a tenant.
 *
 * Roles come from schedphi.member and are checked on every audited write
 * and most calls, so each backend caches the session user's roles in the
 * tenant it last asked about.  A statement trigger on schedphi.member
 * marks the transaction, and so does a role's DDL (a login counts as a
 * member only while it holds the group role); at its commit a generation
 * counter in shared memory tells every backend that what it cached is
 * stale.  Without
 * shared_preload_libraries there is no counter and the cache lasts one
 * transaction.  A transaction that changed memberships cannot be
 * prepared: nothing runs here when a prepared transaction commits.
 *
 * schedphi_who_is_asking() puts the token (actor.c) or the login and its
 * roles together into what an audit record names (audit.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "actor.h"
#include "common.h"
#include "membership.h"

/* ------------------------------------------------------------ shared state */

typedef struct MembersShared
{
	pg_atomic_uint64 member_generation; /* bumped when any membership changes */
} MembersShared;

static MembersShared *members_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Ask for the shared generation counter (preloaded only). */
static void
members_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(MembersShared)));
}

/* Find or make the shared generation counter; it starts at 1. */
static void
members_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	members_shared = ShmemInitStruct("schedphi members", sizeof(MembersShared), &found);
	if (!found)
		pg_atomic_init_u64(&members_shared->member_generation, 1);
	LWLockRelease(AddinShmemInitLock);
}

/* ---------------------------------------------------------- the role cache */

/*
 * Memberships change rarely and are read on every audited write: the role
 * of the session user in a tenant is cached until any membership changes
 * (a generation counter in shared memory, bumped at the commit of a
 * change), or, not preloaded, for one transaction.
 */
static bool members_changed = false;

/*
 * The transaction changed roles themselves (GRANT or REVOKE of a role,
 * CREATE, ALTER, DROP or RENAME of one): a membership counts only while
 * the login holds its group role, and a superuser is one by its role, so
 * what is cached goes stale at its commit too.  (A prepared one bumps the
 * generation when it is prepared, not when it commits: sessions that
 * cache roles between the two keep them until the next change.)
 */
static bool roles_changed = false;

/*
 * Bumped when a transaction that changed memberships aborts: what this
 * backend cached during it may hold roles that were never committed.
 */
static uint64 members_rolled_back = 0;

/*
 * May what a read of memberships finds now be kept under the generation
 * read before it?  Only when the read takes a snapshot of its own (the
 * callers' SPI reads are not read-only): a repeatable read transaction
 * reads as of its start and a parallel query as of its own, both perhaps
 * older than the generation, so there it is kept no longer than the
 * transaction.
 */
static bool
reads_are_current(void)
{
	return !IsolationUsesXactSnapshot() && !IsInParallelMode();
}

/* The shared generation of memberships, or 0 when not preloaded. */
static uint64
member_generation(void)
{
	return members_shared ? pg_atomic_read_u64(&members_shared->member_generation) : 0;
}

/* The session user's roles in `tenant`, comma-separated (cached). */
static void
member_role(const pg_uuid_t *tenant, char *role, int rolelen)
{
	static SPIPlanPtr plan = NULL;
	static uint64 cached_generation = 0;
	static uint64 cached_rollbacks = 0;
	static LocalTransactionId cached_lxid = InvalidLocalTransactionId;
	static bool cached_xact_only = false;
	static pg_uuid_t cached_tenant;
	static Oid	cached_user = InvalidOid;
	static char cached_role[96];
	Oid			types[1] = {UUIDOID};
	Datum		v[1];
	uint64		gen = member_generation();

	if (cached_user == GetSessionUserId() && memcmp(cached_tenant.data, tenant->data, UUID_LEN) == 0 &&
		!members_changed && !roles_changed && cached_rollbacks == members_rolled_back &&
		(gen != 0 && !cached_xact_only ? cached_generation == gen : cached_lxid == MyProc->lxid))
	{
		strlcpy(role, cached_role, rolelen);
		return;
	}
	cached_role[0] = '\0';
	if (superuser_arg(GetSessionUserId()))
		strlcpy(cached_role, "superuser", sizeof(cached_role));
	else
	{
		v[0] = UUIDPGetDatum(tenant);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		schedphi_keep_plan(&plan,
						   "SELECT pg_catalog.array_to_string(schedphi._my_roles($1), ',')", 1, types);
		/* (not read-only: see reads_are_current) */
		if (SPI_execute_plan(plan, v, NULL, IsInParallelMode(), 1) == SPI_OK_SELECT && SPI_processed == 1)
		{
			char	   *r = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

			if (r != NULL)
				strlcpy(cached_role, r, sizeof(cached_role));
		}
		SPI_finish();
	}
	cached_generation = gen;
	cached_xact_only = !reads_are_current();
	cached_rollbacks = members_rolled_back;
	cached_lxid = MyProc->lxid;
	cached_tenant = *tenant;
	cached_user = GetSessionUserId();
	strlcpy(role, cached_role, rolelen);
}

/*
 * Does the caller hold one of `roles` in `tenant`: an assumed token for
 * that tenant with one of them, or (no token) the session user's
 * membership, from the cache above?  false means "not cleared here": the
 * caller then asks schedphi._authorize, which decides (superusers
 * included) and raises the documented refusal.
 */
bool
schedphi_has_role(const pg_uuid_t *tenant, const char *const *roles, int nroles)
{
	const SchedphiActor *a = schedphi_current_actor();
	char		held[96];
	char	   *tok;
	char	   *save = NULL;

	if (a != NULL)
	{
		if (memcmp(a->tenant.data, tenant->data, UUID_LEN) != 0)
			return false;
		for (int i = 0; i < nroles; i++)
			if (strcmp(a->role, roles[i]) == 0)
				return true;
		return false;
	}
	member_role(tenant, held, sizeof(held));
	for (tok = strtok_r(held, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save))
		for (int i = 0; i < nroles; i++)
			if (strcmp(tok, roles[i]) == 0)
				return true;
	return false;
}

/*
 * A version of the memberships (and rate limits) this backend may cache
 * what it derived from: false when it may not (this transaction changed
 * them, or the caller's read cannot be current: reads_are_current); not
 * preloaded, the version is good for this transaction only.
 */
bool
schedphi_membership_version(uint64 *version)
{
	uint64		gen = member_generation();

	if (members_changed || roles_changed || !reads_are_current())
		return false;
	*version = (gen != 0 ? gen : (uint64) MyProc->lxid << 32) ^ (members_rolled_back << 48);
	return true;
}

PG_FUNCTION_INFO_V1(schedphi_member_role_sql);

/*
 * _member_role(tenant uuid, roles text[]) -> text
 * The role the caller acts with in the tenant, the first of `roles` it
 * holds: the assumed token's (if for this tenant and one of them), else
 * 'superuser' for a superuser, else the session user's membership (from
 * the cache above); NULL for none.  Strict.
 */
Datum
schedphi_member_role_sql(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *tenant = PG_GETARG_UUID_P(0);
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(1);
	const SchedphiActor *a = schedphi_current_actor();
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	char		held[96];

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (a != NULL)
	{
		if (memcmp(a->tenant.data, tenant->data, UUID_LEN) == 0)
			for (int i = 0; i < n; i++)
				if (!nulls[i] && strcmp(TextDatumGetCString(elems[i]), a->role) == 0)
					PG_RETURN_TEXT_P(cstring_to_text(a->role));
		PG_RETURN_NULL();
	}
	member_role(tenant, held, sizeof(held));
	if (strcmp(held, "superuser") == 0)
		PG_RETURN_TEXT_P(cstring_to_text("superuser"));
	for (int i = 0; i < n; i++)
	{
		char	   *want;
		char	   *tok;
		char	   *save = NULL;
		char		copy[96];

		if (nulls[i])
			continue;
		want = TextDatumGetCString(elems[i]);
		strlcpy(copy, held, sizeof(copy));
		for (tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save))
			if (strcmp(tok, want) == 0)
				PG_RETURN_TEXT_P(cstring_to_text(want));
	}
	PG_RETURN_NULL();
}

/*
 * The tenants where the session user holds a role, as _role_tenants_read
 * returns them, cached as member_role's roles are (a few roles at once:
 * an integration login asks for one on every message).
 */
#define ROLE_TENANTS_SLOTS 8

typedef struct RoleTenants
{
	Oid			user;			/* InvalidOid: a free slot */
	char		role[32];
	uint64		generation;
	uint64		rollbacks;
	LocalTransactionId lxid;
	ArrayType  *tenants;		/* in TopMemoryContext */
} RoleTenants;

static RoleTenants role_tenants[ROLE_TENANTS_SLOTS];
static int	role_tenants_next = 0;

/*
 * The memberships in `role`, read afresh (SPI; a copy in the caller's
 * context; not read-only: see reads_are_current).
 */
static ArrayType *
role_tenants_read(text *role)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {TEXTOID};
	Datum		v[1] = {PointerGetDatum(role)};
	MemoryContext caller = CurrentMemoryContext;
	ArrayType  *result = NULL;
	bool		isnull = true;
	Datum		d;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	schedphi_keep_plan(&plan, "SELECT schedphi._role_tenants_read($1)", 1, types);
	if (SPI_execute_plan(plan, v, NULL, IsInParallelMode(), 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "_role_tenants_read returned no row");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
	{
		MemoryContext spi = MemoryContextSwitchTo(caller);

		result = DatumGetArrayTypePCopy(d);
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();
	return result ? result : construct_empty_array(UUIDOID);
}

PG_FUNCTION_INFO_V1(schedphi_role_tenants_sql);

/*
 * _role_tenants(role text) -> uuid[]
 * The tenants where the caller acts with `role`: the assumed token's
 * tenant when that is its role, else the session user's memberships in
 * it (_role_tenants_read, cached until memberships or roles change).
 * Empty, never NULL: a NULL role holds nothing.
 */
Datum
schedphi_role_tenants_sql(PG_FUNCTION_ARGS)
{
	const SchedphiActor *a = schedphi_current_actor();
	text	   *role;
	char	   *want;
	uint64		gen = member_generation();
	Oid			user = GetSessionUserId();
	RoleTenants *slot = NULL;
	ArrayType  *found;
	ArrayType  *copy;
	bool		cacheable;

	if (PG_ARGISNULL(0))
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(UUIDOID));
	role = PG_GETARG_TEXT_PP(0);
	want = text_to_cstring(role);
	if (a != NULL)
	{
		if (strcmp(a->role, want) == 0)
		{
			pg_uuid_t  *t = palloc(sizeof(pg_uuid_t));
			Datum		e;

			*t = a->tenant;
			e = UUIDPGetDatum(t);
			PG_RETURN_ARRAYTYPE_P(construct_array(&e, 1, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
		}
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(UUIDOID));
	}
	cacheable = strlen(want) < sizeof(slot->role) && !members_changed && !roles_changed && reads_are_current();
	if (cacheable)
		for (int i = 0; i < ROLE_TENANTS_SLOTS; i++)
		{
			RoleTenants *r = &role_tenants[i];

			if (r->user != user || strcmp(r->role, want) != 0)
				continue;
			slot = r;
			if (r->rollbacks == members_rolled_back &&
				(gen != 0 ? r->generation == gen : r->lxid == MyProc->lxid))
				PG_RETURN_ARRAYTYPE_P(DatumGetArrayTypePCopy(PointerGetDatum(r->tenants)));
			break;
		}
	found = role_tenants_read(role);
	if (!cacheable)
		PG_RETURN_ARRAYTYPE_P(found);
	if (slot == NULL)
	{
		slot = &role_tenants[role_tenants_next];
		role_tenants_next = (role_tenants_next + 1) % ROLE_TENANTS_SLOTS;
	}
	copy = (ArrayType *) MemoryContextAlloc(TopMemoryContext, VARSIZE(found));
	memcpy(copy, found, VARSIZE(found));
	if (slot->tenants != NULL)
		pfree(slot->tenants);
	slot->tenants = copy;
	strlcpy(slot->role, want, sizeof(slot->role));
	slot->generation = gen;
	slot->rollbacks = members_rolled_back;
	slot->lxid = MyProc->lxid;
	slot->user = user;
	PG_RETURN_ARRAYTYPE_P(found);
}

/* Role DDL (schedphi.c's utility hook): see roles_changed. */
void
schedphi_members_utility(Node *node)
{
	if (node == NULL)
		return;
	switch (nodeTag(node))
	{
		case T_GrantRoleStmt:
		case T_CreateRoleStmt:
		case T_AlterRoleStmt:
		case T_DropRoleStmt:
			roles_changed = true;
			break;
		case T_RenameStmt:
			if (((RenameStmt *) node)->renameType == OBJECT_ROLE)
				roles_changed = true;
			break;
		default:
			break;
	}
}

PG_FUNCTION_INFO_V1(schedphi_members_changed);

/*
 * Statement trigger on schedphi.member (and rate_limit): at commit, tell
 * every backend that the roles it cached are stale.  Also called as a
 * function, _note_members_changed(), by the functions that change them: on
 * Citus the trigger fires on the shard's node, and this is how the
 * coordinator, where identity is decided, learns of it.
 */
Datum
schedphi_members_changed(PG_FUNCTION_ARGS)
{
	members_changed = true;
	if (CALLED_AS_TRIGGER(fcinfo))
		return PointerGetDatum(NULL);
	PG_RETURN_VOID();
}


/* --------------------------------------------------------- who is asking */

static char *client_addr = NULL;
static bool client_addr_known = false;

/* The client's IP address as text, or NULL (Unix socket, background). */
static const char *
client_address(void)
{
	if (!client_addr_known)
	{
		LOCAL_FCINFO(fc, 0);
		Datum		d;

		client_addr_known = true;
		InitFunctionCallInfoData(*fc, NULL, 0, InvalidOid, NULL, NULL);
		d = inet_client_addr(fc);
		if (!fc->isnull)
			client_addr = MemoryContextStrdup(TopMemoryContext, DatumGetCString(DirectFunctionCall1(inet_out, d)));
	}
	return client_addr;
}

/*
 * The session user's name, cached per user; looked up in the catalog only
 * when may_lookup (not while an error is being reported).
 */
const char *
schedphi_session_login(bool may_lookup)
{
	static Oid	cached_oid = InvalidOid;
	static char cached_name[NAMEDATALEN];
	Oid			user = GetSessionUserId();

	if (user != cached_oid)
	{
		char	   *name = may_lookup ? GetUserNameFromId(user, true) : NULL;

		if (name != NULL)
			strlcpy(cached_name, name, sizeof(cached_name));
		else
			snprintf(cached_name, sizeof(cached_name), "oid %u", user);
		cached_oid = name != NULL ? user : InvalidOid;
	}
	return cached_name;
}

PG_FUNCTION_INFO_V1(schedphi_login_sql);

/*
 * _login() -> name: the session user, as a function (the tables' defaults
 * and the functions' writes use it: Citus sends SESSION_USER, a keyword,
 * to the worker node, whose session is its own connection's; a function
 * it evaluates on the coordinator first).
 */
Datum
schedphi_login_sql(PG_FUNCTION_ARGS)
{
	Name		n = palloc0(NAMEDATALEN);

	namestrcpy(n, schedphi_session_login(true));
	PG_RETURN_NAME(n);
}

/*
 * Fill in who is asking.  tenant: the tenant the event concerns, if known
 * (an assumed token's tenant wins).  may_query: whether the catalog and SPI
 * may be used (the login's name and membership role); not while an error
 * is being reported.
 */
void
schedphi_who_is_asking(Who *w, const pg_uuid_t *tenant, bool may_query)
{
	const SchedphiActor *a = schedphi_current_actor();
	const char *p = schedphi_current_purpose();

	memset(w, 0, sizeof(Who));
	strlcpy(w->login, schedphi_session_login(may_query), sizeof(w->login));
	if (a != NULL)
	{
		strlcpy(w->actor, a->sub, sizeof(w->actor));
		strlcpy(w->role, a->role, sizeof(w->role));
		w->has_tenant = true;
		w->tenant = a->tenant;
	}
	else
	{
		strlcpy(w->actor, w->login, sizeof(w->actor));
		if (tenant != NULL)
		{
			w->has_tenant = true;
			w->tenant = *tenant;
			if (may_query)
				member_role(tenant, w->role, sizeof(w->role));
		}
		else if (may_query && superuser_arg(GetSessionUserId()))
			strlcpy(w->role, "superuser", sizeof(w->role));
	}
	if (p != NULL)
		strlcpy(w->purpose, p, sizeof(w->purpose));
	w->client = (char *) client_address();
	if (application_name != NULL)
		strlcpy(w->application, application_name, sizeof(w->application));
}

/* ---------------------------------------------------- end of a transaction */

/*
 * The end of a transaction that changed memberships: at commit, every
 * backend's cached roles become stale; after a rollback, what this backend
 * cached meanwhile is dropped.
 */
static void
members_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:

			/*
			 * Cached roles are dropped when a membership change commits, and
			 * nothing runs here when a prepared transaction commits: a
			 * revoked role could outlive it in other sessions' caches.
			 */
			/*
			 * (On a Citus worker node no identity is decided: the shard's
			 * part of a coordinator's transaction may be prepared.)
			 */
			if (members_changed && !schedphi_citus_internal_backend())
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that changed schedphi memberships"),
						 errhint("Change memberships in a transaction that commits directly.")));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			if (members_changed || roles_changed)
				members_rolled_back++;
			members_changed = false;
			roles_changed = false;
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			if ((members_changed || roles_changed) && members_shared != NULL)
				pg_atomic_fetch_add_u64(&members_shared->member_generation, 1);
			members_changed = false;
			roles_changed = false;
			break;
		default:
			break;
	}
}

/* ------------------------------------------------------------------- init */

/* The end-of-transaction callback and, when preloaded, the shared counter. */
void
schedphi_membership_init(void)
{
	RegisterXactCallback(members_xact_callback, NULL);
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = members_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = members_shmem_startup;
}
