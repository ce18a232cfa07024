/*
 * The HL7 v2 parser alone (src/codec/hl7.c), no server: how many MB/s it
 * splits into segments, and how many when every field of every segment is
 * also found (what hl7_ingest does is a small part of that).  Runs each of
 * the given messages for about a second per measure.  Usage:
 * hl7_parse FILE...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/hl7.h"

static sp_hl7_msg m;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
	size_t		total = 0;
	size_t	   *lens = calloc(argc, sizeof(size_t));
	char	  **msgs = calloc(argc, sizeof(char *));
	char		err[256];
	volatile size_t sink = 0;

	for (int a = 1; a < argc; a++)
	{
		FILE	   *f = fopen(argv[a], "rb");
		long		n;

		if (f == NULL)
			return 2;
		fseek(f, 0, SEEK_END);
		n = ftell(f);
		fseek(f, 0, SEEK_SET);
		msgs[a] = malloc(n);
		if (fread(msgs[a], 1, n, f) != (size_t) n)
			return 2;
		fclose(f);
		lens[a] = n;
		total += n;
	}
	for (int walk = 0; walk < 2; walk++)
	{
		double		t0 = now(),
					t;
		size_t		bytes = 0;
		long		messages = 0;

		do
		{
			for (int r = 0; r < 1000; r++)
				for (int a = 1; a < argc; a++)
				{
					if (!sp_hl7_parse(msgs[a], lens[a], &m, err, sizeof(err)))
						return 3;
					if (walk)
						for (int i = 0; i < m.nseg; i++)
						{
							int			nf = sp_hl7_nfields(&m, i);
							sp_hl7_span v;

							for (int fld = 1; fld <= nf; fld++)
								if (sp_hl7_get(&m, i, fld, 1, 1, 0, &v))
									sink += v.len;
						}
					bytes += lens[a];
					messages++;
				}
			t = now() - t0;
		} while (t < 1.0);
		printf("%s: %.0f MB/s, %.0f messages/s (%zu bytes over %d messages)\n",
			   walk ? "parse and find every field's first component" : "parse (segments)",
			   bytes / t / 1e6, messages / t, total, argc - 1);
	}
	return sink == (size_t) -1;
}
