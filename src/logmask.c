/*-------------------------------------------------------------------------
 *
 * logmask.c
 *	  Keep patient data out of the server log.
 *
 * An emit_log_hook that, for statements that involve schedphi (their text
 * names schedphi, or a schedphi function that handles PHI ran during them;
 * with schedphi.log_masking = all, every statement):
 *	 - masks the literals of statement text logged by log_statement,
 *	   log_min_duration_statement and the extended protocol's parse, bind
 *	   and execute messages ("statement: ...", "execute <unnamed>: ...");
 *	 - replaces bind parameter values ("parameters: $1 = '...'") in DETAIL
 *	   and CONTEXT with "?";
 *	 - masks double-quoted input echoed by error messages ("invalid input
 *	   syntax for type date: "..."");
 *	 - suppresses the STATEMENT: line that would repeat the query text.
 * Everything is rewritten in place (masked text is never longer), so the
 * hook allocates nothing and cannot fail; it always chains to the previous
 * hook.  schedphi's own errors carry no values in the first place.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "tcop/tcopprot.h"
#include "utils/elog.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "access/xact.h"

#include "codec/sqlmask.h"
#include "logmask.h"

typedef enum
{
	LOG_MASKING_OFF,
	LOG_MASKING_SCHEDPHI,
	LOG_MASKING_ALL
}			LogMaskingMode;

static const struct config_enum_entry log_masking_options[] = {
	{"off", LOG_MASKING_OFF, false},
	{"schedphi", LOG_MASKING_SCHEDPHI, false},
	{"all", LOG_MASKING_ALL, false},
	{NULL, 0, false}
};

static int	log_masking = LOG_MASKING_SCHEDPHI;
static emit_log_hook_type prev_emit_log_hook = NULL;
static TimestampTz phi_statement = 0;

/* Called by the C functions that handle PHI: this statement involves it. */
void
schedphi_note_phi(void)
{
	phi_statement = GetCurrentStatementStartTimestamp();
}

/* Case-insensitive search for "schedphi" without allocating. */
static bool
mentions_schedphi(const char *s)
{
	static const char word[] = "schedphi";

	if (s == NULL)
		return false;
	for (; *s; s++)
	{
		int			i = 0;

		while (word[i] && (s[i] | 0x20) == word[i])
			i++;
		if (word[i] == '\0')
			return true;
	}
	return false;
}

static bool
statement_involves_phi(void)
{
	if (log_masking == LOG_MASKING_ALL)
		return true;
	if (log_masking == LOG_MASKING_OFF)
		return false;
	return mentions_schedphi(debug_query_string) ||
		(phi_statement != 0 && IsTransactionState() &&
		 phi_statement == GetCurrentStatementStartTimestamp());
}

/*
 * Mask the SQL of a statement-logging message: "statement: ...",
 * "duration: ... ms  statement: ...", "execute <name>: ...", and likewise
 * bind and parse.  Returns false if msg is not one of those.
 */
static bool
mask_logged_statement(char *msg)
{
	static const char *const markers[] = {"statement: ", "execute ", "bind ", "parse ", NULL};
	char	   *start = NULL;

	for (int i = 0; markers[i] != NULL; i++)
	{
		char	   *p = strstr(msg, markers[i]);

		if (p == NULL || (start != NULL && p >= start))
			continue;
		/* only at the start, or after "duration: ... ms  " */
		if (p != msg && strncmp(msg, "duration: ", 10) != 0)
			continue;
		if (i == 0)
			start = p + strlen(markers[i]);
		else
		{
			char	   *colon = strstr(p, ": ");

			if (colon == NULL)
				continue;
			start = colon + 2;
		}
	}
	if (start == NULL)
		return false;
	sp_mask_sql(start, strlen(start));
	return true;
}

/* "parameters: $1 = '...', ..." anywhere in s: cut the values off. */
static void
mask_parameters(char *s)
{
	char	   *p;

	if (s == NULL)
		return;
	p = strstr(s, "parameters: ");
	if (p != NULL && strlen(p) > 13)
		strcpy(p + 12, "?");
}

/*
 * Errors in which PostgreSQL quotes the input it refused: data exceptions
 * (class 22: invalid input syntax, out of range ...) and syntax errors.
 * 22023 is left alone: it is schedphi's own "bad argument", whose messages
 * carry no values but do quote ranges of time.
 */
static bool
echoes_input(int sqlerrcode)
{
	return (ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_DATA_EXCEPTION &&
			sqlerrcode != ERRCODE_INVALID_PARAMETER_VALUE) ||
		sqlerrcode == ERRCODE_SYNTAX_ERROR;
}

/*
 * EXECUTE of a prepared statement: its arguments are literals, and its text
 * does not say what the prepared statement calls, so it is always masked.
 */
static bool
is_sql_execute(const char *s)
{
	if (s == NULL)
		return false;
	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	return pg_strncasecmp(s, "execute", 7) == 0 &&
		(s[7] == ' ' || s[7] == '\t' || s[7] == '\n' || s[7] == '\r');
}

/*
 * The statements that error context quotes (PL/pgSQL's 'SQL statement
 * "..."', also for a DO block or dynamic SQL) have their literals masked.
 * A statement runs to the last double quote of its line.
 */
static void
mask_context_statements(char *ctx)
{
	static const char marker[] = "SQL statement \"";
	char	   *p = ctx;

	while (p != NULL && (p = strstr(p, marker)) != NULL)
	{
		char	   *start = p + sizeof(marker) - 1;
		char	   *eol = strchr(start, '\n');
		char	   *end = eol != NULL ? eol : start + strlen(start);
		char	   *q = end;
		size_t		len,
					masked;

		while (q > start && q[-1] != '"')
			q--;
		if (q == start)
			break;
		len = (q - 1) - start;
		masked = sp_mask_sql(start, len);
		/* masked text is never longer: close the gap, terminator included */
		memmove(start + masked, q - 1, strlen(q - 1) + 1);
		p = start + masked + 1;
	}
}

static void
schedphi_emit_log(ErrorData *edata)
{
	if (edata->output_to_server && edata->message != NULL &&
		(statement_involves_phi() ||
		 (log_masking != LOG_MASKING_OFF && is_sql_execute(debug_query_string)) ||
		 (log_masking != LOG_MASKING_OFF && mentions_schedphi(edata->context))))
	{
		if (!mask_logged_statement(edata->message) && echoes_input(edata->sqlerrcode))
			sp_mask_quoted(edata->message, strlen(edata->message));
		mask_parameters(edata->detail);
		mask_parameters(edata->detail_log);
		mask_parameters(edata->context);
		mask_context_statements(edata->context);
		edata->hide_stmt = true;
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

void
schedphi_logmask_init(void)
{
	DefineCustomEnumVariable("schedphi.log_masking",
							 "Which statements have their literals and parameters masked in the server log.",
							 "schedphi: statements that name schedphi or during which it handled PHI; all: every statement; off: none.",
							 &log_masking,
							 LOG_MASKING_SCHEDPHI,
							 log_masking_options,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = schedphi_emit_log;
}
