/*-------------------------------------------------------------------------
 *
 * walltime.c
 *	  Wall-clock time at a location to an instant, with deliberate DST rules.
 *
 * Availability is weekly wall-clock time at a location ("09:00-17:00"), so
 * each day's window is found by reading a local date and time in the
 * location's IANA zone.  Most local times name exactly one instant; around
 * a DST change some name none or two.  schedphi reads a window as running
 * from the first instant the clock shows its start to the last instant
 * the clock shows its end:
 *
 *	 - a time in the spring-forward gap (02:30 in New York on the second
 *	   Sunday of March) is the instant of the change itself, when the clock
 *	   jumps from 02:00 to 03:00: a window opening at 02:30 opens at 03:00
 *	   daylight time, one closing at 02:30 closes at that same instant;
 *	 - a time in the fall-back repeat (01:30 on the first Sunday of
 *	   November) is its first occurrence when it starts a window and its
 *	   second when it ends one, so 00:00-04:00 on that night is five hours.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "schedphi.h"

/* UTC offset in seconds in force at an instant. */
static long
offset_at(TimestampTz t, const pg_tz *tz)
{
	pg_time_t	tt = timestamptz_to_time_t(t);
	struct pg_tm *tm = pg_localtime(&tt, tz);

	if (tm == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	return tm->tm_gmtoff;
}

/*
 * The instant at which local time `local` (microseconds since 2000-01-01 on
 * the wall clock) occurs in zone tz; `early` picks the first of two
 * occurrences, otherwise the last.  Assumes at most one UTC-offset change
 * within 26 hours of the time, which holds for every IANA zone.
 */
TimestampTz
schedphi_wall_to_instant(Timestamp local, const pg_tz *tz, bool early)
{
	long		oa = offset_at(local - 26 * USECS_PER_HOUR, tz);
	long		ob = offset_at(local + 26 * USECS_PER_HOUR, tz);
	TimestampTz ca = local - (int64) oa * USECS_PER_SEC;
	TimestampTz cb = local - (int64) ob * USECS_PER_SEC;
	bool		va = offset_at(ca, tz) == oa;
	bool		vb = offset_at(cb, tz) == ob;
	TimestampTz lo,
				hi;

	if (va && vb)
		return early ? Min(ca, cb) : Max(ca, cb);
	if (va)
		return ca;
	if (vb)
		return cb;

	/*
	 * In a gap: the change happens in (min, max]; find the first second at
	 * which the later offset is in force.
	 */
	lo = Min(ca, cb) / USECS_PER_SEC;
	hi = Max(ca, cb) / USECS_PER_SEC;
	while (lo + 1 < hi)
	{
		TimestampTz mid = lo + (hi - lo) / 2;

		if (offset_at(mid * USECS_PER_SEC, tz) == ob)
			hi = mid;
		else
			lo = mid;
	}
	return hi * USECS_PER_SEC;
}

PG_FUNCTION_INFO_V1(schedphi_wall_instant);

/*
 * _wall_to_instant(local timestamp, zone text, early boolean) -> timestamptz
 * Strict: NULL in, NULL out.
 */
Datum
schedphi_wall_instant(PG_FUNCTION_ARGS)
{
	Timestamp	local = PG_GETARG_TIMESTAMP(0);
	char	   *zone = text_to_cstring(PG_GETARG_TEXT_PP(1));
	bool		early = PG_GETARG_BOOL(2);
	pg_tz	   *tz = pg_tzset(zone);

	if (tz == NULL)
		ereport(ERROR,
				(errcode(SCHEDPHI_BAD_ARGUMENT),
				 errmsg("unknown time zone")));
	if (TIMESTAMP_NOT_FINITE(local))
		PG_RETURN_TIMESTAMPTZ(local);
	PG_RETURN_TIMESTAMPTZ(schedphi_wall_to_instant(local, tz, early));
}
