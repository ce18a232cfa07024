/*
 * schedphi-agent deliver: patient messages out to a vendor (docs/agent.md,
 * docs/communications.md).  Every --poll seconds it claims what
 * schedphi.claim_messages() gives the vendor (purpose of use TREAT: the
 * addresses are decrypted for it), sends each message, email over SMTP
 * with STARTTLS required and everything else as a JSON POST over HTTPS,
 * retrying a few times with a growing pause, and reports each outcome with
 * schedphi.mark_sent().  A message that still fails is reported 'failed':
 * schedphi offers it again later, so nothing is lost.
 *
 * Server certificates are always verified (--ca adds a trust anchor to the
 * system's; there is no way to turn verification off).  Credentials come
 * from --auth-file only, never the command line or the database.  The log
 * names message ids, channels, outcomes and libcurl's error codes: never
 * an address, a body, a token or a credential.
 */
#include "agent.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#define SEND_TRIES 3
#define SEND_TIMEOUT_S 30L
#define CLAIM_MAX "50"

typedef struct SendOptions
{
	const char *dsn;
	const char *vendor;
	const char *smtp;
	const char *https;
	const char *ca;
	const char *auth_file;
	const char *from;
	bool		once;
	int			poll;
	/* from the auth file */
	char	   *smtp_user;
	char	   *smtp_password;
	char	   *https_token;
} SendOptions;

static SendOptions so = {.poll = 5};

static void
send_usage(FILE *f)
{
	fprintf(f,
			"Usage: " AGENT_NAME " deliver --dsn CONNINFO --vendor UUID [--smtp URL] [--https URL] [options]\n"
			"\n"
			"Claims a vendor's patient messages from schedphi and sends them (docs/communications.md).\n"
			"\n"
			"  --dsn CONNINFO        libpq connection string of an integration login\n"
			"  --vendor UUID         the business associate (add_business_associate) to send as\n"
			"  --smtp URL            smtp://HOST:PORT (STARTTLS required) or smtps://HOST:PORT, for email\n"
			"  --from ADDRESS        the envelope and From: address of emails (required with --smtp)\n"
			"  --https URL           https:// endpoint that takes SMS, voice and portal messages as JSON\n"
			"  --ca FILE             PEM certificates to trust besides the system's (verification is always on)\n"
			"  --auth-file FILE      credentials, KEY=VALUE lines: smtp_user, smtp_password, https_token;\n"
			"                        the file must not be readable by group or others\n"
			"  --poll SECONDS        how often to claim (default 5)\n"
			"  --once                send what is due now, then exit\n"
			"  --help                this text\n");
}

static void
die_usage(const char *msg)
{
	fprintf(stderr, AGENT_NAME ": %s\n", msg);
	exit(2);
}

static bool
uuid_text(const char *s)
{
	if (strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++)
	{
		bool		dash = (i == 8 || i == 13 || i == 18 || i == 23);

		if (dash ? s[i] != '-' : strchr("0123456789abcdefABCDEF", s[i]) == NULL)
			return false;
	}
	return true;
}

static char *
xstrdup(const char *s)
{
	size_t		n = strlen(s);
	char	   *d = xmalloc(n + 1);

	memcpy(d, s, n + 1);
	return d;
}

/* Read the credentials; refuse a file others can read. */
static void
read_auth_file(const char *path)
{
	struct stat st;
	FILE	   *f;
	char		line[1024];

	if (stat(path, &st) != 0)
		die_usage("--auth-file cannot be read");
	if (st.st_mode & (S_IRWXG | S_IRWXO))
		die_usage("--auth-file must not be readable or writable by group or others (chmod 600)");
	f = fopen(path, "r");
	if (f == NULL)
		die_usage("--auth-file cannot be read");
	while (fgets(line, sizeof line, f))
	{
		char	   *eq;
		size_t		n = strcspn(line, "\r\n");

		line[n] = '\0';
		if (line[0] == '#' || line[0] == '\0')
			continue;
		eq = strchr(line, '=');
		if (eq == NULL)
		{
			explicit_bzero(line, sizeof line);
			fclose(f);
			die_usage("--auth-file lines are KEY=VALUE (smtp_user, smtp_password, https_token)");
		}
		*eq = '\0';
		if (strcmp(line, "smtp_user") == 0)
			so.smtp_user = xstrdup(eq + 1);
		else if (strcmp(line, "smtp_password") == 0)
			so.smtp_password = xstrdup(eq + 1);
		else if (strcmp(line, "https_token") == 0)
			so.https_token = xstrdup(eq + 1);
		else
		{
			explicit_bzero(line, sizeof line);
			fclose(f);
			die_usage("--auth-file has an unknown key (known: smtp_user, smtp_password, https_token)");
		}
		explicit_bzero(line, sizeof line);
	}
	fclose(f);
}

