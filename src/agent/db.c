/*
 * The database side: one libpq connection per process, opened when first
 * needed and reused.  Errors of statements are logged by SQLSTATE only (a
 * message text may quote a value); connection failures by libpq's text,
 * which names the server and the login, never data.
 */
#include "agent.h"

#include <string.h>

/* Notices are not shown: their text may quote data. */
static void
quiet_notices(void *arg, const PGresult *res)
{
	const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);

	(void) arg;
	if (sev && strcmp(sev, "WARNING") == 0)
		log_warn("database warning, SQLSTATE %s", db_sqlstate(res));
}

PGconn *
db_connect(const char *what)
{
	/* the DSN comes last, so that what it sets wins */
	const char *const keys[] = {"fallback_application_name", "connect_timeout", "dbname", NULL};
	const char *const vals[] = {AGENT_NAME, "10", opt.dsn, NULL};
	PGconn	   *db = PQconnectdbParams(keys, vals, 1);

	if (db == NULL)
	{
		log_error("%s out of memory connecting to the database", what);
		return NULL;
	}
	if (PQstatus(db) != CONNECTION_OK)
	{
		char		msg[512];
		size_t		n;

		snprintf(msg, sizeof msg, "%s", PQerrorMessage(db));
		n = strlen(msg);
		while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
			msg[--n] = '\0';
		for (size_t i = 0; i < n; i++)
			if (msg[i] == '\n')
				msg[i] = ' ';
		log_error("%s cannot connect to the database: %s", what, msg);
		PQfinish(db);
		return NULL;
	}
	PQsetNoticeReceiver(db, quiet_notices, NULL);
	return db;
}

const char *
db_sqlstate(const PGresult *res)
{
	const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	return s ? s : "none";
}

bool
db_lost(PGconn *db)
{
	return db == NULL || PQstatus(db) != CONNECTION_OK;
}
