/*-------------------------------------------------------------------------
 *
 * sqlmask.c
 *	  Mask the literals of SQL text, in place, for the server log.
 *
 * sp_mask_sql replaces every string constant (plain, E'', B'', X'', U&''
 * and dollar-quoted) and every numeric constant with "?", and every
 * comment with a space; identifiers, keywords, operators and parameter
 * references ($1) stay.  An unterminated literal is masked to the end.  The
 * result is never longer than the input, so the text is rewritten in place
 * and nothing is allocated: the log hook that calls this must not fail.
 *
 * sp_mask_quoted does the same for the parts of an error message between
 * double quotes (PostgreSQL quotes the offending input that way).
 *
 *-------------------------------------------------------------------------
 */
#include "sqlmask.h"

#include <string.h>

static int
is_ident_start(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static int
is_ident_char(unsigned char c)
{
	return is_ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

static int
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* End of a dollar-quote opening tag at s[i] ('$'), or 0 if there is none. */
static size_t
dollar_tag_end(const char *s, size_t len, size_t i)
{
	size_t		j = i + 1;

	if (j < len && s[j] == '$')
		return j + 1;
	if (j >= len || !is_ident_start((unsigned char) s[j]))
		return 0;
	while (j < len && is_ident_char((unsigned char) s[j]) && s[j] != '$')
		j++;
	return (j < len && s[j] == '$') ? j + 1 : 0;
}

size_t
sp_mask_sql(char *s, size_t len)
{
	size_t		i = 0;
	size_t		o = 0;

	while (i < len)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '\'')
		{
			/* E'' strings (the letter was copied already) take backslash escapes */
			int			escapes = o > 0 && (s[o - 1] == 'E' || s[o - 1] == 'e') &&
				(o == 1 || !is_ident_char((unsigned char) s[o - 2]));

			i++;
			while (i < len)
			{
				if (escapes && s[i] == '\\' && i + 1 < len)
					i += 2;
				else if (s[i] == '\'' && i + 1 < len && s[i + 1] == '\'')
					i += 2;
				else if (s[i] == '\'')
				{
					i++;
					break;
				}
				else
					i++;
			}
			s[o++] = '?';
		}
		else if (c == '"')
		{
			/* quoted identifier: copy, "" is an escaped quote */
			s[o++] = s[i++];
			while (i < len)
			{
				if (s[i] == '"' && i + 1 < len && s[i + 1] == '"')
				{
					s[o++] = s[i++];
					s[o++] = s[i++];
				}
				else if (s[i] == '"')
				{
					s[o++] = s[i++];
					break;
				}
				else
					s[o++] = s[i++];
			}
		}
		else if (c == '-' && i + 1 < len && s[i + 1] == '-')
		{
			while (i < len && s[i] != '\n')
				i++;
			s[o++] = ' ';
		}
		else if (c == '/' && i + 1 < len && s[i + 1] == '*')
		{
			int			depth = 1;

			i += 2;
			while (i < len && depth > 0)
			{
				if (s[i] == '/' && i + 1 < len && s[i + 1] == '*')
				{
					depth++;
					i += 2;
				}
				else if (s[i] == '*' && i + 1 < len && s[i + 1] == '/')
				{
					depth--;
					i += 2;
				}
				else
					i++;
			}
			s[o++] = ' ';
		}
		else if (c == '$' && (o == 0 || !is_ident_char((unsigned char) s[o - 1])) &&
				 dollar_tag_end(s, len, i) > 0)
		{
			size_t		tagend = dollar_tag_end(s, len, i);
			size_t		taglen = tagend - i;
			size_t		j = tagend;
			size_t		close = len;

			for (; j + taglen <= len; j++)
				if (memcmp(s + j, s + i, taglen) == 0)
				{
					close = j + taglen;
					break;
				}
			i = close;
			s[o++] = '?';
		}
		else if (is_ident_start(c) || c == '$')
		{
			/* identifiers, keywords and $n parameters are copied whole */
			while (i < len && is_ident_char((unsigned char) s[i]))
				s[o++] = s[i++];
		}
		else if (is_digit(c) || (c == '.' && i + 1 < len && is_digit((unsigned char) s[i + 1])))
		{
			while (i < len && (is_digit((unsigned char) s[i]) || s[i] == '.' || s[i] == '_' ||
							   s[i] == 'e' || s[i] == 'E' || s[i] == 'x' || s[i] == 'X' ||
							   ((s[i] == '+' || s[i] == '-') && (s[i - 1] == 'e' || s[i - 1] == 'E')) ||
							   (s[i] >= 'a' && s[i] <= 'f') || (s[i] >= 'A' && s[i] <= 'F')))
				i++;
			s[o++] = '?';
		}
		else
			s[o++] = s[i++];
	}
	if (o < len)
		s[o] = '\0';
	return o;
}

size_t
sp_mask_quoted(char *s, size_t len)
{
	size_t		i = 0;
	size_t		o = 0;

	while (i < len)
	{
		if (s[i] == '"')
		{
			size_t		j = i + 1;

			while (j < len && s[j] != '"')
				j++;
			/* '"' + '?' for a non-empty quote + the closing quote if any */
			s[o++] = '"';
			if (j > i + 1)
				s[o++] = '?';
			if (j < len)
				s[o++] = s[j++];
			i = j;
		}
		else
			s[o++] = s[i++];
	}
	if (o < len)
		s[o] = '\0';
	return o;
}
