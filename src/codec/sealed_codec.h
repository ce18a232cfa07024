/*-------------------------------------------------------------------------
 *
 * sealed_codec.h
 *	  Wire and text forms of a sealed (AES-256-GCM) value, without any
 *	  PostgreSQL dependency, so that the parsers can be fuzzed standalone.
 *
 * Binary form, version 1:
 *	 byte  0		version (1)
 *	 bytes 1-4		data key id, big-endian, never 0
 *	 bytes 5-16		nonce (96 bits, random)
 *	 bytes 17-32	GCM tag (128 bits)
 *	 bytes 33-		ciphertext (as long as the plaintext)
 * Text form: "spv1:" followed by the standard base64 of the binary form,
 * padded, with no white space.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_SEALED_CODEC_H
#define SCHEDPHI_SEALED_CODEC_H

#include <stddef.h>
#include <stdint.h>

#define SP_SEALED_VERSION	1
#define SP_NONCE_LEN		12
#define SP_TAG_LEN			16
#define SP_SEALED_HEADER	(1 + 4 + SP_NONCE_LEN + SP_TAG_LEN)
#define SP_SEALED_MAX_PLAIN 65536
#define SP_SEALED_MAX_BIN	(SP_SEALED_HEADER + SP_SEALED_MAX_PLAIN)
#define SP_TEXT_PREFIX		"spv1:"
#define SP_TEXT_PREFIX_LEN	5

typedef enum sp_status
{
	SP_OK = 0,
	SP_ERR_PREFIX,
	SP_ERR_BASE64,
	SP_ERR_LENGTH,
	SP_ERR_VERSION,
	SP_ERR_DEK
} sp_status;

/* A parsed binary form; pointers point into the caller's buffer. */
typedef struct sp_sealed_view
{
	uint32_t	dek_id;
	const uint8_t *nonce;
	const uint8_t *tag;
	const uint8_t *ct;
	size_t		ct_len;
} sp_sealed_view;

extern sp_status sp_sealed_parse(const uint8_t *buf, size_t len, sp_sealed_view *out);
extern void sp_sealed_header(uint8_t *buf, uint32_t dek_id);

extern size_t sp_b64_encoded_len(size_t n);
extern size_t sp_b64_encode(const uint8_t *in, size_t n, char *out);
extern sp_status sp_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen);

extern sp_status sp_sealed_from_text(const char *text, size_t len, uint8_t *out, size_t cap,
									 size_t *outlen);
extern size_t sp_sealed_text_len(size_t binlen);
extern size_t sp_sealed_to_text(const uint8_t *bin, size_t binlen, char *out);

extern const char *sp_status_detail(sp_status status);

#endif							/* SCHEDPHI_SEALED_CODEC_H */
