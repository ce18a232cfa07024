/*-------------------------------------------------------------------------
 *
 * common.h
 *	  What every schedphi C file shares: its SQLSTATEs, whether the library
 *	  was preloaded, kept query plans and per-backend cache tables
 *	  (common.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_COMMON_H
#define SCHEDPHI_COMMON_H

/* The SQLSTATE schedphi uses for a bad argument (22023). */
#define SCHEDPHI_BAD_ARGUMENT ERRCODE_INVALID_PARAMETER_VALUE
/* Rate limit exceeded (SP429). */
#define SCHEDPHI_RATE_LIMITED MAKE_SQLSTATE('S','P','4','2','9')
/* Key unavailable: master key not loaded, data key missing (SPK01). */
#define SCHEDPHI_KEY_UNAVAILABLE MAKE_SQLSTATE('S','P','K','0','1')

/* True when the library was loaded through shared_preload_libraries. */
extern bool schedphi_preloaded;

struct _SPI_plan;
struct HTAB;

extern int	schedphi_hex_digit(char c);
extern bool schedphi_citus_present(void);
extern bool schedphi_citus_active(void);
extern bool schedphi_citus_worker_node(void);
extern bool schedphi_citus_internal_backend(void);

extern struct _SPI_plan *schedphi_keep_plan(struct _SPI_plan **slot, const char *sql, int nargs,
											Oid *argtypes);

extern bool schedphi_in_subtransaction(void (*fn) (void *arg), void *arg, int refused_code,
									   int refused_code2);

extern struct HTAB *schedphi_cache_table(MemoryContext *cxt, const char *name, Size keysize,
										Size entrysize);

#endif							/* SCHEDPHI_COMMON_H */
