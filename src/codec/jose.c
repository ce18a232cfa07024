/*-------------------------------------------------------------------------
 *
 * jose.c
 *	  Compact JWS parsing: strict base64url, a small strict JSON reader,
 *	  and extraction of the header and claims schedphi uses.
 *
 * The JSON reader accepts one object with string keys; values may be
 * strings, numbers, true, false, null, arrays and objects, nested at most
 * 16 deep.  Duplicate keys are refused (two "role" claims could be read
 * differently by two parsers).  Strings are decoded (\uXXXX included, with
 * surrogate pairs) into bounded buffers; a claim that does not fit is an
 * error, never a truncation.  Nothing is allocated.
 *
 *-------------------------------------------------------------------------
 */
#include "jose.h"
#include "b64digit.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define MAX_DEPTH	16
#define MAX_KEYS	64

typedef struct Reader
{
	const char *s;
	size_t		len;
	size_t		pos;
	char	   *err;
	size_t		errlen;
} Reader;

static bool
fail(Reader *r, const char *msg)
{
	snprintf(r->err, r->errlen, "%s", msg);
	return false;
}

static void
skip_ws(Reader *r)
{
	while (r->pos < r->len &&
		   (r->s[r->pos] == ' ' || r->s[r->pos] == '\t' || r->s[r->pos] == '\n' || r->s[r->pos] == '\r'))
		r->pos++;
}

