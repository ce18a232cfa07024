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
	status		text NOT NULL,
	kind		text NOT NULL,
	starts		timestamptz NOT NULL,
	ends		timestamptz NOT NULL,
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
AS 'MODULE_PATHNAME', 'schedphi_analytics_note' LANGUAGE C VOLATILE;

-- The derivations, one statement each, as templates over the tables they
-- read and write: %1$s patient, %2$s patient_deid, %3$s appointment_deid,
-- %4$s actor, %5$s location, %6$s tenant; new_rows and old_rows are the
-- trigger's transition tables.  On a single node the triggers run them as
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
		status, kind, starts, ends, booked_at, location, practitioner, actor_kinds)
	SELECT n.tenant, n.id, n.patient, pd.token, extract(year FROM f.visit)::int,
		   schedphi._age_at(p.birth_date, p.tenant, p.id, f.visit), pd.zip5,
		   n.status, n.kind, lower(n.during), upper(n.during), n.created_at, f.location, f.practitioner, f.kinds
	FROM new_rows n
	JOIN %1$s p ON p.tenant = n.tenant AND p.id = n.patient
	JOIN %2$s pd ON pd.tenant = n.tenant AND pd.patient = n.patient
	CROSS JOIN LATERAL schedphi._deid_facts(%4$L::regclass, %5$L::regclass, %6$L::regclass, n.tenant, n.actors, lower(n.during)) f
$q$
WHEN 'appointment_updated' THEN $q$
	UPDATE %3$s d
	SET patient = n.patient, patient_token = pd.token, visit_year = extract(year FROM f.visit)::int,
		age = schedphi._age_at(p.birth_date, p.tenant, p.id, f.visit), zip5 = pd.zip5, status = n.status,
		kind = n.kind, starts = lower(n.during), ends = upper(n.during), location = f.location,
		practitioner = f.practitioner, actor_kinds = f.kinds
	FROM new_rows n
	JOIN %1$s p ON p.tenant = n.tenant AND p.id = n.patient
	JOIN %2$s pd ON pd.tenant = n.tenant AND pd.patient = n.patient
	CROSS JOIN LATERAL schedphi._deid_facts(%4$L::regclass, %5$L::regclass, %6$L::regclass, n.tenant, n.actors, lower(n.during)) f
	WHERE d.tenant = n.tenant AND d.appointment = n.id
$q$
WHEN 'patient_deleted' THEN $q$
	DELETE FROM %2$s d USING old_rows o WHERE d.tenant = o.tenant AND d.patient = o.id
$q$
WHEN 'appointment_deleted' THEN $q$
	DELETE FROM %3$s d USING old_rows o WHERE d.tenant = o.tenant AND d.appointment = o.id
$q$
END
$$;

-- The tables the derivations use, for a trigger fired on p_relname: the
-- tables themselves, or on a Citus node (a shard's name) the shards of
-- p_tenant's.
CREATE FUNCTION schedphi._deid_tables(p_relname name, p_tenant uuid)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v text[] := ARRAY['schedphi.patient', 'schedphi.patient_deid', 'schedphi.appointment_deid',
					  'schedphi.actor', 'schedphi.location', 'schedphi.tenant'];
	r text[];
BEGIN
	IF p_relname IN ('patient', 'appointment') THEN
		RETURN v;
	END IF;
	EXECUTE 'SELECT array_agg(shard_name(u.t::regclass, get_shard_id_for_distribution_column(u.t::regclass, $1))::text
							  ORDER BY u.o)
			 FROM unnest($2::text[]) WITH ORDINALITY u(t, o)'
		INTO r USING p_tenant, v;
	RETURN r;
END
$$;

