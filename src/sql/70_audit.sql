-- schedphi install script, part 7: the audit ledger (src/audit.c,
-- docs/audit.md).
--
-- One table, partitioned by month, append-only, hash-chained.  Writes to
-- PHI tables are recorded by a C trigger in the writing transaction; reads,
-- denials and the other events come through a queue in shared memory that a
-- background worker writes in its own transactions.  The same worker seals
-- records into the chain: seq, prev_hash and hash are null until then.
--
-- The log is the one table without a tenant-leading key: it holds one
-- chain for the whole database (records of failed logins have no tenant).
-- On a distributed deployment it stays on the coordinator.

CREATE SEQUENCE schedphi.audit_log_id;

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
	id			bigint NOT NULL DEFAULT nextval('schedphi.audit_log_id')	-- order of arrival
) PARTITION BY RANGE (at);

-- Indexes are made per partition (_audit_protect), not on the parent: a
-- partitioned index of an extension's table would clash, on restore, with
-- the indexes pg_dump writes for the partitions the worker created.
CREATE TABLE schedphi.audit_log_default PARTITION OF schedphi.audit_log DEFAULT;

-- pg_dump writes the records; monthly partitions are ordinary tables that
-- the worker creates, and pg_dump writes them whole.
SELECT pg_catalog.pg_extension_config_dump('schedphi.audit_log_default', '');
SELECT pg_catalog.pg_extension_config_dump('schedphi.audit_log_id', '');

CREATE FUNCTION schedphi._audit_guard() RETURNS trigger
AS 'MODULE_PATHNAME', 'schedphi_audit_guard' LANGUAGE C;
CREATE FUNCTION schedphi._audit_write() RETURNS trigger
AS 'MODULE_PATHNAME', 'schedphi_audit_write' LANGUAGE C;

-- Append-only, for everyone, whatever session_replication_role says.
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON schedphi.audit_log
	FOR EACH ROW EXECUTE FUNCTION schedphi._audit_guard();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON schedphi.audit_log
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._audit_guard();
ALTER TABLE schedphi.audit_log ENABLE ALWAYS TRIGGER append_only;
ALTER TABLE schedphi.audit_log ENABLE ALWAYS TRIGGER append_only_truncate;

-- What a partition needs besides the row trigger it inherits: its indexes,
-- the TRUNCATE guard, and no access of its own.
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
	EXECUTE pg_catalog.format('CREATE INDEX IF NOT EXISTS %I ON schedphi.%I (seq) WHERE action = ''purge''',
							  p_partition || '_purge', p_partition);
	EXECUTE pg_catalog.format('CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON schedphi.%I '
							  'FOR EACH STATEMENT EXECUTE FUNCTION schedphi._audit_guard()', p_partition);
	EXECUTE pg_catalog.format('ALTER TABLE schedphi.%I ENABLE ALWAYS TRIGGER append_only_truncate', p_partition);
	EXECUTE pg_catalog.format('ALTER TABLE schedphi.%I ENABLE ALWAYS TRIGGER append_only', p_partition);
	EXECUTE pg_catalog.format('ALTER TABLE schedphi.%I ENABLE ROW LEVEL SECURITY', p_partition);
	EXECUTE pg_catalog.format('ALTER TABLE schedphi.%I FORCE ROW LEVEL SECURITY', p_partition);
	EXECUTE pg_catalog.format('REVOKE ALL ON schedphi.%I FROM PUBLIC', p_partition);
END
$$;
SELECT schedphi._audit_protect('audit_log_default');

-- This month's partition and the next p_months' (UTC months).  Records of
-- a month that arrived before its partition existed wait in the default
-- partition; they are moved, whole, into the new partition (only the audit
-- worker may: the move deletes from the default partition).  The worker
-- calls this when it starts and every hour.
CREATE FUNCTION schedphi._audit_partitions(p_months int DEFAULT 2)
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_month timestamp;
	v_lo timestamptz;
	v_hi timestamptz;
	v_name name;
	v_made int := 0;