static int
hex4(const char *p)
{
	int			v = 0;

	for (int i = 0; i < 4; i++)
	{
		char		c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

/* Append a code point as UTF-8 to out (cap includes the terminator). */
static bool
put_utf8(char *out, size_t cap, size_t *o, unsigned cp)
{
	char		b[4];
	int			n;

	if (cp < 0x80)
	{
		b[0] = (char) cp;
		n = 1;
	}
	else if (cp < 0x800)
	{
		b[0] = (char) (0xC0 | (cp >> 6));
		b[1] = (char) (0x80 | (cp & 0x3F));
		n = 2;
	}
	else if (cp < 0x10000)
	{
		b[0] = (char) (0xE0 | (cp >> 12));
		b[1] = (char) (0x80 | ((cp >> 6) & 0x3F));
		b[2] = (char) (0x80 | (cp & 0x3F));
		n = 3;
	}
	else
	{
		b[0] = (char) (0xF0 | (cp >> 18));
		b[1] = (char) (0x80 | ((cp >> 12) & 0x3F));
		b[2] = (char) (0x80 | ((cp >> 6) & 0x3F));
		b[3] = (char) (0x80 | (cp & 0x3F));
		n = 4;
	}
	if (*o + n >= cap)
		return false;
	memcpy(out + *o, b, n);
	*o += n;
	return true;
}

/*
 * The rest of a UTF-8 sequence whose first byte c (>= 0x80) was just read:
 * the code point in *cp, or false for anything RFC 3629 does not allow
 * (a stray continuation byte, an overlong form, a surrogate, beyond
 * U+10FFFF, a sequence cut short).  JSON text is UTF-8 (RFC 8259).
 */
static bool
read_utf8_tail(Reader *r, unsigned char c, unsigned *cp)
{
	int			n;
	unsigned	v;
	unsigned	least;

	if (c >= 0xC2 && c <= 0xDF)
	{
		n = 1;
		v = c & 0x1F;
		least = 0x80;
	}
	else if (c >= 0xE0 && c <= 0xEF)
	{
		n = 2;
		v = c & 0x0F;
		least = 0x800;
	}
	else if (c >= 0xF0 && c <= 0xF4)
	{
		n = 3;
		v = c & 0x07;
		least = 0x10000;
	}
	else
		return false;
	if (r->len - r->pos < (size_t) n)
		return false;
	for (int i = 0; i < n; i++)
	{
		unsigned char b = (unsigned char) r->s[r->pos + i];

		if ((b & 0xC0) != 0x80)
			return false;
		v = (v << 6) | (b & 0x3F);
	}
	if (v < least || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
		return false;
	r->pos += n;
	*cp = v;
	return true;
}

/* C0 and C1 control characters and DEL: never in a claim schedphi keeps. */
static bool
is_control(unsigned cp)
{
	return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F);
}

/*
 * Read a JSON string at r->pos (on the opening quote).  With out != NULL
 * the decoded value goes there (NUL-terminated, cap bytes at most); a value
 * that does not fit, or that holds a control character (escaped or not),
 * is refused.  Any string that is not valid UTF-8 is refused.
 */
static bool
read_string(Reader *r, char *out, size_t cap)
{
	size_t		o = 0;

	if (r->pos >= r->len || r->s[r->pos] != '"')
		return fail(r, "a string was expected");
	r->pos++;
	for (;;)
	{
		unsigned char c;

		if (r->pos >= r->len)
			return fail(r, "an unterminated string");
		c = (unsigned char) r->s[r->pos++];
		if (c == '"')
			break;
		if (c < 0x20)
			return fail(r, "a control character in a string");
		if (c == '\\')
		{
			unsigned	cp;

			if (r->pos >= r->len)
				return fail(r, "an unterminated string");
			c = (unsigned char) r->s[r->pos++];
			switch (c)
			{
				case '"':
				case '\\':
				case '/':
					cp = c;
					break;
				case 'b':
					cp = '\b';
					break;
				case 'f':
					cp = '\f';
					break;
				case 'n':
					cp = '\n';
					break;
				case 'r':
					cp = '\r';
					break;
				case 't':
					cp = '\t';
					break;
				case 'u':
					{
						int			v;

						if (r->len - r->pos < 4 || (v = hex4(r->s + r->pos)) < 0)
							return fail(r, "a bad \\u escape");
						r->pos += 4;
						cp = (unsigned) v;
						if (cp >= 0xD800 && cp <= 0xDBFF)
						{
							int			lo;

							if (r->len - r->pos < 6 || r->s[r->pos] != '\\' || r->s[r->pos + 1] != 'u' ||
								(lo = hex4(r->s + r->pos + 2)) < 0xDC00 || lo > 0xDFFF)
								return fail(r, "a bad surrogate pair");
							r->pos += 6;
							cp = 0x10000 + ((cp - 0xD800) << 10) + (unsigned) (lo - 0xDC00);
						}
						else if (cp >= 0xDC00 && cp <= 0xDFFF)
							return fail(r, "a bad surrogate pair");
						if (cp == 0)
							return fail(r, "a NUL in a string");
						break;
					}
				default:
					return fail(r, "a bad escape in a string");
			}
			if (out != NULL && is_control(cp))
				return fail(r, "a control character in a claim");
			if (out != NULL && !put_utf8(out, cap, &o, cp))
				return fail(r, "a claim is too long");
		}
		else
		{
			unsigned	cp = c;

			if (c >= 0x80 && !read_utf8_tail(r, c, &cp))
				return fail(r, "a string that is not valid UTF-8");
			if (out != NULL && is_control(cp))
				return fail(r, "a control character in a claim");
			if (out != NULL && !put_utf8(out, cap, &o, cp))
				return fail(r, "a claim is too long");
		}
	}
	if (out != NULL)
		out[o] = '\0';
	return true;
}

/* A JSON number; integral values are returned in *v (fractions truncated). */
static bool
read_number(Reader *r, int64_t *v, bool *integral)
{
	size_t		start = r->pos;
	bool		neg = false;
	int64_t		acc = 0;
	bool		overflow = false;

	*integral = true;
	if (r->pos < r->len && r->s[r->pos] == '-')
	{
		neg = true;
		r->pos++;
	}
	if (r->pos >= r->len || r->s[r->pos] < '0' || r->s[r->pos] > '9')
		return fail(r, "a bad number");
	if (r->s[r->pos] == '0' && r->pos + 1 < r->len && r->s[r->pos + 1] >= '0' && r->s[r->pos + 1] <= '9')
		return fail(r, "a bad number");
	while (r->pos < r->len && r->s[r->pos] >= '0' && r->s[r->pos] <= '9')
	{
		if (acc > (INT64_MAX - 9) / 10)
			overflow = true;
		else
			acc = acc * 10 + (r->s[r->pos] - '0');
		r->pos++;
	}
	if (r->pos < r->len && r->s[r->pos] == '.')
	{
		r->pos++;
		if (r->pos >= r->len || r->s[r->pos] < '0' || r->s[r->pos] > '9')
			return fail(r, "a bad number");
		while (r->pos < r->len && r->s[r->pos] >= '0' && r->s[r->pos] <= '9')
			r->pos++;
	}
	if (r->pos < r->len && (r->s[r->pos] == 'e' || r->s[r->pos] == 'E'))
	{
		*integral = false;
		r->pos++;
		if (r->pos < r->len && (r->s[r->pos] == '+' || r->s[r->pos] == '-'))
			r->pos++;
		if (r->pos >= r->len || r->s[r->pos] < '0' || r->s[r->pos] > '9')
			return fail(r, "a bad number");
		while (r->pos < r->len && r->s[r->pos] >= '0' && r->s[r->pos] <= '9')
			r->pos++;
	}
	if (overflow)
		*integral = false;
	*v = neg ? -acc : acc;
	(void) start;
	return true;
}

static bool skip_value(Reader *r, int depth);

static bool
skip_container(Reader *r, int depth, char open, char close)
{
	bool		first = true;

	if (depth >= MAX_DEPTH)
		return fail(r, "JSON nested too deeply");
	r->pos++;					/* the opening bracket */
	for (;;)
	{
		skip_ws(r);
		if (r->pos >= r->len)
			return fail(r, "unterminated JSON");
		if (r->s[r->pos] == close)
		{
			r->pos++;
			return true;
		}
		if (!first)
		{
			if (r->s[r->pos] != ',')
				return fail(r, "a comma was expected");
			r->pos++;
			skip_ws(r);
		}
		first = false;
		if (open == '{')
		{
			if (!read_string(r, NULL, 0))
				return false;
			skip_ws(r);
			if (r->pos >= r->len || r->s[r->pos] != ':')
				return fail(r, "a colon was expected");
			r->pos++;
			skip_ws(r);
		}
		if (!skip_value(r, depth + 1))
			return false;
	}
}

static bool
skip_literal(Reader *r, const char *word)
{
	size_t		n = strlen(word);

	if (r->len - r->pos < n || memcmp(r->s + r->pos, word, n) != 0)
		return fail(r, "a bad JSON value");
	r->pos += n;
	return true;
}

static bool
skip_value(Reader *r, int depth)
{
	int64_t		v;
	bool		integral;

	if (r->pos >= r->len)
		return fail(r, "a JSON value was expected");
	switch (r->s[r->pos])
	{
		case '"':
			return read_string(r, NULL, 0);
		case '{':
			return skip_container(r, depth, '{', '}');
		case '[':
			return skip_container(r, depth, '[', ']');
		case 't':
			return skip_literal(r, "true");
		case 'f':
			return skip_literal(r, "false");
		case 'n':
			return skip_literal(r, "null");
		default:
			return read_number(r, &v, &integral);
	}
}

/* An array of strings, or one string, into out[max][width]. */
static bool
read_string_list(Reader *r, char *out, size_t width, int max, int *n, const char *what)
{
	char		msg[96];

	*n = 0;
	if (r->pos < r->len && r->s[r->pos] == '"')
	{
		*n = 1;
		return read_string(r, out, width);
	}
	if (r->pos >= r->len || r->s[r->pos] != '[')
	{
		snprintf(msg, sizeof(msg), "claim %s must be a string or an array of strings", what);
		return fail(r, msg);
	}
	r->pos++;
	skip_ws(r);
	if (r->pos < r->len && r->s[r->pos] == ']')
	{
		r->pos++;
		return true;
	}
	for (;;)
	{
		skip_ws(r);
		if (*n == max)
		{
			snprintf(msg, sizeof(msg), "claim %s has too many values", what);
			return fail(r, msg);
		}
		if (r->pos >= r->len || r->s[r->pos] != '"')
		{
			snprintf(msg, sizeof(msg), "claim %s must hold strings", what);
			return fail(r, msg);
		}
		if (!read_string(r, out + (*n) * width, width))
			return false;
		(*n)++;
		skip_ws(r);
		if (r->pos < r->len && r->s[r->pos] == ',')
		{
			r->pos++;
			continue;
		}
		if (r->pos < r->len && r->s[r->pos] == ']')
		{
			r->pos++;
			return true;
		}
		return fail(r, "unterminated JSON array");
	}
}

static bool
read_time(Reader *r, int64_t *v, bool *has, const char *what)
{
	bool		integral;
	char		msg[64];

	if (r->pos >= r->len || !((r->s[r->pos] >= '0' && r->s[r->pos] <= '9') || r->s[r->pos] == '-'))
	{
		snprintf(msg, sizeof(msg), "claim %s must be a number", what);
		return fail(r, msg);
	}
	if (!read_number(r, v, &integral))
		return false;
	if (!integral || *v < 0 || *v > INT64_C(253402300799))
	{
		snprintf(msg, sizeof(msg), "claim %s is out of range", what);
		return fail(r, msg);
	}
	*has = true;
	return true;
}

typedef enum
{
	PART_HEADER,
	PART_CLAIMS
} Part;

/* The buffer of a string header parameter or claim schedphi reads, or NULL. */
static char *
string_claim(Part part, const char *key, sp_jwt *out, size_t *len)
{
	static const struct
	{
		Part		part;
		const char *key;
		size_t		offset;
		size_t		size;
	}			claims[] = {
		{PART_HEADER, "alg", offsetof(sp_jwt, alg), sizeof(((sp_jwt *) 0)->alg)},
		{PART_HEADER, "kid", offsetof(sp_jwt, kid), sizeof(((sp_jwt *) 0)->kid)},
		{PART_CLAIMS, "iss", offsetof(sp_jwt, iss), sizeof(((sp_jwt *) 0)->iss)},
		{PART_CLAIMS, "sub", offsetof(sp_jwt, sub), sizeof(((sp_jwt *) 0)->sub)},
		{PART_CLAIMS, "schedphi_tenant", offsetof(sp_jwt, tenant), sizeof(((sp_jwt *) 0)->tenant)},
		{PART_CLAIMS, "schedphi_role", offsetof(sp_jwt, role), sizeof(((sp_jwt *) 0)->role)},
		{PART_CLAIMS, "schedphi_practitioner", offsetof(sp_jwt, practitioner), sizeof(((sp_jwt *) 0)->practitioner)},
	};

	for (size_t i = 0; i < sizeof(claims) / sizeof(claims[0]); i++)
		if (claims[i].part == part && strcmp(claims[i].key, key) == 0)
		{
			*len = claims[i].size;
			return (char *) out + claims[i].offset;
		}
	return NULL;
}

/* Parse one JSON object (header or claims) into out. */
static bool
read_object(Reader *r, Part part, sp_jwt *out)
{
	char		keys[MAX_KEYS][32];
	int			nkeys = 0;
	bool		first = true;
	char	   *dest;
	size_t		destlen;

	skip_ws(r);
	if (r->pos >= r->len || r->s[r->pos] != '{')
		return fail(r, part == PART_HEADER ? "the header is not a JSON object" : "the claims are not a JSON object");
	r->pos++;
	for (;;)
	{
		char		key[32];
		Reader		probe;
		bool		known = true;

		skip_ws(r);
		if (r->pos >= r->len)
			return fail(r, "unterminated JSON");
		if (r->s[r->pos] == '}')
		{
			r->pos++;
			break;
		}
		if (!first)
		{
			if (r->s[r->pos] != ',')
				return fail(r, "a comma was expected");
			r->pos++;
			skip_ws(r);
		}
		first = false;
		/* keys longer than any we know are skipped, not truncated */
		probe = *r;
		if (!read_string(&probe, key, sizeof(key)))
		{
			if (!read_string(r, NULL, 0))
				return false;
			key[0] = '\0';
			known = false;
		}
		else
			*r = probe;
		if (known)
		{
			for (int i = 0; i < nkeys; i++)
				if (strcmp(keys[i], key) == 0)
					return fail(r, "a key appears twice");
			if (nkeys == MAX_KEYS)
				return fail(r, "too many keys");
			strcpy(keys[nkeys++], key);
		}
		skip_ws(r);
		if (r->pos >= r->len || r->s[r->pos] != ':')
			return fail(r, "a colon was expected");
		r->pos++;
		skip_ws(r);

		if (!known)
		{
			if (!skip_value(r, 1))
				return false;
		}
		else if (part == PART_HEADER && strcmp(key, "crit") == 0)
			return fail(r, "critical header parameters are not supported");
		else if ((dest = string_claim(part, key, out, &destlen)) != NULL)
		{
			if (!read_string(r, dest, destlen))
				return false;
		}
		else if (part == PART_CLAIMS && strcmp(key, "aud") == 0)
		{
			if (!read_string_list(r, &out->aud[0][0], SP_JWT_STR, SP_JWT_MAX_AUD, &out->naud, "aud"))
				return false;
		}
		else if (part == PART_CLAIMS && strcmp(key, "amr") == 0)
		{
			if (!read_string_list(r, &out->amr[0][0], sizeof(out->amr[0]), SP_JWT_MAX_AMR, &out->namr, "amr"))
				return false;
		}
		else if (part == PART_CLAIMS && strcmp(key, "exp") == 0)
		{
			if (!read_time(r, &out->exp, &out->has_exp, "exp"))
				return false;
		}
		else if (part == PART_CLAIMS && strcmp(key, "nbf") == 0)
		{
			if (!read_time(r, &out->nbf, &out->has_nbf, "nbf"))
				return false;
		}
		else if (part == PART_CLAIMS && strcmp(key, "iat") == 0)
		{
			if (!read_time(r, &out->iat, &out->has_iat, "iat"))
				return false;
		}
		else if (!skip_value(r, 1))
			return false;
	}
	skip_ws(r);
	if (r->pos != r->len)
		return fail(r, "trailing data after the JSON object");
	return true;
}

static int
b64url_value(unsigned char c)
{
	return sp_b64_digit(c, '-', '_');
}

bool
sp_b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen)
{
	size_t		o = 0;
	uint32_t	acc = 0;
	int			bits = 0;

	if (n % 4 == 1)
		return false;
	for (size_t i = 0; i < n; i++)
	{
		int			v = b64url_value((unsigned char) in[i]);

		if (v < 0)
			return false;
		acc = (acc << 6) | (uint32_t) v;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			if (o >= cap)
				return false;
			out[o++] = (uint8_t) (acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	/* the unused low bits of the last character must be zero */
	if (bits > 0 && acc != 0)
		return false;
	*outlen = o;
	return true;
}

bool
sp_jwt_parse(const char *token, size_t len, sp_jwt *out, char *err, size_t errlen)
{
	const char *dot1,
			   *dot2;
	char		json[SP_JWT_MAX_LEN];
	size_t		jlen;
	Reader		r;

	memset(out, 0, sizeof(*out));
	r.err = err;
	r.errlen = errlen;
	if (len == 0)
		return fail(&r, "the token is empty");
	if (len > SP_JWT_MAX_LEN)
		return fail(&r, "the token is too long");
	dot1 = memchr(token, '.', len);
	dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t) (dot1 + 1 - token)) : NULL;
	if (dot1 == NULL || dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t) (dot2 + 1 - token)) != NULL)
		return fail(&r, "the token is not three base64url parts separated by dots");

	if (!sp_b64url_decode(token, (size_t) (dot1 - token), (uint8_t *) json, sizeof(json), &jlen))
		return fail(&r, "the header is not base64url");
	r.s = json;
	r.len = jlen;
	r.pos = 0;
	if (!read_object(&r, PART_HEADER, out))
		return false;
	if (out->alg[0] == '\0')
		return fail(&r, "the header has no alg");

	if (!sp_b64url_decode(dot1 + 1, (size_t) (dot2 - dot1 - 1), (uint8_t *) json, sizeof(json), &jlen))
		return fail(&r, "the claims are not base64url");
	r.s = json;
	r.len = jlen;
	r.pos = 0;
	if (!read_object(&r, PART_CLAIMS, out))
		return false;

	if (!sp_b64url_decode(dot2 + 1, len - (size_t) (dot2 + 1 - token), out->sig, sizeof(out->sig), &out->siglen))
		return fail(&r, "the signature is not base64url");
	out->signing_input_len = (size_t) (dot2 - token);
	return true;
}
