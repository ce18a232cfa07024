/*
 * Small scans of what peers send, kept apart from all input and output so
 * that test/fuzz/fuzz_agent.c can drive them with anything: a field made
 * safe for a log line, a field of an HL7 message (MSH-10 of a message, MSA-1
 * and MSA-2 of an ACK), and the vendor's id in a messaging vendor's JSON
 * answer.  None of them allocates.
 */
#include "agent.h"

#include <string.h>

/*
 * A field from a message, fit for a log line: at most 40 characters of
 * [A-Za-z0-9._:-], anything else shown as '?'.
 */
void
safe_token(char *dst, size_t dstlen, const char *src, size_t srclen)
{
	size_t		i;
	size_t		n = 0;

	if (dstlen == 0)
		return;
	for (i = 0; i < srclen && n + 1 < dstlen && n < 40; i++)
	{
		char		ch = src[i];

		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
			ch == '.' || ch == '_' || ch == ':' || ch == '-')
			dst[n++] = ch;
		else
			dst[n++] = '?';
	}
	dst[n] = '\0';
	if (n == 0 && dstlen > 1)
	{
		dst[0] = '-';
		dst[1] = '\0';
	}
}

/*
 * Field number `field` of the first `segment` of an HL7 message, made safe
 * for a log (safe_token), or "-".  MSH fields count MSH-1 as the
 * separator, as HL7 does.  Only MSH-10 and MSA-1/MSA-2 are ever asked for.
 */
void
hl7_field(const char *msg, size_t len, const char *segment, int field, char *dst, size_t dstlen)
{
	size_t		i = 0;
	char		fs = '|';

	safe_token(dst, dstlen, "", 0);
	/* the field separator is MSH-1 */
	while (i < len && (msg[i] == '\r' || msg[i] == '\n' || msg[i] == ' ' || msg[i] == MLLP_SB))
		i++;
	if (len - i > 3 && memcmp(msg + i, "MSH", 3) == 0)
		fs = msg[i + 3];
	while (i < len)
	{
		size_t		eol = i;

		while (eol < len && msg[eol] != '\r' && msg[eol] != '\n')
			eol++;
		if (eol - i > 3 && memcmp(msg + i, segment, 3) == 0 && msg[i + 3] == fs)
		{
			/* MSH: "MSH|" then MSH-2 is the first field after the separator */
			int			k = strcmp(segment, "MSH") == 0 ? 2 : 1;
			size_t		start = i + 4;

			while (k < field && start < eol)
			{
				const char *next = memchr(msg + start, fs, eol - start);

				if (next == NULL)
					return;
				start = (size_t) (next - msg) + 1;
				k++;
			}
			if (k == field && start <= eol)
			{
				const char *end = memchr(msg + start, fs, eol - start);
				size_t		flen = end ? (size_t) (end - (msg + start)) : eol - start;

				safe_token(dst, dstlen, msg + start, flen);
			}
			return;
		}
		i = eol + 1;
	}
}

/*
 * The vendor's id for the message, from a JSON answer's "id" (a string of
 * the characters mark_sent accepts), else none.  The answer is a
 * NUL-terminated string (or NULL).
 */
void
vendor_ref(const char *answer, char *dst, size_t dstlen)
{
	const char *p = answer ? strstr(answer, "\"id\"") : NULL;
	size_t		n = 0;

	dst[0] = '\0';
	if (p == NULL)
		return;
	p += 4;
	while (*p == ' ' || *p == ':')
		p++;
	if (*p++ != '"')
		return;
	while (p[n] && p[n] != '"' && n < dstlen - 1 &&
		   (strchr("._:@/+=-", p[n]) || (p[n] >= '0' && p[n] <= '9') ||
			(p[n] >= 'a' && p[n] <= 'z') || (p[n] >= 'A' && p[n] <= 'Z')))
		n++;
	if (p[n] != '"' || n == 0)
		return;
	memcpy(dst, p, n);
	dst[n] = '\0';
}
