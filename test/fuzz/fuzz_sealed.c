/*
 * libFuzzer harness for the sealed value's text and binary parsers
 * (src/codec/sealed_codec.c): any input must be accepted or refused
 * without reading or writing out of bounds, and whatever is accepted must
 * print back to exactly the text that was parsed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/sealed_codec.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t    *bin = malloc(size + 1);
	size_t		binlen = 0;
	sp_sealed_view view;

	if (bin == NULL)
		return 0;
	if (sp_sealed_from_text((const char *) data, size, bin, size, &binlen) == SP_OK)
	{
		char	   *text = malloc(sp_sealed_text_len(binlen));
		size_t		n = sp_sealed_to_text(bin, binlen, text);

		/* one canonical text form: it must round-trip byte for byte */
		if (n != size || memcmp(text, data, size) != 0)
			abort();
		if (sp_sealed_parse(bin, binlen, &view) != SP_OK || view.ct_len + SP_SEALED_HEADER != binlen)
			abort();
		free(text);
	}
	/* the binary parser on raw bytes (the binary receive path) */
	if (sp_sealed_parse(data, size, &view) == SP_OK)
	{
		if (view.dek_id == 0 || view.ct + view.ct_len != data + size)
			abort();
	}
	free(bin);
	return 0;
}
