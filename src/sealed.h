/*-------------------------------------------------------------------------
 *
 * sealed.h
 *	  Sealing, opening and blind-indexing values from C (sealed.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_SEALED_H
#define SCHEDPHI_SEALED_H

#include "utils/uuid.h"

extern bytea *schedphi_seal_value(const pg_uuid_t *tenant, const char *tbl, const char *col,
								  const pg_uuid_t *row, const char *plain, int n);
extern bytea *schedphi_blind_value(const pg_uuid_t *tenant, const char *field, int fieldlen,
								   const char *value, int n);
extern text *schedphi_unseal(const bytea *v, const pg_uuid_t *tenant, const char *tbl,
							 const char *col, const pg_uuid_t *row);

extern text *schedphi_unseal_or_null(const bytea *v, const pg_uuid_t *tenant, const char *tbl,
									  const char *col, const pg_uuid_t *row);
#endif							/* SCHEDPHI_SEALED_H */
