-- schedphi install script, part 1: tables.
--
-- Every table carries the tenant, and every primary, foreign, unique and
-- exclusion key leads with it, so that a large deployment can distribute
-- all tables by tenant (Citus) without a schema change.  Plain indexes on
-- id alone exist because the public API addresses rows by uuid.

-- The session user, as a function (src/membership.c says why).
CREATE FUNCTION schedphi._login() RETURNS name
AS 'MODULE_PATHNAME', 'schedphi_login_sql' LANGUAGE C STABLE;

CREATE TABLE schedphi.tenant (
	tenant		uuid NOT NULL DEFAULT gen_random_uuid(),
	name		text NOT NULL CHECK (btrim(name) <> ''),
	timezone	text NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	shredded_at timestamptz,
	PRIMARY KEY (tenant)
);

-- Data keys, one active per tenant and purpose: 'phi' seals fields,
-- 'index' keys blind indexes, 'token' keys analytics tokens.  Stored only
-- wrapped (AES-256-GCM) by the master key named in kek_id; once destroyed
-- the wrapped key is gone.  seal_base is schedphi.seal_counter when the key
-- was made: every seal takes a number from that counter, so a key has
-- sealed at most (counter - seal_base) values.
CREATE SEQUENCE schedphi.data_key_id AS int;
CREATE SEQUENCE schedphi.seal_counter AS bigint INCREMENT BY 1024;
CREATE TABLE schedphi.data_key (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	id			int NOT NULL DEFAULT nextval('schedphi.data_key_id'),
	purpose		text NOT NULL CHECK (purpose IN ('phi', 'index', 'token')),
	kek_id		text,
	wrapped		bytea,
	status		text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired', 'destroyed')),
	seal_base	bigint NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	retired_at	timestamptz,
	destroyed_at timestamptz,
	PRIMARY KEY (tenant, id),
	CHECK ((status = 'destroyed') = (wrapped IS NULL)),
	CHECK ((status = 'destroyed') = (kek_id IS NULL))
);
CREATE UNIQUE INDEX data_key_one_active ON schedphi.data_key (tenant, purpose) WHERE status = 'active';

-- Every key operation, for the audit ledger to take over.  Never a key.
CREATE SEQUENCE schedphi.key_event_id AS bigint;
CREATE TABLE schedphi.key_event (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	id			bigint NOT NULL DEFAULT nextval('schedphi.key_event_id'),
	at			timestamptz NOT NULL DEFAULT clock_timestamp(),
	login		name NOT NULL DEFAULT schedphi._login(),
	action		text NOT NULL CHECK (action IN ('key_create', 'key_rotate', 'key_rewrap', 'reencrypt', 'shred')),
	detail		jsonb NOT NULL DEFAULT '{}',
	PRIMARY KEY (tenant, id)
);

-- Sealed values that re-encryption could not open (copied from another row,
-- altered, or under a data key that is missing or destroyed): where they
-- are, never what.  digest is SHA-256 of the ciphertext as found, so that a
-- value the DBA has since repaired is tried again.  reencrypt() keeps this
-- table current; the data key such a value names stays.
CREATE TABLE schedphi.reencrypt_skipped (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	tbl			text NOT NULL,
	row_id		uuid NOT NULL,
	col			text NOT NULL,
	key_id		int,
	reason		text NOT NULL,
	digest		bytea NOT NULL,
	first_seen	timestamptz NOT NULL DEFAULT now(),
	last_seen	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, tbl, row_id, col)
);

CREATE TABLE schedphi.location (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	name		text NOT NULL CHECK (btrim(name) <> ''),
	timezone	text NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, id)
);
CREATE INDEX location_id ON schedphi.location (id);

-- Anything that can be booked: a practitioner, a room, a device.
-- capacity N means N seats that can be booked at the same time.
CREATE TABLE schedphi.actor (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	kind		text NOT NULL CHECK (kind IN ('practitioner', 'room', 'device')),
	name		text NOT NULL CHECK (btrim(name) <> ''),
	npi			text CHECK (npi ~ '^[0-9]{10}$'),
	capacity	int NOT NULL DEFAULT 1 CHECK (capacity BETWEEN 1 AND 1000),
	location	uuid,
	buffer_before interval NOT NULL DEFAULT '0',
	buffer_after interval NOT NULL DEFAULT '0',
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, id),
	FOREIGN KEY (tenant, location) REFERENCES schedphi.location (tenant, id)
);
CREATE INDEX actor_id ON schedphi.actor (id);

