/*-------------------------------------------------------------------------
 *
 * sqlmask.h
 *	  Mask the literals of SQL text, for logs.  No PostgreSQL dependency.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_SQLMASK_H
#define SCHEDPHI_SQLMASK_H

#include <stddef.h>

extern size_t sp_mask_sql(char *sql, size_t len);
extern size_t sp_mask_quoted(char *msg, size_t len);

#endif							/* SCHEDPHI_SQLMASK_H */
