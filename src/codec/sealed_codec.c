/*-------------------------------------------------------------------------
 *
 * sealed_codec.c
 *	  Strict base64 and the binary and text forms of sealed values.
 *
 * Pure C with no PostgreSQL dependency: test/fuzz builds it on its own.
 * Every function bounds every read and write by the lengths it is given.
 *
 *-------------------------------------------------------------------------
 */
#include "sealed_codec.h"
#include "b64digit.h"

#include <string.h>

static const char b64_alphabet[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Value of a base64 character, or -1. */
static int
b64_value(unsigned char c)
{
	return sp_b64_digit(c, '+', '/');
}

size_t
sp_b64_encoded_len(size_t n)
{
	return ((n + 2) / 3) * 4;
}

/* Writes sp_b64_encoded_len(n) characters (no terminator); returns them. */
size_t
sp_b64_encode(const uint8_t *in, size_t n, char *out)
{
	size_t		o = 0;
	size_t		i;

	for (i = 0; i + 2 < n; i += 3)
	{
		uint32_t	v = ((uint32_t) in[i] << 16) | ((uint32_t) in[i + 1] << 8) | in[i + 2];

		out[o++] = b64_alphabet[(v >> 18) & 63];
		out[o++] = b64_alphabet[(v >> 12) & 63];
		out[o++] = b64_alphabet[(v >> 6) & 63];
		out[o++] = b64_alphabet[v & 63];
	}
	if (n - i == 1)
	{
		uint32_t	v = (uint32_t) in[i] << 16;

		out[o++] = b64_alphabet[(v >> 18) & 63];
		out[o++] = b64_alphabet[(v >> 12) & 63];
		out[o++] = '=';
		out[o++] = '=';
	}
	else if (n - i == 2)
	{
		uint32_t	v = ((uint32_t) in[i] << 16) | ((uint32_t) in[i + 1] << 8);

		out[o++] = b64_alphabet[(v >> 18) & 63];
		out[o++] = b64_alphabet[(v >> 12) & 63];
		out[o++] = b64_alphabet[(v >> 6) & 63];
		out[o++] = '=';
	}
	return o;
}

/*
 * Strict decoding: length a multiple of 4, padding only at the end, no
 * white space, and unused bits of the last character zero (so that every
 * value has exactly one text form).
 */
sp_status
sp_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen)
{
	size_t		o = 0;

	if (n % 4 != 0)
		return SP_ERR_BASE64;
	for (size_t i = 0; i < n; i += 4)
	{
		int			a = b64_value((unsigned char) in[i]);
		int			b = b64_value((unsigned char) in[i + 1]);
		int			c,
					d;
		int			pad = 0;
		if (a < 0 || b < 0)
			return SP_ERR_BASE64;
		if (in[i + 2] == '=')
		{
			if (in[i + 3] != '=' || i + 4 != n || (b & 15) != 0)
				return SP_ERR_BASE64;
			pad = 2;
			c = d = 0;
		}
		else if (in[i + 3] == '=')
		{
			c = b64_value((unsigned char) in[i + 2]);
			if (c < 0 || i + 4 != n || (c & 3) != 0)
				return SP_ERR_BASE64;
			pad = 1;
			d = 0;
		}
		else
		{
			c = b64_value((unsigned char) in[i + 2]);
			d = b64_value((unsigned char) in[i + 3]);
			if (c < 0 || d < 0)
				return SP_ERR_BASE64;
		}
		if (o + 3 - pad > cap)
			return SP_ERR_LENGTH;
		out[o++] = (uint8_t) ((a << 2) | (b >> 4));
		if (pad < 2)
			out[o++] = (uint8_t) (((b & 15) << 4) | (c >> 2));
		if (pad < 1)
			out[o++] = (uint8_t) (((c & 3) << 6) | d);
	}
	*outlen = o;
	return SP_OK;
}

void
sp_sealed_header(uint8_t *buf, uint32_t dek_id)
{
	buf[0] = SP_SEALED_VERSION;
	buf[1] = (uint8_t) (dek_id >> 24);
	buf[2] = (uint8_t) (dek_id >> 16);
	buf[3] = (uint8_t) (dek_id >> 8);
	buf[4] = (uint8_t) dek_id;
}

sp_status
sp_sealed_parse(const uint8_t *buf, size_t len, sp_sealed_view *out)
{
	if (len < SP_SEALED_HEADER || len > SP_SEALED_MAX_BIN)
		return SP_ERR_LENGTH;
	if (buf[0] != SP_SEALED_VERSION)
		return SP_ERR_VERSION;
	out->dek_id = ((uint32_t) buf[1] << 24) | ((uint32_t) buf[2] << 16) |
		((uint32_t) buf[3] << 8) | (uint32_t) buf[4];
	if (out->dek_id == 0)
		return SP_ERR_DEK;
	out->nonce = buf + 5;
	out->tag = buf + 5 + SP_NONCE_LEN;
	out->ct = buf + SP_SEALED_HEADER;
	out->ct_len = len - SP_SEALED_HEADER;
	return SP_OK;
}

/* Decode and validate a text form into out (at most cap bytes). */
sp_status
sp_sealed_from_text(const char *text, size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
	sp_sealed_view view;
	sp_status	st;

	if (len < SP_TEXT_PREFIX_LEN || memcmp(text, SP_TEXT_PREFIX, SP_TEXT_PREFIX_LEN) != 0)
		return SP_ERR_PREFIX;
	if (len - SP_TEXT_PREFIX_LEN > sp_b64_encoded_len(SP_SEALED_MAX_BIN))
		return SP_ERR_LENGTH;
	st = sp_b64_decode(text + SP_TEXT_PREFIX_LEN, len - SP_TEXT_PREFIX_LEN, out, cap, outlen);
	if (st != SP_OK)
		return st;
	return sp_sealed_parse(out, *outlen, &view);
}

size_t
sp_sealed_text_len(size_t binlen)
{
	return SP_TEXT_PREFIX_LEN + sp_b64_encoded_len(binlen);
}

/* Writes sp_sealed_text_len(binlen) characters (no terminator). */
size_t
sp_sealed_to_text(const uint8_t *bin, size_t binlen, char *out)
{
	memcpy(out, SP_TEXT_PREFIX, SP_TEXT_PREFIX_LEN);
	return SP_TEXT_PREFIX_LEN + sp_b64_encode(bin, binlen, out + SP_TEXT_PREFIX_LEN);
}

const char *
sp_status_detail(sp_status status)
{
	switch (status)
	{
		case SP_OK:
			return "No error.";
		case SP_ERR_PREFIX:
			return "A sealed value starts with \"spv1:\".";
		case SP_ERR_BASE64:
			return "The text after \"spv1:\" is not strict, padded base64.";
		case SP_ERR_LENGTH:
			return "The sealed value is too short or too long.";
		case SP_ERR_VERSION:
			return "Unknown sealed format version.";
		case SP_ERR_DEK:
			return "The data key id must not be 0.";
	}
	return "Unknown error.";
}
