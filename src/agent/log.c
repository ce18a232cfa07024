/*
 * Logging to stderr, one write(2) per line so that the lines of the
 * processes never interleave, and small helpers.  Nothing logged here
 * carries message content: callers pass only addresses, lengths, control
 * ids (through safe_token), ACK codes, timings and SQLSTATEs.
 */
#include "agent.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

void
agent_log(const char *level, const char *fmt,...)
{
	char		line[1024];
	struct timespec ts;
	struct tm	tm;
	int			n;
	int			m;
	va_list		ap;
	int			saved_errno = errno;

	if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || gmtime_r(&ts.tv_sec, &tm) == NULL)
		memset(&tm, 0, sizeof tm);
	n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%d] %s: ",
				 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
				 tm.tm_sec, (long) (ts.tv_nsec / 1000000), AGENT_NAME, (int) getpid(), level);
	if (n < 0 || (size_t) n >= sizeof line)
		n = 0;
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += m;
	if ((size_t) n > sizeof line - 2)
		n = sizeof line - 2;	/* truncated */
	line[n++] = '\n';

	for (size_t off = 0; off < (size_t) n;)
	{
		ssize_t		w = write(STDERR_FILENO, line + off, n - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += w;
	}
	errno = saved_errno;
}

/* The reasons OpenSSL queued (library messages; no data from the peer). */
void
log_tls_error(const char *peer, const char *what)
{
	unsigned long e;
	char		buf[256];
	bool		any = false;

	while ((e = ERR_get_error()) != 0)
	{
		ERR_error_string_n(e, buf, sizeof buf);
		log_warn("peer=%s %s: %s", peer, what, buf);
		any = true;
	}
	if (!any)
		log_warn("peer=%s %s", peer, what);
}

void *
xmalloc(size_t n)
{
	void	   *p = malloc(n ? n : 1);

	if (p == NULL)
	{
		log_error("out of memory (%zu bytes)", n);
		_exit(1);
	}
	return p;
}

int64_t
now_ms(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		return 0;
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