-- The three trigger functions, made from the templates above: the
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
								   ('_deid_patient_deleted', 'patient_deleted', 'patient', 'old_rows'))
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
							  'schedphi.appointment_deid', 'schedphi.actor', 'schedphi.location', 'schedphi.tenant'),
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
ALTER TABLE schedphi.patient ENABLE ALWAYS TRIGGER deid_insert;
ALTER TABLE schedphi.patient ENABLE ALWAYS TRIGGER deid_update;
ALTER TABLE schedphi.patient ENABLE ALWAYS TRIGGER deid_delete;
ALTER TABLE schedphi.appointment ENABLE ALWAYS TRIGGER deid_insert;
ALTER TABLE schedphi.appointment ENABLE ALWAYS TRIGGER deid_update;
ALTER TABLE schedphi.appointment ENABLE ALWAYS TRIGGER deid_delete;

-- The tenants whose analytics the caller may read (the analyst role; an
-- assumed token's tenant when its role is analyst), noted for the
-- statement's export record.  No such tenant: 42501, recorded.
CREATE FUNCTION schedphi._analytics_scope(p_view text)
RETURNS uuid[]
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record := schedphi._context();
	v uuid[];
	v_login name := session_user;
	v_oid oid := schedphi._session_user_oid();
BEGIN
	IF p_view IS NULL OR p_view NOT IN ('deid_appointments', 'lds_appointments', 'k_anonymity') THEN
		RAISE EXCEPTION 'view must be deid_appointments, lds_appointments or k_anonymity' USING ERRCODE = '22023';
	END IF;
	IF c.via = 'token' THEN
		IF c.role = 'analyst' THEN
			v := ARRAY[c.tenant];
		END IF;
	ELSE
		v := ARRAY(SELECT DISTINCT m.tenant FROM schedphi.member m
				   WHERE m.role = 'analyst' AND m.login = v_login AND m.login_oid = v_oid
					 AND pg_catalog.pg_has_role(v_login, 'schedphi_analyst', 'MEMBER'));
	END IF;
	v := ARRAY(SELECT t.tenant FROM schedphi.tenant t WHERE t.tenant = ANY (v) AND t.shredded_at IS NULL
			   ORDER BY t.tenant);
	IF cardinality(v) = 0 THEN
		PERFORM schedphi._deny(CASE WHEN c.via = 'token' THEN c.tenant END,
			'permission denied: de-identified analytics are for the analyst role',
			pg_catalog.format('%s needs the analyst role in a tenant.', p_view));
	END IF;
	RETURN schedphi._analytics_note(p_view, v, NULL);
END
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

CREATE FUNCTION schedphi._analytics_min_k() RETURNS int
AS 'MODULE_PATHNAME', 'schedphi_analytics_min_k' LANGUAGE C STABLE;

-- The rows of the tenants where the caller is an analyst, as Safe Harbor
-- shows them, with k-anonymity over the quasi-identifiers (age at visit,
-- ZIP3, visit year): a class with fewer than schedphi.analytics_min_k
-- patients (default 11) is generalised (ZIP3 to 000, the age to its
-- 10-year band), and a generalised class still that small is suppressed
-- (shown = false).  The classes are counted over everything the caller
-- may read, before any condition of the caller's query, so that a query's
-- own WHERE cannot single a small class out.  The caller's scope is decided
-- first (42501, recorded, without the role), once per statement.
CREATE FUNCTION schedphi._deid_k(p_view text)
RETURNS TABLE (tenant uuid, patient_token text, appointment_token text, visit_year int, age_at_visit text,
			   zip3 text, status text, kind text, duration_minutes int, lead_days_band text,
			   location uuid, practitioner uuid, actor_kinds text[], generalised boolean, shown boolean,
			   class_patients bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
ROWS 100000
AS $$
DECLARE
	v_tenants uuid[] := schedphi._analytics_scope(p_view);
	v_k int := schedphi._analytics_min_k();
BEGIN
	RETURN QUERY
	WITH r AS MATERIALIZED (
		SELECT d.*, x.age_s, x.z3,
			   coalesce(x.age_s, '') AS ka, coalesce(x.z3, '') AS kz,
			   CASE WHEN d.age IS NULL THEN '' WHEN d.age >= 90 THEN '90+'
					ELSE (d.age / 10 * 10)::text || '-' || (d.age / 10 * 10 + 9)::text END AS kb,
			   CASE WHEN x.z3 IS NULL THEN '' ELSE '000' END AS kzg
		FROM schedphi.appointment_deid d
		CROSS JOIN LATERAL (
			SELECT CASE WHEN d.age >= 90 THEN '90+' ELSE d.age::text END AS age_s,
				   CASE WHEN d.zip5 IS NULL THEN NULL
						WHEN left(d.zip5, 3) IN (SELECT z.zip3 FROM schedphi.zip3_restricted z) THEN '000'
						ELSE left(d.zip5, 3) END AS z3) x
		WHERE d.tenant = ANY (v_tenants)),
	exact AS (
		SELECT e.tenant, e.ka, e.kz, e.visit_year, count(*) AS n
		FROM (SELECT DISTINCT r.tenant, r.ka, r.kz, r.visit_year, r.patient FROM r) e
		GROUP BY e.tenant, e.ka, e.kz, e.visit_year),
	r1 AS MATERIALIZED (
		SELECT r.*, e.n AS n_exact, e.n >= v_k AS exact_ok
		FROM r JOIN exact e ON e.tenant = r.tenant AND e.ka = r.ka AND e.kz = r.kz AND e.visit_year = r.visit_year),
	gen AS (
		SELECT g.tenant, g.kb, g.kzg, g.visit_year, count(*) AS n
		FROM (SELECT DISTINCT r1.tenant, r1.kb, r1.kzg, r1.visit_year, r1.patient FROM r1 WHERE NOT r1.exact_ok) g
		GROUP BY g.tenant, g.kb, g.kzg, g.visit_year)
	SELECT r1.tenant, r1.patient_token::text, r1.token::text, r1.visit_year,
		   CASE WHEN r1.exact_ok THEN r1.age_s ELSE nullif(r1.kb, '') END,
		   CASE WHEN r1.exact_ok THEN r1.z3 ELSE nullif(r1.kzg, '') END,
		   r1.status, r1.kind, (extract(epoch FROM r1.ends - r1.starts) / 60)::int,
		   schedphi._lead_band(r1.booked_at, r1.starts), r1.location, r1.practitioner, r1.actor_kinds,
		   NOT r1.exact_ok, r1.exact_ok OR g.n >= v_k, CASE WHEN r1.exact_ok THEN r1.n_exact ELSE g.n END
	FROM r1
	LEFT JOIN gen g ON NOT r1.exact_ok AND g.tenant = r1.tenant AND g.kb = r1.kb AND g.kzg = r1.kzg
				   AND g.visit_year = r1.visit_year;
END
$$;

-- The rows an analyst may see: those shown, without the class sizes.
-- (The view calls this as the caller, who may call it directly too: it
-- returns nothing the view does not.)
CREATE FUNCTION schedphi._deid_rows()
RETURNS TABLE (tenant uuid, patient_token text, appointment_token text, visit_year int, age_at_visit text,
			   zip3 text, status text, kind text, duration_minutes int, lead_days_band text,
			   location uuid, practitioner uuid, actor_kinds text[])
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
ROWS 100000
AS $$
	SELECT k.tenant, k.patient_token, k.appointment_token, k.visit_year, k.age_at_visit, k.zip3, k.status, k.kind,
		   k.duration_minutes, k.lead_days_band, k.location, k.practitioner, k.actor_kinds
	FROM schedphi._deid_k('deid_appointments') k
	WHERE k.shown
$$;

-- HIPAA Safe Harbor rows (164.514(b)(2)), one per appointment, with the
-- k-anonymity above (suppressed rows are left out).
CREATE VIEW schedphi.deid_appointments AS
	SELECT * FROM schedphi._deid_rows();

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
	RETURN QUERY
	SELECT ARRAY['age_at_visit', 'zip3', 'visit_year'], min(d.class_patients) FILTER (WHERE d.shown),
		   count(*) FILTER (WHERE d.generalised AND d.shown), count(*) FILTER (WHERE NOT d.shown)
	FROM schedphi._deid_k('k_anonymity') d
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
							'schedphi.actor', 'schedphi.location', 'schedphi.tenant'];
	n bigint;
BEGIN
	IF NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user) THEN
		RAISE EXCEPTION 'only a superuser can rebuild the analytics' USING ERRCODE = '42501';
	END IF;
	DELETE FROM schedphi.appointment_deid;
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
-- entered in error, proposed, pending or on the waitlist), with their group.
CREATE FUNCTION schedphi._analytics_rows(p_tenant uuid, p_during tstzrange, p_by text)
RETURNS TABLE (grp uuid, starts timestamptz, ends timestamptz, booked_at timestamptz, noshow boolean, patient uuid)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- (PL/pgSQL: Citus cannot plan a SQL function's parameters)
	IF p_by = 'actor' THEN
		RETURN QUERY
		SELECT x.actor, d.starts, d.ends, d.booked_at, d.status = 'noshow', d.patient
		FROM schedphi.appointment_deid d
		JOIN schedphi.appointment_actor x ON x.tenant = d.tenant AND x.appointment = d.appointment AND x.active
		WHERE d.tenant = p_tenant AND x.tenant = p_tenant AND p_during @> d.starts
		  AND d.status IN ('booked', 'arrived', 'checked-in', 'fulfilled', 'noshow');
	ELSE
		RETURN QUERY
		SELECT CASE p_by WHEN 'practitioner' THEN d.practitioner ELSE d.location END,
			   d.starts, d.ends, d.booked_at, d.status = 'noshow', d.patient
		FROM schedphi.appointment_deid d
		WHERE d.tenant = p_tenant AND p_during @> d.starts
		  AND d.status IN ('booked', 'arrived', 'checked-in', 'fulfilled', 'noshow');
	END IF;
END
$$;

CREATE FUNCTION schedphi.no_show_rates(tenant uuid, during tstzrange, by text DEFAULT 'practitioner')
RETURNS TABLE (grp uuid, week date, appointments bigint, no_shows bigint, rate numeric, suppressed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	v_tz text := schedphi._analytics_args($1, 'no_show_rates', $2, $3, ARRAY['practitioner', 'location', 'actor']);
BEGIN
	CREATE TEMP TABLE schedphi_cells ON COMMIT DROP AS
	SELECT r.grp, date_trunc('week', r.starts AT TIME ZONE v_tz)::date AS period,
		   extract(year FROM r.starts AT TIME ZONE v_tz)::int AS yr,
		   count(*) AS n, count(*) FILTER (WHERE r.noshow) AS m, false AS sup
	FROM schedphi._analytics_rows($1, $2, $3) r
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
DECLARE
	v_tz text := schedphi._analytics_args($1, 'lead_times', $2, $3, ARRAY['practitioner', 'location', 'actor']);
BEGIN
	CREATE TEMP TABLE schedphi_cells ON COMMIT DROP AS
	SELECT r.grp, date_trunc('week', r.starts AT TIME ZONE v_tz)::date AS period,
		   extract(year FROM r.starts AT TIME ZONE v_tz)::int AS yr, count(*) AS n,
		   -- whole days, so that no exact booking time can be worked back
		   round(percentile_cont(0.5) WITHIN GROUP (ORDER BY floor(date_part('epoch', r.starts - r.booked_at) / 86400))::numeric, 0) AS p50,
		   round(percentile_cont(0.9) WITHIN GROUP (ORDER BY floor(date_part('epoch', r.starts - r.booked_at) / 86400))::numeric, 0) AS p90,
		   false AS sup
	FROM schedphi._analytics_rows($1, $2, $3) r
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
		SELECT r.grp, (r.starts AT TIME ZONE v_tz)::date AS period, count(*) AS n,
			   sum(date_part('epoch', r.ends - r.starts) / 60)::bigint AS mins
		FROM schedphi._analytics_rows($1, $2, 'actor') r
		GROUP BY 1, 2)
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
		   CASE WHEN d.zip5 IS NULL THEN NULL
				WHEN left(d.zip5, 3) IN (SELECT z.zip3 FROM schedphi.zip3_restricted z) THEN '000'
				ELSE left(d.zip5, 3) END,
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
