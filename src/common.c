/*-------------------------------------------------------------------------
 *
 * common.c
 *	  What every schedphi C file may use: whether the library was
 *	  preloaded, and the plans of the queries it keeps.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "common.h"

/* Set by _PG_init (schedphi.c). */
bool		schedphi_preloaded = false;

/* The value of a hex digit (either case), or -1. */
int
schedphi_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Is Citus installed in this database?  (in a transaction) */
bool
schedphi_citus_present(void)
{
	return OidIsValid(get_extension_oid("citus", true));
}

/*
 * Is this database under Citus?  Cheap where Citus is not preloaded (the
 * answer is kept for the backend's life); else the catalog is asked.
 */
bool
schedphi_citus_active(void)
{
	static int	preloaded = -1;

	if (preloaded < 0)
	{
		const char *libs = GetConfigOption("shared_preload_libraries", true, false);

		preloaded = libs != NULL && strstr(libs, "citus") != NULL ? 1 : 0;
	}
	return preloaded == 1 && schedphi_citus_present();
}

PG_FUNCTION_INFO_V1(schedphi_citus_active_sql);

/* _citus_active() -> boolean: schedphi_citus_active(), for SQL that must differ */
Datum
schedphi_citus_active_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(schedphi_citus_active());
}

/*
 * Is this backend one of Citus's own connections from another node?  Those
 * run the shard's part of a coordinator's transaction (which Citus may
 * commit in two phases); no identity is decided in them.
 */
bool
schedphi_citus_internal_backend(void)
{
	const char *app = GetConfigOption("application_name", true, false);

	return app != NULL && strncmp(app, "citus_internal", 14) == 0;
}

/*
 * Is this a Citus worker node, rather than the coordinator or a database
 * without Citus?  (connected to SPI)  Workers hold shards; the ledger's
 * partitions and its sealing are the coordinator's.
 */
bool
schedphi_citus_worker_node(void)
{
	bool		isnull;

	if (!schedphi_citus_present())
		return false;
	if (SPI_execute("SELECT pg_catalog.citus_is_coordinator()", true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "schedphi: could not ask Citus which node this is");
	return !DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Prepare a query once per backend and keep the plan (the caller is
 * connected to SPI).  The plans are generic: every query schedphi keeps
 * has the same shape whatever its parameters, and re-planning it on every
 * call would cost more than running it.  Except under Citus, which cannot
 * route a generic plan's query to its shard (it knows the tenant only from
 * the values): there the plan cache decides, and Citus has it plan each
 * call with its values.
 */
SPIPlanPtr
schedphi_keep_plan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes,
											  schedphi_citus_present() ? 0 : CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL)
			elog(ERROR, "schedphi: could not prepare \"%s\": %s", sql,
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "schedphi: could not keep the plan of \"%s\"", sql);
		*slot = plan;
	}
	return *slot;
}

/*
 * An empty hash table of entries led by a keysize-byte key, for a cache
 * that lasts the backend and starts afresh when what it caches changes:
 * its memory is *cxt, made under CacheMemoryContext on first use and
 * emptied (with any table made before in it) on every later call.  The
 * caller forgets its old table before calling, so that nothing points into
 * freed memory if this fails.  name must be a string constant (the
 * context keeps the pointer).
 */
HTAB *
schedphi_cache_table(MemoryContext *cxt, const char *name, Size keysize, Size entrysize)
{
	HASHCTL		ctl;

	if (*cxt == NULL)
		*cxt = AllocSetContextCreateInternal(CacheMemoryContext, name, ALLOCSET_DEFAULT_SIZES);
	else
		MemoryContextReset(*cxt);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = keysize;
	ctl.entrysize = entrysize;
	ctl.hcxt = *cxt;
	return hash_create(name, 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/*
 * Run fn(arg) in a subtransaction.  True when it completed; false when it
 * raised refused_code or refused_code2 (0: none), in which case its work is
 * undone and the error dropped.  Any other error is raised as it came.
 * The caller's memory context and resource owner are current afterwards.
 */
bool
schedphi_in_subtransaction(void (*fn) (void *arg), void *arg, int refused_code, int refused_code2)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool done = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		if (edata->sqlerrcode != refused_code && edata->sqlerrcode != refused_code2)
			ReThrowError(edata);
		FreeErrorData(edata);
		done = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return done;
}
