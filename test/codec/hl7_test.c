/*
 * Checks of the HL7 v2 codec (src/codec/hl7.c) against the public sample
 * messages in test/samples/hl7v2 (see its SOURCES.md) and against
 * hand-made edge cases: segments, delimiters, values at every level,
 * escapes both ways, DTM timestamps, and errors that never quote the
 * message.  Prints "codec: ok - ..." or "codec: NOT OK - ..." per check;
 * exits 1 if any failed.  Usage: hl7_test SAMPLES_DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/hl7.h"

static int	failed = 0;
static sp_hl7_msg m;			/* large: not on the stack */
static char err[256];

static void
check(int ok, const char *what)
{
	printf("codec: %s - %s\n", ok ? "ok" : "NOT OK", what);
	if (!ok)
		failed = 1;
}

static char *
slurp(const char *dir, const char *name, size_t *len)
{
	char		path[4096];
	FILE	   *f;
	char	   *buf;
	long		n;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "rb");
	if (f == NULL)
	{
		printf("codec: NOT OK - cannot read %s\n", path);
		exit(1);
	}
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc(n + 1);
	if (buf == NULL || fread(buf, 1, n, f) != (size_t) n)
		exit(1);
	fclose(f);
	buf[n] = '\0';
	*len = n;
	return buf;
}

/* value of segment (by id and occurrence from 1) as written, or "<none>" */
static const char *
val(const char *id, int occurrence, int field, int rep, int comp, int sub)
{
	static char out[1024];
	sp_hl7_span s;
	int			i = -1;

	for (int k = 0; k < occurrence; k++)
		if ((i = sp_hl7_find(&m, id, i + 1)) < 0)
			return "<none>";
	if (!sp_hl7_get(&m, i, field, rep, comp, sub, &s) || s.len >= sizeof(out))
		return "<none>";
	memcpy(out, s.p, s.len);
	out[s.len] = '\0';
	return out;
}

static int
count(const char *id)
{
	int			n = 0;

	for (int i = sp_hl7_find(&m, id, 0); i >= 0; i = sp_hl7_find(&m, id, i + 1))
		n++;
	return n;
}

static int
is(const char *got, const char *want)
{
	return strcmp(got, want) == 0;
}

static int
parse(const char *msg, size_t len)
{
	return sp_hl7_parse(msg, len, &m, err, sizeof(err));
}

/* the same message with every CR made LF, or CRLF */
static char *
with_newlines(const char *msg, size_t len, int crlf, size_t *outlen)
{
	char	   *out = malloc(2 * len + 1);
	size_t		o = 0;

	for (size_t i = 0; i < len; i++)
	{
		if (msg[i] == '\r')
		{
			if (crlf)
				out[o++] = '\r';
			out[o++] = '\n';
		}
		else
			out[o++] = msg[i];
	}
	*outlen = o;
	return out;
}

