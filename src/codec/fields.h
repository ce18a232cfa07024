/*-------------------------------------------------------------------------
 *
 * fields.h
 *	  The checks and normal forms of a patient's contact fields and of a
 *	  birth date written YYYY-MM-DD.  No PostgreSQL dependency, no
 *	  allocation: the caller gives the output buffer (the input's length
 *	  plus one always suffices), so that the parsers can be fuzzed
 *	  standalone.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_FIELDS_H
#define SCHEDPHI_FIELDS_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Each returns true and writes the normal form (NUL-terminated) into out,
 * which holds cap bytes, or false when the value is not one (out then
 * holds nothing useful).
 *
 *	 phone: 7 to 15 digits, optionally +, spaces, dots, dashes and
 *			parentheses, white space around; normal form: the digits.
 *	 email: name@example.org once trimmed of spaces; ASCII only; normal
 *			form: lower case.
 *	 mrn:	1 to 64 of A-Z a-z 0-9 . _ / - once trimmed of spaces; normal
 *			form: upper case.
 *	 zip:	3 to 10 of A-Z a-z 0-9, space, dash, first and last a letter or
 *			digit, once trimmed of spaces; normal form: upper case.
 */
extern bool sp_norm_phone(const char *in, size_t len, char *out, size_t cap);
extern bool sp_norm_email(const char *in, size_t len, char *out, size_t cap);
extern bool sp_norm_mrn(const char *in, size_t len, char *out, size_t cap);
extern bool sp_norm_zip(const char *in, size_t len, char *out, size_t cap);

/*
 * A date written YYYY-MM-DD (white space around allowed) that is a day of
 * the calendar: true with the year, month and day.  format_ok says whether
 * it was at least written YYYY-MM-DD (for the error message).
 */
extern bool sp_parse_ymd(const char *in, size_t len, int *year, int *month, int *day, bool *format_ok);

#endif							/* SCHEDPHI_FIELDS_H */
