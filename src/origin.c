/*-------------------------------------------------------------------------
 *
 * origin.c
 *	  Who is asking, carried from a Citus coordinator to the worker node
 *	  that writes the rows.
 *
 * Under Citus a booking's rows are written on the tenant's worker node, in
 * a connection Citus opened as the coordinator's current user (the owner
 * of the SECURITY DEFINER function, not the client), where the client's
 * membership and assumed token are unknown; yet the audit records of those
 * writes are made there, by the tables' triggers.  So before the
 * functions write, the coordinator sets schedphi.origin for the rest of
 * the transaction (SET LOCAL, which Citus repeats on the connections of
 * the transaction): who is asking, for which tenant, signed with a MAC
 * under a key derived from the master key that every node loads.  A
 * worker node's triggers believe it only from one of Citus's connections,
 * only when the MAC is good and the value fresh (an hour), and only for
 * the tenant it names; otherwise they record the connection's own user, as
 * they would for a superuser writing on a worker node directly.
 *
 * The value names people (logins and token subjects), never patients.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include <openssl/crypto.h>

#include "common.h"
#include "keys.h"
#include "membership.h"
#include "origin.h"

#define ORIGIN_LABEL "schedphi citus origin"
#define ORIGIN_MAX_AGE_US (USECS_PER_SEC * 3600)

/* schedphi.origin: set by the coordinator's functions, never by hand */
static char *origin_setting = NULL;

/* what the caller is doing in this transaction, if it says (reencrypt) */
static char origin_activity[16];
static LocalTransactionId activity_lxid = InvalidLocalTransactionId;

/* whom this backend last set it for, when, and in which transaction */
static char *last_identity = NULL;
static char *last_value = NULL;
static TimestampTz last_sent_at = 0;
static LocalTransactionId last_sent_lxid = InvalidLocalTransactionId;

static void
append_hex(StringInfo buf, const char *s)
{
	static const char digits[] = "0123456789abcdef";

	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
	{
		appendStringInfoChar(buf, digits[*p >> 4]);
		appendStringInfoChar(buf, digits[*p & 15]);
	}
	appendStringInfoChar(buf, ':');
}

/*
 * Decode the hex field at *p up to the next ':' into out (no NUL inside);
 * false if bad.
 */
static bool
take_hex(const char **p, char *out, int outlen)
{
	const char *s = *p;
	const char *end = strchr(s, ':');
	int			n;

	if (end == NULL || (end - s) % 2 != 0 || (end - s) / 2 >= outlen)
		return false;
	n = (int) (end - s) / 2;
	for (int i = 0; i < n; i++)
	{
		int			hi = schedphi_hex_digit(s[2 * i]);
		int			lo = schedphi_hex_digit(s[2 * i + 1]);

		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
			return false;
		out[i] = (char) (hi * 16 + lo);
	}
	out[n] = '\0';
	*p = end + 1;
	return true;
}

/* Who is asking about `tenant`, its fields hex-encoded, each with its ':'. */
static char *
origin_identity(const pg_uuid_t *tenant)
{
	Who			w;
	StringInfoData buf;

	schedphi_who_is_asking(&w, tenant, true);
	initStringInfo(&buf);
	append_hex(&buf, w.login);
	append_hex(&buf, w.actor);
	append_hex(&buf, w.role);
	append_hex(&buf, w.purpose);
	append_hex(&buf, w.has_tenant ? DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&w.tenant))) : "");
	append_hex(&buf, w.client ? w.client : "");
	append_hex(&buf, w.application);
	append_hex(&buf, activity_lxid == MyProc->lxid ? origin_activity : "");
	return buf.data;
}

/*
 * Name what this transaction does from now on ("reencrypt"), or stop
 * (NULL): the worker nodes' records of its writes say so.
 */
void
schedphi_origin_set_activity(const char *activity)
{
	if (activity == NULL)
		activity_lxid = InvalidLocalTransactionId;
	else
	{
		strlcpy(origin_activity, activity, sizeof(origin_activity));
		activity_lxid = MyProc->lxid;
	}
}

/*
 * The signed value: "v1:", the time, the identity, the master key's id,
 * then the MAC of all that precedes it (under a key derived from that
 * master key).
 */
static char *
origin_value(const char *identity, TimestampTz now)
{
	StringInfoData buf;
	char		kek_id[128];
	char		ts[32];
	uint8		mac[32];
	char		machex[65];

	schedphi_kek_mac(NULL, ORIGIN_LABEL, (const uint8 *) "", 0, mac, kek_id, sizeof(kek_id));
	initStringInfo(&buf);
	appendStringInfoString(&buf, "v1:");
	snprintf(ts, sizeof(ts), INT64_FORMAT, (int64) now);
	append_hex(&buf, ts);
	appendStringInfoString(&buf, identity);
	append_hex(&buf, kek_id);
	schedphi_kek_mac(kek_id, ORIGIN_LABEL, (const uint8 *) buf.data, buf.len, mac, NULL, 0);
	hex_encode((const char *) mac, 32, machex);
	machex[64] = '\0';
	appendStringInfoString(&buf, machex);
	explicit_bzero(mac, sizeof(mac));
	return buf.data;
}

