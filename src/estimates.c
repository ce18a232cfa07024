/*-------------------------------------------------------------------------
 *
 * estimates.c
 *	  The planner never takes one of schedphi's tables for empty.
 *
 * A plan is kept for the rest of a session once made (PL/pgSQL's
 * statements, the C functions' saved plans, the foreign key checks), and
 * one made while a table was empty stays in use as it fills.  PostgreSQL
 * guards against this only for a table never vacuumed, which it sizes at
 * ten pages at least; a VACUUM ANALYZE of a new database (a DBA's first
 * step) records its tables as empty, and from then on plans made in the
 * first sessions scan them whole: a scan that costs nothing on an empty
 * table and grows with every row added, so that a long import or
 * interface session slows with every call.
 *
 * Here the same floor applies to schedphi's tables whatever their
 * statistics say: a table of fewer than ten pages is planned as one of ten
 * pages of rows of its width, as if never vacuumed.  A key look-up then
 * uses its index from the first plan on.  Larger tables keep the
 * planner's own estimates.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "nodes/pathnodes.h"
#include "optimizer/plancat.h"
#include "storage/bufpage.h"
#include "utils/lsyscache.h"

#include "estimates.h"

/* PostgreSQL's own floor for a table never vacuumed (plancat.c) */
#define SCHEDPHI_MIN_PAGES	10

static get_relation_info_hook_type prev_relation_info_hook = NULL;

static void
schedphi_relation_info(PlannerInfo *root, Oid relid, bool inhparent, RelOptInfo *rel)
{
	Oid			nsp;
	int32		width;
	double		tuples;
	ListCell   *lc;

	if (prev_relation_info_hook)
		prev_relation_info_hook(root, relid, inhparent, rel);

	/* a partitioned parent's size is its partitions' */
	if (inhparent || rel->pages >= SCHEDPHI_MIN_PAGES)
		return;
	if (get_rel_relkind(relid) != RELKIND_RELATION)
		return;
	nsp = get_namespace_oid("schedphi", true);
	if (!OidIsValid(nsp) || get_rel_namespace(relid) != nsp)
		return;

	width = get_relation_data_width(relid, NULL) +
		MAXALIGN(SizeofHeapTupleHeader) + sizeof(ItemIdData);
	tuples = rint((double) (BLCKSZ - SizeOfPageHeaderData) / width * SCHEDPHI_MIN_PAGES);
	if (rel->tuples >= tuples)
		return;
	rel->pages = SCHEDPHI_MIN_PAGES;
	rel->tuples = tuples;

	/* an index over every row has as many entries; a partial one is left */
	foreach(lc, rel->indexlist)
	{
		IndexOptInfo *index = (IndexOptInfo *) lfirst(lc);

		if (index->indpred == NIL)
			index->tuples = tuples;
	}
}

void
schedphi_estimates_init(void)
{
	prev_relation_info_hook = get_relation_info_hook;
	get_relation_info_hook = schedphi_relation_info;
}
