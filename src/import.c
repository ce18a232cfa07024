/*-------------------------------------------------------------------------
 *
 * import.c
 *	  Bulk registration of patients: COPY schedphi.patient_import FROM ...
 *
 * The view's INSTEAD OF trigger registers each row as register_patient
 * would: the same checks and normal forms (patient_fields.c), the same
 * sealing and blind indexes, the same insert (the patient table's own
 * trigger writes the audit record), the same refusal of a taken MRN.  What
 * it saves is the per-call work that a COPY does once: the tenant is worked
 * out and authorised once per statement, and the checks, sealing, blind
 * indexes and the insert are done here in C with a kept plan instead of
 * one SQL call each.  The COPY is one statement: a bad row fails all of it.
 *
 * A COPY quotes the line it was reading in the context of any error; for
 * this view, schedphi.c's utility hook keeps only the line number
 * (schedphi_import_scrub_context).  Every column is text, so no conversion
 * error quotes a value either.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/copy.h"
#include "commands/copyfrom_internal.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "actor.h"
#include "common.h"
#include "import.h"
#include "logmask.h"
#include "patient_fields.h"
#include "sealed.h"

#define NFIELDS 7

/* The view's columns after tenant, and the patient columns they fill. */
static const char *const field_names[NFIELDS] = {
	"given", "family", "birth_date", "phone", "email", "mrn", "zip"
};

/* One statement's tenant: authorised once per statement and tenant text. */
static struct
{
	bool		valid;
	LocalTransactionId lxid;
	TimestampTz stmt;
	Oid			user;
	uint64		generation;
	char	   *given;			/* the tenant column as given, or NULL */
	pg_uuid_t	tenant;
}			stmt_tenant;

static SPIPlanPtr tenant_plan = NULL;
static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr taken_plan = NULL;

