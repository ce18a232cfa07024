-- schedphi install script, part 7: the audit ledger (src/audit.c,
-- src/queue.c, src/ledger.c, docs/audit.md).
--
-- One table, partitioned by month, append-only, hash-chained.  Writes to
-- PHI tables are recorded by a C trigger in the writing transaction; reads,
-- denials and the other events come through a queue in shared memory that a
-- background worker writes in its own transactions.  The same worker seals
-- records into the chains: seq, prev_seq, prev_hash and hash are null until
-- then.
--
-- One chain per tenant: a record's chain is its tenant (the nil uuid for a
-- record that concerns no tenant: a rejected token, a refusal by
-- PostgreSQL, an operation of the DBA), so that a tenant's ledger is
-- verified, exported, shredded and distributed (Citus) on its own.  seq is
-- the order of sealing, unique across chains; within a chain each record
-- names the one before it (prev_seq) and is bound to it (prev_hash).

CREATE SEQUENCE schedphi.audit_log_id;	-- (no CACHE: the sealer's floor reads its last value)

-- The id's default: nextval once the transaction has its xid (src/ledger.c).
CREATE FUNCTION schedphi._audit_next_id(seq regclass) RETURNS bigint
AS 'MODULE_PATHNAME', 'schedphi_audit_next_id' LANGUAGE C VOLATILE STRICT;

CREATE TABLE schedphi.audit_log (
	seq			bigint,
	at			timestamptz NOT NULL,
	login		name NOT NULL,
	actor		text,
	tenant		uuid,
	role		text,
	purpose		text,
	action		text NOT NULL,
	object		text,
	object_id	uuid,
	patient		uuid,
	columns		text[],
	client_addr inet,
	application text,
	detail		jsonb,
	prev_hash	bytea,
	hash		bytea,
	xid			bigint,			-- the writing transaction (full id), if it had one
	id			bigint NOT NULL DEFAULT schedphi._audit_next_id('schedphi.audit_log_id'),	-- order of arrival
	chain		uuid NOT NULL,	-- the tenant, or the nil uuid
	prev_seq	bigint			-- the record before this one in its chain (0: the first)
) PARTITION BY RANGE (at);

-- No partition belongs to the extension: the monthly partitions are
-- ordinary tables that the audit worker makes ahead of time (and at once
-- when a record finds none, src/queue.c), and pg_dump writes each whole
-- (table, ATTACH, rows, indexes, triggers), in a full dump or by itself
-- with -t.  (A partition made by this script would be an extension member,
-- whose rows pg_dump 15 cannot write by table, and which the CREATE
-- EXTENSION of a restore would make again.)  Indexes are made per
-- partition (_audit_protect), not on the parent, for the same reason.
SELECT pg_catalog.pg_extension_config_dump('schedphi.audit_log_id', '');

-- The head of each chain, kept by the sealer, and where its verification
-- starts (after a purge: the last record removed, and its hash).  A head
-- only moves forward; a row is never removed (the guard below).
CREATE TABLE schedphi.audit_chain (
	tenant		uuid NOT NULL,		-- the chain: the tenant, or the nil uuid
	head_seq	bigint NOT NULL,
	head_hash	bytea NOT NULL,
	records		bigint NOT NULL,	-- sealed into it, ever
	start_after bigint NOT NULL DEFAULT 0,
	start_prev	bytea NOT NULL DEFAULT decode(repeat('00', 32), 'hex'),
	sealed_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant)
);
CREATE INDEX audit_chain_head ON schedphi.audit_chain (head_seq);
SELECT pg_catalog.pg_extension_config_dump('schedphi.audit_chain', '');

CREATE FUNCTION schedphi._audit_guard() RETURNS trigger
AS 'MODULE_PATHNAME', 'schedphi_audit_guard' LANGUAGE C;
CREATE FUNCTION schedphi._audit_chain_guard() RETURNS trigger
AS 'MODULE_PATHNAME', 'schedphi_audit_chain_guard' LANGUAGE C;
CREATE FUNCTION schedphi._audit_write() RETURNS trigger
AS 'MODULE_PATHNAME', 'schedphi_audit_write' LANGUAGE C;

-- Append-only, for everyone, whatever session_replication_role says.  The
-- guard lets through exactly one kind of update, on any node: an unsealed
-- record given its seq and hashes, nothing else changed.
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON schedphi.audit_log
	FOR EACH ROW EXECUTE FUNCTION schedphi._audit_guard();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON schedphi.audit_log
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._audit_guard();
ALTER TABLE schedphi.audit_log ENABLE ALWAYS TRIGGER append_only;
ALTER TABLE schedphi.audit_log ENABLE ALWAYS TRIGGER append_only_truncate;
CREATE TRIGGER forward_only BEFORE UPDATE OR DELETE ON schedphi.audit_chain
	FOR EACH ROW EXECUTE FUNCTION schedphi._audit_chain_guard();
