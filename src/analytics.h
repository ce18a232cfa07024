/*-------------------------------------------------------------------------
 *
 * analytics.h
 *	  Facts derived for the de-identified analytics, and the export records
 *	  of the analysts' views (analytics.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_ANALYTICS_H
#define SCHEDPHI_ANALYTICS_H

extern void schedphi_analytics_init(void);
extern int	schedphi_age_on(int by, int bm, int bd, int vy, int vm, int vd);
extern bool schedphi_zip5_of(const char *s, int n, char *out);
extern void schedphi_analytics_run_start(const void *top);
extern void schedphi_analytics_run_end(const void *top, uint64 rows);
extern void schedphi_analytics_query_end(const void *top);

#endif							/* SCHEDPHI_ANALYTICS_H */
