/*-------------------------------------------------------------------------
 *
 * import.h
 *	  The bulk import's COPY, for the utility hook (import.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_IMPORT_H
#define SCHEDPHI_IMPORT_H

#include "nodes/nodes.h"

extern bool schedphi_is_import_copy(Node *node);
extern void schedphi_import_scrub_context(char *context);

#endif							/* SCHEDPHI_IMPORT_H */