BEGIN
	FOR i IN 0..p_months LOOP
		v_month := date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i);
		v_lo := v_month AT TIME ZONE 'UTC';
		v_hi := (v_month + interval '1 month') AT TIME ZONE 'UTC';
		v_name := 'audit_log_' || to_char(v_month, 'YYYYMM');
		CONTINUE WHEN to_regclass('schedphi.' || quote_ident(v_name)) IS NOT NULL;
		IF NOT EXISTS (SELECT 1 FROM schedphi.audit_log_default d WHERE d.at >= v_lo AND d.at < v_hi) THEN
			EXECUTE pg_catalog.format('CREATE TABLE schedphi.%I PARTITION OF schedphi.audit_log '
									  'FOR VALUES FROM (%L) TO (%L)', v_name, v_lo, v_hi);
		ELSE
			LOCK TABLE schedphi.audit_log_default IN EXCLUSIVE MODE;
			EXECUTE pg_catalog.format('CREATE TABLE schedphi.%I (LIKE schedphi.audit_log INCLUDING DEFAULTS)', v_name);
			EXECUTE pg_catalog.format('WITH moved AS (DELETE FROM schedphi.audit_log_default d '
									  'WHERE d.at >= %L AND d.at < %L RETURNING d.*) '
									  'INSERT INTO schedphi.%I SELECT * FROM moved', v_lo, v_hi, v_name);
			EXECUTE pg_catalog.format('ALTER TABLE schedphi.audit_log ATTACH PARTITION schedphi.%I '
									  'FOR VALUES FROM (%L) TO (%L)', v_name, v_lo, v_hi);
		END IF;
		PERFORM schedphi._audit_protect(v_name);
		v_made := v_made + 1;
	END LOOP;
	RETURN v_made;
END
$$;

