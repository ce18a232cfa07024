/*
 * Outbound delivery (--deliver RECEIVER=HOST:PORT, or tls://HOST:PORT for
 * TLS with the receiver's certificate verified): every --poll seconds,
 * for each receiver, fetch what schedphi.hl7_outbound() says is due (under
 * the purpose of use OPERATIONS: the messages carry the patient's
 * identity), send each over MLLP on one connection, read its ACK and hand
 * it to schedphi.hl7_ack().  A receiver that cannot be reached, or a
 * message without an ACK, is logged and left to schedphi, which offers a
 * message not acknowledged AA again after a minute.  When everything
 * fetched was acknowledged AA, the next changes of those appointments are
 * fetched at once rather than at the next poll.
 */
#include "agent.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static PGconn *db;

static bool
ensure_db(void)
{
	if (!db_lost(db))
		return true;
	if (db)
		PQfinish(db);
	db = db_connect("delivery:");
	return db != NULL;
}

/* One statement, checked; false (logged) when it failed. */
static bool
exec_ok(PGresult *res, ExecStatusType want, const char *what, const Receiver *rc)
{
	if (PQresultStatus(res) == want)
		return true;
	log_error("receiver=%s %s failed: SQLSTATE %s", rc->uuid, what, db_sqlstate(res));
	return false;
}

/* The messages due for the receiver (NULL: none could be fetched). */
static PGresult *
fetch(const Receiver *rc)
{
	const char *values[1] = {rc->uuid};
	PGresult   *res;
	PGresult   *rows;

	res = PQexec(db, "BEGIN");
	if (!exec_ok(res, PGRES_COMMAND_OK, "BEGIN", rc))
		goto fail;
	PQclear(res);
	res = PQexec(db, "SELECT schedphi.set_purpose('OPERATIONS')");
	if (!exec_ok(res, PGRES_TUPLES_OK, "set_purpose", rc))
		goto fail;
	PQclear(res);
	rows = PQexecParams(db, "SELECT id, control_id, message FROM schedphi.hl7_outbound($1::uuid)",
						1, NULL, values, NULL, NULL, 0);
	if (!exec_ok(rows, PGRES_TUPLES_OK, "hl7_outbound", rc))
	{
		res = rows;
		goto fail;
	}
	res = PQexec(db, "COMMIT");
	if (!exec_ok(res, PGRES_COMMAND_OK, "COMMIT", rc))
	{
		PQclear(rows);
		goto fail;
	}
	PQclear(res);
	return rows;

fail:
	PQclear(res);
	if (!db_lost(db))
		PQclear(PQexec(db, "ROLLBACK"));
	return NULL;
}

/* The ACK to the database: MSA-1 as logged, or NULL when it failed. */
static bool
hand_ack(const Receiver *rc, const char *control_id, const char *ack, size_t acklen)
{
	const char *values[2] = {rc->uuid, ack};
	int			lengths[2] = {0, (int) acklen};
	int			formats[2] = {0, 1};
	PGresult   *res;
	bool		ok;

	if (memchr(ack, '\0', acklen) != NULL)
	{
		log_warn("receiver=%s control_id=%s the ACK holds a NUL byte: not taken", rc->uuid, control_id);
		return false;
	}
	res = PQexecParams(db, "SELECT schedphi.hl7_ack($1::uuid, $2::text)", 2, NULL, values, lengths,
					   formats, 0);
	ok = PQresultStatus(res) == PGRES_TUPLES_OK;
	if (!ok)
		log_warn("receiver=%s control_id=%s hl7_ack refused the ACK: SQLSTATE %s", rc->uuid, control_id,
				 db_sqlstate(res));
	PQclear(res);
	return ok;
}

/*
 * One round for a receiver: 1 when messages were fetched and every one was
 * acknowledged AA (fetch again), 0 otherwise.
 */
