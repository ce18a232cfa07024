/*-------------------------------------------------------------------------
 *
 * hl7.h
 *	  HL7 v2 (2.2 to 2.8) messages in their pipe-and-hat encoding: split
 *	  into segments, address a field, repetition, component and
 *	  subcomponent, undo and apply the escape sequences, and read a DTM
 *	  timestamp.  No PostgreSQL dependency and no allocation: the caller
 *	  gives the structure and the output buffers, so that the parser can be
 *	  fuzzed standalone.  Nothing here ever quotes a message in an error
 *	  (messages carry PHI): errors name a segment by its number and id.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_HL7_H
#define SCHEDPHI_HL7_H

#include <stdbool.h>
#include <stddef.h>

/* The most segments one message may have (an SIU with 100 resource groups
 * of 5 segments has about 520). */
#define SP_HL7_MAX_SEGMENTS 2048

/* The encoding characters, from MSH-1 and MSH-2 (trunc, 2.7 and later, is
 * 0 when absent; it is not a delimiter, only a mark in data). */
typedef struct sp_hl7_delims
{
	char		field;
	char		comp;
	char		rep;
	char		esc;
	char		sub;
	char		trunc;
} sp_hl7_delims;

/* A piece of the message: a pointer into it and a length (not terminated). */
typedef struct sp_hl7_span
{
	const char *p;
	size_t		len;
} sp_hl7_span;

typedef struct sp_hl7_msg
{
	sp_hl7_delims d;
	int			nseg;
	sp_hl7_span seg[SP_HL7_MAX_SEGMENTS];	/* each from its id to its end */
} sp_hl7_msg;

/*
 * Split a message.  Segments end at CR, LF or CRLF; blank lines are passed
 * over; a missing final CR, an MLLP start byte (0x0B) in front and end
 * bytes (0x1C) or white space at the end are tolerated.  The first segment
 * must be MSH with five distinct encoding characters (four, or five with
 * the truncation character); every segment id is three capital letters or
 * digits.  Returns true and fills *out, or false with a message in err.
 * out's spans point into msg, which must outlive them.
 */
extern bool sp_hl7_parse(const char *msg, size_t len, sp_hl7_msg *out, char *err, size_t errlen);

/* The id of segment i ("MSH", "SCH", ...), 3 characters, not terminated. */
extern const char *sp_hl7_seg_id(const sp_hl7_msg *m, int i);

/* The index of the first segment with that id at or after from, or -1. */
extern int	sp_hl7_find(const sp_hl7_msg *m, const char *id, int from);

/*
 * One value of segment i, as written (escapes not undone), numbered as
 * HL7 numbers them: field from 1 (MSH-1 is the field separator itself and
 * MSH-2 the encoding characters, neither split further), rep from 1, comp
 * and sub from 1, or 0 for the whole of the level above.  Returns false
 * when the message has no such value (an empty one present is true with
 * len 0).
 */
extern bool sp_hl7_get(const sp_hl7_msg *m, int i, int field, int rep, int comp, int sub, sp_hl7_span *out);

/* How many repetitions field has in segment i (0 when it is absent or empty). */
extern int	sp_hl7_reps(const sp_hl7_msg *m, int i, int field);

/* How many fields segment i has (MSH counted as HL7 numbers them). */
extern int	sp_hl7_nfields(const sp_hl7_msg *m, int i);

/*
 * Undo the escape sequences of a value: \F\ \S\ \T\ \R\ \E\ give the
 * delimiters, \Xhh...\ the bytes written in hex, \.br\ a line feed;
 * highlighting (\H\ \N\) and character set switches (\C...\ \M...\) are
 * dropped, and so is any other sequence between escape characters.  An
 * escape character without its closing one is kept as it is.  Writes at
 * most len bytes (never more than the input) into out (cap >= len) and
 * returns how many; a NUL byte, written or given by a \X sequence, makes
 * it return (size_t) -1, so that the caller can refuse it.
 */
extern size_t sp_hl7_unescape(const sp_hl7_delims *d, const char *in, size_t len, char *out, size_t cap);

/*
 * Escape a value for a field: every delimiter (and the truncation
 * character when there is one) becomes its sequence, a line feed \.br\,
 * a carriage return and other control characters \Xhh\.  Returns the
 * length written, or (size_t) -1 when cap is too small (5 * len + 1 always
 * suffices).
 */
extern size_t sp_hl7_escape(const sp_hl7_delims *d, const char *in, size_t len, char *out, size_t cap);

/*
 * A DTM (or the TS of versions before 2.5: its first component):
 * YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ], white space around
 * allowed.  precision counts the parts given (1 year ... 6 seconds).  The
 * parts are checked for range (a 31 April or a hour 25 is refused, a leap
 * second 60 too); the offset, when there is one, is in minutes east of UTC.
 */
typedef struct sp_hl7_dtm
{
	int			year,
				month,
				day,
				hour,
				minute,
				second,
				usec;
	int			precision;
	bool		has_offset;
	int			offset_minutes;
} sp_hl7_dtm;

extern bool sp_hl7_parse_dtm(const char *in, size_t len, sp_hl7_dtm *out);

#endif							/* SCHEDPHI_HL7_H */
