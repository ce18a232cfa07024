/*-------------------------------------------------------------------------
 *
 * schedphi.c
 *	  Module entry point: _PG_init, settings, hooks and workers.
 *
 * The library works whether or not it is preloaded; features that need
 * shared memory or a background worker (added by later parts) check
 * schedphi_preloaded and say so with an errhint.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "schedphi.h"

PG_MODULE_MAGIC;

bool		schedphi_preloaded = false;

void		_PG_init(void);

/*
 * Record how we were loaded and reserve the "schedphi." setting prefix, so
 * that nobody can invent a schedphi.* placeholder setting and have code
 * (ours or an application's) mistake it for one of ours.
 */
void
_PG_init(void)
{
	schedphi_preloaded = process_shared_preload_libraries_in_progress;

	MarkGUCPrefixReserved("schedphi");
}