CREATE TRIGGER forward_only_truncate BEFORE TRUNCATE ON schedphi.audit_chain
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._audit_chain_guard();
ALTER TABLE schedphi.audit_chain ENABLE ALWAYS TRIGGER forward_only;
ALTER TABLE schedphi.audit_chain ENABLE ALWAYS TRIGGER forward_only_truncate;
ALTER TABLE schedphi.audit_chain ENABLE ROW LEVEL SECURITY;
ALTER TABLE schedphi.audit_chain FORCE ROW LEVEL SECURITY;

-- What a partition needs besides the row trigger it inherits (enabled
-- ALWAYS like the log's: PostgreSQL 15 copies the state to a partition):
-- its indexes, the TRUNCATE guard, and no access of its own.
CREATE FUNCTION schedphi._audit_protect(p_partition name)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	EXECUTE pg_catalog.format('CREATE INDEX IF NOT EXISTS %I ON schedphi.%I (seq) WHERE seq IS NOT NULL',
							  p_partition || '_seq', p_partition);
	EXECUTE pg_catalog.format('CREATE INDEX IF NOT EXISTS %I ON schedphi.%I (id) WHERE hash IS NULL',
							  p_partition || '_unsealed', p_partition);
	EXECUTE pg_catalog.format('CREATE INDEX IF NOT EXISTS %I ON schedphi.%I (patient, at) WHERE patient IS NOT NULL',
							  p_partition || '_patient', p_partition);
	EXECUTE pg_catalog.format('CREATE INDEX IF NOT EXISTS %I ON schedphi.%I (chain, seq) WHERE seq IS NOT NULL',
							  p_partition || '_chain', p_partition);
	EXECUTE pg_catalog.format('CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON schedphi.%I '
							  'FOR EACH STATEMENT EXECUTE FUNCTION schedphi._audit_guard()', p_partition);
	EXECUTE pg_catalog.format('ALTER TABLE schedphi.%I ENABLE ALWAYS TRIGGER append_only_truncate', p_partition);
	EXECUTE pg_catalog.format('ALTER TABLE schedphi.%I ENABLE ROW LEVEL SECURITY', p_partition);
	EXECUTE pg_catalog.format('ALTER TABLE schedphi.%I FORCE ROW LEVEL SECURITY', p_partition);
	EXECUTE pg_catalog.format('REVOKE ALL ON schedphi.%I FROM PUBLIC', p_partition);
END
$$;

-- This month's partition and the next p_months' (UTC months), made by the
-- audit worker when it starts, every hour, and at once when a record finds
-- no partition for its month (src/queue.c); the number made.
CREATE FUNCTION schedphi._audit_partitions(p_months int DEFAULT 2)
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_month timestamp;
	v_name name;
	v_made int := 0;
BEGIN
	FOR i IN 0..p_months LOOP
		v_month := date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i);
		v_name := 'audit_log_' || to_char(v_month, 'YYYYMM');
		CONTINUE WHEN to_regclass('schedphi.' || quote_ident(v_name)) IS NOT NULL;
		EXECUTE pg_catalog.format('CREATE TABLE schedphi.%I PARTITION OF schedphi.audit_log '
								  'FOR VALUES FROM (%L) TO (%L)', v_name,
								  v_month AT TIME ZONE 'UTC', (v_month + interval '1 month') AT TIME ZONE 'UTC');
		PERFORM schedphi._audit_protect(v_name);
		v_made := v_made + 1;
	END LOOP;
	RETURN v_made;
END
$$;

