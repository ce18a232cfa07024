/*-------------------------------------------------------------------------
 *
 * membership.h
 *	  Who is asking without a token: the session user's login, client and
 *	  roles in a tenant (membership.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_MEMBERSHIP_H
#define SCHEDPHI_MEMBERSHIP_H

#include "utils/uuid.h"

/* Who is asking, as an audit record names them (schedphi_who_is_asking). */
typedef struct Who
{
	char		login[NAMEDATALEN];
	char		actor[256];
	char		role[96];
	char		purpose[16];
	bool		has_tenant;
	pg_uuid_t	tenant;
	char	   *client;			/* palloc'd in TopMemoryContext, or NULL */
	char		application[NAMEDATALEN];
} Who;

extern void schedphi_membership_init(void);
extern bool schedphi_has_role(const pg_uuid_t *tenant, const char *const *roles, int nroles);
extern bool schedphi_membership_version(uint64 *version);
extern void schedphi_members_utility(Node *node);
extern const char *schedphi_session_login(bool may_lookup);
extern void schedphi_who_is_asking(Who *w, const pg_uuid_t *tenant, bool may_query);

#endif							/* SCHEDPHI_MEMBERSHIP_H */