CREATE TABLE schedphi.member (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	login		name NOT NULL,
	login_oid	oid NOT NULL,	-- the login itself: a later login with the same name is someone else
	role		text NOT NULL CHECK (role IN ('admin', 'scheduler', 'clinician', 'billing',
											  'support', 'analyst', 'integration', 'auditor')),
	practitioner uuid,
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, login, role),
	FOREIGN KEY (tenant, practitioner) REFERENCES schedphi.actor (tenant, id),
	CHECK ((role = 'clinician') = (practitioner IS NOT NULL))
);
CREATE INDEX member_login ON schedphi.member (login);

-- Rate limits a superuser set for a role or a login in a tenant, above or
-- below the settings schedphi.lookup_rate_limit and reveal_rate_limit
-- (schedphi.set_rate_limit; NULL: the setting applies).
CREATE TABLE schedphi.rate_limit (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	scope		text NOT NULL CHECK (scope IN ('role', 'login')),
	name		text NOT NULL,
	lookups_per_minute int CHECK (lookups_per_minute BETWEEN 1 AND 1000000),
	reveals_per_hour int CHECK (reveals_per_hour BETWEEN 1 AND 1000000),
	set_at		timestamptz NOT NULL DEFAULT now(),
	set_by		name NOT NULL DEFAULT schedphi._login(),
	PRIMARY KEY (tenant, scope, name)
);
-- (a change is announced like a membership's: 70_audit.sql)

-- Weekly availability in wall-clock time at a location: 09:00-17:00 stays
-- 09:00-17:00 local across DST.  ends = 24:00 means midnight at the end of
-- the day.
CREATE TABLE schedphi.availability (
	tenant		uuid NOT NULL,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	actor		uuid NOT NULL,
	location	uuid NOT NULL,
	days		int[] NOT NULL,
	starts		time NOT NULL,
	ends		time NOT NULL,
	valid		daterange NOT NULL,
	slot_minutes int NOT NULL CHECK (slot_minutes BETWEEN 1 AND 1440),
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, id),
	FOREIGN KEY (tenant, actor) REFERENCES schedphi.actor (tenant, id),
	FOREIGN KEY (tenant, location) REFERENCES schedphi.location (tenant, id),
	CHECK (starts < ends),
	CHECK (days <@ ARRAY[1, 2, 3, 4, 5, 6, 7] AND cardinality(days) > 0)
);
CREATE INDEX availability_actor ON schedphi.availability (tenant, actor);

CREATE TABLE schedphi.block (
	tenant		uuid NOT NULL,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	actor		uuid NOT NULL,
	during		tstzrange NOT NULL CHECK (NOT isempty(during) AND NOT lower_inf(during) AND NOT upper_inf(during)),
	reason		text NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, id),
	FOREIGN KEY (tenant, actor) REFERENCES schedphi.actor (tenant, id)
);
CREATE INDEX block_actor ON schedphi.block USING gist (tenant, actor, during);

-- Patients.  Every demographic field is sealed (AES-256-GCM, bound to the
-- tenant, table, column and row); look-ups go through blind indexes
-- (HMAC-SHA-256 under per-tenant, per-field keys) of normalised values.
CREATE TABLE schedphi.patient (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	id			uuid NOT NULL,
	given		schedphi.sealed NOT NULL,
	family		schedphi.sealed NOT NULL,
	birth_date	schedphi.sealed NOT NULL,
	phone		schedphi.sealed,
	email		schedphi.sealed,
	mrn			schedphi.sealed,
	zip			schedphi.sealed,
	mrn_idx		bytea,
	phone_idx	bytea,
	email_idx	bytea,
	family_dob_idx bytea NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, id),
	CONSTRAINT patient_mrn_unique UNIQUE (tenant, mrn_idx)
);
CREATE INDEX patient_id ON schedphi.patient (id);
-- The look-up indexes are partial (a blind index is never null when it is
-- looked up by), so that none of them can serve "tenant = $1" alone: a
-- plan made while the table was nearly empty (a new database's first
-- session keeps it) would otherwise find a patient by its id through one
-- of them, reading the tenant's every patient.
CREATE INDEX patient_phone ON schedphi.patient (tenant, phone_idx) WHERE phone_idx IS NOT NULL;
CREATE INDEX patient_email ON schedphi.patient (tenant, email_idx) WHERE email_idx IS NOT NULL;
CREATE INDEX patient_family ON schedphi.patient (tenant, family_dob_idx) WHERE family_dob_idx IS NOT NULL;

