/*-------------------------------------------------------------------------
 *
 * ledger.h
 *	  The audit worker and the hash chain of the audit log (ledger.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_LEDGER_H
#define SCHEDPHI_LEDGER_H

extern void schedphi_ledger_init(void);
extern bool schedphi_in_audit_worker(void);

#endif							/* SCHEDPHI_LEDGER_H */