static void
forget_secret(char *s)
{
	if (s)
	{
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static void
parse_send_options(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"dsn", required_argument, NULL, 'd'},
		{"vendor", required_argument, NULL, 'v'},
		{"smtp", required_argument, NULL, 's'},
		{"https", required_argument, NULL, 'w'},
		{"ca", required_argument, NULL, 'c'},
		{"auth-file", required_argument, NULL, 'a'},
		{"from", required_argument, NULL, 'f'},
		{"poll", required_argument, NULL, 'p'},
		{"once", no_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			c;

	optind = 2;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'd':
				so.dsn = optarg;
				break;
			case 'v':
				so.vendor = optarg;
				break;
			case 's':
				so.smtp = optarg;
				break;
			case 'w':
				so.https = optarg;
				break;
			case 'c':
				so.ca = optarg;
				break;
			case 'a':
				so.auth_file = optarg;
				break;
			case 'f':
				so.from = optarg;
				break;
			case 'p':
				{
					char	   *end;
					long		v = strtol(optarg, &end, 10);

					if (*optarg == '\0' || *end != '\0' || v < 1 || v > 86400)
						die_usage("--poll must be a whole number from 1 to 86400");
					so.poll = (int) v;
				}
				break;
			case 'o':
				so.once = true;
				break;
			case 'h':
				send_usage(stdout);
				exit(0);
			default:
				send_usage(stderr);
				exit(2);
		}
	}
	if (optind < argc)
		die_usage("unexpected argument");
	if (so.dsn == NULL)
		die_usage("--dsn is required");
	if (so.vendor == NULL || !uuid_text(so.vendor))
		die_usage("--vendor UUID is required (the business associate's id)");
	if (so.smtp == NULL && so.https == NULL)
		die_usage("--smtp or --https (or both) is required");
	if (so.smtp && strncmp(so.smtp, "smtp://", 7) != 0 && strncmp(so.smtp, "smtps://", 8) != 0)
		die_usage("--smtp must be smtp://HOST:PORT (STARTTLS required) or smtps://HOST:PORT");
	if (so.smtp && (so.from == NULL || strchr(so.from, '@') == NULL || strpbrk(so.from, "\r\n<>") != NULL))
		die_usage("--from ADDRESS (an email address) is required with --smtp");
	if (so.https && strncmp(so.https, "https://", 8) != 0)
		die_usage("--https must be an https:// URL");
	if (so.ca && access(so.ca, R_OK) != 0)
		die_usage("--ca cannot be read");
	if (so.auth_file)
		read_auth_file(so.auth_file);
}

static void
on_term(int sig)
{
	(void) sig;
	got_stop = 1;
}

/* Sleep up to ms, cut short by SIGTERM or SIGINT. */
static void
pause_ms(int64_t ms)
{
	int64_t		end = now_ms() + ms;

	while (!got_stop && now_ms() < end)
	{
		struct timespec ts = {0, 100 * 1000 * 1000};

		(void) nanosleep(&ts, NULL);
	}
}

/* --ca: added to the system's trust store, not instead of it. */
static CURLcode
add_anchor(CURL *h, void *sslctx, void *arg)
{
	(void) h;
	if (SSL_CTX_load_verify_locations((SSL_CTX *) sslctx, (const char *) arg, NULL) != 1)
		return CURLE_SSL_CACERT_BADFILE;
	return CURLE_OK;
}

static void
tls_options(CURL *h)
{
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(h, CURLOPT_SSLVERSION, (long) CURL_SSLVERSION_TLSv1_2);
	if (so.ca)
	{
		curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, add_anchor);
		curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, (void *) so.ca);
	}
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, SEND_TIMEOUT_S);
}

