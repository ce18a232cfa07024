/*-------------------------------------------------------------------------
 *
 * origin.h
 *	  Who is asking, carried from a Citus coordinator to the worker node
 *	  that writes the rows, signed (origin.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_ORIGIN_H
#define SCHEDPHI_ORIGIN_H

#include "utils/uuid.h"

#include "membership.h"

extern void schedphi_origin_init(void);
extern void schedphi_origin_send(const pg_uuid_t *tenant);
extern void schedphi_origin_set_activity(const char *activity);
extern bool schedphi_origin_received(Who *w, const pg_uuid_t *tenant, char *activity);

#endif							/* SCHEDPHI_ORIGIN_H */