-- New appointment ids are time-ordered (version 7 UUIDs, see book.c), so
-- the indexes that lead with them grow at one end.
CREATE FUNCTION schedphi._appointment_id() RETURNS uuid
AS 'MODULE_PATHNAME', 'schedphi_appointment_id' LANGUAGE C VOLATILE PARALLEL SAFE;

-- Appointments carry FHIR R4 Appointment.status codes.
CREATE TABLE schedphi.appointment (
	tenant		uuid NOT NULL,
	id			uuid NOT NULL DEFAULT schedphi._appointment_id(),
	patient		uuid NOT NULL,
	actors		uuid[] NOT NULL,
	during		tstzrange NOT NULL,
	status		text NOT NULL CHECK (status IN ('proposed', 'pending', 'booked', 'arrived',
								'fulfilled', 'cancelled', 'noshow', 'entered-in-error',
								'checked-in', 'waitlist')),
	kind		text NOT NULL,
	reason		schedphi.sealed,
	idempotency_key text,
	request_digest bytea,
	hold_expires timestamptz,
	cancel_reason schedphi.sealed,
	created_at	timestamptz NOT NULL DEFAULT now(),
	updated_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, id),
	FOREIGN KEY (tenant, patient) REFERENCES schedphi.patient (tenant, id)
);
-- Idempotency keys are unique per tenant; most bookings have none, and
-- those cost no index entry.
CREATE UNIQUE INDEX appointment_idempotency ON schedphi.appointment (tenant, idempotency_key)
	WHERE idempotency_key IS NOT NULL;
CREATE INDEX appointment_id ON schedphi.appointment (id);
-- partial for the reason given at patient_phone
CREATE INDEX appointment_patient ON schedphi.appointment (tenant, patient) WHERE patient IS NOT NULL;

-- One row per booked actor.  span is the appointment widened by the actor's
-- buffers.  The exclusion constraint is the double-booking guarantee: no two
-- active rows share (tenant, actor, seat) with overlapping spans, whatever
-- the client and whatever the interleaving of transactions.  A hold is an
-- active row with an expiry; bookers deactivate expired holds in their own
-- transaction before inserting, so no sweeper is needed.
CREATE TABLE schedphi.appointment_actor (
	tenant		uuid NOT NULL,
	appointment uuid NOT NULL,
	actor		uuid NOT NULL,
	seat		int NOT NULL CHECK (seat >= 1),
	during		tstzrange NOT NULL,
	span		tstzrange NOT NULL,
	active		boolean NOT NULL DEFAULT true,
	expires		timestamptz,
	PRIMARY KEY (tenant, appointment, actor),
	FOREIGN KEY (tenant, appointment) REFERENCES schedphi.appointment (tenant, id) ON DELETE CASCADE,
	FOREIGN KEY (tenant, actor) REFERENCES schedphi.actor (tenant, id),
	CONSTRAINT appointment_actor_no_double_booking
		EXCLUDE USING gist (tenant WITH =, actor WITH =, seat WITH =, span WITH &&) WHERE (active)
);

-- Live holds, so that a booking finds the expired ones in its way without
-- reading every booking the actor ever had: by actor and time, so that no
-- plan reads an actor's every hold either.
CREATE INDEX appointment_actor_holds ON schedphi.appointment_actor USING gist (tenant, actor, span)
	WHERE active AND expires IS NOT NULL;
-- An appointment's own rows (reschedule, cancel, status changes) are found
-- through the primary key, which leads with (tenant, appointment).

