/*-------------------------------------------------------------------------
 *
 * ratelimit.h
 *	  Per-actor rate limits in shared memory (ratelimit.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_RATELIMIT_H
#define SCHEDPHI_RATELIMIT_H

extern void schedphi_ratelimit_init(void);

#endif							/* SCHEDPHI_RATELIMIT_H */