-- Writes to PHI tables, recorded in the writing transaction (ALWAYS: also
-- under session_replication_role = replica).
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON schedphi.patient
	FOR EACH ROW EXECUTE FUNCTION schedphi._audit_write('id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON schedphi.appointment
	FOR EACH ROW EXECUTE FUNCTION schedphi._audit_write('patient');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON schedphi.waitlist
	FOR EACH ROW EXECUTE FUNCTION schedphi._audit_write('patient');
ALTER TABLE schedphi.patient ENABLE ALWAYS TRIGGER audit;
ALTER TABLE schedphi.appointment ENABLE ALWAYS TRIGGER audit;
ALTER TABLE schedphi.waitlist ENABLE ALWAYS TRIGGER audit;



-- The role recorded with each event is cached per backend until a
-- membership changes.
CREATE FUNCTION schedphi._members_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'schedphi_members_changed' LANGUAGE C;
CREATE TRIGGER audit_roles AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON schedphi.member
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._members_changed();
ALTER TABLE schedphi.member ENABLE ALWAYS TRIGGER audit_roles;

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
-- them: a change that rolls back leaves no record of having happened.
CREATE FUNCTION schedphi._audit_event_row()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_TABLE_NAME = 'key_event' THEN
		PERFORM schedphi._audit_change(NEW.action, NEW.tenant, 'data_key', NULL, NULL, NEW.detail);
	ELSE
		PERFORM schedphi._audit_change('member_' || NEW.action, NEW.tenant, 'member', NULL, NULL,
			jsonb_build_object('login', NEW.login, 'role', NEW.role, 'practitioner', NEW.practitioner));
	END IF;
	RETURN NULL;
END
$$;
CREATE TRIGGER audit AFTER INSERT ON schedphi.key_event
	FOR EACH ROW EXECUTE FUNCTION schedphi._audit_event_row();
CREATE TRIGGER audit AFTER INSERT ON schedphi.member_event
	FOR EACH ROW EXECUTE FUNCTION schedphi._audit_event_row();
ALTER TABLE schedphi.key_event ENABLE ALWAYS TRIGGER audit;
ALTER TABLE schedphi.member_event ENABLE ALWAYS TRIGGER audit;

-- Record a denial, then raise 42501 with the rule.
CREATE FUNCTION schedphi._deny(tenant uuid, message text, detail text DEFAULT NULL, hint text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'schedphi_deny' LANGUAGE C VOLATILE;

CREATE FUNCTION schedphi._audit_wake() RETURNS void
AS 'MODULE_PATHNAME', 'schedphi_audit_wake' LANGUAGE C VOLATILE;

CREATE FUNCTION schedphi._verify_chain(from_seq bigint, from_prev bytea,
									   OUT checked bigint, OUT pending bigint, OUT first_bad bigint,
									   OUT last_seq bigint, OUT last_hash bytea)
AS 'MODULE_PATHNAME', 'schedphi_verify_chain' LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION schedphi._audit_sign(seq bigint, hash bytea, kek text, OUT key text, OUT signature bytea)
AS 'MODULE_PATHNAME', 'schedphi_audit_sign_head' LANGUAGE C VOLATILE;

CREATE FUNCTION schedphi._audit_purge_rows(through bigint) RETURNS bigint
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
	v_upto bigint := (SELECT max(l.id) FROM schedphi.audit_log l
					  WHERE l.hash IS NULL AND (v_mine IS NULL OR l.xid IS DISTINCT FROM v_mine));
	v_deadline timestamptz := clock_timestamp() + p_timeout;
BEGIN
	WHILE v_upto IS NOT NULL AND EXISTS (
		SELECT 1 FROM schedphi.audit_log l
		WHERE l.hash IS NULL AND l.id <= v_upto AND (v_mine IS NULL OR l.xid IS DISTINCT FROM v_mine)) LOOP
		IF clock_timestamp() > v_deadline THEN
			RAISE EXCEPTION 'audit records were not sealed within %', p_timeout
				USING ERRCODE = '55000', HINT = 'Check the "schedphi audit" background worker.';
		END IF;
		PERFORM schedphi._audit_wake();
		PERFORM pg_sleep(0.02);
	END LOOP;
END
$$;

-- Who may read the audit log: an auditor (of p_tenant, or of any tenant
-- when p_tenant is null), or a superuser.
CREATE FUNCTION schedphi._is_auditor(p_tenant uuid)
RETURNS boolean
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN c.via = 'token' THEN c.role = 'auditor' AND (p_tenant IS NULL OR c.tenant = p_tenant)
		ELSE schedphi._session_superuser()
			 OR EXISTS (SELECT 1 FROM schedphi.member m
						WHERE schedphi._is_mine(m.login, m.login_oid, m.role) AND m.role = 'auditor'
						  AND (p_tenant IS NULL OR m.tenant = p_tenant)) END
	FROM schedphi._context() c
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

-- The prev_hash of the first record of the chain: 32 zero bytes.
CREATE FUNCTION schedphi._audit_genesis() RETURNS bytea
LANGUAGE sql IMMUTABLE
AS $$ SELECT decode(repeat('00', 32), 'hex') $$;

-- Where verification starts: after the last purge anchor, or at seq 1.
CREATE FUNCTION schedphi._audit_start(OUT from_seq bigint, OUT from_prev bytea)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT coalesce((SELECT (l.detail ->> 'through_seq')::bigint + 1 FROM schedphi.audit_log l
					 WHERE l.action = 'purge' AND l.seq IS NOT NULL ORDER BY l.seq DESC LIMIT 1), 1),
		   coalesce((SELECT decode(l.detail ->> 'hash', 'hex') FROM schedphi.audit_log l
					 WHERE l.action = 'purge' AND l.seq IS NOT NULL ORDER BY l.seq DESC LIMIT 1),
					schedphi._audit_genesis())
$$;

CREATE FUNCTION schedphi.verify_audit()
RETURNS TABLE (checked bigint, pending bigint, first_bad bigint, ok boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s record;
	v record;
BEGIN
	PERFORM schedphi._authorize_auditor(NULL);
	s := schedphi._audit_start();
	v := schedphi._verify_chain(s.from_seq, s.from_prev);
	-- a record numbered before the start means the chain was restarted
	v.first_bad := least(v.first_bad, (SELECT min(l.seq) FROM schedphi.audit_log l WHERE l.seq < s.from_seq));
	RETURN QUERY SELECT v.checked, v.pending, v.first_bad, v.first_bad IS NULL;
END
$$;

-- Verify from a digest kept outside the database: its signature, that the
-- chain still holds its record with its hash, and the chain after it.
CREATE FUNCTION schedphi.verify_audit(digest jsonb)
RETURNS TABLE (checked bigint, pending bigint, first_bad bigint, ok boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_seq bigint;
	v_hash bytea;
	v_sig bytea;
	v record;
BEGIN
	PERFORM schedphi._authorize_auditor(NULL);
	BEGIN
		v_seq := (digest ->> 'seq')::bigint;
		v_hash := decode(digest ->> 'hash', 'hex');
		v_sig := decode(digest ->> 'signature', 'hex');
	EXCEPTION WHEN OTHERS THEN
		v_seq := NULL;
	END;
	IF v_seq IS NULL OR v_hash IS NULL OR v_sig IS NULL OR length(v_hash) <> 32 OR digest ->> 'key' IS NULL THEN
		RAISE EXCEPTION 'digest must be what schedphi.audit_digest() returned' USING ERRCODE = '22023';
	END IF;
	IF (schedphi._audit_sign(v_seq, v_hash, digest ->> 'key')).signature IS DISTINCT FROM v_sig THEN
		RAISE EXCEPTION 'digest signature does not verify' USING ERRCODE = '22023',
			DETAIL = 'The digest was altered, or was not made with this master key.';
	END IF;
	-- a digest taken before a purge names a record that is gone: say so,
	-- rather than report it as tampering
	IF v_seq > 0 AND NOT EXISTS (SELECT 1 FROM schedphi.audit_log l WHERE l.seq = v_seq)
	   AND EXISTS (SELECT 1 FROM schedphi.audit_log l
				   WHERE l.action = 'purge' AND (l.detail ->> 'through_seq')::bigint >= v_seq) THEN
		RAISE EXCEPTION 'the digest''s record was purged' USING ERRCODE = '55000',
			DETAIL = 'purge_audit removed the records up to it; check a digest taken after the purge, or verify_audit() from the purge''s anchor.';
	END IF;
	IF v_seq > 0 AND NOT EXISTS (SELECT 1 FROM schedphi.audit_log l WHERE l.seq = v_seq AND l.hash = v_hash) THEN
		RETURN QUERY SELECT 0::bigint, (SELECT count(*) FROM schedphi.audit_log l WHERE l.hash IS NULL), v_seq, false;
		RETURN;
	END IF;
	v := schedphi._verify_chain(v_seq + 1, CASE WHEN v_seq = 0 THEN
		schedphi._audit_genesis() ELSE v_hash END);
	RETURN QUERY SELECT v.checked, v.pending, v.first_bad, v.first_bad IS NULL;
END
$$;

-- The head of the chain, signed with the audit key (derived from the
-- active master key), to keep outside the database.
CREATE FUNCTION schedphi.audit_digest()
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_seq bigint;
	v_hash bytea;
	v_at timestamptz;
	s record;
BEGIN
	PERFORM schedphi._authorize_auditor(NULL);
	SELECT l.seq, l.hash, l.at INTO v_seq, v_hash, v_at
	FROM schedphi.audit_log l WHERE l.seq IS NOT NULL ORDER BY l.seq DESC LIMIT 1;
	IF NOT FOUND THEN
		v_seq := 0;
		v_hash := schedphi._audit_genesis();
	END IF;
	s := schedphi._audit_sign(v_seq, v_hash, NULL);
	RETURN jsonb_build_object('seq', v_seq, 'hash', encode(v_hash, 'hex'), 'at', v_at,
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
-- schedphi.audit_retention.  What goes is anchored first: a 'purge'
-- record (durable before anything is removed) holds the seq and hash of
-- the last record removed, and verification starts there.  Whole monthly
-- partitions are dropped; other rows are deleted.  Superuser only.
CREATE FUNCTION schedphi.purge_audit(before timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_retention interval;
	v_through bigint;
	v_next bigint;
	v_hash bytea;
	v_rows bigint := 0;
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
	IF EXISTS (SELECT 1 FROM schedphi.audit_log l WHERE l.at < before AND l.hash IS NULL) THEN
		RAISE EXCEPTION 'some records before that date are not sealed yet' USING ERRCODE = '55000';
	END IF;
	-- the chain is cut after a prefix: up to the last record before the
	-- date that no younger record precedes
	SELECT max(l.seq) INTO v_through FROM schedphi.audit_log l WHERE l.at < before;
	SELECT min(l.seq) INTO v_next FROM schedphi.audit_log l WHERE l.at >= before AND l.seq IS NOT NULL;
	IF v_next IS NOT NULL AND v_next <= v_through THEN
		v_through := v_next - 1;
	END IF;
	IF v_through IS NULL OR v_through < (schedphi._audit_start()).from_seq THEN
		RETURN 0;
	END IF;
	SELECT l.hash INTO v_hash FROM schedphi.audit_log l WHERE l.seq = v_through;
	PERFORM schedphi._audit_event('purge', NULL, 'audit_log', NULL, NULL,
		jsonb_build_object('through_seq', v_through, 'hash', encode(v_hash, 'hex'), 'before', before));
	-- the anchor is sealed (and so follows the records it replaces) before
	-- any of them goes
	PERFORM schedphi._audit_sync();
	FOR p IN SELECT c.relname FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
			 WHERE i.inhparent = 'schedphi.audit_log'::regclass AND c.relname ~ '^audit_log_[0-9]{6}$'
	LOOP
		IF to_date(substr(p.relname, 11), 'YYYYMM') + interval '1 month' <= before AT TIME ZONE 'UTC'
		   AND NOT EXISTS (SELECT 1 FROM schedphi.audit_log l WHERE l.tableoid = ('schedphi.' || p.relname)::regclass
						   AND (l.seq IS NULL OR l.seq > v_through)) THEN
			EXECUTE pg_catalog.format('SELECT count(*) FROM schedphi.%I', p.relname) INTO v_next;
			EXECUTE pg_catalog.format('DROP TABLE schedphi.%I', p.relname);
			v_rows := v_rows + v_next;
		END IF;
	END LOOP;
	RETURN v_rows + schedphi._audit_purge_rows(v_through);
END
$$;

-- Only an auditor reads the log directly (a login holding
-- schedphi_auditor through add_member, for its tenants).
ALTER TABLE schedphi.audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE schedphi.audit_log FORCE ROW LEVEL SECURITY;
-- A record without a tenant (a rejected token, a refusal by PostgreSQL, an
-- operation of the DBA) may name logins of any tenant: the DBA reads those.
CREATE POLICY auditor_rows ON schedphi.audit_log FOR SELECT USING (tenant IS NOT NULL AND schedphi._is_auditor(tenant));