-- Writes to PHI tables, recorded in the writing transaction (ALWAYS: also
-- under session_replication_role = replica).
-- Inserts per statement, from the rows inserted (one audit statement for a
-- bulk import's thousand rows); updates and deletes per row.
CREATE TRIGGER audit AFTER UPDATE OR DELETE ON schedphi.patient
	FOR EACH ROW EXECUTE FUNCTION schedphi._audit_write('id', 'patient');
CREATE TRIGGER audit_insert AFTER INSERT ON schedphi.patient REFERENCING NEW TABLE AS inserted
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._audit_write('id', 'patient');
CREATE TRIGGER audit AFTER UPDATE OR DELETE ON schedphi.appointment
	FOR EACH ROW EXECUTE FUNCTION schedphi._audit_write('patient', 'appointment');
CREATE TRIGGER audit_insert AFTER INSERT ON schedphi.appointment REFERENCING NEW TABLE AS inserted
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._audit_write('patient', 'appointment');
CREATE TRIGGER audit AFTER UPDATE OR DELETE ON schedphi.waitlist
	FOR EACH ROW EXECUTE FUNCTION schedphi._audit_write('patient', 'waitlist');
CREATE TRIGGER audit_insert AFTER INSERT ON schedphi.waitlist REFERENCING NEW TABLE AS inserted
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._audit_write('patient', 'waitlist');
ALTER TABLE schedphi.patient ENABLE ALWAYS TRIGGER audit;
ALTER TABLE schedphi.patient ENABLE ALWAYS TRIGGER audit_insert;
ALTER TABLE schedphi.appointment ENABLE ALWAYS TRIGGER audit;
ALTER TABLE schedphi.appointment ENABLE ALWAYS TRIGGER audit_insert;
ALTER TABLE schedphi.waitlist ENABLE ALWAYS TRIGGER audit;
ALTER TABLE schedphi.waitlist ENABLE ALWAYS TRIGGER audit_insert;



-- The role recorded with each event is cached per backend until a
-- membership changes.
CREATE FUNCTION schedphi._members_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'schedphi_members_changed' LANGUAGE C;
CREATE TRIGGER audit_roles AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON schedphi.member
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._members_changed();
ALTER TABLE schedphi.member ENABLE ALWAYS TRIGGER audit_roles;
-- the limits derived from memberships are cached the same way (ratelimit.c)
CREATE TRIGGER audit_roles AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON schedphi.rate_limit
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._members_changed();
ALTER TABLE schedphi.rate_limit ENABLE ALWAYS TRIGGER audit_roles;
-- the same, called by the functions that change them (see membership.c)
CREATE FUNCTION schedphi._note_members_changed() RETURNS void
AS 'MODULE_PATHNAME', 'schedphi_members_changed' LANGUAGE C VOLATILE;

-- Events through the queue: recorded durably before the call returns.
CREATE FUNCTION schedphi._audit_event(action text, tenant uuid, object text, object_id uuid,
									  patient uuid, detail jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'schedphi_audit_event' LANGUAGE C VOLATILE;

-- Key operations (rotate, rewrap, reencrypt, shred; kept in key_event) and
-- membership changes (kept in member_event) are also recorded in the audit
-- log through the queue, so that the attempt stays on record even if its
-- transaction rolls back.
CREATE FUNCTION schedphi._audit_target(object text, object_id uuid, patient uuid) RETURNS void
AS 'MODULE_PATHNAME', 'schedphi_audit_target' LANGUAGE C VOLATILE;

CREATE FUNCTION schedphi._audit_reencrypting(on_ boolean) RETURNS void
AS 'MODULE_PATHNAME', 'schedphi_audit_reencrypting' LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION schedphi._audit_change(action text, tenant uuid, object text, object_id uuid,
									   patient uuid, detail jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'schedphi_audit_change' LANGUAGE C VOLATILE;

-- Key and membership events are recorded in the transaction that makes
-- them: a change that rolls back leaves no record of having happened.  The
-- trigger's argument says which (on a Citus shard the table's name is not
-- its own).
CREATE FUNCTION schedphi._audit_event_row()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_ARGV[0] = 'key_event' THEN
		PERFORM schedphi._audit_change(NEW.action, NEW.tenant, 'data_key', NULL, NULL, NEW.detail);
	ELSE
		PERFORM schedphi._audit_change('member_' || NEW.action, NEW.tenant, 'member', NULL, NULL,
			jsonb_build_object('login', NEW.login, 'role', NEW.role, 'practitioner', NEW.practitioner));
	END IF;
	RETURN NULL;
END
$$;
CREATE TRIGGER audit AFTER INSERT ON schedphi.key_event
	FOR EACH ROW EXECUTE FUNCTION schedphi._audit_event_row('key_event');
CREATE TRIGGER audit AFTER INSERT ON schedphi.member_event
	FOR EACH ROW EXECUTE FUNCTION schedphi._audit_event_row('member_event');
ALTER TABLE schedphi.key_event ENABLE ALWAYS TRIGGER audit;
ALTER TABLE schedphi.member_event ENABLE ALWAYS TRIGGER audit;

-- Record a denial, then raise 42501 with the rule.
CREATE FUNCTION schedphi._deny(tenant uuid, message text, detail text DEFAULT NULL, hint text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'schedphi_deny' LANGUAGE C VOLATILE;

CREATE FUNCTION schedphi._audit_wake() RETURNS void
AS 'MODULE_PATHNAME', 'schedphi_audit_wake' LANGUAGE C VOLATILE;

-- Every record with an id at or below this is sealed (or was rolled
-- back); 0 when not known.  What looks for unsealed records starts after
-- it: below it, the index of unsealed records holds only the sealed ones
-- vacuum has not yet removed (millions, after a backlog).  See src/ledger.c.
CREATE FUNCTION schedphi._audit_floor() RETURNS bigint
AS 'MODULE_PATHNAME', 'schedphi_audit_floor' LANGUAGE C STABLE;

-- Recompute the chains (p_chain, or all) after global seq p_after (0:
-- from each chain's start); see src/ledger.c.
CREATE FUNCTION schedphi._verify_chains(p_chain uuid, p_after bigint,
										OUT checked bigint, OUT pending bigint, OUT first_bad bigint)
AS 'MODULE_PATHNAME', 'schedphi_verify_chains' LANGUAGE C VOLATILE;

CREATE FUNCTION schedphi._audit_sign(scope text, seq bigint, hash bytea, kek text, OUT key text, OUT signature bytea)
AS 'MODULE_PATHNAME', 'schedphi_audit_sign_head' LANGUAGE C VOLATILE;

CREATE FUNCTION schedphi._audit_purge_rows() RETURNS bigint
AS 'MODULE_PATHNAME', 'schedphi_audit_purge_rows' LANGUAGE C VOLATILE STRICT;

-- Wait until every record committed before the call is sealed (tests,
-- and an auditor who wants a digest of everything up to now).
CREATE FUNCTION schedphi._audit_sync(p_timeout interval DEFAULT '30 seconds')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_mine bigint := pg_current_xact_id_if_assigned()::text::bigint;	-- our own records cannot be sealed yet
	v_floor bigint := schedphi._audit_floor();
	v_upto bigint := (SELECT max(l.id) FROM schedphi.audit_log l
					  WHERE l.hash IS NULL AND l.id > v_floor AND (v_mine IS NULL OR l.xid IS DISTINCT FROM v_mine));
	v_deadline timestamptz := clock_timestamp() + p_timeout;
	v_pause float8 := 0.02;
BEGIN
	-- (the pause grows to half a second: each look reads the unsealed
	-- records' index, which holds the sealed ones too until a vacuum, and
	-- a long wait must not take the sealer's CPU)
	WHILE v_upto IS NOT NULL AND EXISTS (
		SELECT 1 FROM schedphi.audit_log l
		WHERE l.hash IS NULL AND l.id > v_floor AND l.id <= v_upto
		  AND (v_mine IS NULL OR l.xid IS DISTINCT FROM v_mine)) LOOP
		IF clock_timestamp() > v_deadline THEN
			RAISE EXCEPTION 'audit records were not sealed within %', p_timeout
				USING ERRCODE = '55000', HINT = 'Check the "schedphi audit" background worker.';
		END IF;
		PERFORM schedphi._audit_wake();
		PERFORM pg_sleep(v_pause);
		v_pause := least(v_pause * 1.5, 0.5);
		-- (from where the sealer has certified since: below, only sealed
		-- records' old entries, which a look from the first floor walked
		-- at every turn, 95,000 pages a look in a 5-million backlog)
		v_floor := greatest(v_floor, schedphi._audit_floor());
	END LOOP;
END
$$;

-- Who may read the audit log: an auditor (of p_tenant, or of any tenant
-- when p_tenant is null), or a superuser.
CREATE FUNCTION schedphi._is_auditor(p_tenant uuid)
RETURNS boolean
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record := schedphi._context();
BEGIN
	IF c.via = 'token' THEN
		RETURN c.role = 'auditor' AND (p_tenant IS NULL OR c.tenant = p_tenant);
	END IF;
	RETURN schedphi._session_superuser() OR 'auditor' = ANY (schedphi._my_roles(p_tenant));
END
$$;

CREATE FUNCTION schedphi._authorize_auditor(p_tenant uuid)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT schedphi._is_auditor(p_tenant) THEN
		PERFORM schedphi._deny(p_tenant, 'permission denied: audit rule',
							   'Only an auditor reads the audit log.', NULL);
	END IF;
END
$$;

-- The prev_hash of the first record of a chain: 32 zero bytes.
CREATE FUNCTION schedphi._audit_genesis() RETURNS bytea
LANGUAGE sql IMMUTABLE
AS $$ SELECT decode(repeat('00', 32), 'hex') $$;

-- The head of every chain as of global seq p_seq (its last record sealed
-- by then, after its purge anchor), and the root that binds them all:
-- SHA-256 over (chain, seq, hash) in chain order.  One index probe per
-- chain, whatever the size of the log.
-- Is this database under Citus?  (for the statements that must differ)
CREATE FUNCTION schedphi._citus_active() RETURNS boolean
AS 'MODULE_PATHNAME', 'schedphi_citus_active_sql' LANGUAGE C STABLE;

CREATE FUNCTION schedphi._audit_root(p_seq bigint, OUT chains bigint, OUT root bytea)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_heads bytea[];
BEGIN
	-- each chain's head as of p_seq (on its own node, under Citus), then
	-- the root of them all here.  Without Citus, the bounds as (chain, seq)
	-- pairs and no chain = tenant, so that only the chain index gives the
	-- order: by the seq index, a chain with no record in a month read all
	-- of that month's (20 million records: 8 s).  Citus pushes the join
	-- down to each shard only on chain = tenant.
	IF schedphi._citus_active() THEN
		v_heads := ARRAY(SELECT uuid_send(c.tenant) || int8send(b.seq) || b.hash
						 FROM schedphi.audit_chain c
						 CROSS JOIN LATERAL (SELECT l.seq, l.hash FROM schedphi.audit_log l
											 WHERE l.chain = c.tenant AND l.seq IS NOT NULL AND l.seq <= p_seq
											   AND l.seq > c.start_after
											 ORDER BY l.seq DESC LIMIT 1) b);
	ELSE
		v_heads := ARRAY(SELECT uuid_send(c.tenant) || int8send(b.seq) || b.hash
						 FROM schedphi.audit_chain c
						 CROSS JOIN LATERAL (SELECT l.seq, l.hash FROM schedphi.audit_log l
											 WHERE l.seq IS NOT NULL AND (l.chain, l.seq) <= (c.tenant, p_seq)
											   AND (l.chain, l.seq) > (c.tenant, c.start_after)
											 ORDER BY l.chain DESC, l.seq DESC LIMIT 1) b);
	END IF;
	SELECT count(*), sha256(coalesce(string_agg(h, ''::bytea ORDER BY h), ''::bytea))
	INTO chains, root FROM unnest(v_heads) h;
END
$$;

-- Verify every chain, from its start (after its purge anchor).
CREATE FUNCTION schedphi.verify_audit()
RETURNS TABLE (checked bigint, pending bigint, first_bad bigint, ok boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v record;
BEGIN
	PERFORM schedphi._authorize_auditor(NULL);
	v := schedphi._verify_chains(NULL, 0);
	RETURN QUERY SELECT v.checked, v.pending, v.first_bad, v.first_bad IS NULL;
END
$$;

-- Verify from a digest kept outside the database (audit_digest(), or
-- audit_digest(tenant) for one tenant's chain): its signature, that the
-- ledger still holds what it names, and everything sealed after it.  The
-- cost is the records sealed since, plus one index probe per chain.
CREATE FUNCTION schedphi.verify_audit(digest jsonb)
RETURNS TABLE (checked bigint, pending bigint, first_bad bigint, ok boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_tenant uuid;
	v_seq bigint;
	v_hash bytea;
	v_sig bytea;
	v_at timestamptz;
	v_root record;
	v record;
BEGIN
	PERFORM schedphi._authorize_auditor(NULL);
	BEGIN
		v_tenant := (digest ->> 'tenant')::uuid;
		v_seq := (digest ->> 'seq')::bigint;
		v_hash := decode(coalesce(digest ->> 'hash', digest ->> 'root'), 'hex');
		v_sig := decode(digest ->> 'signature', 'hex');
		v_at := (digest ->> 'at')::timestamptz;
	EXCEPTION WHEN OTHERS THEN
		v_seq := NULL;
	END;
	IF v_seq IS NULL OR v_hash IS NULL OR v_sig IS NULL OR length(v_hash) <> 32 OR digest ->> 'key' IS NULL
	   OR (v_tenant IS NULL) <> (digest ->> 'root' IS NOT NULL) THEN
		RAISE EXCEPTION 'digest must be what schedphi.audit_digest() returned' USING ERRCODE = '22023';
	END IF;
	IF v_tenant IS NOT NULL THEN
		PERFORM schedphi._authorize_auditor(v_tenant);
	END IF;
	IF (schedphi._audit_sign(coalesce(v_tenant::text, '*'), v_seq, v_hash, digest ->> 'key')).signature
	   IS DISTINCT FROM v_sig THEN
		RAISE EXCEPTION 'digest signature does not verify' USING ERRCODE = '22023',
			DETAIL = 'The digest was altered, or was not made with this master key.';
	END IF;
	IF v_tenant IS NOT NULL THEN
		-- one chain: its record must still be there, with its hash
		IF v_seq > 0 AND NOT EXISTS (SELECT 1 FROM schedphi.audit_log l
									 WHERE l.chain = v_tenant AND l.seq = v_seq AND l.hash = v_hash) THEN
			IF EXISTS (SELECT 1 FROM schedphi.audit_chain c WHERE c.tenant = v_tenant AND c.start_after >= v_seq) THEN
				RAISE EXCEPTION 'the digest''s record was purged' USING ERRCODE = '55000',
					DETAIL = 'purge_audit removed the records up to it; check a digest taken after the purge, or verify_audit() from the purge''s anchor.';
			END IF;
			RETURN QUERY SELECT 0::bigint, (SELECT count(*) FROM schedphi.audit_log l WHERE l.hash IS NULL
											AND l.id > schedphi._audit_floor() AND l.chain = v_tenant), v_seq, false;
			RETURN;
		END IF;
		v := schedphi._verify_chains(v_tenant, v_seq);
	ELSE
		-- every chain: the heads as of the digest must still bind to its root
		v_root := schedphi._audit_root(v_seq);
		IF v_root.root IS DISTINCT FROM v_hash THEN
			IF EXISTS (SELECT 1 FROM schedphi.audit_log l WHERE l.action = 'purge' AND l.at > v_at) THEN
				RAISE EXCEPTION 'the digest''s record was purged' USING ERRCODE = '55000',
					DETAIL = 'purge_audit removed records the digest names; check a digest taken after the purge, or verify_audit() from the purge''s anchor.';
			END IF;
			-- changed: find where, from the start
			v := schedphi._verify_chains(NULL, 0);
			RETURN QUERY SELECT v.checked, v.pending, coalesce(v.first_bad, v_seq), false;
			RETURN;
		END IF;
		v := schedphi._verify_chains(NULL, v_seq);
	END IF;
	RETURN QUERY SELECT v.checked, v.pending, v.first_bad, v.first_bad IS NULL;
END
$$;

-- The heads of the chains, signed with the audit key (derived from the
-- active master key), to keep outside the database: every chain (its root,
-- with audit_digest()) or one tenant's (audit_digest(tenant), for that
-- tenant's auditor).
CREATE FUNCTION schedphi.audit_digest()
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_seq bigint;
	r record;
	s record;
BEGIN
	PERFORM schedphi._authorize_auditor(NULL);
	-- one snapshot: the heads now, and the last seq among them
	SELECT coalesce(max(c.head_seq), 0) INTO v_seq FROM schedphi.audit_chain c;
	r := schedphi._audit_root(v_seq);
	s := schedphi._audit_sign('*', v_seq, r.root, NULL);
	RETURN jsonb_build_object('seq', v_seq, 'root', encode(r.root, 'hex'), 'chains', r.chains, 'at', now(),
							  'key', s.key, 'signature', encode(s.signature, 'hex'));
END
$$;

CREATE FUNCTION schedphi.audit_digest(tenant uuid)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_seq bigint := 0;
	v_hash bytea := schedphi._audit_genesis();
	s record;
BEGIN
	PERFORM schedphi._authorize_auditor(schedphi._tenant_arg(tenant));
	SELECT c.head_seq, c.head_hash INTO v_seq, v_hash FROM schedphi.audit_chain c WHERE c.tenant = tenant;
	IF NOT FOUND THEN
		v_seq := 0;
		v_hash := schedphi._audit_genesis();
	END IF;
	s := schedphi._audit_sign(tenant::text, v_seq, v_hash, NULL);
	RETURN jsonb_build_object('tenant', tenant, 'seq', v_seq, 'hash', encode(v_hash, 'hex'), 'at', now(),
							  'key', s.key, 'signature', encode(s.signature, 'hex'));
END
$$;

-- The accounting of disclosures: every record of this patient's data being
-- written, read, or opened under break-glass, oldest first.
CREATE FUNCTION schedphi.access_report(patient uuid, during tstzrange DEFAULT NULL)
RETURNS SETOF schedphi.audit_log
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_tenant uuid;
BEGIN
	IF patient IS NULL THEN
		RAISE EXCEPTION 'patient must not be null' USING ERRCODE = '22023';
	END IF;
	SELECT p.tenant INTO v_tenant FROM schedphi.patient p WHERE p.id = patient;
	IF v_tenant IS NULL THEN
		SELECT l.tenant INTO v_tenant FROM schedphi.audit_log l WHERE l.patient = patient LIMIT 1;
	END IF;
	-- an auditor of another tenant learns nothing, not even whether the patient exists
	IF v_tenant IS NULL THEN
		-- no tenant to be an auditor of: only a superuser (acting as no one) goes on
		IF NOT schedphi._is_auditor('00000000-0000-0000-0000-000000000000') THEN
			PERFORM schedphi._deny(NULL, 'permission denied: audit rule', 'Only an auditor reads the audit log.', NULL);
		END IF;
	ELSIF NOT schedphi._is_auditor(v_tenant) THEN
		PERFORM schedphi._authorize_auditor(v_tenant);
	END IF;
	PERFORM schedphi._audit_event('export', v_tenant, 'access_report', NULL, patient,
								  jsonb_build_object('during', during::text));
	RETURN QUERY SELECT l.* FROM schedphi.audit_log l
		WHERE l.patient = patient AND (during IS NULL OR during @> l.at)
		ORDER BY l.at, l.id;
END
$$;

-- The same accounting in plain words, for a letter to the patient: one
-- line per record, oldest first.
CREATE FUNCTION schedphi._plain_fields(p_object text, p_columns text[])
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
	SELECT CASE p_object WHEN 'appointment' THEN 'an appointment''s ' WHEN 'waitlist' THEN 'a waitlist entry''s '
						 ELSE 'the patient''s ' END
		   || coalesce(string_agg(f.w, ', ' ORDER BY f.o), 'record')
	FROM (SELECT DISTINCT ON (x.w) x.w, c.o
		  FROM unnest(p_columns) WITH ORDINALITY AS c(col, o)
		  CROSS JOIN LATERAL (SELECT CASE c.col
					WHEN 'given' THEN 'name' WHEN 'family' THEN 'name' WHEN 'birth_date' THEN 'date of birth'
					WHEN 'phone' THEN 'phone number' WHEN 'email' THEN 'e-mail address'
					WHEN 'mrn' THEN 'medical record number' WHEN 'zip' THEN 'ZIP code'
					WHEN 'reason' THEN 'reason for the visit' WHEN 'cancel_reason' THEN 'reason for cancelling'
					WHEN 'status' THEN 'status' WHEN 'during' THEN 'time' WHEN 'actors' THEN 'practitioners and rooms'
					WHEN 'wanted' THEN 'wanted times' END AS w) x
		  WHERE x.w IS NOT NULL
		  ORDER BY x.w, c.o) f
$$;

CREATE FUNCTION schedphi.access_report_text(patient uuid, during tstzrange DEFAULT NULL)
RETURNS TABLE (at timestamptz, who text, what text)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT r.at,
		   r.actor || CASE WHEN r.actor IS DISTINCT FROM r.login::text THEN ' (signed in as ' || r.login || ')' ELSE '' END
				   || coalesce(', ' || r.role, ''),
		   CASE r.action
			   WHEN 'read' THEN 'viewed ' || schedphi._plain_fields(r.object, r.columns)
			   WHEN 'insert' THEN CASE r.object WHEN 'patient' THEN 'registered the patient'
												 WHEN 'appointment' THEN 'booked an appointment'
												 WHEN 'waitlist' THEN 'put the patient on a waitlist'
												 ELSE 'added ' || coalesce(r.object, 'a record') END
			   WHEN 'update' THEN 'changed ' || schedphi._plain_fields(r.object, r.columns)
			   WHEN 'reencrypt' THEN 're-encrypted ' || schedphi._plain_fields(r.object, r.columns)
									 || ' under a new key (the data did not change)'
			   WHEN 'delete' THEN 'deleted ' || schedphi._plain_fields(r.object, NULL)
			   WHEN 'denied' THEN 'was refused access (' || coalesce(r.detail ->> 'rule', 'denied') || ')'
			   WHEN 'rate_limited' THEN 'was stopped by a rate limit'
			   WHEN 'break_glass' THEN 'opened emergency access to the record for '
									   || coalesce(r.detail ->> 'minutes', '?') || ' minutes'
			   WHEN 'review' THEN 'reviewed an emergency access and found it ' || coalesce(r.detail ->> 'outcome', '?')
			   WHEN 'export' THEN 'produced an accounting of disclosures'
			   ELSE r.action END
		   || CASE r.purpose WHEN 'TREAT' THEN ', for treatment' WHEN 'PAYMENT' THEN ', for payment'
							 WHEN 'OPERATIONS' THEN ', for health care operations'
							 WHEN 'EMERGENCY' THEN ', in an emergency' ELSE '' END
		   || coalesce(', from ' || host(r.client_addr), '')
		   || coalesce(', using ' || r.application, '')
	FROM schedphi.access_report(patient, during) r
$$;

-- Remove audit records older than p_before, which must be older than
-- schedphi.audit_retention.  Each chain is cut after a prefix (up to its
-- last record before the date that no younger record of it precedes), and
-- anchored: its verification then starts after the last record removed,
-- bound to that record's hash (audit_chain.start_after, start_prev).  A
-- 'purge' record, durable before anything changes, holds a hash of the
-- anchors.  Whole monthly partitions are dropped; other rows are deleted,
-- in the transaction that moves the anchors.  Superuser only.
CREATE FUNCTION schedphi.purge_audit(before timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_retention interval;
	v_rows bigint := 0;
	v_next bigint;
	v_kept bigint;
	v_anchors bytea;
	v_chains bigint;
	p record;
BEGIN
	PERFORM schedphi._require_superuser('purge audit records');
	IF before IS NULL THEN
		RAISE EXCEPTION 'before must not be null' USING ERRCODE = '22023';
	END IF;
	BEGIN
		v_retention := current_setting('schedphi.audit_retention')::interval;
	EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
		v_retention := NULL;
	END;
	IF v_retention IS NULL OR v_retention < interval '0' THEN
		RAISE EXCEPTION 'schedphi.audit_retention must be a length of time such as ''6 years''' USING ERRCODE = '22023';
	END IF;
	IF before > now() - v_retention THEN
		RAISE EXCEPTION 'audit records younger than schedphi.audit_retention (%) are kept', v_retention
			USING ERRCODE = '22023',
				  DETAIL = pg_catalog.format('The oldest date allowed now is %s.', now() - v_retention);
	END IF;
	IF EXISTS (SELECT 1 FROM schedphi.audit_log l WHERE l.at < before AND l.hash IS NULL
			   AND l.id > schedphi._audit_floor()) THEN
		RAISE EXCEPTION 'some records before that date are not sealed yet' USING ERRCODE = '55000';
	END IF;
	CREATE TEMP TABLE IF NOT EXISTS schedphi_purge_cut (chain uuid, through bigint, hash bytea) ON COMMIT DROP;
	TRUNCATE schedphi_purge_cut;
	INSERT INTO schedphi_purge_cut
	SELECT c.tenant, t.through, l.hash
	FROM schedphi.audit_chain c
	CROSS JOIN LATERAL (
		SELECT max(o.seq) AS through FROM schedphi.audit_log o
		WHERE o.chain = c.tenant AND o.seq IS NOT NULL AND o.seq > c.start_after AND o.at < before
		  AND o.seq < coalesce((SELECT min(y.seq) FROM schedphi.audit_log y
								WHERE y.chain = c.tenant AND y.seq IS NOT NULL AND y.at >= before),
							   9223372036854775807)) t
	JOIN schedphi.audit_log l ON l.chain = c.tenant AND l.seq = t.through;
	SELECT count(*), sha256(coalesce(string_agg(uuid_send(x.chain) || int8send(x.through) || x.hash, ''::bytea
												ORDER BY x.chain), ''::bytea))
	INTO v_chains, v_anchors FROM schedphi_purge_cut x;
	IF v_chains = 0 THEN
		RETURN 0;
	END IF;
	-- on record (and durable) before anything changes
	PERFORM schedphi._audit_event('purge', NULL, 'audit_log', NULL, NULL,
		jsonb_build_object('before', before, 'chains', v_chains, 'anchors', encode(v_anchors, 'hex')));
	UPDATE schedphi.audit_chain c SET start_after = x.through, start_prev = x.hash
	FROM schedphi_purge_cut x WHERE c.tenant = x.chain;
	-- each old month read once, by itself (not the whole log once a month)
	FOR p IN SELECT c.relname FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
			 WHERE i.inhparent = 'schedphi.audit_log'::regclass AND c.relname ~ '^audit_log_[0-9]{6}$'
			   AND to_date(substr(c.relname, 11), 'YYYYMM') + interval '1 month' <= before AT TIME ZONE 'UTC'
	LOOP
		EXECUTE pg_catalog.format(
			'SELECT count(*), count(*) FILTER (WHERE l.seq IS NULL OR c.tenant IS NULL OR l.seq > c.start_after)
			 FROM schedphi.%I l LEFT JOIN schedphi.audit_chain c ON c.tenant = l.chain', p.relname)
			INTO v_next, v_kept;
		IF v_kept = 0 THEN
			EXECUTE pg_catalog.format('DROP TABLE schedphi.%I', p.relname);
			v_rows := v_rows + v_next;
		END IF;
	END LOOP;
	RETURN v_rows + schedphi._audit_purge_rows();
END
$$;

-- Only an auditor reads the log directly (a login holding
-- schedphi_auditor through add_member, for its tenants).
ALTER TABLE schedphi.audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE schedphi.audit_log FORCE ROW LEVEL SECURITY;
-- A record without a tenant (a rejected token, a refusal by PostgreSQL, an
-- operation of the DBA) may name logins of any tenant: the DBA reads those.
CREATE POLICY auditor_rows ON schedphi.audit_log FOR SELECT USING (tenant IS NOT NULL AND schedphi._is_auditor(tenant));
