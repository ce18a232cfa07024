/*-------------------------------------------------------------------------
 *
 * schedphi.h
 *	  Declarations shared by the schedphi extension's C sources.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_H
#define SCHEDPHI_H

#include "postgres.h"

#include "datatype/timestamp.h"

/* True when the library was loaded through shared_preload_libraries. */
extern bool schedphi_preloaded;

/* The SQLSTATE schedphi uses for a bad argument (22023). */
#define SCHEDPHI_BAD_ARGUMENT ERRCODE_INVALID_PARAMETER_VALUE

struct pg_tz;

/* walltime.c */
extern TimestampTz schedphi_wall_to_instant(Timestamp local, const struct pg_tz *tz, bool early);

#endif							/* SCHEDPHI_H */
