/*-------------------------------------------------------------------------
 *
 * walltime.h
 *	  Wall-clock time to instants, and availability rules expanded into
 *	  windows from a per-backend cache (walltime.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_WALLTIME_H
#define SCHEDPHI_WALLTIME_H

#include "datatype/timestamp.h"
#include "utils/uuid.h"

struct pg_tz;

extern void schedphi_rules_init(void);
extern uint64 schedphi_rules_version(void);
extern uint64 schedphi_waitlist_version(void);
extern TimestampTz schedphi_wall_to_instant(Timestamp local, const struct pg_tz *tz, bool early);
typedef void (*schedphi_window_cb) (void *arg, const pg_uuid_t *actor, TimestampTz starts,
									TimestampTz ends, int32 slot_minutes);
extern void schedphi_expand_windows(Datum tenant, Datum actors, TimestampTz wlo, TimestampTz whi,
									schedphi_window_cb cb, void *arg);

#endif							/* SCHEDPHI_WALLTIME_H */
