/*-------------------------------------------------------------------------
 *
 * estimates.h
 *	  Planner estimates for schedphi's tables (estimates.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_ESTIMATES_H
#define SCHEDPHI_ESTIMATES_H

extern void schedphi_estimates_init(void);

#endif