static bool
same_text(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* The row's tenant: the tenant column, or the caller's (authorised). */
static pg_uuid_t
import_tenant(const char *given)
{
	if (!(stmt_tenant.valid && stmt_tenant.lxid == MyProc->lxid &&
		  stmt_tenant.stmt == GetCurrentStatementStartTimestamp() &&
		  stmt_tenant.user == GetSessionUserId() && stmt_tenant.generation == schedphi_actor_generation() &&
		  same_text(stmt_tenant.given, given)))
	{
		Oid			types[1] = {TEXTOID};
		Datum		args[1];
		char		nulls[1] = {' '};
		bool		isnull;

		stmt_tenant.valid = false;
		if (stmt_tenant.given != NULL)
			pfree(stmt_tenant.given);
		stmt_tenant.given = NULL;
		if (given != NULL)
			args[0] = CStringGetTextDatum(given);
		else
			nulls[0] = 'n';
		schedphi_keep_plan(&tenant_plan, "SELECT schedphi._import_tenant($1)", 1, types);
		if (SPI_execute_plan(tenant_plan, args, nulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "schedphi: import tenant query failed");
		stmt_tenant.tenant = *DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (isnull)
			elog(ERROR, "schedphi: import tenant is null");
		stmt_tenant.given = given != NULL ? MemoryContextStrdup(TopMemoryContext, given) : NULL;
		stmt_tenant.lxid = MyProc->lxid;
		stmt_tenant.stmt = GetCurrentStatementStartTimestamp();
		stmt_tenant.user = GetSessionUserId();
		stmt_tenant.generation = schedphi_actor_generation();
		stmt_tenant.valid = true;
	}
	return stmt_tenant.tenant;
}

/* A text column of the view's row, or NULL. */
static char *
column_text(HeapTuple tuple, TupleDesc desc, const char *name)
{
	int			attnum = SPI_fnumber(desc, name);

	if (attnum <= 0)
		elog(ERROR, "schedphi: patient_import has no column %s", name);
	return SPI_getvalue(tuple, desc, attnum);
}

static bytea *
blind_or_null(const pg_uuid_t *tenant, const char *field, const char *value)
{
	return value == NULL ? NULL : schedphi_blind_value(tenant, field, (int) strlen(field), value, (int) strlen(value));
}

/*
 * Rows wait in a batch of up to IMPORT_BATCH, sealed and indexed, and are
 * inserted together (one statement: the executor is started once a batch,
 * not once a row): when the batch is full, and at the end of the statement
 * (the view's AFTER STATEMENT trigger).  The batch lives in the current
 * transaction's memory, so an error or a rolled-back savepoint drops it,
 * and belongs to one statement.
 */
#define IMPORT_BATCH	1000
#define NCOLS			13		/* tenant, id, 7 sealed fields, 4 blind indexes */

typedef struct ImportBatch
{
	MemoryContext cxt;			/* the statement's: holds this struct */
	MemoryContext data;			/* its child: the rows of one batch */
	MemoryContext row;			/* its child: one row's work, emptied each row */
	LocalTransactionId lxid;
	TimestampTz stmt;
	int			n;
	uint64		rows;			/* rows of the statement so far */
	Datum		cols[NCOLS][IMPORT_BATCH];
	bool		nulls[NCOLS][IMPORT_BATCH];
	uint64		line[IMPORT_BATCH]; /* COPY's line number, or the row number */
} ImportBatch;

static ImportBatch *batch = NULL;

static void
forget_batch(void *arg)
{
	batch = NULL;
}

/* This statement's batch, made on first use. */
static ImportBatch *
current_batch(void)
{
	if (batch != NULL && (batch->lxid != MyProc->lxid || batch->stmt != GetCurrentStatementStartTimestamp()))
		MemoryContextDelete(batch->cxt);	/* a statement that failed in a savepoint */
	if (batch == NULL)
	{
		MemoryContext cxt = AllocSetContextCreate(CurTransactionContext, "schedphi patient import",
												  ALLOCSET_DEFAULT_SIZES);
		MemoryContextCallback *cb = MemoryContextAlloc(cxt, sizeof(MemoryContextCallback));

		cb->func = forget_batch;
		cb->arg = NULL;
		MemoryContextRegisterResetCallback(cxt, cb);
		batch = MemoryContextAllocZero(cxt, sizeof(ImportBatch));
		batch->cxt = cxt;
		batch->data = AllocSetContextCreate(cxt, "schedphi patient import rows", ALLOCSET_DEFAULT_SIZES);
		batch->row = AllocSetContextCreate(cxt, "schedphi patient import row", ALLOCSET_SMALL_SIZES);
		batch->lxid = MyProc->lxid;
		batch->stmt = GetCurrentStatementStartTimestamp();
	}
	return batch;
}

/* The line COPY is reading (its error context knows it), or 0. */
static uint64
copy_line(void)
{
	for (ErrorContextCallback *e = error_context_stack; e != NULL; e = e->previous)
		if (e->callback == CopyFromErrorCallback && e->arg != NULL)
			return ((CopyFromState) e->arg)->cur_lineno;
	return 0;
}

static Datum
copy_datum(bytea *v, MemoryContext cxt)
{
	bytea	   *c = MemoryContextAlloc(cxt, VARSIZE(v));

	memcpy(c, v, VARSIZE(v));
	return PointerGetDatum(c);
}

/* Insert the batch; a taken MRN fails the statement, naming its line. */
static void
flush_batch(void)
{
	static const int types_of[NCOLS] = {0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2};
	Oid			sealed;
	Oid			elem[3];
	Oid			argtypes[NCOLS];
	Datum		args[NCOLS];
	bool	   *inserted;
	int			first_taken = -1;

	if (batch == NULL || batch->n == 0)
		return;
	sealed = DatumGetObjectId(DirectFunctionCall1(to_regtype, CStringGetTextDatum("schedphi.sealed")));
	elem[0] = UUIDOID;
	elem[1] = sealed;
	elem[2] = BYTEAOID;
	for (int c = 0; c < NCOLS; c++)
	{
		int			dims[1] = {batch->n};
		int			lbs[1] = {1};
		int16		typlen;
		bool		typbyval;
		char		typalign;

		get_typlenbyvalalign(elem[types_of[c]], &typlen, &typbyval, &typalign);
		argtypes[c] = get_array_type(elem[types_of[c]]);
		args[c] = PointerGetDatum(construct_md_array(batch->cols[c], batch->nulls[c], 1, dims, lbs,
													 elem[types_of[c]], typlen, typbyval, typalign));
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	schedphi_keep_plan(&insert_plan,
					   "INSERT INTO schedphi.patient AS x (tenant, id, given, family, birth_date, phone, email, mrn, "
					   "zip, mrn_idx, phone_idx, email_idx, family_dob_idx) "
					   "SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
					   "ON CONFLICT ON CONSTRAINT patient_mrn_unique DO NOTHING RETURNING x.id",
					   NCOLS, argtypes);
	if (SPI_execute_plan(insert_plan, args, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "schedphi: import insert failed");
	if (SPI_processed < (uint64) batch->n)
	{
		/* which row was not inserted: its MRN is taken (or came twice) */
		inserted = palloc0(sizeof(bool) * batch->n);
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			pg_uuid_t  *id = DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));

			for (int i = 0; i < batch->n; i++)
				if (!inserted[i] && memcmp(DatumGetUUIDP(batch->cols[1][i])->data, id->data, UUID_LEN) == 0)
				{
					inserted[i] = true;
					break;
				}
		}
		for (int i = 0; i < batch->n && first_taken < 0; i++)
			if (!inserted[i])
				first_taken = i;
	}
	if (first_taken >= 0)
	{
		Oid			types[2] = {UUIDOID, BYTEAOID};
		Datum		targs[2] = {batch->cols[0][first_taken], batch->cols[9][first_taken]};
		uint64		line = batch->line[first_taken];

		/* told and recorded as register_patient does */
		schedphi_keep_plan(&taken_plan, "SELECT schedphi._mrn_taken_record($1, $2, 'patient_import')", 2, types);
		SPI_execute_plan(taken_plan, targs, NULL, false, 1);
		/* the context is the row's own line, not the one COPY reads now */
		error_context_stack = NULL;
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("a patient with this mrn is already registered"),
				 errcontext("COPY patient_import, line %llu", (unsigned long long) line)));
	}
	SPI_finish();
	MemoryContextReset(batch->data);
	batch->n = 0;
}

