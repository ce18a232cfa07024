-- schedphi install script, part 8f: patient communications
-- (docs/communications.md).
--
-- Reminders are treatment communications: no authorization is needed, but
-- they carry the minimum necessary, go only where the patient asked
-- (164.522(b): confidential communications), and pass only through a
-- business associate whose BAA is current (89_compliance.sql).
--
-- A change of an appointment queues its messages in the same transaction
-- (a statement trigger, as the HL7 outbox); nothing of PHI is queued: a
-- message is a kind, a channel and a time.  claim_messages builds the body
-- and reads the address when a vendor claims it (decrypting then, as a
-- read by the integration login, and recording the disclosure to the
-- vendor on the ledger, in the patient's access_report).

-- ---------------------------------------------------------------- tables

-- The clinic's messaging settings: reminder offsets, quiet hours (wall
-- time in the appointment's location), the clinic's phone and the portal's
-- address, which the placeholders clinic_phone and portal_link use.
CREATE TABLE schedphi.message_settings (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	offsets		interval[] NOT NULL,
	quiet_start time NOT NULL,
	quiet_end	time NOT NULL,
	clinic_phone text CHECK (clinic_phone ~ '^[0-9+() .-]{3,32}$'),
	portal_url	text CHECK (portal_url ~ '^https://[^[:space:]{}<>"]+$' AND length(portal_url) <= 400),
	updated_at	timestamptz NOT NULL DEFAULT now(),
	updated_by	text NOT NULL DEFAULT schedphi._actor_name(),
	PRIMARY KEY (tenant)
);

-- What a patient asked for, per channel.  unencrypted_ok: warned that SMS
-- and email are not secure, the patient still wants the message's content
-- there (else those channels carry only a portal link).
CREATE TABLE schedphi.contact_preference (
	tenant		uuid NOT NULL,
	patient		uuid NOT NULL,
	channel		text NOT NULL CHECK (channel IN ('sms', 'email', 'voice', 'portal')),
	allowed		boolean NOT NULL,
	unencrypted_ok boolean NOT NULL DEFAULT false,
	source		text CHECK (length(source) <= 200),
	updated_at	timestamptz NOT NULL DEFAULT now(),
	updated_by	text NOT NULL DEFAULT schedphi._actor_name(),
	PRIMARY KEY (tenant, patient, channel),
	FOREIGN KEY (tenant, patient) REFERENCES schedphi.patient (tenant, id) ON DELETE CASCADE
);

-- STOP: an address that must receive nothing more on a channel, kept only
-- as the blind index of the normalised address (as patient.phone_idx and
-- email_idx), never the address itself.
CREATE TABLE schedphi.opt_out (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	channel		text NOT NULL CHECK (channel IN ('sms', 'email', 'voice')),
	address_idx bytea NOT NULL,
	at			timestamptz NOT NULL DEFAULT now(),
	by_login	text NOT NULL DEFAULT schedphi._actor_name(),
	PRIMARY KEY (tenant, channel, address_idx)
);

-- Templates: the newest of a kind and channel is the one used.
CREATE TABLE schedphi.message_template (
	tenant		uuid NOT NULL REFERENCES schedphi.tenant,
	id			uuid NOT NULL DEFAULT gen_random_uuid(),
	kind		text NOT NULL CHECK (kind IN ('reminder', 'confirmation', 'cancellation', 'reschedule')),
	channel		text NOT NULL CHECK (channel IN ('sms', 'email', 'voice', 'portal')),
	body		text NOT NULL CHECK (length(body) BETWEEN 1 AND 1600),
	created_at	timestamptz NOT NULL DEFAULT clock_timestamp(),
	created_by	text NOT NULL DEFAULT schedphi._actor_name(),
	PRIMARY KEY (tenant, id)
);
CREATE INDEX message_template_use ON schedphi.message_template (tenant, kind, channel, created_at);

-- The queue.  pending -> claimed (by a vendor) -> sent | delivered |
-- failed | bounced; withdrawn (the appointment changed, the patient
-- withdrew consent or opted out) and expired (its time passed) end it
-- unsent.  A claim not reported within 15 minutes may be claimed again.
CREATE SEQUENCE schedphi.message_seq;
CREATE TABLE schedphi.message (
	tenant		uuid NOT NULL,
	id			bigint NOT NULL DEFAULT nextval('schedphi.message_seq'),
	appointment uuid NOT NULL,
	patient		uuid NOT NULL,
	kind		text NOT NULL CHECK (kind IN ('reminder', 'confirmation', 'cancellation', 'reschedule')),
	channel		text NOT NULL CHECK (channel IN ('sms', 'email', 'voice', 'portal')),
	template	uuid NOT NULL,
	timezone	text NOT NULL,
	not_before	timestamptz NOT NULL,
	expires		timestamptz NOT NULL,
	status		text NOT NULL DEFAULT 'pending'
				CHECK (status IN ('pending', 'claimed', 'sent', 'delivered', 'failed', 'bounced', 'withdrawn', 'expired')),
	reason		text,
	vendor		uuid,
	claims		int NOT NULL DEFAULT 0,
	claimed_at	timestamptz,
	reported_at timestamptz,
	vendor_ref	text CHECK (vendor_ref ~ '^[A-Za-z0-9._:@/+=-]{1,200}$'),
	created_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant, id),
	FOREIGN KEY (tenant, appointment) REFERENCES schedphi.appointment (tenant, id) ON DELETE CASCADE,
	FOREIGN KEY (tenant, template) REFERENCES schedphi.message_template (tenant, id)
);
CREATE INDEX message_id ON schedphi.message (id);
CREATE INDEX message_due ON schedphi.message (tenant, not_before) WHERE status IN ('pending', 'claimed');
CREATE INDEX message_appointment ON schedphi.message (tenant, appointment) WHERE status = 'pending';
-- the limits: what went to a patient on a channel lately
CREATE INDEX message_sent ON schedphi.message (tenant, patient, channel, claimed_at) WHERE claimed_at IS NOT NULL;

