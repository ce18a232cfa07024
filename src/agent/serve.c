/*
 * One client connection, in its own process: TLS handshake when
 * configured, then each MLLP message to schedphi.hl7_ingest() and its ACK
 * back.  The libpq connection is opened at the first message and kept.
 *
 * A message that could not be handed to the database (it was lost and
 * could not be reopened, or the statement failed) gets no ACK: the
 * connection is closed and the sender sends it again, as MLLP senders do
 * when no ACK comes.  A resend is safe: hl7_ingest answers a control id it
 * has accepted with the stored ACK and changes nothing.
 */
#include "agent.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/x509.h>

#define INGEST_STMT "schedphi_agent_ingest"
#define TEXTOID 25

static PGconn *db;

static bool
db_ready(const char *peer)
{
	PGresult   *res;
	Oid			types[1] = {TEXTOID};

	if (!db_lost(db))
		return true;
	if (db)
	{
		PQfinish(db);
		db = NULL;
	}
	{
		char		who[96];

		snprintf(who, sizeof who, "peer=%s", peer);
		db = db_connect(who);
	}
	if (db == NULL)
		return false;
	res = PQprepare(db, INGEST_STMT, "SELECT schedphi.hl7_ingest($1)", 1, types);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		log_error("peer=%s cannot prepare the hl7_ingest call: SQLSTATE %s", peer, db_sqlstate(res));
		PQclear(res);
		PQfinish(db);
		db = NULL;
		return false;
	}
	PQclear(res);
	return true;
}

/*
 * Hand the message in.  Returns the result holding the ACK, or NULL (no
 * ACK can be given; logged).  A connection lost on the way is reopened
 * and the message handed in once more.
 */
static PGresult *
ingest(const char *peer, const char *msg, size_t len, const char *control_id)
{
	const char *values[1] = {msg};
	int			lengths[1] = {(int) len};
	int			formats[1] = {1};	/* binary text: the bytes as they came */

	for (int attempt = 0; attempt < 2; attempt++)
	{
		PGresult   *res;

		if (!db_ready(peer))
			return NULL;
		res = PQexecPrepared(db, INGEST_STMT, 1, values, lengths, formats, 0);
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
			return res;
		if (db_lost(db))
		{
			log_warn("peer=%s control_id=%s database connection lost%s", peer, control_id,
					 attempt == 0 ? ", reconnecting" : "");
			PQclear(res);
			PQfinish(db);
			db = NULL;
			continue;
		}
		if (PQresultStatus(res) == PGRES_FATAL_ERROR)
			log_error("peer=%s control_id=%s hl7_ingest failed: SQLSTATE %s; no ACK, connection closed",
					  peer, control_id, db_sqlstate(res));
		else
			log_error("peer=%s control_id=%s hl7_ingest returned no ACK; connection closed",
					  peer, control_id);
		PQclear(res);
		return NULL;
	}
	log_error("peer=%s control_id=%s database unavailable: no ACK, connection closed", peer, control_id);
	return NULL;
}

/* One message in, its ACK out: 0, or -1 to close the connection. */
static int
handle(Conn *c, const char *msg, size_t len)
{
	char		control_id[48];
	char		code[8];
	int64_t		t0 = now_ms();
	PGresult   *res;
	const char *ack;
	size_t		acklen;
	int			rc;

	hl7_field(msg, len, "MSH", 10, control_id, sizeof control_id);
	if (memchr(msg, '\0', len) != NULL || len > (size_t) INT32_MAX)
	{
		log_warn("peer=%s control_id=%s message of %zu bytes holds a NUL byte: no ACK, connection closed",
				 c->peer, control_id, len);
		return -1;
	}
	res = ingest(c->peer, msg, len, control_id);
	if (res == NULL)
		return -1;
	ack = PQgetvalue(res, 0, 0);
	acklen = (size_t) PQgetlength(res, 0, 0);
	hl7_field(ack, acklen, "MSA", 1, code, sizeof code);
	rc = write_frame(c, ack, acklen, now_ms() + (int64_t) opt.idle_timeout * 1000);
	explicit_bzero((char *) ack, acklen);
	PQclear(res);
	if (rc != 0)
	{
		log_warn("peer=%s control_id=%s ack=%s could not be sent%s", c->peer, control_id, code,
				 rc == IO_TIMEOUT ? " (timeout)" : "");
		return -1;
	}
	log_info("peer=%s control_id=%s bytes=%zu ack=%s ms=%lld", c->peer, control_id, len, code,
			 (long long) (now_ms() - t0));
	return 0;
}

void
serve_client(int fd, const char *peer, SSL_CTX *tls)
{
	Conn		c = {.fd = fd, .ssl = NULL};
	Reader		r;
	int64_t		t0 = now_ms();
	long		messages = 0;
	const char *why = "closed by the peer";

	snprintf(c.peer, sizeof c.peer, "%s", peer);
	if (tls)
	{
		int			rc = conn_tls_accept(&c, tls, now_ms() + (int64_t) opt.idle_timeout * 1000);

		if (rc != 0)
		{
			if (rc == IO_TIMEOUT)
				log_warn("peer=%s TLS handshake not done within --idle-timeout", c.peer);
			conn_close(&c);
			_exit(0);
		}
		{
			X509	   *cert = SSL_get_peer_certificate(c.ssl);

			log_info("peer=%s connected (%s, %s%s)", c.peer, SSL_get_version(c.ssl),
					 SSL_get_cipher_name(c.ssl), cert ? ", client certificate verified" : "");
			if (cert)
				X509_free(cert);
		}
	}
	else
		log_info("peer=%s connected", c.peer);

	reader_init(&r, &c);
	for (;;)
	{
		int			rc;

		if (got_stop)
		{
			why = "agent stopping";
			break;
		}
		rc = read_frame(&r, opt.idle_timeout, true);
		if (rc == 1)
		{
			if (handle(&c, r.msg, r.len) != 0)
			{
				why = "after an error";
				break;
			}
			explicit_bzero(r.msg, r.len);
			messages++;
			continue;
		}
		switch (rc)
		{
			case IO_TIMEOUT:
				why = "idle timeout";
				break;
			case IO_STOP:
				why = "agent stopping";
				break;
			case IO_TOO_BIG:
				why = "over the size limit";
				break;
			case IO_ERR:
				why = "after an I/O error";
				break;
			default:
				why = "closed by the peer";
				break;
		}
		break;
	}
	if (reader_partial(&r) && strcmp(why, "over the size limit") != 0)
		log_warn("peer=%s an incomplete message (%zu bytes so far) is dropped, no ACK", c.peer, r.len);
	log_info("peer=%s disconnected (%s): %ld messages in %.1f s", c.peer, why, messages,
			 (now_ms() - t0) / 1000.0);
	reader_free(&r);
	conn_close(&c);
	if (db)
		PQfinish(db);
	_exit(0);
}