PG_FUNCTION_INFO_V1(schedphi_patient_import_row);

/*
 * INSTEAD OF INSERT trigger on schedphi.patient_import: check, seal and
 * index the row and add it to the batch.  Returns the row (so COPY counts
 * it).
 */
Datum
schedphi_patient_import_row(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	HeapTuple	row;
	TupleDesc	desc;
	char	   *in[NFIELDS];
	char	   *norm[NFIELDS + 1];
	pg_uuid_t	tenant;
	pg_uuid_t  *id;
	DateADT		birth;
	ImportBatch *b;
	int			k;
	MemoryContext old;
	MemoryContext caller;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_INSTEAD(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) || !TRIGGER_FIRED_BY_INSERT(td->tg_event))
		elog(ERROR, "schedphi: _patient_import_row must be the INSTEAD OF INSERT trigger of patient_import");
	row = td->tg_trigtuple;
	desc = RelationGetDescr(td->tg_relation);
	schedphi_note_phi();

	/* one row's work, in a context emptied for the next */
	b = current_batch();
	MemoryContextReset(b->row);
	caller = MemoryContextSwitchTo(b->row);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	tenant = import_tenant(column_text(row, desc, "tenant"));
	SPI_finish();

	/* checked and normalised exactly as register_patient does */
	for (int i = 0; i < NFIELDS; i++)
		in[i] = column_text(row, desc, field_names[i]);
	norm[0] = schedphi_check_name("given", in[0]);
	norm[1] = schedphi_check_name("family", in[1]);
	birth = schedphi_parse_birth_date(in[2]);
	norm[2] = schedphi_date_iso(birth);
	norm[3] = in[3] ? schedphi_norm_phone(in[3]) : NULL;
	norm[4] = in[4] ? schedphi_norm_email(in[4]) : NULL;
	norm[5] = in[5] ? schedphi_norm_mrn(in[5]) : NULL;
	norm[6] = in[6] ? schedphi_norm_zip(in[6]) : NULL;
	norm[NFIELDS] = schedphi_family_dob(norm[1], birth);
	for (int i = 0; i < NFIELDS; i++)
		if (in[i] != NULL)
			explicit_bzero(in[i], strlen(in[i]));

	k = b->n;
	old = MemoryContextSwitchTo(b->data);
	id = palloc(sizeof(pg_uuid_t));
	*id = *DatumGetUUIDP(DirectFunctionCall1(gen_random_uuid, (Datum) 0));
	b->cols[0][k] = UUIDPGetDatum(memcpy(palloc(sizeof(pg_uuid_t)), &tenant, sizeof(pg_uuid_t)));
	b->cols[1][k] = UUIDPGetDatum(id);
	b->nulls[0][k] = b->nulls[1][k] = false;
	MemoryContextSwitchTo(old);
	for (int i = 0; i < NFIELDS; i++)
	{
		b->nulls[2 + i][k] = norm[i] == NULL;
		if (norm[i] != NULL)
			b->cols[2 + i][k] = copy_datum(schedphi_seal_value(&tenant, "patient", field_names[i], id, norm[i],
															   (int) strlen(norm[i])), b->data);
	}
	/* blind indexes: mrn, phone, email, family and birth date */
	{
		static const int from[4] = {5, 3, 4, NFIELDS};
		static const char *const field[4] = {"mrn", "phone", "email", "family_dob"};

		for (int j = 0; j < 4; j++)
		{
			b->nulls[9 + j][k] = norm[from[j]] == NULL;
			if (norm[from[j]] != NULL)
				b->cols[9 + j][k] = copy_datum(blind_or_null(&tenant, field[j], norm[from[j]]), b->data);
		}
	}
	for (int i = 0; i <= NFIELDS; i++)
		if (norm[i] != NULL)
			explicit_bzero(norm[i], strlen(norm[i]));
	b->rows++;
	b->line[k] = copy_line();
	if (b->line[k] == 0)
		b->line[k] = b->rows;
	b->n++;
	if (b->n == IMPORT_BATCH)
		flush_batch();
	MemoryContextSwitchTo(caller);

	/*
	 * A copy, not the row itself: PostgreSQL frees the row it made for the
	 * trigger only when the trigger returns another (and COPY made it in
	 * memory that lasts the statement: 300 bytes a row).  The copy is in
	 * the per-row memory the trigger is called in.
	 */
	return PointerGetDatum(heap_copytuple(row));
}

