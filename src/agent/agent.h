/*
 * schedphi-agent: the network edge of schedphi (docs/agent.md).
 *
 * A libpq client with no privilege of its own: it carries HL7 v2 messages
 * between MLLP peers and the database, where everything is decided.  It
 * never logs message or ACK content (they carry PHI): only peer addresses,
 * lengths, control ids, ACK codes, timings and SQLSTATEs.
 */
#ifndef SCHEDPHI_AGENT_H
#define SCHEDPHI_AGENT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <libpq-fe.h>
#include <openssl/ssl.h>

#define AGENT_NAME "schedphi-agent"

/* MLLP framing bytes */
#define MLLP_SB 0x0B
#define MLLP_EB 0x1C
#define MLLP_CR 0x0D

/* Results of the I/O functions (a positive value is a byte count). */
#define IO_EOF 0
#define IO_ERR (-1)
#define IO_TIMEOUT (-2)
#define IO_STOP (-3)
#define IO_TOO_BIG (-4)

/* Options, set once by main() before any fork. */
typedef struct Receiver
{
	char		uuid[37];
	char	   *host;
	char	   *port;
	bool		tls;			/* tls://HOST:PORT */
} Receiver;

typedef struct Options
{
	const char *listen;
	const char *dsn;
	const char *tls_cert;
	const char *tls_key;
	const char *tls_ca;
	const char *deliver_ca;		/* trust anchors for tls:// receivers */
	const char *deliver_cert;	/* the agent's own certificate for them */
	const char *deliver_key;
	size_t		max_bytes;
	int			idle_timeout;	/* seconds */
	int			max_clients;
	int			poll;			/* seconds */
	Receiver   *receivers;
	int			nreceivers;
} Options;

extern Options opt;
extern SSL_CTX *deliver_tls;	/* for tls:// receivers, set before the fork */

/* Set by the signal handlers. */
extern volatile sig_atomic_t got_stop;
extern volatile sig_atomic_t got_child;

/* The signal mask to wait with (SIGTERM, SIGINT, SIGCHLD unblocked). */
extern sigset_t wait_mask;

/* log.c */
extern void agent_log(const char *level, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));
#define log_info(...) agent_log("info", __VA_ARGS__)
#define log_warn(...) agent_log("warning", __VA_ARGS__)
#define log_error(...) agent_log("error", __VA_ARGS__)
extern void log_tls_error(const char *peer, const char *what);
extern void *xmalloc(size_t n);
extern int64_t now_ms(void);

/* io.c: a connection, plain or TLS, on a non-blocking socket */
typedef struct Conn
{
	int			fd;
	SSL		   *ssl;
	char		peer[80];
} Conn;

extern int	wait_fd(int fd, short events, int64_t deadline, bool stoppable);
extern void sleep_until(int64_t deadline);
extern ssize_t conn_read(Conn *c, void *buf, size_t len, int64_t deadline, bool stoppable);
extern int	conn_write_all(Conn *c, const void *buf, size_t len, int64_t deadline);
extern int	conn_tls_accept(Conn *c, SSL_CTX *ctx, int64_t deadline);
extern int	conn_tls_connect(Conn *c, SSL_CTX *ctx, const char *host, int64_t deadline);
extern void conn_close(Conn *c);
extern int	conn_connect(Conn *c, const char *host, const char *port, int64_t deadline);
extern void peer_name(const struct sockaddr *sa, socklen_t len, char *dst, size_t dstlen);
extern int	split_host_port(const char *spec, char **host, char **port);

/* mllp.c: framing */
typedef struct Reader
{
	Conn	   *conn;
	/* the message being assembled (between 0x0B and 0x1C 0x0D) */
	char	   *msg;
	size_t		len;
	size_t		cap;
	int			state;
	size_t		discarded;		/* bytes outside frames, since the last report */
	/* bytes read but not yet framed */
	unsigned char in[16384];
	size_t		inpos;
	size_t		inlen;
} Reader;

extern void reader_init(Reader *r, Conn *c);
extern void reader_free(Reader *r);
extern bool reader_partial(const Reader *r);
extern int	read_frame(Reader *r, int timeout_s, bool stoppable);
extern int	write_frame(Conn *c, const char *msg, size_t len, int64_t deadline);

/* scan.c: what peers send, read without trusting it */
extern void safe_token(char *dst, size_t dstlen, const char *src, size_t srclen);
extern void hl7_field(const char *msg, size_t len, const char *segment, int field,
					  char *dst, size_t dstlen);
extern void vendor_ref(const char *answer, char *dst, size_t dstlen);

/* db.c */
extern PGconn *db_connect(const char *what);
extern const char *db_sqlstate(const PGresult *res);
extern bool db_lost(PGconn *db);

/* serve.c */
extern void serve_client(int fd, const char *peer, SSL_CTX *tls) __attribute__((noreturn));

/* deliver.c */
extern void deliver_main(void) __attribute__((noreturn));

/* send.c: schedphi-agent deliver (patient messages over SMTP and HTTPS) */
extern int	send_main(int argc, char **argv);

#endif
