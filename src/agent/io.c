/*
 * Connections on non-blocking sockets, plain or TLS, with deadlines.
 * Every wait is a ppoll() with SIGTERM/SIGINT unblocked, so that a stop
 * request interrupts a wait that may be interrupted (reading the next
 * message) and never one that may not (writing an ACK, bounded by its
 * deadline).
 */
#include "agent.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

/*
 * Wait until fd is ready for events or the deadline (monotonic ms) passes.
 * Returns 1 when ready, IO_TIMEOUT, IO_STOP (a stop was requested and the
 * wait is stoppable) or IO_ERR.
 */
int
wait_fd(int fd, short events, int64_t deadline, bool stoppable)
{
	for (;;)
	{
		struct pollfd pfd = {.fd = fd, .events = events};
		struct timespec ts;
		int64_t		left;
		int			rc;

		if (stoppable && got_stop)
			return IO_STOP;
		left = deadline - now_ms();
		if (left <= 0)
			return IO_TIMEOUT;
		ts.tv_sec = left / 1000;
		ts.tv_nsec = (left % 1000) * 1000000;
		rc = ppoll(&pfd, 1, &ts, &wait_mask);
		if (rc > 0)
			return 1;
		if (rc == 0)
			continue;			/* the deadline is checked above */
		if (errno != EINTR)
			return IO_ERR;
	}
}

/* Sleep until the deadline, a stop request or any other signal. */
void
sleep_until(int64_t deadline)
{
	struct timespec ts;
	int64_t		left = deadline - now_ms();

	if (got_stop || left <= 0)
		return;
	ts.tv_sec = left / 1000;
	ts.tv_nsec = (left % 1000) * 1000000;
	(void) ppoll(NULL, 0, &ts, &wait_mask);
}

/* What SSL wants next: POLLIN, POLLOUT, or 0 for an error or the end. */
static short
tls_wants(Conn *c, int rc, const char *what, int *result)
{
	int			err = SSL_get_error(c->ssl, rc);

	switch (err)
	{
		case SSL_ERROR_WANT_READ:
			return POLLIN;
		case SSL_ERROR_WANT_WRITE:
			return POLLOUT;
		case SSL_ERROR_ZERO_RETURN:
			*result = IO_EOF;
			return 0;
		case SSL_ERROR_SYSCALL:
			if (errno == 0 || errno == ECONNRESET || errno == EPIPE)
			{
				ERR_clear_error();
				*result = IO_EOF;
				return 0;
			}
			log_warn("peer=%s %s: %s", c->peer, what, strerror(errno));
			ERR_clear_error();
			*result = IO_ERR;
			return 0;
		default:
			log_tls_error(c->peer, what);
			*result = IO_ERR;
			return 0;
	}
}

ssize_t
conn_read(Conn *c, void *buf, size_t len, int64_t deadline, bool stoppable)
{
	if (len > INT_MAX)
		len = INT_MAX;
	for (;;)
	{
		short		ev;
		int			rc;

		if (c->ssl)
		{
			int			n;
			int			result = IO_ERR;

			ERR_clear_error();
			errno = 0;
			n = SSL_read(c->ssl, buf, (int) len);
			if (n > 0)
				return n;
			ev = tls_wants(c, n, "TLS read", &result);
			if (ev == 0)
				return result;
		}
		else
		{
			ssize_t		n = recv(c->fd, buf, len, 0);

			if (n > 0)
				return n;
			if (n == 0)
				return IO_EOF;
			if (errno == EINTR)
				continue;
			if (errno == ECONNRESET)
				return IO_EOF;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
			{
				log_warn("peer=%s read: %s", c->peer, strerror(errno));
				return IO_ERR;
			}
			ev = POLLIN;
		}
		rc = wait_fd(c->fd, ev, deadline, stoppable);
		if (rc < 0)
			return rc;
	}
}

