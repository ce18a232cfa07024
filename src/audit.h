/*-------------------------------------------------------------------------
 *
 * audit.h
 *	  Recording what happens to PHI in the audit log (audit.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_AUDIT_H
#define SCHEDPHI_AUDIT_H

#include "utils/uuid.h"

struct Node;

extern void schedphi_audit_init(void);
extern void schedphi_audit_utility(struct Node *node);
extern void schedphi_audit_note_read(const pg_uuid_t *tenant, const char *object, const char *col,
									 const pg_uuid_t *row);
extern void schedphi_audit_note_patient(const pg_uuid_t *tenant, const pg_uuid_t *patient);
extern void schedphi_audit_deny_target(const char *object, const pg_uuid_t *id, const pg_uuid_t *patient);
extern void schedphi_audit_record(const char *action, const pg_uuid_t *tenant, const char *object,
								  const pg_uuid_t *object_id, const pg_uuid_t *patient, const char *detail,
								  bool wait);
extern void schedphi_audit_record_denial(const pg_uuid_t *tenant, int sqlstate, const char *message);
extern void schedphi_audit_deny(const pg_uuid_t *tenant, int sqlstate, const char *message,
								const char *detail, const char *hint) pg_attribute_noreturn();

#endif							/* SCHEDPHI_AUDIT_H */