static void
samples(const char *dir)
{
	size_t		len;
	char	   *msg;
	char	   *alt;
	size_t		altlen;
	int			nseg;

	msg = slurp(dir, "01_siu_s12_v28_msft_fhirconverter.hl7", &len);
	check(parse(msg, len), "01 (v2.8, FHIR-Converter) parses");
	check(m.nseg == 18 && is(val("MSH", 1, 9, 1, 1, 0), "SIU") && is(val("MSH", 1, 9, 1, 2, 0), "S12")
		  && is(val("MSH", 1, 10, 0, 0, 0), "MSG00012") && is(val("MSH", 1, 12, 0, 0, 0), "2.8"),
		  "01: 18 segments; MSH-9 SIU^S12, MSH-10, MSH-12 2.8");
	check(is(val("MSH", 1, 1, 0, 0, 0), "|") && is(val("MSH", 1, 2, 0, 0, 0), "^~\\&")
		  && is(val("MSH", 1, 3, 0, 0, 0), "SCHApp") && is(val("MSH", 1, 4, 1, 2, 0), "2.16.840.1.122848.1.30"),
		  "01: MSH-1 and MSH-2 are the delimiters; MSH-3 the first field after them");
	check(is(val("SCH", 1, 1, 1, 0, 0), "12345") && is(val("SCH", 1, 2, 1, 0, 0), "36996")
		  && is(val("SCH", 1, 6, 1, 0, 0), "Add") && is(val("SCH", 1, 9, 1, 0, 0), "60")
		  && is(val("SCH", 1, 10, 1, 0, 0), "s") && is(val("SCH", 1, 11, 1, 4, 0), "202010011126+0215")
		  && is(val("SCH", 1, 25, 1, 1, 0), "Booked"),
		  "01: SCH placer and filler ids, duration and its unit, SCH-11 start, SCH-25 status");
	check(is(val("TQ1", 1, 7, 1, 1, 0), "20210924093000+0215") && is(val("TQ1", 1, 8, 1, 1, 0), "20210924102000+0215"),
		  "01: TQ1-7 and TQ1-8");
	check(sp_hl7_reps(&m, sp_hl7_find(&m, "PID", 0), 3) == 2 && is(val("PID", 1, 3, 1, 1, 0), "PATID1234")
		  && is(val("PID", 1, 3, 1, 4, 2), "2.16.1") && is(val("PID", 1, 3, 2, 1, 0), "123456789")
		  && is(val("PID", 1, 3, 2, 5, 0), "SS") && is(val("PID", 1, 5, 1, 1, 5), "Aniston"),
		  "01: PID-3 has two repetitions; components and subcomponents");
	check(count("RGS") == 1 && count("NTE") == 5 && is(val("AIP", 1, 3, 1, 1, 0), "1210")
		  && is(val("AIL", 1, 3, 1, 2, 0), "Room01") && is(val("AIG", 1, 3, 1, 1, 0), "5001")
		  && is(val("AIS", 1, 3, 1, 1, 0), "76164006"),
		  "01: one resource group with AIS, AIG, AIL and AIP and their NTE segments");
	check(is(val("SCH", 1, 99, 0, 0, 0), "<none>") && is(val("SCH", 1, 11, 3, 0, 0), "<none>")
		  && is(val("SCH", 1, 3, 1, 2, 0), "<none>") && is(val("SCH", 1, 3, 0, 0, 0), "")
		  && is(val("SCH", 1, 3, 1, 0, 0), "")
		  && is(val("ZZZ", 1, 1, 0, 0, 0), "<none>"),
		  "01: an absent value is absent, an empty one is empty");
	nseg = m.nseg;
	alt = with_newlines(msg, len, 0, &altlen);
	check(parse(alt, altlen) && m.nseg == nseg && is(val("AIP", 1, 3, 1, 3, 0), "Robert"),
		  "01 with LF between segments: the same");
	free(alt);
	alt = with_newlines(msg, len, 1, &altlen);
	check(parse(alt, altlen) && m.nseg == nseg && is(val("AIP", 1, 3, 1, 3, 0), "Robert"),
		  "01 with CRLF between segments: the same");
	free(alt);
	free(msg);

	msg = slurp(dir, "02_siu_s12_v22_athenanet_501.hl7", &len);
	check(parse(msg, len) && is(val("MSH", 1, 12, 0, 0, 0), "2.2") && is(val("SCH", 1, 11, 1, 4, 0), "200403221540")
		  && is(val("AIL", 1, 3, 1, 2, 0), "Brockton") && is(val("AIL", 1, 10, 1, 0, 0), "minutes")
		  && sp_hl7_nfields(&m, m.nseg - 1) == 12 && is(val("AIL", 1, 12, 0, 0, 0), ""),
		  "02 (v2.2, athenaNet): the MLLP end byte in the last field is not data");
	free(msg);

	msg = slurp(dir, "03_siu_s14_v23_hapi_hl7v2_or_multiresource.hl7", &len);
	check(parse(msg, len) && is(val("MSH", 1, 10, 0, 0, 0), " 38762") && is(val("MSH", 1, 9, 1, 2, 0), "S14")
		  && count("RGS") == 4 && count("AIP") == 4 && is(val("AIP", 4, 3, 1, 1, 0), "T1240UHN")
		  && is(val("SCH", 1, 9, 1, 0, 0), "379") && is(val("SCH", 1, 10, 1, 2, 0), "MINUTES"),
		  "03 (v2.3, HAPI): four resource groups, no final CR, MSH-10 with its leading space as written");
	free(msg);

	msg = slurp(dir, "04_siu_s12_v23_mesa_op_classic.hl7", &len);
	check(parse(msg, len) && is(val("SCH", 1, 11, 1, 4, 0), "20110617084500")
		  && is(val("SCH", 1, 11, 1, 5, 0), "20110617093000") && is(val("SCH", 1, 25, 1, 0, 0), "Scheduled")
		  && is(val("AIL", 1, 3, 1, 1, 0), "OFFICE") && is(val("AIP", 1, 3, 1, 2, 0), "White"),
		  "04 (v2.3, MESA): SCH-11 start and end, resources");
	free(msg);

	msg = slurp(dir, "05_siu_s15_v231_athenanet_noshow.hl7", &len);
	check(parse(msg, len) && is(val("MSH", 1, 9, 1, 2, 0), "S15") && is(val("SCH", 1, 25, 1, 0, 0), "NOSHOW")
		  && sp_hl7_reps(&m, sp_hl7_find(&m, "PID", 0), 13) == 4 && count("RGS") == 0 && count("AIG") == 1,
		  "05 (v2.3.1, athenahealth): S15 with SCH-25 NOSHOW, AIG and AIL without RGS");
	free(msg);

	msg = slurp(dir, "ack_example_kardianos_hl7.hl7", &len);
	check(parse(msg, len) && is(val("MSA", 1, 1, 0, 0, 0), "AA")
		  && is(val("MSA", 1, 2, 0, 0, 0), val("MSH", 1, 10, 0, 0, 0)),
		  "ACK sample: MSA-1 AA, MSA-2 echoes MSH-10");
	free(msg);
}