typedef struct Buf
{
	char	   *data;
	size_t		len;
	size_t		cap;
	size_t		pos;			/* for reading out */
} Buf;

static void
buf_add(Buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap)
	{
		size_t		cap = (b->cap ? b->cap * 2 : 1024);

		while (cap < b->len + n + 1)
			cap *= 2;
		b->data = realloc(b->data, cap);
		if (b->data == NULL)
		{
			log_error("out of memory");
			exit(1);
		}
		b->cap = cap;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void
buf_str(Buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static void
buf_forget(Buf *b)
{
	if (b->data)
	{
		explicit_bzero(b->data, b->cap);
		free(b->data);
	}
	memset(b, 0, sizeof *b);
}

static size_t
read_out(char *dst, size_t size, size_t nitems, void *arg)
{
	Buf		   *b = arg;
	size_t		n = size * nitems;

	if (n > b->len - b->pos)
		n = b->len - b->pos;
	memcpy(dst, b->data + b->pos, n);
	b->pos += n;
	return n;
}

static size_t
write_in(char *src, size_t size, size_t nmemb, void *arg)
{
	Buf		   *b = arg;
	size_t		n = size * nmemb;

	if (b->len < 65536)
		buf_add(b, src, n < 65536 - b->len ? n : 65536 - b->len);
	return n;
}

/* A JSON string of s (UTF-8 passed through; controls escaped). */
static void
json_string(Buf *b, const char *s)
{
	buf_str(b, "\"");
	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
	{
		char		esc[8];

		if (*p == '"' || *p == '\\')
		{
			esc[0] = '\\';
			esc[1] = (char) *p;
			buf_add(b, esc, 2);
		}
		else if (*p < 0x20)
		{
			snprintf(esc, sizeof esc, "\\u%04x", *p);
			buf_str(b, esc);
		}
		else
			buf_add(b, (const char *) p, 1);
	}
	buf_str(b, "\"");
}

/* Email through the SMTP server: STARTTLS required, or TLS from the start (no vendor id). */
static CURLcode
send_email(const char *id, const char *address, const char *body, char *ref)
{
	CURL	   *h = curl_easy_init();
	struct curl_slist *rcpt = NULL;
	Buf			mail = {0};
	CURLcode	rc;
	char		date[64];
	time_t		t = time(NULL);
	struct tm	tm;

	ref[0] = '\0';
	if (h == NULL)
		return CURLE_OUT_OF_MEMORY;
	/* an address that could inject a header or a command is not sent */
	if (strpbrk(address, "\r\n<>") != NULL || strchr(address, '@') == NULL)
	{
		curl_easy_cleanup(h);
		return CURLE_LOGIN_DENIED;
	}
	gmtime_r(&t, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
	buf_str(&mail, "Date: ");
	buf_str(&mail, date);
	buf_str(&mail, "\r\nFrom: <");
	buf_str(&mail, so.from);
	buf_str(&mail, ">\r\nTo: <");
	buf_str(&mail, address);
	buf_str(&mail, ">\r\nSubject: A message from your care team\r\nMessage-ID: <schedphi-");
	buf_str(&mail, id);
	buf_str(&mail, "@");
	buf_str(&mail, strchr(so.from, '@') + 1);
	buf_str(&mail, ">\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
			"Content-Transfer-Encoding: 8bit\r\n\r\n");
	for (const char *p = body; *p; p++)
	{
		if (*p == '\n' && (p == body || p[-1] != '\r'))
			buf_str(&mail, "\r\n");
		else
			buf_add(&mail, p, 1);
	}
	buf_str(&mail, "\r\n");

	rcpt = curl_slist_append(NULL, address);
	curl_easy_setopt(h, CURLOPT_URL, so.smtp);
	curl_easy_setopt(h, CURLOPT_USE_SSL, (long) CURLUSESSL_ALL);
	curl_easy_setopt(h, CURLOPT_MAIL_FROM, so.from);
	curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpt);
	curl_easy_setopt(h, CURLOPT_READFUNCTION, read_out);
	curl_easy_setopt(h, CURLOPT_READDATA, &mail);
	curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
	if (so.smtp_user)
		curl_easy_setopt(h, CURLOPT_USERNAME, so.smtp_user);
	if (so.smtp_password)
		curl_easy_setopt(h, CURLOPT_PASSWORD, so.smtp_password);
	tls_options(h);
	rc = curl_easy_perform(h);
	curl_slist_free_all(rcpt);
	curl_easy_cleanup(h);
	buf_forget(&mail);
	return rc;
}

/* SMS, voice and portal messages: a JSON POST to the vendor's endpoint. */
static CURLcode
send_post(const char *id, const char *channel, const char *address, const char *body, char *ref, size_t reflen,
		  long *status)
{
	CURL	   *h = curl_easy_init();
	struct curl_slist *headers = NULL;
	Buf			json = {0};
	Buf			answer = {0};
	Buf			auth = {0};
	CURLcode	rc;

	ref[0] = '\0';
	*status = 0;
	if (h == NULL)
		return CURLE_OUT_OF_MEMORY;
	buf_str(&json, "{\"id\": ");
	json_string(&json, id);
	buf_str(&json, ", \"channel\": ");
	json_string(&json, channel);
	buf_str(&json, ", \"to\": ");
	json_string(&json, address);
	buf_str(&json, ", \"body\": ");
	json_string(&json, body);
	buf_str(&json, "}");
	headers = curl_slist_append(headers, "Content-Type: application/json");
	if (so.https_token)
	{
		buf_str(&auth, "Authorization: Bearer ");
		buf_str(&auth, so.https_token);
		headers = curl_slist_append(headers, auth.data);
	}
	curl_easy_setopt(h, CURLOPT_URL, so.https);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, json.data);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long) json.len);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_in);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &answer);
	tls_options(h);
	rc = curl_easy_perform(h);
	if (rc == CURLE_OK)
	{
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
		if (*status >= 200 && *status < 300)
			vendor_ref(answer.data, ref, reflen);
	}
	/* the header list holds a copy of the token */
	for (struct curl_slist *s = headers; s; s = s->next)
		explicit_bzero(s->data, strlen(s->data));
	curl_slist_free_all(headers);
	curl_easy_cleanup(h);
	buf_forget(&json);
	buf_forget(&answer);
	buf_forget(&auth);
	return rc;
}

