/*-------------------------------------------------------------------------
 *
 * b64digit.h
 *	  The value of one base64 digit, for the standard alphabet (62 = '+',
 *	  63 = '/') and the URL-safe one (62 = '-', 63 = '_').  No PostgreSQL
 *	  dependency.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_B64DIGIT_H
#define SCHEDPHI_B64DIGIT_H

/* The digit's value, or -1 if c is not one of the alphabet. */
static inline int
sp_b64_digit(unsigned char c, char c62, char c63)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == (unsigned char) c62)
		return 62;
	if (c == (unsigned char) c63)
		return 63;
	return -1;
}

#endif							/* SCHEDPHI_B64DIGIT_H */