static void
edges(void)
{
	static const char canary[] = "Zqxcanary";
	char		buf[512];
	char		back[512];
	size_t		n;
	sp_hl7_dtm	t;
	const char *v27 = "MSH|^~\\&#|A|B|C|D|20240101||SIU^S12|X1|P|2.7\rNTE|1||trunc\\P\\ated\\X41\\\r";
	char	   *many;

	check(!parse("PID|1||Zqxcanary\rMSH|^~\\&|A", 27) && strstr(err, canary) == NULL,
		  "a message that does not begin with MSH is refused, without quoting it");
	check(!parse("MSH|^~\\|A|Zqxcanary", 19) && strstr(err, canary) == NULL, "MSH-2 of three characters is refused");
	check(!parse("MSH|^~^&|A|Zqxcanary", 20), "repeated encoding characters are refused");
	check(!parse("MSH|^~\\A|A|B", 12), "a letter as an encoding character is refused");
	check(!parse("MSH|^~\\&|A\rpid|Zqxcanary\r", 25) && strstr(err, canary) == NULL && strstr(err, "segment 2") != NULL,
		  "a segment id that is not three capitals is refused, named by its number only");
	check(!parse("MSH|^~\\&|A\rPIDX|1\r", 18), "a segment id of four characters is refused");
	check(parse("\x0b\r\nMSH|^~\\&|A|B\r\r\n\rPID|1\x1c\r", 26) && m.nseg == 2 && is(val("PID", 1, 1, 0, 0, 0), "1"),
		  "an MLLP start byte, blank lines and the end byte are passed over");
	many = malloc(8 + 4 * (SP_HL7_MAX_SEGMENTS + 1) + 1);
	strcpy(many, "MSH|^~\\&");
	for (int i = 0; i < SP_HL7_MAX_SEGMENTS; i++)
		strcat(many, "\rZX1");
	check(!parse(many, strlen(many)), "more segments than the limit are refused");
	free(many);

	check(parse(v27, strlen(v27)) && m.d.trunc == '#' && is(val("MSH", 1, 2, 0, 0, 0), "^~\\&#"),
		  "v2.7: the fifth encoding character (truncation) is read");
	n = sp_hl7_unescape(&m.d, "trunc\\P\\ated\\X41\\", 17, buf, sizeof(buf));
	check(n == 11 && memcmp(buf, "trunc#atedA", 11) == 0, "\\P\\ is the truncation character, \\X41\\ the byte 0x41");

	{
		sp_hl7_span v;
		int			last;

		check(parse("MSH|^~\\&|A\rNTE|1\rMSH", 20) && m.nseg == 3
			  && (last = sp_hl7_find(&m, "MSH", 1)) == 2 && sp_hl7_nfields(&m, last) == 0
			  && !sp_hl7_get(&m, last, 1, 0, 0, 0, &v) && sp_hl7_reps(&m, last, 1) == 0,
			  "a bare MSH segment later in the message has no MSH-1 (nothing read past its end)");
	}
	check(parse("MSH|^~\\&|A", 10), "a minimal MSH");
	{
		const char *in = "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\X0D0A\\g\\.br\\h\\H\\i\\N\\j\\Cxxyy\\k\\";
		const char *want = "a|b^c&d~e\\f\r\ng\nhijk\\";

		n = sp_hl7_unescape(&m.d, in, strlen(in), buf, sizeof(buf));
		check(n == strlen(want) && memcmp(buf, want, n) == 0,
			  "escapes undone: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\ \\.br\\; highlighting and charset switches dropped; a lone escape kept");
	}
	check(sp_hl7_unescape(&m.d, "a\\X00\\b", 7, buf, sizeof(buf)) == (size_t) -1, "\\X00\\ (a NUL byte) is refused");
	{
		const char *in = "A|B^C&D~E\\F\nG\rH\x01I";
		size_t		e = sp_hl7_escape(&m.d, in, strlen(in), buf, sizeof(buf));

		buf[e == (size_t) -1 ? 0 : e] = '\0';
		check(e != (size_t) -1 && strcmp(buf, "A\\F\\B\\S\\C\\T\\D\\R\\E\\E\\F\\.br\\G\\X0D\\H\\X01\\I") == 0,
			  "escaped: every delimiter, a line feed, CR and control characters");
		n = sp_hl7_unescape(&m.d, buf, e, back, sizeof(back));
		check(n == strlen(in) && memcmp(back, in, n) == 0, "and undone again to the same bytes");
		check(sp_hl7_escape(&m.d, in, strlen(in), buf, 10) == (size_t) -1, "escape into too small a buffer is refused");
	}

	check(sp_hl7_parse_dtm("20210924093000+0215", 19, &t) && t.year == 2021 && t.month == 9 && t.day == 24
		  && t.hour == 9 && t.minute == 30 && t.second == 0 && t.precision == 6 && t.has_offset && t.offset_minutes == 135,
		  "DTM with seconds and an offset");
	check(sp_hl7_parse_dtm(" 200403221540 ", 14, &t) && t.precision == 5 && t.hour == 15 && t.minute == 40 && !t.has_offset,
		  "DTM to the minute, without an offset, white space around");
	check(sp_hl7_parse_dtm("2004", 4, &t) && t.precision == 1 && t.month == 1 && t.day == 1, "DTM of a year alone");
	check(sp_hl7_parse_dtm("20210924093000.1234-0500", 24, &t) && t.usec == 123400 && t.offset_minutes == -300,
		  "DTM with a fraction and a negative offset");
	check(sp_hl7_parse_dtm("20240229", 8, &t) && !sp_hl7_parse_dtm("20230229", 8, &t)
		  && !sp_hl7_parse_dtm("20110431", 8, &t) && !sp_hl7_parse_dtm("20210924250000", 14, &t)
		  && !sp_hl7_parse_dtm("2021092409300", 13, &t) && !sp_hl7_parse_dtm("", 0, &t)
		  && !sp_hl7_parse_dtm("+0200", 5, &t) && !sp_hl7_parse_dtm("20210924+2500", 13, &t)
		  && !sp_hl7_parse_dtm("20210924.5", 10, &t) && !sp_hl7_parse_dtm("00000101", 8, &t)
		  && !sp_hl7_parse_dtm("20210924093060", 14, &t) && !sp_hl7_parse_dtm("99151231-1234", 13, &t)
		  && sp_hl7_parse_dtm("20260101-1200", 13, &t) && sp_hl7_parse_dtm("20260101+1400", 13, &t)
		  && !sp_hl7_parse_dtm("20260101+1401", 13, &t),
		  "DTM: 29 February only in a leap year; no 31 April, hour 25, odd digits, empty, bad offset, stray fraction, year 0, second 60; offsets from -12:00 to +14:00 only");
}

int
main(int argc, char **argv)
{
	if (argc != 2)
	{
		fprintf(stderr, "usage: %s SAMPLES_DIR\n", argv[0]);
		return 2;
	}
	samples(argv[1]);
	edges();
	return failed;
}