static PGconn *db;

static bool
db_ready(void)
{
	if (!db_lost(db))
		return true;
	if (db)
		PQfinish(db);
	db = db_connect("deliver:");
	return db != NULL;
}

static bool
db_command(const char *sql, const char *what)
{
	PGresult   *res = PQexec(db, sql);
	bool		ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;

	if (!ok)
		log_error("%s failed: SQLSTATE %s", what, db_sqlstate(res));
	PQclear(res);
	return ok;
}

/* Claim (in a transaction of its own, committed before anything is sent). */
static PGresult *
claim(void)
{
	const char *values[2] = {so.vendor, CLAIM_MAX};
	PGresult   *rows;

	if (!db_command("BEGIN", "BEGIN") || !db_command("SELECT schedphi.set_purpose('TREAT')", "set_purpose"))
	{
		(void) db_command("ROLLBACK", "ROLLBACK");
		return NULL;
	}
	rows = PQexecParams(db, "SELECT id, channel, address, body FROM schedphi.claim_messages($1::uuid, $2::int)",
						2, NULL, values, NULL, NULL, 0);
	if (PQresultStatus(rows) != PGRES_TUPLES_OK)
	{
		log_error("claim_messages failed: SQLSTATE %s", db_sqlstate(rows));
		PQclear(rows);
		(void) db_command("ROLLBACK", "ROLLBACK");
		return NULL;
	}
	if (!db_command("COMMIT", "COMMIT"))
	{
		PQclear(rows);
		return NULL;
	}
	return rows;
}

static void
report(const char *id, const char *status, const char *ref)
{
	const char *values[3] = {id, status, ref[0] ? ref : NULL};
	PGresult   *res = PQexecParams(db, "SELECT schedphi.mark_sent($1::bigint, $2, $3)", 3, NULL, values, NULL, NULL, 0);

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		log_error("message=%s mark_sent(%s) failed: SQLSTATE %s", id, status, db_sqlstate(res));
	PQclear(res);
}