/* Write all of buf before the deadline: 0, IO_TIMEOUT or IO_ERR. */
int
conn_write_all(Conn *c, const void *buf, size_t len, int64_t deadline)
{
	const char *p = buf;

	while (len > 0)
	{
		size_t		chunk = len > INT_MAX ? INT_MAX : len;
		short		ev;
		int			rc;

		if (c->ssl)
		{
			int			n;
			int			result = IO_ERR;

			ERR_clear_error();
			errno = 0;
			n = SSL_write(c->ssl, p, (int) chunk);
			if (n > 0)
			{
				p += n;
				len -= n;
				continue;
			}
			ev = tls_wants(c, n, "TLS write", &result);
			if (ev == 0)
				return IO_ERR;
		}
		else
		{
			ssize_t		n = send(c->fd, p, chunk, MSG_NOSIGNAL);

			if (n > 0)
			{
				p += n;
				len -= n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			{
				log_warn("peer=%s write: %s", c->peer, strerror(errno));
				return IO_ERR;
			}
			ev = POLLOUT;
		}
		rc = wait_fd(c->fd, ev, deadline, false);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/*
 * A TLS handshake on c->ssl, either side (SSL_accept or SSL_connect), until
 * done or the deadline: 0, IO_TIMEOUT, IO_STOP or IO_ERR (logged).
 */
static int
tls_handshake(Conn *c, int (*step) (SSL *), int64_t deadline)
{
	for (;;)
	{
		int			rc;
		int			result = IO_ERR;
		short		ev;

		ERR_clear_error();
		errno = 0;
		rc = step(c->ssl);
		if (rc == 1)
			return 0;
		ev = tls_wants(c, rc, "TLS handshake failed", &result);
		if (ev == 0)
		{
			if (result == IO_EOF)
				log_warn("peer=%s TLS handshake failed: connection closed by the peer", c->peer);
			else if (SSL_get_verify_result(c->ssl) != X509_V_OK)
				log_warn("peer=%s the %s's certificate is not accepted: %s", c->peer,
						 SSL_is_server(c->ssl) ? "client" : "receiver",
						 X509_verify_cert_error_string(SSL_get_verify_result(c->ssl)));
			return IO_ERR;
		}
		rc = wait_fd(c->fd, ev, deadline, true);
		if (rc < 0)
			return rc;
	}
}

/* The server side of a TLS handshake: 0, IO_TIMEOUT, IO_STOP or IO_ERR. */
int
conn_tls_accept(Conn *c, SSL_CTX *ctx, int64_t deadline)
{
	c->ssl = SSL_new(ctx);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1)
	{
		log_tls_error(c->peer, "TLS setup failed");
		return IO_ERR;
	}
	return tls_handshake(c, SSL_accept, deadline);
}

/*
 * The client side of a TLS handshake with a receiver: its certificate must
 * verify against the context's anchors and name the host we asked for
 * (an address is checked as one).  0, IO_TIMEOUT, IO_STOP or IO_ERR.
 */
int
conn_tls_connect(Conn *c, SSL_CTX *ctx, const char *host, int64_t deadline)
{
	unsigned char addr[sizeof(struct in6_addr)];
	bool		numeric = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;

	c->ssl = SSL_new(ctx);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 ||
		(numeric ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) != 1 :
		 (SSL_set1_host(c->ssl, host) != 1 || SSL_set_tlsext_host_name(c->ssl, host) != 1)))
	{
		log_tls_error(c->peer, "TLS setup failed");
		return IO_ERR;
	}
	return tls_handshake(c, SSL_connect, deadline);
}

void
conn_close(Conn *c)
{
	if (c->ssl)
	{
		/* one attempt at close_notify; the socket is non-blocking */
		ERR_clear_error();
		(void) SSL_shutdown(c->ssl);
		ERR_clear_error();
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
	{
		(void) close(c->fd);
		c->fd = -1;
	}
}

void
peer_name(const struct sockaddr *sa, socklen_t len, char *dst, size_t dstlen)
{
	char		host[NI_MAXHOST];
	char		serv[NI_MAXSERV];

	if (getnameinfo(sa, len, host, sizeof host, serv, sizeof serv,
					NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		snprintf(dst, dstlen, "?");
	else if (sa->sa_family == AF_INET6)
		snprintf(dst, dstlen, "[%s]:%s", host, serv);
	else
		snprintf(dst, dstlen, "%s:%s", host, serv);
}

/*
 * HOST:PORT, [V6ADDR]:PORT or *:PORT (all addresses; host NULL) into
 * malloc'd parts.  0 on success, -1 when malformed.
 */
int
split_host_port(const char *spec, char **host, char **port)
{
	const char *colon;
	const char *h;
	size_t		hlen;

	*host = *port = NULL;
	if (spec[0] == '[')
	{
		const char *close = strchr(spec, ']');

		if (close == NULL || close[1] != ':')
			return -1;
		h = spec + 1;
		hlen = close - h;
		colon = close + 1;
	}
	else
	{
		colon = strrchr(spec, ':');
		if (colon == NULL)
			return -1;
		h = spec;
		hlen = colon - spec;
	}
	if (colon[1] == '\0' || strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
		strlen(colon + 1) > 5 || atoi(colon + 1) > 65535)
		return -1;
	if (!(hlen == 0 || (hlen == 1 && h[0] == '*')))
	{
		*host = xmalloc(hlen + 1);
		memcpy(*host, h, hlen);
		(*host)[hlen] = '\0';
	}
	*port = xmalloc(strlen(colon + 1) + 1);
	strcpy(*port, colon + 1);
	return 0;
}

/*
 * Connect to host:port (each address in turn) before the deadline.  0 with
 * c->fd set (non-blocking, TCP_NODELAY), or -1 (logged by the caller).
 */
int
conn_connect(Conn *c, const char *host, const char *port, int64_t deadline)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
	struct addrinfo *res;
	struct addrinfo *ai;
	int			rc;
	int			saved = 0;

	c->fd = -1;
	c->ssl = NULL;
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0)
	{
		log_warn("cannot resolve %s: %s", host, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next)
	{
		int			fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
								ai->ai_protocol);
		int			one = 1;
		int			err = 0;
		socklen_t	errlen = sizeof err;

		if (fd < 0)
		{
			saved = errno;
			continue;
		}
		(void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0)
		{
			if (errno != EINPROGRESS && errno != EINTR)
			{
				saved = errno;
				close(fd);
				continue;
			}
			rc = wait_fd(fd, POLLOUT, deadline, true);
			if (rc < 0)
			{
				saved = rc == IO_TIMEOUT ? ETIMEDOUT : EINTR;
				close(fd);
				continue;
			}
			if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen) != 0)
				err = errno;
			if (err != 0)
			{
				saved = err;
				close(fd);
				continue;
			}
		}
		c->fd = fd;
		peer_name(ai->ai_addr, ai->ai_addrlen, c->peer, sizeof c->peer);
		freeaddrinfo(res);
		return 0;
	}
	freeaddrinfo(res);
	errno = saved;
	return -1;
}
