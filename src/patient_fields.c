/*-------------------------------------------------------------------------
 *
 * patient_fields.c
 *	  The checks and normal forms of a patient's fields: one implementation
 *	  for register_patient, find_patient and the bulk import.
 *
 * Names are trimmed of spaces and hold 1 to 200 characters; a birth date
 * lies between 1880-01-01 and today; a phone number holds 7 to 15 digits
 * (kept as digits only); an e-mail address is lower-cased; an MRN holds 1
 * to 64 letters, digits, dots, dashes, slashes or underscores, a postal
 * code 3 to 10 letters, digits, spaces or dashes (both upper-cased): the
 * pure parsers are codec/fields.c, fuzzed standalone.  The
 * family-and-birth-date blind index takes the family name trimmed,
 * lower-cased and in Unicode NFC, and the date as YYYY-MM-DD.  Every
 * refusal is 22023 naming the field and never repeats the value.  The SQL
 * functions _check_name, _check_birth_date, _norm_* and _family_dob are
 * these; import.c calls them directly, row after row, without SQL.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_collation.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"

#include "codec/fields.h"
#include "common.h"
#include "patient_fields.h"

#define NAME_MAX_CHARS	200
#define EARLIEST_BIRTH	"1880-01-01"

static void
bad(const char *message, const char *detail)
{
	ereport(ERROR,
			(errcode(SCHEDPHI_BAD_ARGUMENT),
			 errmsg("%s", message),
			 detail ? errdetail("%s", detail) : 0));
}

/* s without leading and trailing spaces, as btrim(s) (palloc'd). */
static char *
trim_spaces(const char *s)
{
	const char *end = s + strlen(s);

	while (*s == ' ')
		s++;
	while (end > s && end[-1] == ' ')
		end--;
	return pnstrdup(s, end - s);
}

/* lower() under the database's default collation, as SQL's lower(). */
static char *
sql_lower(const char *s)
{
	return TextDatumGetCString(DirectFunctionCall1Coll(lower, DEFAULT_COLLATION_OID, CStringGetTextDatum(s)));
}

/* A name (given, family, a site's name ...): trimmed, 1 to 200 characters. */
char *
schedphi_check_name(const char *what, const char *value)
{
	char	   *v;

	if (value == NULL || (v = trim_spaces(value))[0] == '\0')
		bad(psprintf("%s must not be empty", what), NULL);
	if (pg_mbstrlen(value) > NAME_MAX_CHARS)
		bad(psprintf("%s is longer than %d characters", what, NAME_MAX_CHARS), NULL);
	return v;
}

/* A birth date between 1880-01-01 and today (the session's date). */
DateADT
schedphi_check_birth_date(DateADT d)
{
	DateADT		earliest = DatumGetDateADT(DirectFunctionCall1(date_in, CStringGetDatum(EARLIEST_BIRTH)));

	if (DATE_NOT_FINITE(d) || d > GetSQLCurrentDate() || d < earliest)
		bad("invalid birth_date", "A birth date lies between 1880-01-01 and today.");
	return d;
}

/*
 * A birth date written YYYY-MM-DD (the bulk import's text), checked
 * without ever quoting it.
 */
DateADT
schedphi_parse_birth_date(const char *value)
{
	int			y,
				m,
				d;
	bool		format_ok = false;

	if (value == NULL || !sp_parse_ymd(value, strlen(value), &y, &m, &d, &format_ok))
		bad("invalid birth_date", format_ok ? "A birth date is written YYYY-MM-DD and is a day of the calendar." :
			"A birth date is written YYYY-MM-DD.");
	return schedphi_check_birth_date(date2j(y, m, d) - POSTGRES_EPOCH_JDATE);
}

/* A field through its pure parser (codec/fields.c), or 22023. */
static char *
norm(bool (*parse) (const char *, size_t, char *, size_t), const char *value, const char *message,
	 const char *detail)
{
	size_t		len = strlen(value);
	char	   *out = palloc(len + 1);

	if (!parse(value, len, out, len + 1))
		bad(message, detail);
	return out;
}

/* A phone number: 7 to 15 digits, optionally with + ( ) . - and spaces. */
char *
schedphi_norm_phone(const char *value)
{
	return norm(sp_norm_phone, value, "invalid phone number",
				"A phone number holds 7 to 15 digits, optionally with +, spaces, dots, dashes and parentheses.");
}

/* An e-mail address, lower-cased: name@example.org. */
char *
schedphi_norm_email(const char *value)
{
	return norm(sp_norm_email, value, "invalid email address", "An email address looks like name@example.org.");
}