/* Send one claimed message, with retries; report the outcome. */
static void
send_one(const char *id, const char *channel, const char *address, const char *body)
{
	char		ref[201];
	bool		email = strcmp(channel, "email") == 0;
	CURLcode	rc = CURLE_OK;
	long		status = 0;

	if ((email && so.smtp == NULL) || (!email && so.https == NULL))
	{
		log_warn("message=%s channel=%s: no %s given; reported failed", id, channel, email ? "--smtp" : "--https");
		report(id, "failed", "");
		return;
	}
	for (int attempt = 1; attempt <= SEND_TRIES; attempt++)
	{
		int64_t		t0 = now_ms();

		if (email)
			rc = send_email(id, address, body, ref);
		else
			rc = send_post(id, channel, address, body, ref, sizeof ref, &status);
		if (rc == CURLE_OK && (email || (status >= 200 && status < 300)))
		{
			log_info("message=%s channel=%s sent in %lld ms (attempt %d)", id, channel, (long long) (now_ms() - t0), attempt);
			report(id, "sent", ref);
			return;
		}
		if (rc != CURLE_OK)
			log_warn("message=%s channel=%s attempt %d failed: %s", id, channel, attempt, curl_easy_strerror(rc));
		else
			log_warn("message=%s channel=%s attempt %d failed: HTTP status %ld", id, channel, attempt, status);
		/* a refusal that will not change by retrying now */
		if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_USE_SSL_FAILED ||
			rc == CURLE_LOGIN_DENIED || (rc == CURLE_OK && status >= 400 && status < 500))
			break;
		if (attempt < SEND_TRIES)
			pause_ms(1000LL << (attempt - 1));
		if (got_stop)
			break;
	}
	report(id, "failed", "");
}

/* One round: claim what is due and send it.  How many were claimed (-1: none could be). */
static int
round_once(void)
{
	PGresult   *rows;
	int			n;

	if (!db_ready())
		return -1;
	rows = claim();
	if (rows == NULL)
		return -1;
	n = PQntuples(rows);
	for (int i = 0; i < n; i++)
	{
		/* once claimed, a message is sent or reported even when asked to stop */
		send_one(PQgetvalue(rows, i, 0), PQgetvalue(rows, i, 1), PQgetvalue(rows, i, 2), PQgetvalue(rows, i, 3));
		explicit_bzero(PQgetvalue(rows, i, 2), strlen(PQgetvalue(rows, i, 2)));
		explicit_bzero(PQgetvalue(rows, i, 3), strlen(PQgetvalue(rows, i, 3)));
	}
	PQclear(rows);
	if (n > 0)
		log_info("claimed and handled %d message(s)", n);
	return n;
}

int
send_main(int argc, char **argv)
{
	struct sigaction sa;
	struct rlimit nocore = {0, 0};
	int			exit_code = 0;

	parse_send_options(argc, argv);
	opt.dsn = so.dsn;			/* db_connect() reads it there */
	(void) setrlimit(RLIMIT_CORE, &nocore);
	(void) prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = SIG_IGN;
	(void) sigaction(SIGPIPE, &sa, NULL);
	sa.sa_handler = on_term;
	(void) sigaction(SIGTERM, &sa, NULL);
	(void) sigaction(SIGINT, &sa, NULL);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
	{
		log_error("libcurl could not start");
		return 1;
	}
	log_info("delivering for vendor %s (%s%s%s)", so.vendor, so.smtp ? "smtp" : "", so.smtp && so.https ? ", " : "",
			 so.https ? "https" : "");
	for (;;)
	{
		int			n = round_once();

		if (so.once)
		{
			exit_code = n < 0 ? 1 : 0;
			break;
		}
		if (got_stop)
			break;
		/* a full claim: more may be due at once */
		if (n < atoi(CLAIM_MAX))
			pause_ms((int64_t) so.poll * 1000);
		if (got_stop)
			break;
	}
	if (db)
		PQfinish(db);
	curl_global_cleanup();
	forget_secret(so.smtp_user);
	forget_secret(so.smtp_password);
	forget_secret(so.https_token);
	log_info("stopped");
	return exit_code;
}
