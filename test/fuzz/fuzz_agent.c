/*
 * libFuzzer harness for what schedphi-agent reads from its peers without
 * trusting it (src/agent/mllp.c, src/agent/scan.c): the bytes of a
 * connection framed into MLLP messages, read in chunks of varying size as
 * a socket would hand them over, under a small --max-bytes; MSH-10, MSA-1
 * and MSA-2 taken from each message for the log; and a messaging vendor's
 * JSON answer scanned for its "id".  Properties: no message longer than
 * --max-bytes is ever returned, every field handed to the log is short,
 * terminated and made of the safe characters only, and a vendor id holds
 * only the characters mark_sent accepts.
 *
 * The first input byte sets --max-bytes (64 to 4,144), the second the
 * pattern of chunk sizes; the rest is the stream.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* what mllp.c needs from the rest of the agent */
Options		opt;
volatile sig_atomic_t got_stop = 0;

static const uint8_t *stream;
static size_t stream_len;
static size_t stream_pos;
static unsigned chunk_seed;

ssize_t
conn_read(Conn *c, void *buf, size_t len, int64_t deadline, bool stoppable)
{
	size_t		n;

	(void) c;
	(void) deadline;
	(void) stoppable;
	if (stream_pos >= stream_len)
		return IO_EOF;
	chunk_seed = chunk_seed * 1103515245u + 12345u;
	n = 1 + (chunk_seed >> 16) % 700;
	if (n > len)
		n = len;
	if (n > stream_len - stream_pos)
		n = stream_len - stream_pos;
	memcpy(buf, stream + stream_pos, n);
	stream_pos += n;
	return (ssize_t) n;
}

int
conn_write_all(Conn *c, const void *buf, size_t len, int64_t deadline)
{
	(void) c;
	(void) buf;
	(void) len;
	(void) deadline;
	return 0;
}

void
agent_log(const char *level, const char *fmt,...)
{
	char		line[1024];
	va_list		ap;

	(void) level;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
}

void *
xmalloc(size_t n)
{
	void	   *p = malloc(n ? n : 1);

	if (p == NULL)
		abort();
	return p;
}

int64_t
now_ms(void)
{
	return 0;
}

static void
check_token(const char *s, size_t cap)
{
	size_t		n = strnlen(s, cap);

	if (n == cap || n == 0 || n > 40)
		abort();
	for (size_t i = 0; i < n; i++)
		if (strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-?", s[i]) == NULL)
			abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Conn		c = {.fd = -1, .ssl = NULL, .peer = "fuzz"};
	Reader	   *r;
	char	   *text;
	char		ref[64];

	if (size < 2)
		return 0;
	opt.max_bytes = 64 + (size_t) data[0] * 16;
	chunk_seed = data[1];
	stream = data + 2;
	stream_len = size - 2;
	stream_pos = 0;

	r = xmalloc(sizeof *r);
	reader_init(r, &c);
	for (;;)
	{
		char		field[48];
		char		tiny[3];
		int			rc = read_frame(r, 1, false);

		if (rc != 1)
			break;
		if (r->len > opt.max_bytes)
			abort();
		hl7_field(r->msg, r->len, "MSH", 10, field, sizeof field);
		check_token(field, sizeof field);
		hl7_field(r->msg, r->len, "MSA", 1, field, sizeof field);
		check_token(field, sizeof field);
		hl7_field(r->msg, r->len, "MSA", 2, tiny, sizeof tiny);
		check_token(tiny, sizeof tiny);
	}
	reader_free(r);
	free(r);

	text = xmalloc(size + 1);
	memcpy(text, data, size);
	text[size] = '\0';
	vendor_ref(text, ref, sizeof ref);
	if (strnlen(ref, sizeof ref) == sizeof ref)
		abort();
	for (size_t i = 0; ref[i]; i++)
		if (strchr("._:@/+=-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", ref[i]) == NULL)
			abort();
	free(text);
	return 0;
}