-- Portal links: the token is 16 bytes of link id and 32 random bytes; only
-- a keyed hash is kept, over the secret, the appointment, the purpose and
-- the expiry: a token or a row altered does not redeem.
CREATE TABLE schedphi.portal_link (
	tenant		uuid NOT NULL,
	id			uuid NOT NULL,
	appointment uuid NOT NULL,
	purpose		text NOT NULL CHECK (purpose IN ('appointment')),
	expires		timestamptz NOT NULL,
	mac			bytea NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	created_by	text NOT NULL DEFAULT schedphi._actor_name(),
	previews	int NOT NULL DEFAULT 0,
	used_at		timestamptz,
	revoked_at	timestamptz,
	PRIMARY KEY (tenant, id),
	FOREIGN KEY (tenant, appointment) REFERENCES schedphi.appointment (tenant, id) ON DELETE CASCADE
);
CREATE INDEX portal_link_id ON schedphi.portal_link (id);
CREATE INDEX portal_link_appointment ON schedphi.portal_link (tenant, appointment) WHERE revoked_at IS NULL;

DO $config$
BEGIN
	PERFORM pg_catalog.pg_extension_config_dump('schedphi.message_settings', '');
	PERFORM pg_catalog.pg_extension_config_dump('schedphi.contact_preference', '');
	PERFORM pg_catalog.pg_extension_config_dump('schedphi.opt_out', '');
	PERFORM pg_catalog.pg_extension_config_dump('schedphi.message_template', '');
	PERFORM pg_catalog.pg_extension_config_dump('schedphi.message', '');
	PERFORM pg_catalog.pg_extension_config_dump('schedphi.message_seq', '');
	PERFORM pg_catalog.pg_extension_config_dump('schedphi.portal_link', '');
END
$config$;

-- ---------------------------------------------------------------- helpers

CREATE FUNCTION schedphi._check_channel(p_channel text, p_allowed text[] DEFAULT ARRAY['sms', 'email', 'voice', 'portal'])
RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
	IF p_channel IS NULL OR NOT (lower(btrim(p_channel)) = ANY (p_allowed)) THEN
		RAISE EXCEPTION 'channel must be one of %', pg_catalog.array_to_string(p_allowed, ', ') USING ERRCODE = '22023';
	END IF;
	RETURN lower(btrim(p_channel));
END
$$;

-- Is a wall time within quiet hours?  (A window that wraps midnight, such
-- as 21:00-09:00, is two pieces; start = end: no quiet hours.)
CREATE FUNCTION schedphi._in_quiet(p_local time, p_start time, p_end time)
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
	SELECT CASE WHEN p_start IS NULL OR p_start = p_end THEN false
				WHEN p_start < p_end THEN p_local >= p_start AND p_local < p_end
				ELSE p_local >= p_start OR p_local < p_end END
$$;

