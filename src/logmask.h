/*-------------------------------------------------------------------------
 *
 * logmask.h
 *	  Keeping patient data out of the server log (logmask.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_LOGMASK_H
#define SCHEDPHI_LOGMASK_H

extern void schedphi_logmask_init(void);
extern void schedphi_note_phi(void);

#endif							/* SCHEDPHI_LOGMASK_H */
