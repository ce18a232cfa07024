/*-------------------------------------------------------------------------
 *
 * queue.h
 *	  The per-database audit event queue in shared memory (queue.c), and
 *	  the audit event it carries.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_QUEUE_H
#define SCHEDPHI_QUEUE_H

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/uuid.h"

struct Node;

#define AQ_DBS			16		/* databases with a queue at once */
#define AQ_STRINGS		10		/* string fields of an event */
#define HASH_LEN		32

typedef struct AuditQueue
{
	Oid			dboid;			/* InvalidOid: slot free */
	uint64		generation;		/* bumped each time the slot is claimed */
	bool		registered;		/* a worker is registered (running or
								 * restarting) */
	pid_t		worker_pid;		/* 0 while none runs */
	Latch	   *worker_latch;
	TimestampTz registered_at;
	uint64		insert_pos;		/* bytes ever queued */
	uint64		read_pos;		/* bytes the worker has taken */
	uint64		durable_pos;	/* bytes committed to audit_log */
	bool		seal_requested; /* a backend asked to seal now */
	bool		partitions_requested;	/* a record found no partition */
	bool		stop_requested; /* the database is being dropped */
	ConditionVariable cv;		/* durable_pos moved, or the worker changed */
	Size		ring_off;		/* offset of the ring in AuditShared */
} AuditQueue;

/*
 * The sealer's floor of a database (ledger.c): ids up to it are all
 * sealed.  Kept apart from the queues' slots, which go from database to
 * database as their workers come and go: the floor outlives them.
 */
#define AQ_FLOORS		64		/* databases whose floor is remembered */

typedef struct AuditFloor
{
	Oid			db;				/* InvalidOid: entry free */
	Oid			seq;			/* the log's id sequence there */
	int64		floor;
	uint64		stamp;			/* when last set: the oldest goes first */
} AuditFloor;

typedef struct AuditShared
{
	LWLockPadded *locks;		/* [0..AQ_DBS-1] queues, [AQ_DBS] slot table
								 * and floors */
	Size		ring_size;
	uint64		floor_clock;
	AuditQueue	q[AQ_DBS];
	AuditFloor	floors[AQ_FLOORS];
} AuditShared;

extern int64 schedphi_queue_seal_floor(Oid seq);
extern void schedphi_queue_set_seal_floor(Oid seq, int64 floor);

/* This process is the audit worker (ledger.c sets it). */
extern bool schedphi_is_audit_worker;

/* NULL when not preloaded: there is no queue (and no worker) */
extern AuditShared *schedphi_auditq;

#define QLOCK(i)	(&schedphi_auditq->locks[(i)].lock)
#define SLOTLOCK	(&schedphi_auditq->locks[AQ_DBS].lock)

/*
 * One audit record before it has a seq and hash.  Strings are NUL-terminated
 * or NULL (SQL NULL); columns is a text[] literal.
 */
typedef struct AuditEvent
{
	TimestampTz at;
	int64		xid;			/* 0: none */
	bool		has_tenant,
				has_object_id,
				has_patient;
	pg_uuid_t	tenant,
				object_id,
				patient;
	const char *s[AQ_STRINGS];
} AuditEvent;

enum
{
	S_LOGIN, S_ACTOR, S_ROLE, S_PURPOSE, S_ACTION, S_OBJECT, S_COLUMNS, S_CLIENT, S_APPLICATION, S_DETAIL
};

extern void schedphi_queue_init(void);
extern void schedphi_queue_utility(struct Node *node);
extern void schedphi_event_serialise(StringInfo buf, const AuditEvent *ev);
extern void schedphi_event_parse(const char *p, AuditEvent *ev);
extern void schedphi_event_insert(const AuditEvent *ev);
extern void schedphi_events_insert(const AuditEvent *evs, int n);
extern int	schedphi_queue_for_database(bool may_error);
extern int	schedphi_queue_index(void);
extern void schedphi_ring_read(AuditQueue *q, uint64 pos, char *dst, Size len);
extern void schedphi_queue_enqueue(const char *data, Size len, bool may_error, bool durable);
extern void schedphi_queue_wait_durable(void);
extern void schedphi_queue_forget_wait(void);
extern void schedphi_queue_record(const AuditEvent *ev, bool wait);
extern void schedphi_queue_wake_worker(bool seal, bool partitions);

#endif							/* SCHEDPHI_QUEUE_H */