/*
 * Before writing rows of `tenant` on a Citus coordinator: set who is asking
 * for the worker nodes (again only when the identity changes in the
 * transaction, the value ages, or the setting is no longer what was set
 * here: a client that sets it itself, say to a value of its own it saw
 * earlier, is overwritten before any write of the functions).  Nothing
 * without Citus, and nothing in Citus's own connections.  Connected to SPI
 * or not.
 */
void
schedphi_origin_send(const pg_uuid_t *tenant)
{
	char	   *identity;
	char	   *value;
	TimestampTz now;
	StringInfoData sql;

	if (schedphi_citus_internal_backend() || !schedphi_citus_active())
		return;
	identity = origin_identity(tenant);
	now = GetCurrentTimestamp();
	if (last_identity != NULL && last_sent_lxid == MyProc->lxid && strcmp(last_identity, identity) == 0 &&
		now - last_sent_at < ORIGIN_MAX_AGE_US / 2 &&
		origin_setting != NULL && strcmp(origin_setting, last_value) == 0)
		return;
	value = origin_value(identity, now);
	initStringInfo(&sql);
	appendStringInfo(&sql, "SET LOCAL schedphi.origin = %s", quote_literal_cstr(value));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SET LOCAL citus.propagate_set_commands = 'local'", false, 0) != SPI_OK_UTILITY ||
		SPI_execute(sql.data, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "schedphi: could not set the origin for the worker nodes");
	SPI_finish();
	if (last_identity != NULL)
		pfree(last_identity);
	if (last_value != NULL)
		pfree(last_value);
	last_identity = MemoryContextStrdup(TopMemoryContext, identity);
	last_value = MemoryContextStrdup(TopMemoryContext, value);
	last_sent_at = now;
	last_sent_lxid = MyProc->lxid;
}

/*
 * In one of Citus's connections on a worker node: fill *w, and activity
 * (if not NULL, at least 16 bytes), from a good origin naming `tenant` (or
 * any tenant when NULL); false when there is none, it is not good, not
 * fresh, or for another tenant.
 */
bool
schedphi_origin_received(Who *w, const pg_uuid_t *tenant, char *activity)
{
	char		act[16];
	static char client[64];
	const char *p;
	const char *machex;
	char		ts[32];
	char		tenant_text[40];
	char		kek_id[128];
	uint8		mac[32];
	uint8		want[32];
	int64		at;
	TimestampTz now = GetCurrentTimestamp();
	Who			got;

	if (origin_setting == NULL || strncmp(origin_setting, "v1:", 3) != 0 || !schedphi_citus_internal_backend())
		return false;
	machex = strrchr(origin_setting, ':');
	if (machex == NULL || strlen(machex + 1) != 64)
		return false;
	for (int i = 0; i < 32; i++)
	{
		int			hi = schedphi_hex_digit(machex[1 + 2 * i]);
		int			lo = schedphi_hex_digit(machex[2 + 2 * i]);

		if (hi < 0 || lo < 0)
			return false;
		mac[i] = (uint8) (hi * 16 + lo);
	}
	memset(&got, 0, sizeof(got));
	p = origin_setting + 3;
	if (!take_hex(&p, ts, sizeof(ts)) || !take_hex(&p, got.login, sizeof(got.login)) ||
		!take_hex(&p, got.actor, sizeof(got.actor)) || !take_hex(&p, got.role, sizeof(got.role)) ||
		!take_hex(&p, got.purpose, sizeof(got.purpose)) || !take_hex(&p, tenant_text, sizeof(tenant_text)) ||
		!take_hex(&p, client, sizeof(client)) || !take_hex(&p, got.application, sizeof(got.application)) ||
		!take_hex(&p, act, sizeof(act)) || !take_hex(&p, kek_id, sizeof(kek_id)) || p != machex + 1)
		return false;
	schedphi_kek_mac(kek_id, ORIGIN_LABEL, (const uint8 *) origin_setting, (int) (machex + 1 - origin_setting),
					 want, NULL, 0);
	if (CRYPTO_memcmp(want, mac, 32) != 0)
		return false;
	at = pg_strtoint64(ts);
	if (at > now + USECS_PER_SEC * 300 || now - at > ORIGIN_MAX_AGE_US)
		return false;
	if (tenant_text[0] != '\0')
	{
		got.has_tenant = true;
		memcpy(got.tenant.data,
			   DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(tenant_text)))->data, UUID_LEN);
	}
	if (tenant != NULL && (!got.has_tenant || memcmp(got.tenant.data, tenant->data, UUID_LEN) != 0))
		return false;
	got.client = client[0] != '\0' ? client : NULL;
	*w = got;
	if (activity != NULL)
		strlcpy(activity, act, 16);
	return true;
}

/* schedphi.origin, hidden from SHOW ALL and the sample file */
void
schedphi_origin_init(void)
{
	DefineCustomStringVariable("schedphi.origin",
							   "Who is asking, set by a Citus coordinator for its worker nodes (signed).",
							   NULL, &origin_setting, "", PGC_USERSET,
							   GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
							   NULL, NULL, NULL);
}

PG_FUNCTION_INFO_V1(schedphi_origin_sql);

/*
 * _citus_origin(tenant uuid) -> void: schedphi_origin_send for the SQL
 * functions that write, once they have authorised the caller.
 */
Datum
schedphi_origin_sql(PG_FUNCTION_ARGS)
{
	if (!PG_ARGISNULL(0))
		schedphi_origin_send(PG_GETARG_UUID_P(0));
	PG_RETURN_VOID();
}