/* An MRN: 1 to 64 of [A-Za-z0-9._/-], upper-cased. */
char *
schedphi_norm_mrn(const char *value)
{
	return norm(sp_norm_mrn, value, "invalid mrn",
				"An MRN holds 1 to 64 letters, digits, dots, dashes, slashes or underscores.");
}

/* A postal code: 3 to 10 letters, digits, spaces or dashes, upper-cased. */
char *
schedphi_norm_zip(const char *value)
{
	return norm(sp_norm_zip, value, "invalid zip", "A postal code holds 3 to 10 letters, digits, spaces or dashes.");
}

/* A date as YYYY-MM-DD, whatever the session's DateStyle. */
char *
schedphi_date_iso(DateADT d)
{
	int			y,
				m,
				day;

	j2date(d + POSTGRES_EPOCH_JDATE, &y, &m, &day);
	return psprintf("%04d-%02d-%02d", y, m, day);
}

/*
 * The input of the family-and-birth-date blind index.  Neither the
 * session's DateStyle nor the way a keyboard composed an accent may change
 * it: the name trimmed, in Unicode NFC (in a UTF8 database, the only
 * encoding where PostgreSQL normalises) and lower-cased; the date
 * YYYY-MM-DD.
 */
char *
schedphi_family_dob(const char *family, DateADT birth)
{
	Datum		name = CStringGetTextDatum(family);

	if (GetDatabaseEncoding() == PG_UTF8)
		name = DirectFunctionCall2(unicode_normalize_func, name, CStringGetTextDatum("NFC"));
	return psprintf("%s|%s", sql_lower(trim_spaces(TextDatumGetCString(name))), schedphi_date_iso(birth));
}

/* ------------------------------------------------------- the SQL faces */

#define TEXT_ARG(n)		(PG_ARGISNULL(n) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(n)))
#define RETURN_TEXT(s)	do { char *r_ = (s); if (r_ == NULL) PG_RETURN_NULL(); \
							 PG_RETURN_TEXT_P(cstring_to_text(r_)); } while (0)

PG_FUNCTION_INFO_V1(schedphi_check_name_sql);

/* _check_name(what text, value text) -> text */
Datum
schedphi_check_name_sql(PG_FUNCTION_ARGS)
{
	RETURN_TEXT(schedphi_check_name(PG_ARGISNULL(0) ? "value" : text_to_cstring(PG_GETARG_TEXT_PP(0)),
									TEXT_ARG(1)));
}

PG_FUNCTION_INFO_V1(schedphi_check_birth_date_sql);

/* _check_birth_date(date) -> date; NULL is refused */
Datum
schedphi_check_birth_date_sql(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		bad("invalid birth_date", "A birth date lies between 1880-01-01 and today.");
	PG_RETURN_DATEADT(schedphi_check_birth_date(PG_GETARG_DATEADT(0)));
}

PG_FUNCTION_INFO_V1(schedphi_norm_phone_sql);

/* _norm_phone(text) -> text; strict */
Datum
schedphi_norm_phone_sql(PG_FUNCTION_ARGS)
{
	RETURN_TEXT(schedphi_norm_phone(text_to_cstring(PG_GETARG_TEXT_PP(0))));
}

PG_FUNCTION_INFO_V1(schedphi_norm_email_sql);

/* _norm_email(text) -> text; strict */
Datum
schedphi_norm_email_sql(PG_FUNCTION_ARGS)
{
	RETURN_TEXT(schedphi_norm_email(text_to_cstring(PG_GETARG_TEXT_PP(0))));
}

PG_FUNCTION_INFO_V1(schedphi_norm_mrn_sql);

/* _norm_mrn(text) -> text; strict */
Datum
schedphi_norm_mrn_sql(PG_FUNCTION_ARGS)
{
	RETURN_TEXT(schedphi_norm_mrn(text_to_cstring(PG_GETARG_TEXT_PP(0))));
}

PG_FUNCTION_INFO_V1(schedphi_norm_zip_sql);

/* _norm_zip(text) -> text; strict */
Datum
schedphi_norm_zip_sql(PG_FUNCTION_ARGS)
{
	RETURN_TEXT(schedphi_norm_zip(text_to_cstring(PG_GETARG_TEXT_PP(0))));
}

PG_FUNCTION_INFO_V1(schedphi_family_dob_sql);

/* _family_dob(family text, birth date) -> text; strict */
Datum
schedphi_family_dob_sql(PG_FUNCTION_ARGS)
{
	RETURN_TEXT(schedphi_family_dob(text_to_cstring(PG_GETARG_TEXT_PP(0)), PG_GETARG_DATEADT(1)));
}
