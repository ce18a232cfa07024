/*
 * MLLP framing: a message is 0x0B, the bytes, 0x1C 0x0D.  Bytes outside a
 * frame are discarded up to the next start byte (counted and reported by
 * count, never shown).  A start byte inside a frame abandons the partial
 * message before it; an end byte not followed by CR drops the message.  A
 * message longer than --max-bytes, or more than --max-bytes of bytes
 * outside frames, ends the connection (IO_TOO_BIG).
 */
#include "agent.h"

#include <stdlib.h>
#include <string.h>

enum
{
	ST_OUTSIDE,					/* waiting for 0x0B */
	ST_INSIDE,					/* in a message */
	ST_END						/* after 0x1C, waiting for 0x0D */
};

enum
{
	FR_MORE,
	FR_MESSAGE,
	FR_TOO_BIG,
	FR_GARBAGE,
	FR_RESTART,
	FR_BAD_END
};

void
reader_init(Reader *r, Conn *c)
{
	memset(r, 0, sizeof *r);
	r->conn = c;
	r->state = ST_OUTSIDE;
}

void
reader_free(Reader *r)
{
	if (r->msg)
	{
		explicit_bzero(r->msg, r->cap);
		free(r->msg);
	}
	explicit_bzero(r->in, sizeof r->in);
	r->msg = NULL;
	r->len = r->cap = 0;
}

bool
reader_partial(const Reader *r)
{
	return r->state != ST_OUTSIDE;
}

static void
append(Reader *r, const unsigned char *p, size_t n)
{
	/* (allocated at the first frame even when empty: a message is never NULL) */
	if (r->msg == NULL || r->len + n > r->cap)
	{
		size_t		cap = r->cap ? r->cap : 4096;
		char	   *m;

		while (cap < r->len + n)
			cap *= 2;
		if (cap > opt.max_bytes + 1)
			cap = opt.max_bytes + 1;
		m = xmalloc(cap);
		if (r->msg)
		{
			memcpy(m, r->msg, r->len);
			explicit_bzero(r->msg, r->cap);
			free(r->msg);
		}
		r->msg = m;
		r->cap = cap;
	}
	memcpy(r->msg + r->len, p, n);
	r->len += n;
}

/* Frame the buffered input; *used is how much of it was consumed. */
static int
feed(Reader *r, const unsigned char *p, size_t n, size_t *used)
{
	size_t		i = 0;

	while (i < n)
	{
		switch (r->state)
		{
			case ST_OUTSIDE:
				{
					const unsigned char *sb = memchr(p + i, MLLP_SB, n - i);
					size_t		skip = sb ? (size_t) (sb - (p + i)) : n - i;

					r->discarded += skip;
					i += skip;
					if (r->discarded > opt.max_bytes)
					{
						*used = i;
						return FR_GARBAGE;
					}
					if (sb)
					{
						i++;
						r->state = ST_INSIDE;
						r->len = 0;
					}
					break;
				}
			case ST_INSIDE:
				{
					size_t		j = i;

					while (j < n && p[j] != MLLP_EB && p[j] != MLLP_SB)
						j++;
					if (r->len + (j - i) > opt.max_bytes)
					{
						*used = j;
						return FR_TOO_BIG;
					}
					append(r, p + i, j - i);
					i = j;
					if (j < n)
					{
						i++;
						if (p[j] == MLLP_EB)
							r->state = ST_END;
						else
						{
							/* a new start: the partial message is abandoned */
							size_t		had = r->len;

							r->len = 0;
							*used = i;
							if (had > 0)
								return FR_RESTART;
						}
					}
					break;
				}
			case ST_END:
				if (p[i] == MLLP_CR)
				{
					i++;
					r->state = ST_OUTSIDE;
					*used = i;
					return FR_MESSAGE;
				}
				/* not consumed: it is looked at outside a frame */
				r->state = ST_OUTSIDE;
				*used = i;
				return FR_BAD_END;
		}
	}
	*used = i;
	return FR_MORE;
}

/*
 * Read the next message into r->msg/r->len.  Returns 1 for a message, or
 * IO_EOF, IO_ERR, IO_TIMEOUT (nothing for timeout_s seconds), IO_STOP or
 * IO_TOO_BIG (logged here).
 */
int
read_frame(Reader *r, int timeout_s, bool stoppable)
{
	for (;;)
	{
		ssize_t		n;

		while (r->inpos < r->inlen)
		{
			size_t		used = 0;
			int			ev = feed(r, r->in + r->inpos, r->inlen - r->inpos, &used);

			r->inpos += used;
			switch (ev)
			{
				case FR_MORE:
					break;
				case FR_MESSAGE:
					if (r->discarded > 0)
					{
						log_warn("peer=%s discarded %zu bytes outside MLLP frames", r->conn->peer,
								 r->discarded);
						r->discarded = 0;
					}
					return 1;
				case FR_TOO_BIG:
					log_warn("peer=%s message longer than --max-bytes (%zu): connection closed, nothing processed",
							 r->conn->peer, opt.max_bytes);
					return IO_TOO_BIG;
				case FR_GARBAGE:
					log_warn("peer=%s more than --max-bytes (%zu) of bytes outside MLLP frames: connection closed",
							 r->conn->peer, opt.max_bytes);
					return IO_TOO_BIG;
				case FR_RESTART:
					log_warn("peer=%s start block inside a message: the partial message before it is dropped",
							 r->conn->peer);
					break;
				case FR_BAD_END:
					log_warn("peer=%s end block not followed by CR: message of %zu bytes dropped, no ACK",
							 r->conn->peer, r->len);
					r->len = 0;
					break;
			}
		}
		r->inpos = r->inlen = 0;
		n = conn_read(r->conn, r->in, sizeof r->in, now_ms() + (int64_t) timeout_s * 1000, stoppable);
		if (n <= 0)
			return (int) n;
		r->inlen = (size_t) n;
	}
}

/* Send one message framed, in a single write when it fits. */
int
write_frame(Conn *c, const char *msg, size_t len, int64_t deadline)
{
	char	   *buf = xmalloc(len + 3);
	int			rc;

	buf[0] = MLLP_SB;
	memcpy(buf + 1, msg, len);
	buf[len + 1] = MLLP_EB;
	buf[len + 2] = MLLP_CR;
	rc = conn_write_all(c, buf, len + 3, deadline);
	explicit_bzero(buf, len + 3);
	free(buf);
	return rc;
}