PG_FUNCTION_INFO_V1(schedphi_patient_import_flush);

/* AFTER STATEMENT trigger on schedphi.patient_import: insert what is left. */
Datum
schedphi_patient_import_flush(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "schedphi: _patient_import_flush must be a trigger");
	if (batch != NULL && batch->lxid == MyProc->lxid && batch->stmt == GetCurrentStatementStartTimestamp())
		flush_batch();
	if (batch != NULL)
		MemoryContextDelete(batch->cxt);
	return PointerGetDatum(NULL);
}

/*
 * A COPY into patient_import quotes the line it was reading in the
 * context of any error ('COPY patient_import, line 3: "..."', or
 * '..., column mrn: "..."'): cut each such line after the line number and
 * column.  Called by schedphi.c's utility hook on an error raised by a COPY
 * into this view; edits the context in place (it only gets shorter).
 */
void
schedphi_import_scrub_context(char *context)
{
	static const char prefix[] = "COPY patient_import, line ";
	char	   *line = context;

	while (line != NULL && *line)
	{
		char	   *end = strchr(line, '\n');

		if (strncmp(line, prefix, sizeof(prefix) - 1) == 0)
		{
			char	   *quote = strstr(line, ": \"");

			/* drop from the quote to the end of this line */
			if (quote != NULL && (end == NULL || quote < end))
			{
				if (end == NULL)
					*quote = '\0';
				else
				{
					memmove(quote, end, strlen(end) + 1);
					end = quote;
				}
			}
		}
		line = end != NULL ? end + 1 : NULL;
	}
}

/* Is this utility statement a COPY FROM into schedphi.patient_import? */
bool
schedphi_is_import_copy(Node *node)
{
	CopyStmt   *copy;

	if (!IsA(node, CopyStmt))
		return false;
	copy = (CopyStmt *) node;
	return copy->is_from && copy->relation != NULL &&
		strcmp(copy->relation->relname, "patient_import") == 0 &&
		(copy->relation->schemaname == NULL || strcmp(copy->relation->schemaname, "schedphi") == 0);
}
