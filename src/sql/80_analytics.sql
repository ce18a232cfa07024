-- schedphi install script, part 8: de-identified analytics (docs/analytics.md).
--
-- Analysts never decrypt.  What they may see is derived when a patient or
-- an appointment is written, by triggers running as the extension's owner,
-- and kept apart from the sealed columns:
--   patient_deid      one row per patient: its analytics token and its
--                     5-digit ZIP (for the Limited Data Set; the Safe
--                     Harbor ZIP3 is cut from it when read, so that a new
--                     list of restricted zones applies at once);
--   appointment_deid  one row per appointment: what deid_appointments
--                     shows, ready to scan (tokens, visit year, age at the
--                     visit, status, kind, times, location, practitioner,
--                     the kinds of actors booked).
-- Tokens are random surrogates (gen_random_uuid(): 122 bits from the
-- server's strong random source), never derived from anything about the
-- person (45 CFR 164.514(c)); rotate_analytics_tokens() replaces every
-- token of a tenant and keeps no link from the old ones to the new.

-- The 3-digit ZIP zones of 20,000 people or fewer, whose ZIP3 Safe Harbor
-- replaces by 000 (164.514(b)(2)(i)(B)).  Reference data of the whole
-- installation, not of a tenant (the one table without a tenant column; on
-- Citus a reference table, copied to every node): a superuser updates it
-- when the Census Bureau publishes a new count, and names the vintage.
CREATE TABLE schedphi.zip3_restricted (
	zip3		text NOT NULL CHECK (zip3 ~ '^[0-9]{3}$'),
	vintage		text NOT NULL,
	installed	boolean NOT NULL DEFAULT false,	-- by CREATE EXTENSION (a dump keeps the others)
	PRIMARY KEY (zip3)
);
INSERT INTO schedphi.zip3_restricted (zip3, vintage, installed)
SELECT z, '2000 Census (HHS, Guidance Regarding Methods for De-identification of PHI, 2012)', true
FROM unnest(ARRAY['036', '059', '063', '102', '203', '556', '692', '790', '821', '823', '830', '831',
				  '878', '879', '884', '890', '893']) z;

-- Token epochs: rotate_analytics_tokens() starts a new one.
CREATE TABLE schedphi.analytics_epoch (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	epoch		int NOT NULL,
	rotated_at	timestamptz NOT NULL DEFAULT now(),
	rotated_by	name NOT NULL DEFAULT schedphi._login(),
	PRIMARY KEY (tenant)
);

CREATE TABLE schedphi.patient_deid (
	tenant		uuid NOT NULL,
	patient		uuid NOT NULL,
	token		uuid NOT NULL DEFAULT gen_random_uuid(),
	zip5		text CHECK (zip5 ~ '^[0-9]{5}$'),
	PRIMARY KEY (tenant, patient)
);
-- (No foreign key to the patient, for the reason given below for
-- appointment_deid: a bulk import would pay a locking look-up per row.)

-- age: completed years on the visit's date in its location's time zone
-- (the tenant's when no actor has a location), 90 for 90 and over, NULL
-- when unknown.
CREATE TABLE schedphi.appointment_deid (
	tenant		uuid NOT NULL,
	appointment uuid NOT NULL,
	patient		uuid NOT NULL,
	token		uuid NOT NULL DEFAULT gen_random_uuid(),
	patient_token uuid NOT NULL,
	visit_year	int NOT NULL,
	age			smallint CHECK (age BETWEEN 0 AND 90),
	zip5		text,
	zip3		text NOT NULL GENERATED ALWAYS AS (coalesce(left(zip5, 3), '')) STORED,	-- the class's, '' unknown
	status		text NOT NULL,
	kind		text NOT NULL,
	starts		timestamptz NOT NULL,
	ends		timestamptz NOT NULL,
	local_date	date NOT NULL,	-- of starts in the tenant's zone: the aggregates' day and week
	booked_at	timestamptz NOT NULL,
	location	uuid,
	practitioner uuid,
	actor_kinds text[] NOT NULL,
	PRIMARY KEY (tenant, appointment)
);
-- (No foreign key to the appointment: its check would cost every booking
-- a locking look-up; the row goes with its appointment by a trigger.  No
-- index on the times either: an analyst's question reads a year or more of
-- a tenant's rows, which a scan serves.)
CREATE INDEX appointment_deid_patient ON schedphi.appointment_deid (tenant, patient);

-- The k-anonymity classes, kept as the derived rows change (triggers on
-- appointment_deid): a row per patient and class in which the patient has
-- a visit (visit year, age at the visit, the first three digits of the
-- ZIP).  A query of deid_appointments counts the patients of each class
-- from here (a row per patient and class, not per appointment).  A booking
-- adds its pair when it sees none, and waits for nobody: no unique key
-- (two bookings of one patient, each in the middle of its own booking,
-- could otherwise wait for each other and deadlock), so two racing
-- bookings can both add it, and the views count distinct patients.  A
-- pair goes when its patient's last visit in the class has gone.  (Should
-- two transactions race there, a pair can only go missing, never be left
-- over: a class counted smaller is generalised sooner, the safe side;
-- rebuild_analytics() makes them exact again.)  The classes are kept
-- before the restricted zones are applied (a new list of zones applies at
-- once); age -1 and zip3 '' stand for unknown.
CREATE TABLE schedphi.deid_class (
	tenant		uuid NOT NULL,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	visit_year	int NOT NULL,
	age			smallint NOT NULL CHECK (age BETWEEN -1 AND 90),
	zip3		text NOT NULL CHECK (zip3 ~ '^([0-9]{3})?$'),
	patient		uuid NOT NULL,
	PRIMARY KEY (tenant, id)
);
CREATE INDEX deid_class_key ON schedphi.deid_class (tenant, visit_year, age, zip3, patient);

-- Data use agreements and their date shifts (the Limited Data Set, below).
CREATE TABLE schedphi.data_use_agreement (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	recipient	name NOT NULL,
	recipient_oid oid NOT NULL,	-- the login itself: a later login with the same name is someone else
	purpose		text NOT NULL CHECK (btrim(purpose) <> ''),
	expires		date NOT NULL,
	date_shift	boolean NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	created_by	name NOT NULL DEFAULT schedphi._login(),
	PRIMARY KEY (tenant, id)
);
CREATE INDEX data_use_agreement_recipient ON schedphi.data_use_agreement (recipient);

-- Shifts in weeks, per agreement and patient: drawn the first time the
-- recipient reads, never derived from anything about the patient.
CREATE TABLE schedphi.lds_shift (
	tenant		uuid NOT NULL,
	agreement	uuid NOT NULL,
	patient		uuid NOT NULL,
	weeks		int NOT NULL CHECK (weeks BETWEEN -52 AND 52),
	PRIMARY KEY (tenant, agreement, patient),
	FOREIGN KEY (tenant, agreement) REFERENCES schedphi.data_use_agreement (tenant, id) ON DELETE CASCADE
);

-- pg_dump writes the token epochs, the agreements and their shifts, and the
-- restricted zones a superuser added.  The derived rows are not dumped: they are derived again from the
-- restored data by schedphi.rebuild_analytics() (docs/keys.md, backups),
-- with new tokens.
DO $config$
BEGIN
	PERFORM pg_catalog.pg_extension_config_dump('schedphi.analytics_epoch', '');
	PERFORM pg_catalog.pg_extension_config_dump('schedphi.data_use_agreement', '');
	PERFORM pg_catalog.pg_extension_config_dump('schedphi.lds_shift', '');
	PERFORM pg_catalog.pg_extension_config_dump('schedphi.zip3_restricted', 'WHERE NOT installed');
END
$config$;

-- What an appointment's row needs of its actors and tenant: the first
-- location, the first practitioner, the kinds booked, and the visit's date
-- where it happens (src/analytics.c; cached per backend, so that a booking
-- pays for no look-up).  The tables are named (on a Citus node, shards).
CREATE FUNCTION schedphi._deid_facts(actor_rel regclass, location_rel regclass, tenant_rel regclass, tenant uuid,
									 actors uuid[], starts timestamptz,
									 OUT location uuid, OUT practitioner uuid, OUT kinds text[], OUT visit date)
AS 'MODULE_PATHNAME', 'schedphi_deid_facts' LANGUAGE C STABLE STRICT;

-- Facts derived from a sealed field (src/analytics.c): each opens the
-- value, keeps one fact, wipes the plaintext; NULL when it does not open.
-- Internal: not executable by PUBLIC (90_privileges.sql).
CREATE FUNCTION schedphi._age_at(birth_date schedphi.sealed, tenant uuid, patient uuid, visit date)
RETURNS smallint
AS 'MODULE_PATHNAME', 'schedphi_age_at' LANGUAGE C STABLE STRICT;
CREATE FUNCTION schedphi._zip5(zip schedphi.sealed, tenant uuid, patient uuid)
RETURNS text
AS 'MODULE_PATHNAME', 'schedphi_zip5' LANGUAGE C STABLE STRICT;
CREATE FUNCTION schedphi._opens_equal(a schedphi.sealed, b schedphi.sealed, tenant uuid, col text, patient uuid)
RETURNS boolean
AS 'MODULE_PATHNAME', 'schedphi_opens_equal' LANGUAGE C STABLE;
CREATE FUNCTION schedphi._analytics_note(view text, tenants uuid[], agreement uuid)
RETURNS uuid[]
AS 'MODULE_PATHNAME', 'schedphi_analytics_note' LANGUAGE C VOLATILE PARALLEL RESTRICTED;

-- The derivations, one statement each, as templates over the tables they
-- read and write: %1$s patient, %2$s patient_deid, %3$s appointment_deid,
-- %4$s actor, %5$s location, %6$s tenant, %7$s deid_class; new_rows and
-- old_rows are the trigger's transition tables.  On a single node the triggers run them as
-- written below with the tables' own names (kept plans); on a Citus node a
-- trigger fires on a shard, and runs them on the shards of the same tenant
-- (co-located, on the same node), since a query of a distributed table
-- cannot be run from within a query on a shard.
--   patient_inserted      a patient's token (new) and ZIP
--   patient_updated       when the ZIP or the birth date holds another
--                         value (a re-encryption changes the bytes only),
--                         the facts of the patient and of its visits follow
--   appointment_inserted  an appointment's row, with a new token
--   appointment_updated   brought up to date (it keeps its token)
--   appointment_deleted   its row goes with it
--   patient_deleted       and a patient's
--   class_inserted, class_updated, class_deleted
--                         (on appointment_deid) a patient's k-anonymity
--                         classes follow its rows: a new pair is added, a
--                         pair whose last visit has left goes
-- A visit's date is taken where it happens: in its location's time zone,
-- or the tenant's.
CREATE FUNCTION schedphi._deid_sql(p_which text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT CASE p_which
WHEN 'patient_inserted' THEN $q$
	INSERT INTO %2$s (tenant, patient, zip5)
	SELECT n.tenant, n.id, schedphi._zip5(n.zip, n.tenant, n.id) FROM new_rows n
$q$
WHEN 'patient_updated' THEN $q$
	WITH c AS MATERIALIZED (
		SELECT x.*, CASE WHEN x.zip_changed THEN schedphi._zip5(x.zip, x.tenant, x.id) END AS zip5
		FROM (SELECT n.tenant, n.id, n.zip, n.birth_date,
					 NOT coalesce(schedphi._opens_equal(o.zip, n.zip, n.tenant, 'zip', n.id), false) AS zip_changed,
					 NOT coalesce(schedphi._opens_equal(o.birth_date, n.birth_date, n.tenant, 'birth_date', n.id),
								  false) AS birth_changed
			  FROM new_rows n JOIN old_rows o ON o.tenant = n.tenant AND o.id = n.id
			  WHERE schedphi._sealed_digest(o.birth_date) IS DISTINCT FROM schedphi._sealed_digest(n.birth_date)
				 OR schedphi._sealed_digest(o.zip) IS DISTINCT FROM schedphi._sealed_digest(n.zip)) x
		WHERE x.zip_changed OR x.birth_changed),
	p AS (
		UPDATE %2$s d SET zip5 = c.zip5
		FROM c WHERE c.zip_changed AND d.tenant = c.tenant AND d.patient = c.id)
	UPDATE %3$s d
	SET zip5 = CASE WHEN c.zip_changed THEN c.zip5 ELSE d.zip5 END,
		age = CASE WHEN c.birth_changed
				   THEN schedphi._age_at(c.birth_date, c.tenant, c.id, (d.starts AT TIME ZONE coalesce(
							(SELECT l.timezone FROM %5$s l WHERE l.tenant = d.tenant AND l.id = d.location),
							(SELECT t.timezone FROM %6$s t WHERE t.tenant = d.tenant)))::date)
				   ELSE d.age END
	FROM c WHERE d.tenant = c.tenant AND d.patient = c.id
$q$
WHEN 'appointment_inserted' THEN $q$
	INSERT INTO %3$s AS d (tenant, appointment, patient, patient_token, visit_year, age, zip5,
		status, kind, starts, ends, local_date, booked_at, location, practitioner, actor_kinds)
	SELECT n.tenant, n.id, n.patient, pd.token, extract(year FROM f.visit)::int,
		   schedphi._age_at(p.birth_date, p.tenant, p.id, f.visit), pd.zip5,
		   n.status, n.kind, lower(n.during), upper(n.during), (lower(n.during) AT TIME ZONE t.timezone)::date,
		   n.created_at, f.location, f.practitioner, f.kinds
	FROM new_rows n
	JOIN %1$s p ON p.tenant = n.tenant AND p.id = n.patient
	JOIN %2$s pd ON pd.tenant = n.tenant AND pd.patient = n.patient
	JOIN %6$s t ON t.tenant = n.tenant
	CROSS JOIN LATERAL schedphi._deid_facts(%4$L::regclass, %5$L::regclass, %6$L::regclass, n.tenant, n.actors, lower(n.during)) f
$q$
WHEN 'appointment_updated' THEN $q$
	WITH v AS MATERIALIZED (
		SELECT n.tenant, n.id, n.patient, pd.token, extract(year FROM f.visit)::int AS visit_year,
			   schedphi._age_at(p.birth_date, p.tenant, p.id, f.visit) AS age, pd.zip5, n.status, n.kind,
			   lower(n.during) AS starts, upper(n.during) AS ends,
			   (lower(n.during) AT TIME ZONE t.timezone)::date AS local_date, f.location, f.practitioner, f.kinds
		FROM new_rows n
		JOIN %1$s p ON p.tenant = n.tenant AND p.id = n.patient
		JOIN %2$s pd ON pd.tenant = n.tenant AND pd.patient = n.patient
		JOIN %6$s t ON t.tenant = n.tenant
		CROSS JOIN LATERAL schedphi._deid_facts(%4$L::regclass, %5$L::regclass, %6$L::regclass, n.tenant, n.actors, lower(n.during)) f)
	-- each row found by its key alone (joined to the tenant's row as well,
	-- a plan could look the appointment up by the tenant only)
	UPDATE %3$s d
	SET patient = v.patient, patient_token = v.token, visit_year = v.visit_year, age = v.age, zip5 = v.zip5,
		status = v.status, kind = v.kind, starts = v.starts, ends = v.ends, local_date = v.local_date,
		location = v.location, practitioner = v.practitioner, actor_kinds = v.kinds
	FROM v
	WHERE d.tenant = v.tenant AND d.appointment = v.id
$q$
WHEN 'patient_deleted' THEN $q$
	DELETE FROM %2$s d USING old_rows o WHERE d.tenant = o.tenant AND d.patient = o.id
$q$
WHEN 'appointment_deleted' THEN $q$
	DELETE FROM %3$s d USING old_rows o WHERE d.tenant = o.tenant AND d.appointment = o.id
$q$
WHEN 'class_inserted' THEN $q$
	INSERT INTO %7$s (tenant, visit_year, age, zip3, patient)
	SELECT x.tenant, x.visit_year, x.age, x.zip3, x.patient
	FROM (SELECT DISTINCT n.tenant, n.visit_year, coalesce(n.age, -1::smallint) AS age, n.zip3, n.patient
		  FROM new_rows n) x
	WHERE NOT EXISTS (SELECT 1 FROM %7$s c WHERE c.tenant = x.tenant AND c.visit_year = x.visit_year
						AND c.age = x.age AND c.zip3 = x.zip3 AND c.patient = x.patient)
$q$
WHEN 'class_updated' THEN $q$
	WITH moved AS MATERIALIZED (
		SELECT o.tenant, o.visit_year AS o_year, coalesce(o.age, -1::smallint) AS o_age, o.zip3 AS o_zip3,
			   o.patient AS o_patient, n.visit_year AS n_year, coalesce(n.age, -1::smallint) AS n_age,
			   n.zip3 AS n_zip3, n.patient AS n_patient
		FROM old_rows o JOIN new_rows n ON n.tenant = o.tenant AND n.appointment = o.appointment
		WHERE (o.visit_year, o.age, o.zip3, o.patient) IS DISTINCT FROM (n.visit_year, n.age, n.zip3, n.patient)),
	gone AS (
		DELETE FROM %7$s c
		USING (SELECT DISTINCT m.tenant, m.o_year, m.o_age, m.o_zip3, m.o_patient FROM moved m) x
		WHERE c.tenant = x.tenant AND c.visit_year = x.o_year AND c.age = x.o_age AND c.zip3 = x.o_zip3
		  AND c.patient = x.o_patient
		  AND NOT EXISTS (SELECT 1 FROM %3$s d WHERE d.tenant = x.tenant AND d.patient = x.o_patient
							AND d.visit_year = x.o_year AND coalesce(d.age, -1::smallint) = x.o_age
							AND d.zip3 = x.o_zip3))
	INSERT INTO %7$s (tenant, visit_year, age, zip3, patient)
	SELECT x.* FROM (SELECT DISTINCT m.tenant, m.n_year, m.n_age, m.n_zip3, m.n_patient FROM moved m) x
	WHERE NOT EXISTS (SELECT 1 FROM %7$s c WHERE c.tenant = x.tenant AND c.visit_year = x.n_year
						AND c.age = x.n_age AND c.zip3 = x.n_zip3 AND c.patient = x.n_patient)
$q$
WHEN 'class_deleted' THEN $q$
	DELETE FROM %7$s c
	USING (SELECT DISTINCT o.tenant, o.visit_year, coalesce(o.age, -1::smallint) AS age, o.zip3, o.patient
		   FROM old_rows o) x
	WHERE c.tenant = x.tenant AND c.visit_year = x.visit_year AND c.age = x.age AND c.zip3 = x.zip3
	  AND c.patient = x.patient
	  AND NOT EXISTS (SELECT 1 FROM %3$s d WHERE d.tenant = x.tenant AND d.patient = x.patient
						AND d.visit_year = x.visit_year AND coalesce(d.age, -1::smallint) = x.age
						AND d.zip3 = x.zip3)
$q$
END
$$;

-- The tables the derivations use (or p_tables), for a trigger fired on
-- p_relname: the tables themselves, or on a Citus node (a shard's name)
-- the shards of p_tenant's.
CREATE FUNCTION schedphi._deid_tables(p_relname name, p_tenant uuid, p_tables text[] DEFAULT NULL)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v text[] := coalesce(p_tables,
						 ARRAY['schedphi.patient', 'schedphi.patient_deid', 'schedphi.appointment_deid',
							   'schedphi.actor', 'schedphi.location', 'schedphi.tenant', 'schedphi.deid_class']);
	r text[];
BEGIN
	IF p_relname IN ('patient', 'appointment', 'appointment_deid') THEN
		RETURN v;
	END IF;
	EXECUTE 'SELECT array_agg(shard_name(u.t::regclass, get_shard_id_for_distribution_column(u.t::regclass, $1))::text
							  ORDER BY u.o)
			 FROM unnest($2::text[]) WITH ORDINALITY u(t, o)'
		INTO r USING p_tenant, v;
	RETURN r;
END
$$;

-- The trigger functions, made from the templates above: the
-- statement as written (a kept plan) on the tables themselves, the same
-- statement on the shards when the trigger fires on one.
DO $make$
DECLARE
	f record;
BEGIN
	FOR f IN SELECT * FROM (VALUES ('_deid_patient_inserted', 'patient_inserted', 'patient', 'new_rows'),
								   ('_deid_patient_updated', 'patient_updated', 'patient', 'new_rows'),
								   ('_deid_appointment_inserted', 'appointment_inserted', 'appointment', 'new_rows'),
								   ('_deid_appointment_updated', 'appointment_updated', 'appointment', 'new_rows'),
								   ('_deid_appointment_deleted', 'appointment_deleted', 'appointment', 'old_rows'),
								   ('_deid_patient_deleted', 'patient_deleted', 'patient', 'old_rows'),
								   ('_deid_class_inserted', 'class_inserted', 'appointment_deid', 'new_rows'),
								   ('_deid_class_updated', 'class_updated', 'appointment_deid', 'new_rows'),
								   ('_deid_class_deleted', 'class_deleted', 'appointment_deid', 'old_rows'))
							x(fn, which, rel, tr)
	LOOP
		EXECUTE pg_catalog.format($f$
			CREATE FUNCTION schedphi.%1$I() RETURNS trigger
			LANGUAGE plpgsql
			SECURITY DEFINER
			SET search_path = pg_catalog, pg_temp
			AS $body$
			BEGIN
				IF TG_TABLE_NAME = %2$L THEN
					%3$s;
				ELSIF EXISTS (SELECT 1 FROM %5$s) THEN
					EXECUTE pg_catalog.format(schedphi._deid_sql(%4$L),
						VARIADIC schedphi._deid_tables(TG_TABLE_NAME, (SELECT n.tenant FROM %5$s n LIMIT 1)));
				END IF;
				RETURN NULL;
			END
			$body$
			$f$, f.fn, f.rel,
			pg_catalog.format(schedphi._deid_sql(f.which), 'schedphi.patient', 'schedphi.patient_deid',
							  'schedphi.appointment_deid', 'schedphi.actor', 'schedphi.location', 'schedphi.tenant',
							  'schedphi.deid_class'),
			f.which, f.tr);
	END LOOP;
END
$make$;

CREATE TRIGGER deid_insert AFTER INSERT ON schedphi.patient REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._deid_patient_inserted();
CREATE TRIGGER deid_update AFTER UPDATE ON schedphi.patient REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._deid_patient_updated();
CREATE TRIGGER deid_delete AFTER DELETE ON schedphi.patient REFERENCING OLD TABLE AS old_rows
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._deid_patient_deleted();
CREATE TRIGGER deid_insert AFTER INSERT ON schedphi.appointment REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._deid_appointment_inserted();
CREATE TRIGGER deid_update AFTER UPDATE ON schedphi.appointment REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._deid_appointment_updated();
CREATE TRIGGER deid_delete AFTER DELETE ON schedphi.appointment REFERENCING OLD TABLE AS old_rows
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._deid_appointment_deleted();
CREATE TRIGGER deid_class_insert AFTER INSERT ON schedphi.appointment_deid REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._deid_class_inserted();
CREATE TRIGGER deid_class_update AFTER UPDATE ON schedphi.appointment_deid
	REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._deid_class_updated();
CREATE TRIGGER deid_class_delete AFTER DELETE ON schedphi.appointment_deid REFERENCING OLD TABLE AS old_rows
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._deid_class_deleted();
ALTER TABLE schedphi.appointment_deid ENABLE ALWAYS TRIGGER deid_class_insert;
ALTER TABLE schedphi.appointment_deid ENABLE ALWAYS TRIGGER deid_class_update;
ALTER TABLE schedphi.appointment_deid ENABLE ALWAYS TRIGGER deid_class_delete;
ALTER TABLE schedphi.patient ENABLE ALWAYS TRIGGER deid_insert;
ALTER TABLE schedphi.patient ENABLE ALWAYS TRIGGER deid_update;
ALTER TABLE schedphi.patient ENABLE ALWAYS TRIGGER deid_delete;
ALTER TABLE schedphi.appointment ENABLE ALWAYS TRIGGER deid_insert;
ALTER TABLE schedphi.appointment ENABLE ALWAYS TRIGGER deid_update;
ALTER TABLE schedphi.appointment ENABLE ALWAYS TRIGGER deid_delete;

-- The tenants whose analytics the caller may read (the analyst role; an
-- assumed token's tenant when its role is analyst).  No such tenant:
-- 42501, recorded, naming p_view.
CREATE FUNCTION schedphi._analytics_tenants(p_view text)
RETURNS uuid[]
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record := schedphi._context();
	v uuid[];
BEGIN
	IF p_view IS NULL OR p_view NOT IN ('deid_appointments', 'lds_appointments', 'k_anonymity') THEN
		RAISE EXCEPTION 'view must be deid_appointments, lds_appointments or k_anonymity' USING ERRCODE = '22023';
	END IF;
	-- (first, in a statement of its own: under Citus a function that reads
	-- tables must not run inside a query on the shards)
	v := schedphi._role_tenants('analyst');
	v := ARRAY(SELECT t.tenant FROM schedphi.tenant t WHERE t.tenant = ANY (v) AND t.shredded_at IS NULL
			   ORDER BY t.tenant);
	IF cardinality(v) = 0 THEN
		PERFORM schedphi._deny(CASE WHEN c.via = 'token' THEN c.tenant END,
			'permission denied: de-identified analytics are for the analyst role',
			pg_catalog.format('%s needs the analyst role in a tenant.', p_view));
	END IF;
	RETURN v;
END
$$;

-- The same, noted for the statement's export record.  Both run in the
-- process that leads a statement, never in a parallel worker (PARALLEL
-- RESTRICTED): they read who is asking, and the note is that process's.
-- A query that calls them may still scan in parallel (deid_appointments).
CREATE FUNCTION schedphi._analytics_scope(p_view text)
RETURNS uuid[]
LANGUAGE sql STABLE PARALLEL RESTRICTED
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT schedphi._analytics_note(p_view, schedphi._analytics_tenants(p_view), NULL)
$$;

-- Lead time from booking to visit, in bands (docs/analytics.md says why):
-- exact day counts between two of a patient's events are date elements.
CREATE FUNCTION schedphi._lead_band(p_booked timestamptz, p_starts timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	-- one expression, so that the planner inlines it (a query of a million
	-- rows pays no function call per row)
	SELECT CASE WHEN pg_catalog.date_part('epoch', p_starts - p_booked) < 0 THEN NULL
				WHEN pg_catalog.date_part('epoch', p_starts - p_booked) < 1 * 86400 THEN '0'
				WHEN pg_catalog.date_part('epoch', p_starts - p_booked) < 7 * 86400 THEN '1-6'
				WHEN pg_catalog.date_part('epoch', p_starts - p_booked) < 14 * 86400 THEN '7-13'
				WHEN pg_catalog.date_part('epoch', p_starts - p_booked) < 30 * 86400 THEN '14-29'
				WHEN pg_catalog.date_part('epoch', p_starts - p_booked) < 90 * 86400 THEN '30-89'
				ELSE '90+' END
$$;

-- k-anonymity over the quasi-identifiers (age at visit, ZIP3, visit year),
-- per class of the tenants where the caller is an analyst: a class with
-- fewer than schedphi.analytics_min_k patients (default 11) is generalised
-- (ZIP3 to 000, the age to its 10-year band), and a generalised class still
-- that small is suppressed (shown = false).  The classes are counted over
-- everything the caller may read, before any condition of the caller's
-- query, so that a query's own WHERE cannot single a small class out.
-- One row per class as kept in deid_class (age -1 and zip3 '' unknown),
-- with what its rows show and the patients of the class they are shown in.  Keys are numbers while counting: a ZIP3 (-1 unknown, 0
-- for 000), a band (its first year; 90 for 90 and over).  Internal: the
-- analysts' views read it (as their owner), never an analyst.
CREATE VIEW schedphi._deid_classes WITH (security_barrier) AS
WITH s AS MATERIALIZED (
	SELECT schedphi._analytics_tenants('deid_appointments') AS tenants,
		   pg_catalog.current_setting('schedphi.analytics_min_k')::int AS k),
r AS MATERIALIZED (
	SELECT c.tenant, c.visit_year, c.age, c.zip3, c.patient,
		   CASE WHEN c.zip3 = '' THEN -1
				WHEN c.zip3 IN (SELECT z.zip3 FROM schedphi.zip3_restricted z) THEN 0
				ELSE c.zip3::int END AS kz,
		   CASE WHEN c.age < 0 THEN -1 WHEN c.age >= 90 THEN 90 ELSE c.age / 10 * 10 END AS kb
	FROM schedphi.deid_class c
	WHERE c.tenant = ANY ((SELECT s.tenants FROM s)::uuid[])),
exact AS MATERIALIZED (
	SELECT x.tenant, x.visit_year, x.age, x.kz, count(*) AS n, count(*) >= (SELECT s.k FROM s) AS ok
	FROM (SELECT DISTINCT r.tenant, r.visit_year, r.age, r.kz, r.patient FROM r) x
	GROUP BY x.tenant, x.visit_year, x.age, x.kz),
gen AS MATERIALIZED (
	SELECT x.tenant, x.visit_year, x.kb, x.zu, count(*) AS n
	FROM (SELECT DISTINCT r.tenant, r.visit_year, r.kb, r.kz = -1 AS zu, r.patient
		  FROM r JOIN exact e ON e.tenant = r.tenant AND e.visit_year = r.visit_year AND e.age = r.age AND e.kz = r.kz
		  WHERE NOT e.ok) x
	GROUP BY x.tenant, x.visit_year, x.kb, x.zu)
SELECT r.tenant, r.visit_year, r.age, r.zip3,
	   CASE WHEN e.ok THEN (CASE r.age WHEN -1 THEN NULL WHEN 90 THEN '90+' ELSE r.age::text END)
			ELSE (CASE r.kb WHEN -1 THEN NULL WHEN 90 THEN '90+' ELSE r.kb::text || '-' || (r.kb + 9)::text END)
	   END AS age_shown,
	   CASE WHEN e.ok THEN (CASE r.kz WHEN -1 THEN NULL WHEN 0 THEN '000' ELSE r.zip3 END)
			ELSE (CASE r.kz WHEN -1 THEN NULL ELSE '000' END)
	   END AS zip3_shown,
	   NOT e.ok AS generalised,
	   e.ok OR coalesce(g.n >= (SELECT s.k FROM s), false) AS shown,
	   CASE WHEN e.ok THEN e.n ELSE g.n END AS class_patients
FROM r
JOIN exact e ON e.tenant = r.tenant AND e.visit_year = r.visit_year AND e.age = r.age AND e.kz = r.kz
LEFT JOIN gen g ON NOT e.ok AND g.tenant = r.tenant AND g.visit_year = r.visit_year AND g.kb = r.kb AND g.zu = (r.kz = -1)
GROUP BY r.tenant, r.visit_year, r.age, r.zip3, r.kz, r.kb, e.ok, e.n, g.n;

-- The classes above that are not shown as they are, as one value: what
-- the analysts' view looks rows up in (src/analytics.c).  Read by the
-- view's owner only: an analyst never learns which small classes exist.
CREATE TYPE schedphi._deid_class_key AS (tenant uuid, visit_year int, age smallint, zip3 text, shown boolean);
CREATE VIEW schedphi._deid_generalised AS
SELECT coalesce(array_agg(ROW(c.tenant, c.visit_year, c.age, c.zip3, c.shown)::schedphi._deid_class_key),
				'{}'::schedphi._deid_class_key[]) AS classes
FROM schedphi._deid_classes c
WHERE c.generalised;

-- A row's class in those: 0 shown as it is, 1 generalised, 2 suppressed.
-- Pure and parallel safe, so that parallel workers can scan the rows.
CREATE FUNCTION schedphi._deid_class_state(classes schedphi._deid_class_key[], tenant uuid, visit_year int,
										   age smallint, zip3 text)
RETURNS int
AS 'MODULE_PATHNAME', 'schedphi_deid_class_state' LANGUAGE C IMMUTABLE PARALLEL SAFE;

-- A ZIP3 as Safe Harbor shows it (NULL unknown, 000 restricted), given
-- the restricted zones as one value; parallel safe like the above.
CREATE FUNCTION schedphi._zip3_shown(restricted text[], zip3 text)
RETURNS text
AS 'MODULE_PATHNAME', 'schedphi_zip3_shown' LANGUAGE C IMMUTABLE PARALLEL SAFE;

-- HIPAA Safe Harbor rows (164.514(b)(2)), one per appointment, with the
-- k-anonymity above.  The caller's scope is decided first, once per
-- statement, before any row is read (42501, recorded, without the role),
-- and noted for the statement's export record.  A row shown is in one of
-- the caller's tenants and not in a suppressed class.  A row of a class
-- shown as it is needs nothing from the classes but a look-up: its age
-- and ZIP3 are cut from its own columns.  The generalised classes (few,
-- and small by their nature) are computed once per statement in the
-- leading process and looked up by each scanning process in a hash.
--
-- On a single node the view is owned by schedphi_deid_reader, which reads
-- appointment_deid through its row-level security, whose one policy for
-- that role holds the two conditions on a row.  They are then the table's
-- security conditions, which PostgreSQL applies before any condition of
-- the caller's query that could leak a value; so the view need not be a
-- security barrier, and an analyst's query over it is planned as one
-- query over the table: scanned in parallel, aggregated in the workers.
-- Under Citus (distribute(), 95_citus.sql), whose distributed tables
-- take no policy with a subquery, the conditions go into the view, owned
-- by the extension's owner, which only a function run on the coordinator
-- reads (_deid_rows).  Internal: the public view below reads it.
CREATE FUNCTION schedphi._deid_view(p_citus boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_rows CONSTANT text :=
		$q$tenant = ANY ((SELECT schedphi._analytics_tenants('deid_appointments'))::uuid[])
		   AND schedphi._deid_class_state((SELECT g.classes FROM schedphi._deid_generalised g),
										  tenant, visit_year, age, zip3) < 2$q$;
BEGIN
	EXECUTE pg_catalog.format($v$
		CREATE OR REPLACE VIEW schedphi._deid_appointments %s AS
		SELECT d.tenant, d.patient_token::text AS patient_token, d.token::text AS appointment_token, d.visit_year,
			   CASE WHEN d.age IS NULL THEN NULL
					WHEN d.age >= 90 THEN '90+'
					WHEN schedphi._deid_class_state((SELECT g.classes FROM schedphi._deid_generalised g),
													d.tenant, d.visit_year, d.age, d.zip3) = 1
					THEN (d.age / 10 * 10)::text || '-' || (d.age / 10 * 10 + 9)::text
					ELSE d.age::text END AS age_at_visit,
			   CASE WHEN d.zip3 = '' THEN NULL
					WHEN schedphi._deid_class_state((SELECT g.classes FROM schedphi._deid_generalised g),
													d.tenant, d.visit_year, d.age, d.zip3) = 1 THEN '000'
					ELSE schedphi._zip3_shown((SELECT array_agg(z.zip3) FROM schedphi.zip3_restricted z), d.zip3)
			   END AS zip3,
			   d.status, d.kind,
			   (extract(epoch FROM d.ends - d.starts) / 60)::int AS duration_minutes,
			   schedphi._lead_band(d.booked_at, d.starts) AS lead_days_band,
			   d.location, d.practitioner, d.actor_kinds
		FROM schedphi.appointment_deid d
		-- (evaluated once, before any row is read: a test of no column)
		WHERE (SELECT cardinality(schedphi._analytics_scope('deid_appointments'))) > 0 %s$v$,
		CASE WHEN p_citus THEN 'WITH (security_barrier)' ELSE '' END,
		CASE WHEN p_citus THEN 'AND ' || v_rows ELSE '' END);
	IF p_citus THEN
		DROP POLICY IF EXISTS deid_reader ON schedphi.appointment_deid;
		EXECUTE pg_catalog.format('ALTER VIEW schedphi._deid_appointments OWNER TO %I',
								  (SELECT c.relowner::regrole::text FROM pg_catalog.pg_class c
								   WHERE c.oid = 'schedphi.appointment_deid'::regclass));
	ELSE
		ALTER VIEW schedphi._deid_appointments OWNER TO schedphi_deid_reader;
		EXECUTE 'CREATE POLICY deid_reader ON schedphi.appointment_deid FOR SELECT TO schedphi_deid_reader USING ('
				|| v_rows || ')';
	END IF;
END
$$;
GRANT USAGE ON SCHEMA schedphi TO schedphi_deid_reader;
GRANT SELECT ON schedphi.appointment_deid, schedphi._deid_generalised, schedphi.zip3_restricted
	TO schedphi_deid_reader;
-- (row-level security on appointment_deid is enabled with every table's,
-- in 90_privileges.sql)
SELECT schedphi._deid_view(false);

CREATE VIEW schedphi.deid_appointments AS
	SELECT * FROM schedphi._deid_appointments;

-- The same rows through a function, run as the extension's owner: what
-- deid_appointments reads under Citus (distribute(), 95_citus.sql).
CREATE FUNCTION schedphi._deid_rows()
RETURNS SETOF schedphi._deid_appointments
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN QUERY SELECT * FROM schedphi._deid_appointments;
END
$$;

-- What the k-anonymity of the tenant's de-identified rows does now: the
-- smallest class shown (in patients), and how many rows were generalised
-- and suppressed.  For the tenant's analysts.
CREATE FUNCTION schedphi.k_anonymity(tenant uuid)
RETURNS TABLE (quasi_identifiers text[], k bigint, rows_generalised bigint, rows_suppressed bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(tenant), ARRAY['analyst']);
	PERFORM schedphi._analytics_scope('k_anonymity');
	-- (the rows of the generalised classes, few, counted from the tenant's rows)
	RETURN QUERY
	SELECT ARRAY['age_at_visit', 'zip3', 'visit_year'],
		   (SELECT min(c.class_patients) FROM schedphi._deid_classes c WHERE c.tenant = tenant AND c.shown),
		   count(*) FILTER (WHERE g.shown), count(*) FILTER (WHERE NOT g.shown)
	FROM schedphi.appointment_deid d
	JOIN schedphi._deid_classes g
	  ON g.generalised AND g.tenant = d.tenant AND g.visit_year = d.visit_year
	 AND g.age = coalesce(d.age, -1::smallint) AND g.zip3 = d.zip3
	WHERE d.tenant = tenant;
END
$$;

-- Every derived row made again from the patients and appointments as they
-- are (after a restore, which does not carry them), with new tokens.
-- Superuser only.  Returns the appointments' rows made.
CREATE FUNCTION schedphi.rebuild_analytics()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_names text[] := ARRAY['schedphi.patient', 'schedphi.patient_deid', 'schedphi.appointment_deid',
							'schedphi.actor', 'schedphi.location', 'schedphi.tenant', 'schedphi.deid_class'];
	n bigint;
BEGIN
	IF NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user) THEN
		RAISE EXCEPTION 'only a superuser can rebuild the analytics' USING ERRCODE = '42501';
	END IF;
	DELETE FROM schedphi.appointment_deid;
	DELETE FROM schedphi.deid_class;
	DELETE FROM schedphi.patient_deid;
	EXECUTE 'WITH new_rows AS (SELECT * FROM schedphi.patient) '
		|| pg_catalog.format(schedphi._deid_sql('patient_inserted'), VARIADIC v_names);
	EXECUTE 'WITH new_rows AS (SELECT * FROM schedphi.appointment) '
		|| pg_catalog.format(schedphi._deid_sql('appointment_inserted'), VARIADIC v_names);
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;
REVOKE ALL ON FUNCTION schedphi.rebuild_analytics() FROM PUBLIC;

-- A new token epoch: every patient and appointment of the tenant gets a new
-- random token; nothing links the old ones to the new.  Returns the epoch.
CREATE FUNCTION schedphi.rotate_analytics_tokens(tenant uuid)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_epoch int;
	v_patients bigint;
	v_appointments bigint;
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(tenant), ARRAY['admin']);
	-- (the new values are made apart from the writes, in materialised
	-- queries: Citus refuses a volatile function in a distributed write)
	INSERT INTO schedphi.analytics_epoch AS e (tenant, epoch, rotated_at, rotated_by)
	VALUES (tenant, 2, now(), schedphi._login())
	ON CONFLICT ON CONSTRAINT analytics_epoch_pkey DO UPDATE
	SET epoch = e.epoch + 1, rotated_at = excluded.rotated_at, rotated_by = excluded.rotated_by
	RETURNING e.epoch INTO v_epoch;
	WITH n AS MATERIALIZED (SELECT d.patient, gen_random_uuid() AS token FROM schedphi.patient_deid d
							WHERE d.tenant = tenant)
	UPDATE schedphi.patient_deid d SET token = n.token FROM n WHERE d.tenant = tenant AND d.patient = n.patient;
	GET DIAGNOSTICS v_patients = ROW_COUNT;
	WITH n AS MATERIALIZED (SELECT d.appointment, gen_random_uuid() AS token FROM schedphi.appointment_deid d
							WHERE d.tenant = tenant)
	UPDATE schedphi.appointment_deid d SET token = n.token, patient_token = p.token
	FROM n, schedphi.patient_deid p
	WHERE d.tenant = tenant AND d.appointment = n.appointment AND p.tenant = tenant AND p.patient = d.patient;
	GET DIAGNOSTICS v_appointments = ROW_COUNT;
	PERFORM schedphi._audit_change('rotate_tokens', tenant, 'analytics', NULL, NULL,
		jsonb_build_object('epoch', v_epoch, 'patients', v_patients, 'appointments', v_appointments));
	RETURN v_epoch;
END
$$;

-- ------------------------------------------------ aggregates for analysts
-- no_show_rates, lead_times and utilisation: counts by group (a
-- practitioner, an actor or a location) and period (a week or a day, in the
-- tenant's time zone), computed from the derived rows and the bookings'
-- actor rows, never from a decrypted value.  Small cells are suppressed
-- (docs/analytics.md):
--   primary        a cell whose count of appointments, or of no-shows, or
--                  of the appointments that were not no-shows, is from 1 to
--                  10 (the CMS cell-size rule) shows nothing (NULL) and
--                  suppressed = true;
--   complementary  a suppressed cell could be worked out from a total the
--                  analyst can make (a group's year from deid_appointments,
--                  a period over all groups) minus the other cells: so
--                  where a group's year, or a period, holds exactly one
--                  suppressed cell, the smallest other cell with data is
--                  suppressed too, until none is alone.

-- The tenant of an analyst's aggregate, authorised, its statement noted for
-- the export record; and the checks of the period and the grouping.
CREATE FUNCTION schedphi._analytics_args(p_tenant uuid, p_fn text, p_during tstzrange, p_by text, p_bys text[])
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_tz text;
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(p_tenant), ARRAY['analyst']);
	IF p_during IS NULL OR isempty(p_during) OR lower_inf(p_during) OR upper_inf(p_during) THEN
		RAISE EXCEPTION 'during must be a bounded, non-empty range' USING ERRCODE = '22023';
	END IF;
	IF upper(p_during) > lower(p_during) + interval '6 years' THEN
		RAISE EXCEPTION 'during may span at most 6 years' USING ERRCODE = '22023';
	END IF;
	IF p_by IS NULL OR NOT p_by = ANY (p_bys) THEN
		RAISE EXCEPTION 'by must be one of: %', array_to_string(p_bys, ', ') USING ERRCODE = '22023';
	END IF;
	SELECT t.timezone INTO v_tz FROM schedphi.tenant t WHERE t.tenant = p_tenant;
	PERFORM schedphi._analytics_note(p_fn, ARRAY[p_tenant], NULL);
	RETURN v_tz;
END
$$;

-- Complementary suppression over the caller's cells in
-- pg_temp.schedphi_cells (grp, period, yr, n, sup), in place.  (Each
-- aggregate makes that table and drops it before it returns; an error
-- rolls its creation back with the rest.)
CREATE FUNCTION schedphi._suppress_complements()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	changed int;
BEGIN
	LOOP
		WITH lone AS (
			SELECT c.grp, c.yr, NULL::date AS period FROM pg_temp.schedphi_cells c
			GROUP BY c.grp, c.yr HAVING count(*) FILTER (WHERE c.sup) = 1 AND count(*) FILTER (WHERE NOT c.sup) > 0
			UNION ALL
			SELECT NULL, NULL, c.period FROM pg_temp.schedphi_cells c
			GROUP BY c.period HAVING count(*) FILTER (WHERE c.sup) = 1 AND count(*) FILTER (WHERE NOT c.sup) > 0),
		pick AS (
			SELECT DISTINCT ON (l.grp, l.yr, l.period) c.grp, c.period
			FROM lone l JOIN pg_temp.schedphi_cells c
			  ON NOT c.sup AND (CASE WHEN l.period IS NULL THEN c.grp IS NOT DISTINCT FROM l.grp AND c.yr = l.yr
									 ELSE c.period = l.period END)
			ORDER BY l.grp, l.yr, l.period, c.n, c.grp, c.period)
		UPDATE pg_temp.schedphi_cells c SET sup = true
		FROM pick p WHERE c.grp IS NOT DISTINCT FROM p.grp AND c.period = p.period AND NOT c.sup;
		GET DIAGNOSTICS changed = ROW_COUNT;
		EXIT WHEN changed = 0;
	END LOOP;
END
$$;

-- The appointments of an aggregate: those that were due (not cancelled,
-- entered in error, proposed, pending or on the waitlist), with their group
-- and their day in the tenant's zone: one row each (n = 1, noshows 0 or 1,
-- their minutes and the whole days from booking to visit), or with
-- p_per_day one row per group and day (their count, no-shows and minutes;
-- no lead time), which is what most aggregates need and a tenth of the
-- rows to hand over.
CREATE FUNCTION schedphi._analytics_rows(p_tenant uuid, p_during tstzrange, p_by text, p_per_day boolean)
RETURNS TABLE (grp uuid, day date, n bigint, noshows bigint, minutes bigint, lead_days int)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- (PL/pgSQL: Citus cannot plan a SQL function's parameters)
	-- (the period as two comparisons, which the planner can estimate from
	-- the column's statistics: for "range @> column" it guesses 0.5 percent, and
	-- a year of a tenant's rows would be sorted as if it were a few)
	RETURN QUERY EXECUTE pg_catalog.format(
		$q$SELECT %1$s AS grp, d.local_date, %2$s
		   FROM schedphi.appointment_deid d %3$s
		   WHERE d.tenant = $1 AND d.starts %5$s $2 AND d.starts %6$s $3
			 AND d.status IN ('booked', 'arrived', 'checked-in', 'fulfilled', 'noshow') %4$s$q$,
		CASE p_by WHEN 'actor' THEN 'x.actor' WHEN 'practitioner' THEN 'd.practitioner' ELSE 'd.location' END,
		CASE WHEN p_per_day
			 THEN $s$count(*), count(*) FILTER (WHERE d.status = 'noshow'),
					 sum(date_part('epoch', d.ends - d.starts) / 60)::bigint, NULL::int$s$
			 ELSE $s$1::bigint, (d.status = 'noshow')::int::bigint, (date_part('epoch', d.ends - d.starts) / 60)::bigint,
					 floor(date_part('epoch', d.starts - d.booked_at) / 86400)::int$s$ END,
		CASE WHEN p_by = 'actor'
			 THEN 'JOIN schedphi.appointment_actor x ON x.tenant = $1 AND x.appointment = d.appointment AND x.active'
			 ELSE '' END,
		CASE WHEN p_per_day THEN 'GROUP BY 1, 2' ELSE '' END,
		CASE WHEN lower_inc(p_during) THEN '>=' ELSE '>' END,
		CASE WHEN upper_inc(p_during) THEN '<=' ELSE '<' END)
	USING p_tenant, lower(p_during), upper(p_during);
END
$$;

CREATE FUNCTION schedphi.no_show_rates(tenant uuid, during tstzrange, by text DEFAULT 'practitioner')
RETURNS TABLE (grp uuid, week date, appointments bigint, no_shows bigint, rate numeric, suppressed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
	PERFORM schedphi._analytics_args($1, 'no_show_rates', $2, $3, ARRAY['practitioner', 'location', 'actor']);
	CREATE TEMP TABLE schedphi_cells ON COMMIT DROP AS
	SELECT r.grp, date_trunc('week', r.day::timestamp)::date AS period, extract(year FROM r.day)::int AS yr,
		   sum(r.n)::bigint AS n, sum(r.noshows)::bigint AS m, false AS sup
	FROM schedphi._analytics_rows($1, $2, $3, true) r
	GROUP BY 1, 2, 3;
	UPDATE pg_temp.schedphi_cells c SET sup = c.n BETWEEN 1 AND 10 OR c.m BETWEEN 1 AND 10 OR c.n - c.m BETWEEN 1 AND 10;
	PERFORM schedphi._suppress_complements();
	RETURN QUERY
	SELECT c.grp, c.period, CASE WHEN NOT c.sup THEN c.n END, CASE WHEN NOT c.sup THEN c.m END,
		   CASE WHEN NOT c.sup THEN round(c.m::numeric / c.n, 4) END, c.sup
	FROM pg_temp.schedphi_cells c ORDER BY c.grp, c.period;
	DROP TABLE pg_temp.schedphi_cells;
END
$$;

CREATE FUNCTION schedphi.lead_times(tenant uuid, during tstzrange, by text DEFAULT 'location')
RETURNS TABLE (grp uuid, week date, p50_days numeric, p90_days numeric, appointments bigint, suppressed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
	PERFORM schedphi._analytics_args($1, 'lead_times', $2, $3, ARRAY['practitioner', 'location', 'actor']);
	CREATE TEMP TABLE schedphi_cells ON COMMIT DROP AS
	SELECT r.grp, date_trunc('week', r.day::timestamp)::date AS period, extract(year FROM r.day)::int AS yr,
		   count(*) AS n,
		   -- whole days, so that no exact booking time can be worked back
		   round(percentile_cont(0.5) WITHIN GROUP (ORDER BY r.lead_days)::numeric, 0) AS p50,
		   round(percentile_cont(0.9) WITHIN GROUP (ORDER BY r.lead_days)::numeric, 0) AS p90,
		   false AS sup
	FROM schedphi._analytics_rows($1, $2, $3, false) r
	GROUP BY 1, 2, 3;
	UPDATE pg_temp.schedphi_cells c SET sup = c.n BETWEEN 1 AND 10;
	PERFORM schedphi._suppress_complements();
	RETURN QUERY
	SELECT c.grp, c.period, CASE WHEN NOT c.sup THEN c.p50 END, CASE WHEN NOT c.sup THEN c.p90 END,
		   CASE WHEN NOT c.sup THEN c.n END, c.sup
	FROM pg_temp.schedphi_cells c ORDER BY c.grp, c.period;
	DROP TABLE pg_temp.schedphi_cells;
END
$$;

-- Available minutes from the actors' weekly rules (in each location's
-- zone, across DST), booked minutes from the bookings' actor rows; by day
-- in the tenant's zone.  A cell with 1 to 10 appointments is suppressed.
CREATE FUNCTION schedphi.utilisation(tenant uuid, during tstzrange, by text DEFAULT 'actor')
RETURNS TABLE (grp uuid, day date, available_minutes bigint, booked_minutes bigint, suppressed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	v_tz text := schedphi._analytics_args($1, 'utilisation', $2, $3, ARRAY['actor']);
	v_actors uuid[];
BEGIN
	IF upper($2) > lower($2) + interval '400 days' THEN
		RAISE EXCEPTION 'during may span at most 400 days here' USING ERRCODE = '22023';
	END IF;
	v_actors := ARRAY(SELECT a.id FROM schedphi.actor a WHERE a.tenant = $1);
	CREATE TEMP TABLE schedphi_cells ON COMMIT DROP AS
	WITH avail AS (
		SELECT w.actor AS grp, (w.starts AT TIME ZONE v_tz)::date AS period,
			   sum(date_part('epoch', least(w.ends, upper($2)) - greatest(w.starts, lower($2))) / 60)::bigint AS mins
		FROM schedphi._windows($1, v_actors, $2) w
		GROUP BY 1, 2),
	booked AS (
		SELECT r.grp, r.day AS period, r.n, r.minutes AS mins
		FROM schedphi._analytics_rows($1, $2, 'actor', true) r)
	SELECT coalesce(a.grp, b.grp) AS grp, coalesce(a.period, b.period) AS period,
		   extract(year FROM coalesce(a.period, b.period))::int AS yr, coalesce(b.n, 0) AS n,
		   coalesce(a.mins, 0) AS avail, coalesce(b.mins, 0) AS booked, false AS sup
	FROM avail a FULL JOIN booked b ON b.grp = a.grp AND b.period = a.period;
	UPDATE pg_temp.schedphi_cells c SET sup = c.n BETWEEN 1 AND 10;
	PERFORM schedphi._suppress_complements();
	RETURN QUERY
	SELECT c.grp, c.period, CASE WHEN NOT c.sup THEN c.avail END, CASE WHEN NOT c.sup THEN c.booked END, c.sup
	FROM pg_temp.schedphi_cells c ORDER BY c.grp, c.period;
	DROP TABLE pg_temp.schedphi_cells;
END
$$;

-- ------------------------------------------------- the Limited Data Set
-- A Limited Data Set (164.514(e)) goes only to a recipient bound by a data
-- use agreement: a login named by the tenant's admin, until the agreement
-- expires (the end of its last day, in the tenant's zone).  Its rows carry
-- the dates (shifted per patient by a whole number of weeks when the
-- agreement says so, the shift drawn at random per patient and agreement
-- and kept, so that weekday, time of day and the intervals between one
-- patient's visits survive) and the 5-digit ZIP.
CREATE FUNCTION schedphi.add_data_use_agreement(tenant uuid, recipient name, purpose text, expires date,
												date_shift boolean DEFAULT true)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_oid oid;
	v_id uuid;
	v_today date;
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(tenant), ARRAY['admin']);
	IF recipient IS NULL THEN
		RAISE EXCEPTION 'recipient must not be null' USING ERRCODE = '22023';
	END IF;
	SELECT r.oid INTO v_oid FROM pg_roles r WHERE r.rolname = recipient AND r.rolcanlogin;
	IF v_oid IS NULL THEN
		RAISE EXCEPTION 'recipient must be an existing login' USING ERRCODE = '22023';
	END IF;
	IF purpose IS NULL OR btrim(purpose) = '' THEN
		RAISE EXCEPTION 'purpose must be given' USING ERRCODE = '22023';
	END IF;
	SELECT (now() AT TIME ZONE t.timezone)::date INTO v_today FROM schedphi.tenant t WHERE t.tenant = tenant;
	IF expires IS NULL OR expires < v_today THEN
		RAISE EXCEPTION 'expires must be today or later' USING ERRCODE = '22023';
	END IF;
	IF date_shift IS NULL THEN
		RAISE EXCEPTION 'date_shift must not be null' USING ERRCODE = '22023';
	END IF;
	INSERT INTO schedphi.data_use_agreement AS d (tenant, recipient, recipient_oid, purpose, expires, date_shift)
	VALUES (tenant, recipient, v_oid, purpose, expires, date_shift)
	RETURNING d.id INTO v_id;
	PERFORM schedphi._audit_change('dua_add', tenant, 'data_use_agreement', v_id, NULL,
		jsonb_build_object('recipient', recipient, 'expires', expires, 'date_shift', date_shift));
	RETURN v_id;
END
$$;

-- The caller's current agreements (as recipient), their shifts drawn for
-- patients that have none yet, noted for the statement's export record.
-- None: 42501, recorded.
CREATE FUNCTION schedphi._lds_scope()
RETURNS TABLE (tenant uuid, agreement uuid, date_shift boolean, timezone text)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
ROWS 2
AS $$
DECLARE
	a record;
	n int := 0;
	-- taken here: under Citus the query runs on other nodes, as another user
	v_login name := session_user;
	v_oid oid := schedphi._session_user_oid();
BEGIN
	FOR a IN SELECT d.tenant, d.id, d.date_shift, t.timezone FROM schedphi.data_use_agreement d
			 JOIN schedphi.tenant t ON t.tenant = d.tenant AND t.shredded_at IS NULL
			 WHERE d.recipient = v_login AND d.recipient_oid = v_oid
			   AND d.expires >= (now() AT TIME ZONE t.timezone)::date
			 ORDER BY d.tenant, d.id
	LOOP
		IF a.date_shift THEN
			-- whole weeks, 1 to 52 either way, from the strong random source
			INSERT INTO schedphi.lds_shift (tenant, agreement, patient, weeks)
			SELECT p.tenant, a.id, p.patient,
				   (1 + (get_byte(x.r, 0) * 256 + get_byte(x.r, 1)) % 52) * CASE WHEN get_byte(x.r, 2) % 2 = 0 THEN 1 ELSE -1 END
			FROM schedphi.patient_deid p
			CROSS JOIN LATERAL (SELECT uuid_send(gen_random_uuid()) AS r) x
			WHERE p.tenant = a.tenant
			  AND NOT EXISTS (SELECT 1 FROM schedphi.lds_shift s
							  WHERE s.tenant = a.tenant AND s.agreement = a.id AND s.patient = p.patient);
		END IF;
		PERFORM schedphi._analytics_note('lds_appointments', ARRAY[a.tenant], a.id);
		tenant := a.tenant; agreement := a.id; date_shift := a.date_shift; timezone := a.timezone;
		n := n + 1;
		RETURN NEXT;
	END LOOP;
	IF n = 0 THEN
		PERFORM schedphi._deny(NULL, 'permission denied: no current data use agreement',
			'The Limited Data Set is only for the recipient of a data use agreement that has not expired.');
	END IF;
END
$$;

-- The rows of the Limited Data Set, one per appointment and agreement.
CREATE FUNCTION schedphi._lds_rows()
RETURNS TABLE (tenant uuid, agreement uuid, patient_token text, appointment_token text, visit_year int,
			   age_at_visit text, zip3 text, zip5 text, status text, kind text, starts timestamptz, ends timestamptz,
			   duration_minutes int, lead_days_band text, location uuid, practitioner uuid, actor_kinds text[])
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
ROWS 100000
AS $$
DECLARE
	v_t uuid[];
	v_a uuid[];
	v_s boolean[];
	v_z text[];
BEGIN
	-- first the scope and its new shifts, then (a later snapshot) the rows
	SELECT array_agg(x.tenant), array_agg(x.agreement), array_agg(x.date_shift), array_agg(x.timezone)
	INTO v_t, v_a, v_s, v_z FROM schedphi._lds_scope() x;
	RETURN QUERY
	WITH s AS MATERIALIZED (SELECT * FROM unnest(v_t, v_a, v_s, v_z) u(tenant, agreement, date_shift, timezone))
	SELECT d.tenant, s.agreement, d.patient_token::text, d.token::text,
		   extract(year FROM (d.starts AT TIME ZONE s.timezone) + coalesce(sh.weeks, 0) * interval '7 days')::int,
		   CASE WHEN d.age >= 90 THEN '90+' ELSE d.age::text END,
		   CASE WHEN d.zip3 = '' THEN NULL
				WHEN d.zip3 IN (SELECT z.zip3 FROM schedphi.zip3_restricted z) THEN '000'
				ELSE d.zip3 END,
		   d.zip5, d.status, d.kind,
		   ((d.starts AT TIME ZONE s.timezone) + coalesce(sh.weeks, 0) * interval '7 days') AT TIME ZONE s.timezone,
		   ((d.ends AT TIME ZONE s.timezone) + coalesce(sh.weeks, 0) * interval '7 days') AT TIME ZONE s.timezone,
		   (extract(epoch FROM d.ends - d.starts) / 60)::int, schedphi._lead_band(d.booked_at, d.starts),
		   d.location, d.practitioner, d.actor_kinds
	FROM s
	JOIN schedphi.appointment_deid d ON d.tenant = s.tenant
	LEFT JOIN schedphi.lds_shift sh ON s.date_shift AND sh.tenant = d.tenant AND sh.agreement = s.agreement
								   AND sh.patient = d.patient;
END
$$;

CREATE VIEW schedphi.lds_appointments AS
	SELECT * FROM schedphi._lds_rows();