CREATE TABLE schedphi.waitlist (
	tenant		uuid NOT NULL,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	patient		uuid NOT NULL,
	actors		uuid[] NOT NULL,
	wanted		tstzrange NOT NULL,
	duration	interval NOT NULL,
	status		text NOT NULL DEFAULT 'waiting' CHECK (status IN ('waiting', 'booked', 'removed')),
	created_at	timestamptz NOT NULL DEFAULT clock_timestamp(),
	PRIMARY KEY (tenant, id),
	FOREIGN KEY (tenant, patient) REFERENCES schedphi.patient (tenant, id)
);
CREATE INDEX waitlist_open ON schedphi.waitlist (tenant, created_at) WHERE status = 'waiting';
CREATE INDEX waitlist_patient ON schedphi.waitlist (tenant, patient) WHERE status = 'waiting';

-- Every change of membership: who mapped or unmapped which login to which
-- role, and when (for the audit ledger to take over).
CREATE SEQUENCE schedphi.member_event_id AS bigint;
CREATE TABLE schedphi.member_event (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	id			bigint NOT NULL DEFAULT nextval('schedphi.member_event_id'),
	at			timestamptz NOT NULL DEFAULT clock_timestamp(),
	by_login	name NOT NULL DEFAULT schedphi._login(),
	action		text NOT NULL CHECK (action IN ('add', 'remove')),
	login		name NOT NULL,
	role		text NOT NULL,
	practitioner uuid,
	PRIMARY KEY (tenant, id)
);

-- Break-glass: time-boxed emergency access to one patient, with a reason,
-- reviewed afterwards by someone else.  The reason and the review note may
-- hold PHI: sealed.
CREATE TABLE schedphi.break_glass_grant (
	tenant		uuid NOT NULL,
	id			uuid NOT NULL,
	patient		uuid NOT NULL,
	login		name NOT NULL,
	actor		text NOT NULL,
	role		text NOT NULL,
	reason		schedphi.sealed NOT NULL,
	starts		timestamptz NOT NULL,
	expires		timestamptz NOT NULL,
	outcome		text CHECK (outcome IN ('justified', 'unjustified')),
	reviewer	text,
	reviewed_at timestamptz,
	review_note schedphi.sealed,
	by_token	boolean NOT NULL DEFAULT false,	-- opened through an assumed token (login is then the pool's)
	PRIMARY KEY (tenant, id),
	FOREIGN KEY (tenant, patient) REFERENCES schedphi.patient (tenant, id),
	CHECK (expires > starts)
);
CREATE INDEX break_glass_grant_id ON schedphi.break_glass_grant (id);
CREATE INDEX break_glass_grant_active ON schedphi.break_glass_grant (tenant, patient, actor, expires);
-- set_purpose('EMERGENCY') asks whether the caller holds any live grant
CREATE INDEX break_glass_grant_holder ON schedphi.break_glass_grant (login, actor, expires);

-- Identity providers trusted to vouch for a tenant's users (assume()).
-- key_kind decides the algorithm: rsa -> RS256, ec -> ES256, hs256 -> HS256.
-- An HS256 secret is stored sealed; public keys as PEM.
CREATE TABLE schedphi.issuer (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	id			uuid NOT NULL,
	issuer		text NOT NULL,
	audience	text NOT NULL,
	key_kind	text NOT NULL CHECK (key_kind IN ('rsa', 'ec', 'hs256')),
	public_key	text,
	secret		schedphi.sealed,
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, id),
	CONSTRAINT issuer_unique UNIQUE (tenant, issuer),
	CHECK ((key_kind = 'hs256') = (secret IS NOT NULL AND public_key IS NULL))
);

-- pg_dump writes the extension's rows (ciphertext and wrapped keys only).
-- One call per statement: each call updates the extension's catalog row.
DO $config$
DECLARE
	r regclass;
BEGIN
	FOR r IN SELECT c.oid::regclass FROM pg_catalog.pg_class c
			 WHERE c.relnamespace = 'schedphi'::regnamespace AND c.relkind IN ('r', 'S')
			 ORDER BY c.relkind DESC, c.oid
	LOOP
		PERFORM pg_catalog.pg_extension_config_dump(r, '');
	END LOOP;
END
$config$;
