/*-------------------------------------------------------------------------
 *
 * actor.h
 *	  The actor context a verified token names, and the purpose of use
 *	  (actor.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_ACTOR_H
#define SCHEDPHI_ACTOR_H

#include "datatype/timestamp.h"
#include "utils/uuid.h"

struct Node;

/* the actor a verified token names */
typedef struct SchedphiActor
{
	bool		active;
	bool		session_scope;
	Oid			login;			/* the session user that assumed it */
	char		sub[256];
	char		issuer[256];
	pg_uuid_t	tenant;
	char		role[16];
	bool		has_practitioner;
	pg_uuid_t	practitioner;
	bool		mfa;			/* the token showed a second factor (amr) */
	TimestampTz ends;			/* the context ends with the token (exp) */
} SchedphiActor;

extern int	schedphi_max_token_lifetime;
extern bool schedphi_require_mfa;
extern bool schedphi_allow_session_scope;
extern bool schedphi_require_training;
extern void schedphi_actor_init(void);
extern void schedphi_actor_utility(struct Node *node);
extern const SchedphiActor *schedphi_current_actor(void);
extern uint64 schedphi_actor_generation(void);
extern void schedphi_actor_check_terminated(void);
extern void schedphi_set_actor(const SchedphiActor *a);
extern const char *schedphi_current_purpose(void);
extern void schedphi_set_current_purpose(const char *p);

#endif							/* SCHEDPHI_ACTOR_H */