-- When a reminder due at p_at goes: then, or, if that falls in quiet hours
-- where the visit is, an hour before they begin that evening (the patient
-- hears of tomorrow's 08:00 visit at 20:00, not at 09:00 after it).
CREATE FUNCTION schedphi._message_time(p_at timestamptz, p_tz text, p_start time, p_end time)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	v_local timestamp := p_at AT TIME ZONE p_tz;
	v_day date := v_local::date;
BEGIN
	IF NOT schedphi._in_quiet(v_local::time, p_start, p_end) THEN
		RETURN p_at;
	END IF;
	IF p_start > p_end AND v_local::time < p_end THEN
		v_day := v_day - 1;		-- after midnight: quiet hours began the evening before
	END IF;
	RETURN ((v_day + p_start) - interval '1 hour') AT TIME ZONE p_tz;
END
$$;

-- When quiet hours that hold at p_at end (p_at if they do not hold).
CREATE FUNCTION schedphi._quiet_end(p_at timestamptz, p_tz text, p_start time, p_end time)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	v_local timestamp := p_at AT TIME ZONE p_tz;
	v_day date := v_local::date;
BEGIN
	IF NOT schedphi._in_quiet(v_local::time, p_start, p_end) THEN
		RETURN p_at;
	END IF;
	IF p_start > p_end AND v_local::time >= p_start THEN
		v_day := v_day + 1;		-- before midnight: they end the next morning
	END IF;
	RETURN (v_day + p_end) AT TIME ZONE p_tz;
END
$$;

-- Where a visit is: the location of its first actor that has one, else
-- of the first actor's availability that covers the day, else the
-- tenant's zone and no name.  (In plpgsql, a statement at a time: under
-- Citus each is a query routed to the tenant's node.)
CREATE FUNCTION schedphi._appointment_place(p_tenant uuid, p_actors uuid[], p_start timestamptz,
											OUT timezone text, OUT name text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	SELECT l.timezone, l.name INTO timezone, name
	FROM schedphi.actor a JOIN schedphi.location l ON l.tenant = a.tenant AND l.id = a.location
	WHERE a.tenant = p_tenant AND a.id = ANY (p_actors)
	ORDER BY array_position(p_actors, a.id) LIMIT 1;
	IF timezone IS NULL THEN
		SELECT l.timezone, l.name INTO timezone, name
		FROM schedphi.availability v JOIN schedphi.location l ON l.tenant = v.tenant AND l.id = v.location
		WHERE v.tenant = p_tenant AND v.actor = ANY (p_actors) AND v.valid @> (p_start AT TIME ZONE l.timezone)::date
		ORDER BY array_position(p_actors, v.actor), v.created_at LIMIT 1;
	END IF;
	IF timezone IS NULL THEN
		SELECT t.timezone INTO timezone FROM schedphi.tenant t WHERE t.tenant = p_tenant;
	END IF;
END
$$;

-- The message a change of an appointment sends: a booking (or a hold
-- confirmed) a confirmation, a new time a reschedule, a cancellation a
-- cancellation; 'withdraw': no message, but the pending ones go (a no-show,
-- an arrival, an error, a hold that ends).  NULL: nothing to do.
CREATE FUNCTION schedphi._message_event(p_old_status text, p_new_status text, p_moved boolean)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
	SELECT CASE
		WHEN p_old_status IS NULL THEN CASE WHEN p_new_status = 'booked' THEN 'confirmation' END
		WHEN p_old_status = p_new_status THEN
			CASE WHEN p_moved AND p_new_status = 'booked' THEN 'reschedule' END
		WHEN p_new_status = 'booked' AND p_old_status IN ('pending', 'proposed', 'waitlist') THEN 'confirmation'
		WHEN p_new_status = 'cancelled' AND p_old_status = 'booked' THEN 'cancellation'
		WHEN p_new_status IN ('cancelled', 'noshow', 'entered-in-error', 'arrived', 'checked-in', 'fulfilled') THEN 'withdraw'
	END
$$;

-- Queue a statement's changes of appointments: withdraw what they end,
-- revoke the portal links of what is cancelled, and queue a message per
-- channel the patient allows and the clinic has a template for, and a
-- reminder at each of the clinic's offsets still ahead.  As the HL7
-- outbox: the statement on the tables, or on a Citus node on the tenant's
-- shards.  %1$s message, %2$s contact_preference, %3$s message_template,
-- %4$s message_settings, %5$s actor, %6$s location, %7$s tenant,
-- %8$s portal_link, %9$s availability.
CREATE FUNCTION schedphi._message_sql(p_with_old boolean)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
	SELECT pg_catalog.format($q$
	WITH ev AS MATERIALIZED (
		SELECT n.tenant, n.id, n.patient, n.during, n.actors, n.status,
			   schedphi._message_event(%s, n.status, %s) AS event
		FROM new_rows n %s),
	e AS MATERIALIZED (SELECT * FROM ev WHERE event IS NOT NULL)%s
	INSERT INTO %%1$s (tenant, id, appointment, patient, kind, channel, template, timezone, not_before, expires)
	SELECT e.tenant, pg_catalog.nextval('schedphi.message_seq'), e.id, e.patient, k.kind, cp.channel, tpl.id, z.tz,
		   k.at, CASE WHEN k.kind = 'cancellation' THEN lower(e.during) + interval '1 day' ELSE lower(e.during) END
	FROM e
	JOIN %%7$s t ON t.tenant = e.tenant
	CROSS JOIN LATERAL (
		SELECT coalesce((SELECT l.timezone FROM %%5$s a JOIN %%6$s l ON l.tenant = a.tenant AND l.id = a.location
						 WHERE a.tenant = e.tenant AND a.id = ANY (e.actors)
						 ORDER BY pg_catalog.array_position(e.actors, a.id) LIMIT 1),
						(SELECT l.timezone FROM %%9$s v JOIN %%6$s l ON l.tenant = v.tenant AND l.id = v.location
						 WHERE v.tenant = e.tenant AND v.actor = ANY (e.actors)
						   AND v.valid @> (lower(e.during) AT TIME ZONE l.timezone)::date
						 ORDER BY pg_catalog.array_position(e.actors, v.actor), v.created_at LIMIT 1),
						t.timezone) AS tz) z
	JOIN %%2$s cp ON cp.tenant = e.tenant AND cp.patient = e.patient AND cp.allowed
	LEFT JOIN %%4$s s ON s.tenant = e.tenant
	CROSS JOIN LATERAL (
		SELECT e.event AS kind, pg_catalog.now() AS at WHERE e.event IN ('confirmation', 'reschedule', 'cancellation')
		UNION ALL
		SELECT 'reminder', schedphi._message_time(lower(e.during) - o.off, z.tz, s.quiet_start, s.quiet_end)
		FROM unnest(s.offsets) o(off)
		WHERE e.event IN ('confirmation', 'reschedule') AND lower(e.during) - o.off > pg_catalog.now()) k
	CROSS JOIN LATERAL (
		SELECT mt.id FROM %%3$s mt WHERE mt.tenant = e.tenant AND mt.kind = k.kind AND mt.channel = cp.channel
		ORDER BY mt.created_at DESC, mt.id LIMIT 1) tpl
	ORDER BY e.tenant, e.id, k.at
	$q$,
	CASE WHEN p_with_old THEN 'o.status' ELSE 'NULL' END,
	CASE WHEN p_with_old THEN 'o.during IS DISTINCT FROM n.during' ELSE 'false' END,
	CASE WHEN p_with_old THEN 'JOIN old_rows o ON o.tenant = n.tenant AND o.id = n.id' ELSE '' END,
	-- a new appointment ends nothing: only changes withdraw and revoke
	-- (nor does a booking then pay for two joins that find nothing)
	CASE WHEN p_with_old THEN $w$,
	withdrawn AS (
		UPDATE %1$s m SET status = 'withdrawn',
			reason = CASE WHEN e.event = 'reschedule' THEN 'rescheduled' ELSE 'appointment ' || e.status END
		FROM e WHERE m.tenant = e.tenant AND m.appointment = e.id AND m.status = 'pending' AND e.event <> 'confirmation'
		RETURNING m.id),
	revoked AS (
		UPDATE %8$s k SET revoked_at = pg_catalog.now()
		FROM e WHERE k.tenant = e.tenant AND k.appointment = e.id AND k.revoked_at IS NULL
		  AND e.event IN ('cancellation', 'withdraw')
		RETURNING k.id)$w$ ELSE '' END)
$$;

DO $make$
DECLARE
	f record;
	v_tables text := $t$ARRAY['schedphi.message', 'schedphi.contact_preference', 'schedphi.message_template',
		'schedphi.message_settings', 'schedphi.actor', 'schedphi.location', 'schedphi.tenant', 'schedphi.portal_link',
		'schedphi.availability']$t$;
BEGIN
	FOR f IN SELECT * FROM (VALUES ('_messages_inserted', false), ('_messages_updated', true)) x(fn, with_old) LOOP
		EXECUTE pg_catalog.format($f$
			CREATE FUNCTION schedphi.%1$I() RETURNS trigger
			LANGUAGE plpgsql
			SECURITY DEFINER
			SET search_path = pg_catalog, pg_temp
			AS $body$
			BEGIN
				IF TG_TABLE_NAME = 'appointment' THEN
					%5$s
						%2$s;
					END IF;
				ELSIF EXISTS (SELECT 1 FROM new_rows) THEN
					EXECUTE pg_catalog.format(schedphi._message_sql(%3$L),
						VARIADIC schedphi._deid_tables(TG_TABLE_NAME, (SELECT n.tenant FROM new_rows n LIMIT 1), %4$s));
				END IF;
				RETURN NULL;
			END
			$body$
			$f$, f.fn,
			pg_catalog.format(schedphi._message_sql(f.with_old), 'schedphi.message', 'schedphi.contact_preference',
							  'schedphi.message_template', 'schedphi.message_settings', 'schedphi.actor',
							  'schedphi.location', 'schedphi.tenant', 'schedphi.portal_link', 'schedphi.availability'),
			f.with_old, v_tables,
			-- A new appointment is messaged only to a patient with a channel
			-- allowed: without one, the statement above (whose plan is large
			-- to start, even when it writes nothing) is not run.  A change
			-- also withdraws what was queued, so it always runs.
			CASE WHEN f.with_old THEN 'IF true THEN'
				 ELSE 'IF EXISTS (SELECT 1 FROM new_rows n JOIN schedphi.contact_preference cp
								  ON cp.tenant = n.tenant AND cp.patient = n.patient AND cp.allowed) THEN' END);
	END LOOP;
END
$make$;
CREATE TRIGGER messages_insert AFTER INSERT ON schedphi.appointment REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._messages_inserted();
CREATE TRIGGER messages_update AFTER UPDATE ON schedphi.appointment
	REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._messages_updated();
ALTER TABLE schedphi.appointment ENABLE ALWAYS TRIGGER messages_insert;
ALTER TABLE schedphi.appointment ENABLE ALWAYS TRIGGER messages_update;

-- ---------------------------------------------------------------- settings, consent, templates

CREATE FUNCTION schedphi.set_reminder_policy(tenant uuid, offsets interval[], quiet_hours text DEFAULT '21:00-09:00',
											 clinic_phone text DEFAULT NULL, portal_url text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	m text[];
	v_offsets interval[];
	-- values, not functions, in DO UPDATE: Citus runs only immutable ones there
	v_at timestamptz := now();
	v_by text := schedphi._actor_name();
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(tenant), ARRAY['admin']);
	IF offsets IS NULL OR cardinality(offsets) > 5
	   OR EXISTS (SELECT 1 FROM unnest(offsets) o WHERE o IS NULL OR extract(month FROM o) <> 0 OR extract(year FROM o) <> 0
				  OR o < interval '15 minutes' OR o > interval '30 days') THEN
		RAISE EXCEPTION 'offsets must be at most 5 intervals from 15 minutes to 30 days before the visit (in days, hours or minutes)'
			USING ERRCODE = '22023';
	END IF;
	v_offsets := ARRAY(SELECT DISTINCT o FROM unnest(offsets) o ORDER BY o DESC);
	m := regexp_match(coalesce(quiet_hours, ''), '^([0-2][0-9]):([0-5][0-9])-([0-2][0-9]):([0-5][0-9])$');
	IF m IS NULL OR m[1]::int > 23 OR m[3]::int > 23 THEN
		RAISE EXCEPTION 'quiet_hours must be HH:MM-HH:MM in the visit''s local time, e.g. 21:00-09:00 (equal times: none)'
			USING ERRCODE = '22023';
	END IF;
	IF clinic_phone IS NOT NULL AND clinic_phone !~ '^[0-9+() .-]{3,32}$' THEN
		RAISE EXCEPTION 'clinic_phone must be a telephone number (digits, spaces, + ( ) . -)' USING ERRCODE = '22023';
	END IF;
	IF portal_url IS NOT NULL AND (portal_url !~ '^https://[^[:space:]{}<>"]+$' OR length(portal_url) > 400) THEN
		RAISE EXCEPTION 'portal_url must be an https:// address; the link''s token is appended to it' USING ERRCODE = '22023';
	END IF;
	INSERT INTO schedphi.message_settings AS s (tenant, offsets, quiet_start, quiet_end, clinic_phone, portal_url)
	VALUES (tenant, v_offsets, (m[1] || ':' || m[2])::time, (m[3] || ':' || m[4])::time, clinic_phone, portal_url)
	ON CONFLICT ON CONSTRAINT message_settings_pkey DO UPDATE
	SET offsets = excluded.offsets, quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end,
		clinic_phone = excluded.clinic_phone, portal_url = excluded.portal_url,
		updated_at = v_at, updated_by = v_by;
	PERFORM schedphi._audit_change('messaging', tenant, 'message_settings', NULL, NULL,
		jsonb_build_object('event', 'reminder_policy', 'offsets', v_offsets, 'quiet_hours', quiet_hours));
END
$$;

CREATE FUNCTION schedphi.add_message_template(tenant uuid, kind text, channel text, body text)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_id uuid;
	v_bad text;
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(tenant), ARRAY['admin']);
	IF kind IS NULL OR kind NOT IN ('reminder', 'confirmation', 'cancellation', 'reschedule') THEN
		RAISE EXCEPTION 'kind must be reminder, confirmation, cancellation or reschedule' USING ERRCODE = '22023';
	END IF;
	channel := schedphi._check_channel(channel);
	IF body IS NULL OR length(btrim(body)) = 0 OR length(body) > 1600 THEN
		RAISE EXCEPTION 'body must be 1 to 1600 characters' USING ERRCODE = '22023';
	END IF;
	-- placeholders from the allowlist only: what a message may carry
	SELECT x[1] INTO v_bad FROM regexp_matches(body, '\{([^{}]*)\}', 'g') x
	WHERE x[1] NOT IN ('given_name', 'date', 'time', 'location', 'portal_link', 'clinic_phone') LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'placeholder {%} is not allowed in a message', left(v_bad, 40)
			USING ERRCODE = '22023',
				  DETAIL = 'A message carries the minimum necessary: {given_name}, {date}, {time}, {location}, {portal_link} and {clinic_phone} only.';
	END IF;
	IF regexp_replace(body, '\{(given_name|date|time|location|portal_link|clinic_phone)\}', '', 'g') ~ '[{}]' THEN
		RAISE EXCEPTION 'body has a stray { or }: placeholders are written {name}' USING ERRCODE = '22023';
	END IF;
	INSERT INTO schedphi.message_template AS t (tenant, kind, channel, body)
	VALUES (tenant, kind, channel, body) RETURNING t.id INTO v_id;
	PERFORM schedphi._audit_change('messaging', tenant, 'message_template', v_id, NULL,
		jsonb_build_object('event', 'template', 'kind', kind, 'channel', channel));
	RETURN v_id;
END
$$;

CREATE FUNCTION schedphi.set_contact_preference(patient uuid, channel text, allowed boolean,
												unencrypted_ok boolean DEFAULT false, source text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_tenant uuid;
	v_withdrawn int := 0;
	v_at timestamptz := now();
	v_by text := schedphi._actor_name();
BEGIN
	IF patient IS NULL THEN
		RAISE EXCEPTION 'patient must not be null' USING ERRCODE = '22023';
	END IF;
	PERFORM schedphi._audit_target('patient', patient, patient);
	v_tenant := schedphi._patient_tenant(patient);
	PERFORM schedphi._authorize(v_tenant, ARRAY['scheduler', 'admin', 'integration']);
	channel := schedphi._check_channel(channel);
	IF allowed IS NULL THEN
		RAISE EXCEPTION 'allowed must not be null' USING ERRCODE = '22023';
	END IF;
	IF unencrypted_ok IS NULL THEN
		RAISE EXCEPTION 'unencrypted_ok must not be null' USING ERRCODE = '22023';
	END IF;
	IF unencrypted_ok AND channel NOT IN ('sms', 'email') THEN
		RAISE EXCEPTION 'unencrypted_ok applies to sms and email only' USING ERRCODE = '22023';
	END IF;
	IF source IS NOT NULL AND length(source) > 200 THEN
		RAISE EXCEPTION 'source must be at most 200 characters' USING ERRCODE = '22023';
	END IF;
	INSERT INTO schedphi.contact_preference AS c (tenant, patient, channel, allowed, unencrypted_ok, source)
	VALUES (v_tenant, patient, channel, allowed, unencrypted_ok AND allowed, source)
	ON CONFLICT ON CONSTRAINT contact_preference_pkey DO UPDATE
	SET allowed = excluded.allowed, unencrypted_ok = excluded.unencrypted_ok, source = excluded.source,
		updated_at = v_at, updated_by = v_by;
	IF NOT allowed THEN
		UPDATE schedphi.message m SET status = 'withdrawn', reason = 'consent withdrawn'
		WHERE m.tenant = v_tenant AND m.patient = patient AND m.channel = channel AND m.status = 'pending';
		GET DIAGNOSTICS v_withdrawn = ROW_COUNT;
	END IF;
	PERFORM schedphi._audit_target(NULL, NULL, NULL);
	PERFORM schedphi._audit_change('consent', v_tenant, 'contact_preference', NULL, patient,
		jsonb_build_object('channel', channel, 'allowed', allowed, 'unencrypted_ok', unencrypted_ok AND allowed,
						   'withdrawn', v_withdrawn));
END
$$;

-- The blind index an address of a channel is known by (the patient's
-- phone_idx or email_idx).
CREATE FUNCTION schedphi._address_idx(p_tenant uuid, p_channel text, p_address text)
RETURNS bytea
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	v text;
BEGIN
	IF p_channel = 'email' THEN
		v := lower(btrim(p_address));
		IF v !~ '^[^@[:space:]]+@[^@[:space:]]+$' THEN
			RAISE EXCEPTION 'address must be an email address' USING ERRCODE = '22023';
		END IF;
		RETURN schedphi._blind(p_tenant, 'email', v);
	END IF;
	v := schedphi._norm_phone(p_address);
	IF v IS NULL OR v = '' THEN
		RAISE EXCEPTION 'address must be a telephone number' USING ERRCODE = '22023';
	END IF;
	RETURN schedphi._blind(p_tenant, 'phone', v);
END
$$;

CREATE FUNCTION schedphi.opt_out(tenant uuid, channel text, address text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_idx bytea;
	v_withdrawn int;
BEGIN
	PERFORM schedphi._authorize(schedphi._tenant_arg(tenant), ARRAY['integration', 'scheduler', 'admin']);
	channel := schedphi._check_channel(channel, ARRAY['sms', 'email', 'voice']);
	IF address IS NULL OR length(address) > 320 THEN
		RAISE EXCEPTION 'address must be the telephone number or email address that asked' USING ERRCODE = '22023';
	END IF;
	v_idx := schedphi._address_idx(tenant, channel, address);
	INSERT INTO schedphi.opt_out AS o (tenant, channel, address_idx) VALUES (tenant, channel, v_idx)
	ON CONFLICT ON CONSTRAINT opt_out_pkey DO NOTHING;
	-- what is pending for that address goes at once
	UPDATE schedphi.message m SET status = 'withdrawn', reason = 'opted out'
	FROM schedphi.patient p
	WHERE m.tenant = tenant AND m.channel = channel AND m.status = 'pending'
	  AND p.tenant = m.tenant AND p.id = m.patient
	  AND CASE WHEN channel = 'email' THEN p.email_idx ELSE p.phone_idx END = v_idx;
	GET DIAGNOSTICS v_withdrawn = ROW_COUNT;
	PERFORM schedphi._audit_change('consent', tenant, 'opt_out', NULL, NULL,
		jsonb_build_object('channel', channel, 'event', 'opt_out', 'withdrawn', v_withdrawn));
END
$$;

-- ---------------------------------------------------------------- portal links

-- base64url without padding, and back (NULL for anything else).
CREATE FUNCTION schedphi._b64url(p bytea) RETURNS text
LANGUAGE sql IMMUTABLE STRICT
AS $$ SELECT translate(replace(encode(p, 'base64'), E'\n', ''), '+/=', '-_') $$;

CREATE FUNCTION schedphi._portal_mac(p_tenant uuid, p_secret bytea, p_appointment uuid, p_purpose text,
									 p_expires timestamptz)
RETURNS bytea
LANGUAGE sql STABLE
AS $$
	SELECT schedphi._blind(p_tenant, 'portal_link',
		encode(p_secret, 'hex') || '|' || p_appointment::text || '|' || p_purpose || '|'
		|| extract(epoch FROM p_expires)::numeric::text)
$$;

-- Make a link for an appointment (its token returned once, kept nowhere).
CREATE FUNCTION schedphi._make_portal_link(p_tenant uuid, p_appointment uuid, p_ttl interval)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
	v_id uuid := gen_random_uuid();
	v_secret bytea := decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex');
	v_expires timestamptz := date_trunc('second', now() + p_ttl);
BEGIN
	INSERT INTO schedphi.portal_link (tenant, id, appointment, purpose, expires, mac)
	VALUES (p_tenant, v_id, p_appointment, 'appointment', v_expires,
			schedphi._portal_mac(p_tenant, v_secret, p_appointment, 'appointment', v_expires));
	RETURN schedphi._b64url(uuid_send(v_id) || v_secret);
END
$$;

CREATE FUNCTION schedphi.portal_link(appointment uuid, ttl interval DEFAULT '24 hours')
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	a record;
	v_token text;
BEGIN
	IF appointment IS NULL THEN
		RAISE EXCEPTION 'appointment must not be null' USING ERRCODE = '22023';
	END IF;
	SELECT x.tenant, x.patient, x.status INTO a FROM schedphi.appointment x WHERE x.id = appointment;
	IF NOT FOUND THEN
		PERFORM schedphi._unknown('appointment', appointment);
	END IF;
	PERFORM schedphi._authorize(a.tenant, ARRAY['scheduler', 'integration', 'admin']);
	IF ttl IS NULL OR extract(month FROM ttl) <> 0 OR extract(year FROM ttl) <> 0
	   OR ttl < interval '5 minutes' OR ttl > interval '30 days' THEN
		RAISE EXCEPTION 'ttl must be from 5 minutes to 30 days' USING ERRCODE = '22023';
	END IF;
	IF a.status IN ('cancelled', 'entered-in-error') THEN
		RAISE EXCEPTION 'the appointment is %: no link to it', a.status USING ERRCODE = '55000';
	END IF;
	v_token := schedphi._make_portal_link(a.tenant, appointment, ttl);
	PERFORM schedphi._audit_change('portal_link', a.tenant, 'appointment', appointment, a.patient,
		jsonb_build_object('event', 'issue', 'ttl', ttl));
	RETURN v_token;
END
$$;

-- What a portal shows of the appointment behind a link: its date, time and
-- location (in the location's zone).  consume => false: a preview (a mail
-- scanner opening the link first) that does not use it up.  Expired,
-- revoked, used, altered or unknown: 42501, each recorded.
CREATE FUNCTION schedphi.redeem_portal_link(token text, consume boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	v_raw bytea;
	v_id uuid;
	k schedphi.portal_link;
	a record;
	v_tz text;
	v_loc text;
	v_local timestamp;
BEGIN
	IF token IS NULL THEN
		RAISE EXCEPTION 'token must not be null' USING ERRCODE = '22023';
	END IF;
	IF consume IS NULL THEN
		RAISE EXCEPTION 'consume must not be null' USING ERRCODE = '22023';
	END IF;
	IF token ~ '^[A-Za-z0-9_-]{64}$' THEN
		v_raw := decode(translate(token, '-_', '+/'), 'base64');
		v_id := encode(substr(v_raw, 1, 16), 'hex')::uuid;
		SELECT x.* INTO k FROM schedphi.portal_link x WHERE x.id = v_id;
	END IF;
	IF k.id IS NULL THEN
		PERFORM schedphi._deny(NULL, 'permission denied: portal link rule', 'The link is not valid.');
	END IF;
	PERFORM schedphi._authorize(k.tenant, ARRAY['integration', 'scheduler']);
	SELECT x.patient, x.during, x.actors, x.status INTO a FROM schedphi.appointment x
	WHERE x.tenant = k.tenant AND x.id = k.appointment;
	PERFORM schedphi._audit_target('portal_link', k.id, a.patient);
	IF k.mac IS DISTINCT FROM schedphi._portal_mac(k.tenant, substr(v_raw, 17), k.appointment, k.purpose, k.expires) THEN
		PERFORM schedphi._deny(k.tenant, 'permission denied: portal link rule', 'The link is not valid.');
	END IF;
	IF k.revoked_at IS NOT NULL THEN
		PERFORM schedphi._deny(k.tenant, 'permission denied: portal link rule', 'The link was revoked.');
	END IF;
	IF k.used_at IS NOT NULL THEN
		PERFORM schedphi._deny(k.tenant, 'permission denied: portal link rule', 'The link was used.');
	END IF;
	IF k.expires <= now() THEN
		PERFORM schedphi._deny(k.tenant, 'permission denied: portal link rule', 'The link expired.');
	END IF;
	PERFORM schedphi._audit_target(NULL, NULL, NULL);
	IF consume THEN
		UPDATE schedphi.portal_link x SET used_at = now() WHERE x.tenant = k.tenant AND x.id = k.id;
	ELSE
		UPDATE schedphi.portal_link x SET previews = x.previews + 1 WHERE x.tenant = k.tenant AND x.id = k.id;
	END IF;
	SELECT p.timezone, p.name INTO v_tz, v_loc FROM schedphi._appointment_place(k.tenant, a.actors, lower(a.during)) p;
	v_local := lower(a.during) AT TIME ZONE v_tz;
	PERFORM schedphi._audit_event('portal_link', k.tenant, 'appointment', k.appointment, a.patient,
		jsonb_build_object('event', CASE WHEN consume THEN 'redeem' ELSE 'preview' END, 'link', k.id));
	RETURN jsonb_build_object('appointment', k.appointment, 'status', a.status,
							  'date', to_char(v_local, 'YYYY-MM-DD'), 'time', to_char(v_local, 'HH24:MI'),
							  'timezone', v_tz, 'location', v_loc, 'expires', k.expires,
							  'consumed', consume);
END
$$;

-- ---------------------------------------------------------------- sending

-- A message's body: the template with the appointment's facts, or, on SMS
-- and email without the patient's unencrypted_ok, only a portal link (and
-- the clinic's phone when there is no portal).
CREATE FUNCTION schedphi._message_body(p_body text, p_plain_ok boolean, p_given text, p_local timestamp,
									   p_location text, p_link text, p_phone text)
RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	v text := p_body;
BEGIN
	IF NOT p_plain_ok THEN
		IF p_link IS NOT NULL THEN
			RETURN 'You have a new message from your care team: ' || p_link;
		ELSIF p_phone IS NOT NULL THEN
			RETURN 'You have a new message from your care team. Please call ' || p_phone || '.';
		END IF;
		RETURN 'You have a new message from your care team.';
	END IF;
	v := replace(v, '{given_name}', coalesce(p_given, ''));
	v := replace(v, '{date}', to_char(p_local, 'FMDay FMDD FMMonth YYYY'));
	v := replace(v, '{time}', to_char(p_local, 'HH24:MI'));
	v := replace(v, '{location}', coalesce(p_location, ''));
	v := replace(v, '{portal_link}', coalesce(p_link, ''));
	v := replace(v, '{clinic_phone}', coalesce(p_phone, ''));
	RETURN v;
END
$$;

-- Claim what is due for a vendor: only on channels its current BAA
-- covers; none in quiet hours where the visit is, none beyond 1 a day and
-- 3 a week per patient and channel (those wait), none to an address that
-- opted out or a channel the patient no longer allows (those are
-- withdrawn).  Each claim is a disclosure to the vendor, on the ledger.
CREATE FUNCTION schedphi.claim_messages(vendor uuid, max int DEFAULT 100)
RETURNS TABLE (id bigint, channel text, address text, body text, not_before timestamptz)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	b schedphi.business_associate;
	s schedphi.message_settings;
	m record;
	v_p schedphi.patient;
	v_ap record;
	v_channels text[];
	v_now timestamptz := now();
	v_got int := 0;
	v_next timestamptz;
	v_addr text;
	v_idx bytea;
	v_given text;
	v_link text;
	v_loc text;
	v_local timestamp;
	v_plain boolean;
	v_body text;
BEGIN
	IF claim_messages.vendor IS NULL THEN
		RAISE EXCEPTION 'vendor must not be null' USING ERRCODE = '22023';
	END IF;
	IF claim_messages.max IS NULL OR claim_messages.max NOT BETWEEN 1 AND 1000 THEN
		RAISE EXCEPTION 'max must be from 1 to 1000' USING ERRCODE = '22023';
	END IF;
	SELECT x.* INTO b FROM schedphi.business_associate x WHERE x.id = claim_messages.vendor;
	IF NOT FOUND THEN
		PERFORM schedphi._unknown('business associate', claim_messages.vendor);
	END IF;
	PERFORM schedphi._authorize(b.tenant, ARRAY['integration']);
	IF NOT schedphi._baa_current(b.tenant, b.id) THEN
		PERFORM schedphi._deny(b.tenant, 'permission denied: business associate rule',
			'The vendor''s BAA is not current: nothing is sent through it, and its messages wait.',
			'An admin records a current BAA with schedphi.add_business_associate().');
	END IF;
	v_channels := ARRAY(SELECT unnest(b.services) INTERSECT SELECT unnest(ARRAY['sms', 'email', 'voice', 'portal']));
	SELECT x.* INTO s FROM schedphi.message_settings x WHERE x.tenant = b.tenant;
	FOR m IN
		SELECT x.* FROM schedphi.message x
		WHERE x.tenant = b.tenant AND x.status IN ('pending', 'claimed') AND x.not_before <= v_now
		  AND (x.status = 'pending' OR x.claimed_at < v_now - interval '15 minutes')
		  AND x.channel = ANY (v_channels)
		ORDER BY x.not_before, x.id
		LIMIT claim_messages.max * 4
		FOR UPDATE SKIP LOCKED
	LOOP
		EXIT WHEN v_got >= claim_messages.max;
		-- what can no longer be sent in time (only the candidates: the cost
		-- of a claim does not grow with the queue)
		IF m.expires <= v_now THEN
			UPDATE schedphi.message x SET status = 'expired', reason = 'its time passed unsent'
			WHERE x.tenant = m.tenant AND x.id = m.id;
			CONTINUE;
		END IF;
		-- the patient's choice, as it stands now
		SELECT c.unencrypted_ok INTO v_plain FROM schedphi.contact_preference c
		WHERE c.tenant = m.tenant AND c.patient = m.patient AND c.channel = m.channel AND c.allowed;
		IF NOT FOUND THEN
			UPDATE schedphi.message x SET status = 'withdrawn', reason = 'consent withdrawn' WHERE x.tenant = m.tenant AND x.id = m.id;
			CONTINUE;
		END IF;
		IF m.channel IN ('sms', 'email', 'voice') AND EXISTS (
				SELECT 1 FROM schedphi.patient p JOIN schedphi.opt_out o
					ON o.tenant = p.tenant AND o.channel = m.channel
				   AND o.address_idx = CASE WHEN m.channel = 'email' THEN p.email_idx ELSE p.phone_idx END
				WHERE p.tenant = m.tenant AND p.id = m.patient) THEN
			UPDATE schedphi.message x SET status = 'withdrawn', reason = 'opted out' WHERE x.tenant = m.tenant AND x.id = m.id;
			CONTINUE;
		END IF;
		-- quiet hours where the visit is: wait until they end
		IF s.tenant IS NOT NULL AND schedphi._in_quiet((v_now AT TIME ZONE m.timezone)::time, s.quiet_start, s.quiet_end) THEN
			UPDATE schedphi.message x SET not_before = schedphi._quiet_end(v_now, m.timezone, s.quiet_start, s.quiet_end),
				status = 'pending', reason = 'quiet hours'
			WHERE x.tenant = m.tenant AND x.id = m.id;
			CONTINUE;
		END IF;
		-- at most 1 a day and 3 a week per patient and channel
		SELECT max(w.next) INTO v_next FROM (
			SELECT min(x.claimed_at) + interval '1 day' AS next FROM schedphi.message x
			WHERE x.tenant = m.tenant AND x.patient = m.patient AND x.channel = m.channel
			  AND x.claimed_at > v_now - interval '1 day' AND x.id <> m.id
			HAVING count(*) >= 1
			UNION ALL
			SELECT min(y.claimed_at) + interval '7 days' FROM (
				SELECT x.claimed_at FROM schedphi.message x
				WHERE x.tenant = m.tenant AND x.patient = m.patient AND x.channel = m.channel
				  AND x.claimed_at > v_now - interval '7 days' AND x.id <> m.id
				ORDER BY x.claimed_at DESC LIMIT 3) y
			HAVING count(*) >= 3) w;
		IF v_next IS NOT NULL THEN
			UPDATE schedphi.message x SET not_before = v_next, status = 'pending', reason = 'limit: 1 a day, 3 a week'
			WHERE x.tenant = m.tenant AND x.id = m.id;
			CONTINUE;
		END IF;
		-- the address and the body: decrypted now (a read by the caller, on the ledger)
		-- (the row first, then decrypted here: under Citus a query with
		-- _open in it would decrypt on the worker node)
		SELECT p.* INTO v_p FROM schedphi.patient p WHERE p.tenant = m.tenant AND p.id = m.patient;
		v_addr := NULL;
		-- each patient a claim discloses counts against the login's reveal
		-- limit (schedphi.reveal_rate_limit, set_rate_limit), as every
		-- other read does: SP429 beyond it, and the batch rolls back (its
		-- messages wait for a higher limit or the next hour)
		PERFORM schedphi._note_reveal(m.tenant, schedphi._actor_name(), m.patient);
		IF m.channel IN ('sms', 'voice') THEN
			v_addr := schedphi._open(v_p.phone, v_p.tenant, 'patient', 'phone', v_p.id);
		ELSIF m.channel = 'email' THEN
			v_addr := schedphi._open(v_p.email, v_p.tenant, 'patient', 'email', v_p.id);
		ELSE
			v_addr := m.patient::text;		-- the portal knows its patients by schedphi's id
		END IF;
		IF v_addr IS NULL THEN
			UPDATE schedphi.message x SET status = 'withdrawn', reason = 'no address on file' WHERE x.tenant = m.tenant AND x.id = m.id;
			CONTINUE;
		END IF;
		v_plain := v_plain OR m.channel IN ('voice', 'portal');
		SELECT ap.actors, ap.during INTO v_ap FROM schedphi.appointment ap WHERE ap.tenant = m.tenant AND ap.id = m.appointment;
		v_loc := (schedphi._appointment_place(m.tenant, v_ap.actors, lower(v_ap.during))).name;
		v_local := lower(v_ap.during) AT TIME ZONE m.timezone;
		SELECT t.body INTO v_body FROM schedphi.message_template t WHERE t.tenant = m.tenant AND t.id = m.template;
		v_link := NULL;
		IF s.portal_url IS NOT NULL AND (NOT v_plain OR v_body LIKE '%{portal_link}%') AND m.kind <> 'cancellation' THEN
			v_link := s.portal_url || schedphi._make_portal_link(m.tenant, m.appointment,
				least(greatest(m.expires - v_now, interval '1 hour') + interval '1 day', interval '30 days'));
		END IF;
		v_given := NULL;
		IF v_plain AND v_body LIKE '%{given_name}%' THEN
			v_given := schedphi._open(v_p.given, v_p.tenant, 'patient', 'given', v_p.id);
		END IF;
		UPDATE schedphi.message x SET status = 'claimed', vendor = b.id, claimed_at = v_now, claims = x.claims + 1, reason = NULL
		WHERE x.tenant = m.tenant AND x.id = m.id;
		PERFORM schedphi._audit_event('disclose', m.tenant, 'message', NULL, m.patient,
			jsonb_build_object('message', m.id, 'vendor', b.id, 'vendor_name', b.name, 'channel', m.channel, 'kind', m.kind,
							   'content', CASE WHEN v_plain THEN 'template' ELSE 'portal link only' END));
		v_got := v_got + 1;
		id := m.id;
		channel := m.channel;
		address := v_addr;
		body := schedphi._message_body(v_body, v_plain, v_given, v_local, v_loc, v_link, s.clinic_phone);
		not_before := m.not_before;
		RETURN NEXT;
	END LOOP;
END
$$;

-- A vendor's report of a claimed message.  'failed' before the fifth claim
-- puts it back to be claimed again after a pause that doubles (5 minutes,
-- 10, 20, 40); a later 'delivered' or 'bounced' may follow a 'sent'.
CREATE FUNCTION schedphi.mark_sent(id bigint, status text, vendor_ref text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	m schedphi.message;
	v_status text := status;
BEGIN
	IF id IS NULL THEN
		RAISE EXCEPTION 'id must not be null' USING ERRCODE = '22023';
	END IF;
	SELECT x.* INTO m FROM schedphi.message x WHERE x.id = id;
	IF NOT FOUND THEN
		IF (SELECT c.via FROM schedphi._context() c) IS NULL AND schedphi._session_superuser() THEN
			RAISE EXCEPTION 'unknown message %', id USING ERRCODE = '22023';
		END IF;
		PERFORM schedphi._deny_tenant(NULL);
	END IF;
	PERFORM schedphi._authorize(m.tenant, ARRAY['integration']);
	IF v_status IS NULL OR v_status NOT IN ('sent', 'delivered', 'failed', 'bounced') THEN
		RAISE EXCEPTION 'status must be sent, delivered, failed or bounced' USING ERRCODE = '22023';
	END IF;
	IF vendor_ref IS NOT NULL AND vendor_ref !~ '^[A-Za-z0-9._:@/+=-]{1,200}$' THEN
		RAISE EXCEPTION 'vendor_ref must be the vendor''s message id (1 to 200 of A-Z a-z 0-9 . _ : @ / + = -)'
			USING ERRCODE = '22023';
	END IF;
	IF NOT (m.status = 'claimed' OR (m.status = 'sent' AND v_status IN ('delivered', 'bounced', 'failed'))) THEN
		RAISE EXCEPTION 'message % is %: only a claimed (or sent) message can be reported', id, m.status
			USING ERRCODE = '55000';
	END IF;
	IF v_status = 'failed' AND m.claims < 5 AND m.expires > now() THEN
		UPDATE schedphi.message x SET status = 'pending', claimed_at = NULL, reported_at = now(),
			not_before = now() + interval '5 minutes' * power(2, m.claims - 1), reason = 'failed, to be tried again',
			vendor_ref = coalesce(vendor_ref, x.vendor_ref)
		WHERE x.tenant = m.tenant AND x.id = m.id;
	ELSE
		UPDATE schedphi.message x SET status = v_status, reported_at = now(), reason = NULL,
			vendor_ref = coalesce(vendor_ref, x.vendor_ref)
		WHERE x.tenant = m.tenant AND x.id = m.id;
	END IF;
	PERFORM schedphi._audit_change('message', m.tenant, 'message', NULL, m.patient,
		jsonb_build_object('message', m.id, 'status', v_status, 'vendor', m.vendor));
END
$$;

-- The queue as an admin sees it: no body, no address; why each message
-- that waits is waiting (a lapsed BAA names the vendor whose it was).
CREATE FUNCTION schedphi.message_queue(tenant uuid)
RETURNS TABLE (id bigint, appointment uuid, kind text, channel text, status text, not_before timestamptz,
			   reason text, vendor uuid, claims int)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	v_tenant uuid := schedphi._tenant_arg(message_queue.tenant);
	v_today date;
BEGIN
	PERFORM schedphi._authorize(v_tenant, ARRAY['admin']);
	v_today := schedphi._tenant_today(v_tenant);
	RETURN QUERY
	SELECT m.id, m.appointment, m.kind, m.channel, m.status, m.not_before,
		   CASE WHEN m.status = 'pending' AND NOT EXISTS (
					SELECT 1 FROM schedphi.business_associate b
					WHERE b.tenant = m.tenant AND m.channel = ANY (b.services)
					  AND b.baa_signed <= v_today AND b.baa_expires >= v_today)
				THEN coalesce((SELECT 'held: the BAA of ' || b.name || ' (' || m.channel || ') is not current since '
									  || b.baa_expires::text
							   FROM schedphi.business_associate b
							   WHERE b.tenant = m.tenant AND m.channel = ANY (b.services)
							   ORDER BY b.baa_expires DESC LIMIT 1),
							  'held: no business associate with a current BAA sends ' || m.channel)
				ELSE m.reason END,
		   m.vendor, m.claims
	FROM schedphi.message m
	WHERE m.tenant = v_tenant
	ORDER BY m.id;
END
$$;