static int
deliver_round(const Receiver *rc)
{
	PGresult   *rows;
	Conn		c = {.fd = -1};
	Reader		r;
	int			n;
	int			sent = 0;
	int			all_aa = 1;

	if (!ensure_db())
		return 0;
	rows = fetch(rc);
	if (rows == NULL)
		return 0;
	n = PQntuples(rows);
	if (n == 0)
	{
		PQclear(rows);
		return 0;
	}
	if (conn_connect(&c, rc->host, rc->port, now_ms() + (int64_t) opt.idle_timeout * 1000) != 0)
	{
		log_warn("receiver=%s cannot connect to %s:%s (%s): %d messages wait for a later attempt",
				 rc->uuid, rc->host, rc->port, strerror(errno), n);
		PQclear(rows);
		return 0;
	}
	if (rc->tls && conn_tls_connect(&c, deliver_tls, rc->host,
									now_ms() + (int64_t) opt.idle_timeout * 1000) != 0)
	{
		log_warn("receiver=%s no TLS session with %s:%s: %d messages wait for a later attempt",
				 rc->uuid, rc->host, rc->port, n);
		conn_close(&c);
		PQclear(rows);
		return 0;
	}
	if (rc->tls)
		log_info("receiver=%s connected to %s (%s, %s, certificate verified)", rc->uuid, c.peer,
				 SSL_get_version(c.ssl), SSL_get_cipher_name(c.ssl));
	reader_init(&r, &c);
	for (int i = 0; i < n && !got_stop; i++)
	{
		const char *control_id = PQgetvalue(rows, i, 1);
		char		cid[48];
		char		code[8];
		int64_t		t0 = now_ms();
		int			rr;

		safe_token(cid, sizeof cid, control_id, strlen(control_id));
		if (write_frame(&c, PQgetvalue(rows, i, 2), (size_t) PQgetlength(rows, i, 2),
						now_ms() + (int64_t) opt.idle_timeout * 1000) != 0)
		{
			log_warn("receiver=%s control_id=%s could not be sent: %d messages wait for a later attempt",
					 rc->uuid, cid, n - i);
			all_aa = 0;
			break;
		}
		rr = read_frame(&r, opt.idle_timeout, false);
		if (rr != 1)
		{
			log_warn("receiver=%s control_id=%s no ACK (%s): %d messages wait for a later attempt",
					 rc->uuid, cid, rr == IO_TIMEOUT ? "timeout" : rr == IO_EOF ? "connection closed" : "error",
					 n - i);
			all_aa = 0;
			break;
		}
		hl7_field(r.msg, r.len, "MSA", 1, code, sizeof code);
		{
			char		msa2[48];

			hl7_field(r.msg, r.len, "MSA", 2, msa2, sizeof msa2);
			if (strcmp(msa2, cid) != 0)
				log_warn("receiver=%s control_id=%s the ACK is for another control id (%s)", rc->uuid, cid,
						 msa2);
		}
		if (!hand_ack(rc, cid, r.msg, r.len))
		{
			all_aa = 0;
			if (db_lost(db))
				break;
		}
		if (strcmp(code, "AA") != 0 && strcmp(code, "CA") != 0)
			all_aa = 0;
		explicit_bzero(r.msg, r.len);
		sent++;
		log_info("receiver=%s control_id=%s delivered to %s ack=%s ms=%lld", rc->uuid, cid, c.peer, code,
				 (long long) (now_ms() - t0));
	}
	reader_free(&r);
	conn_close(&c);
	/* the messages carry PHI: not left in freed memory */
	for (int i = 0; i < n; i++)
		explicit_bzero(PQgetvalue(rows, i, 2), (size_t) PQgetlength(rows, i, 2));
	PQclear(rows);
	return all_aa && sent == n;
}

void
deliver_main(void)
{
	log_info("delivering to %d receiver(s) every %d s", opt.nreceivers, opt.poll);
	while (!got_stop)
	{
		int64_t		next = now_ms() + (int64_t) opt.poll * 1000;

		for (int i = 0; i < opt.nreceivers && !got_stop; i++)
		{
			/* at most 100 rounds in a row, so that the others get their turn */
			for (int round = 0; round < 100 && !got_stop; round++)
				if (!deliver_round(&opt.receivers[i]))
					break;
		}
		while (!got_stop && now_ms() < next)
			sleep_until(next);
	}
	if (db)
		PQfinish(db);
	log_info("delivery stopped");
	_exit(0);
}
