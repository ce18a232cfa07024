-- Rate limits in shared memory: find_patient calls per actor per minute and
-- distinct patients revealed per actor per hour; SP429 beyond them; only a
-- superuser sets them.
BEGIN;
SELECT no_plan();
SET LOCAL client_min_messages = warning;
SELECT * FROM tst.clinic('America/New_York') \gset
CREATE ROLE tst_rl LOGIN;
CREATE ROLE tst_rl2 LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_rl', 'scheduler');
SELECT schedphi.add_member(:'tenant', 'tst_rl2', 'scheduler');
SELECT schedphi.set_purpose('TREAT');
SET LOCAL schedphi.lookup_rate_limit = 3;
SET LOCAL schedphi.reveal_rate_limit = 2;

SET SESSION AUTHORIZATION tst_rl;
SELECT throws_ok($$SET schedphi.lookup_rate_limit = 1000$$, '42501', NULL, 'nobody raises their own limit');
SELECT lives_ok(format($$SELECT schedphi.find_patient(%L, mrn => 'SYN-0001')$$, :'tenant'), 'lookup 1');
SELECT lives_ok(format($$SELECT schedphi.find_patient(%L, mrn => 'SYN-0002')$$, :'tenant'), 'lookup 2');
SELECT lives_ok(format($$SELECT schedphi.find_patient(%L, mrn => 'SYN-0003')$$, :'tenant'), 'lookup 3');
SELECT throws_ok(format($$SELECT schedphi.find_patient(%L, mrn => 'SYN-0001')$$, :'tenant'), 'SP429',
	'rate limit exceeded: schedphi.lookup_rate_limit', 'the fourth lookup in a minute: SP429 naming the limit');
SELECT lives_ok(format($$SELECT schedphi.patient_record(%L)$$, :'p1'), 'reveal patient 1');
SELECT lives_ok(format($$SELECT schedphi.patient_record(%L)$$, :'p2'), 'reveal patient 2');
SELECT lives_ok(format($$SELECT schedphi.patient_record(%L)$$, :'p1'), 'patient 1 again does not count twice');
SELECT throws_ok(format($$SELECT schedphi.patient_record(%L)$$, :'p3'), 'SP429',
	'rate limit exceeded: schedphi.reveal_rate_limit', 'a third distinct patient in an hour: SP429');
SELECT lives_ok($$SELECT count(*) FROM schedphi.patients$$, 'counting patients decrypts nothing, so counts nothing');
SELECT throws_ok($$SELECT count(family) FROM schedphi.patients$$, 'SP429', NULL, 'reading every patient''s name counts');
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION tst_rl2;
SELECT lives_ok(format($$SELECT schedphi.patient_record(%L)$$, :'p3'), 'limits are per actor');
SELECT lives_ok(format($$SELECT schedphi.find_patient(%L, mrn => 'SYN-0001')$$, :'tenant'), 'for lookups too');
RESET SESSION AUTHORIZATION;

-- limits for a role or a login, set by a superuser, win over the settings
CREATE ROLE tst_rl3 LOGIN;
CREATE ROLE tst_rl4 LOGIN;
SELECT schedphi.add_member(:'tenant', 'tst_rl3', 'billing');
SELECT schedphi.add_member(:'tenant', 'tst_rl4', 'billing');
SELECT lives_ok(format($$SELECT schedphi.set_rate_limit(%L, role => 'billing', reveals_per_hour => 3)$$, :'tenant'),
	'a superuser sets a limit for a role');
SELECT lives_ok(format($$SELECT schedphi.set_rate_limit(%L, login => 'tst_rl4', reveals_per_hour => 1,
												  lookups_per_minute => 1)$$, :'tenant'),
	'and for a login');
SELECT is((SELECT count(*)::int FROM schedphi.audit_log WHERE action = 'rate_limit' AND tenant = :'tenant'), 2,
	'each is on the audit ledger');
SET SESSION AUTHORIZATION tst_rl3;
SELECT schedphi.set_purpose('PAYMENT');
SELECT lives_ok(format($$SELECT schedphi.patient_record(%L), schedphi.patient_record(%L), schedphi.patient_record(%L)$$,
					   :'p1', :'p2', :'p3'), 'the role''s limit (3) applies, not the setting (2)');
SELECT throws_ok($$SELECT schedphi.set_rate_limit(NULL, role => 'billing', reveals_per_hour => 100000)$$, '42501',
	'permission denied: only a superuser may set rate limits', 'a member cannot set limits, even for itself');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION tst_rl4;
SELECT schedphi.set_purpose('PAYMENT');
SELECT lives_ok(format($$SELECT schedphi.patient_record(%L)$$, :'p1'), 'a login''s own limit: the first patient');
SELECT throws_ok(format($$SELECT schedphi.patient_record(%L)$$, :'p2'), 'SP429',
	'rate limit exceeded: schedphi.reveal_rate_limit', 'the login''s limit (1) wins over its role''s (3)');
SELECT is(tst.error_of(format($$SELECT schedphi.find_patient(%L, family => 'Synthetica', birth_date => '1970-01-01')$$, :'tenant'))
		  || tst.error_of(format($$SELECT schedphi.find_patient(%L, family => 'Fictional', birth_date => '1985-06-15')$$, :'tenant')),
	'00000SP429: rate limit exceeded: schedphi.lookup_rate_limit', 'for lookups too');
RESET SESSION AUTHORIZATION;
SELECT lives_ok(format($$SELECT schedphi.set_rate_limit(%L, login => 'tst_rl4')$$, :'tenant'),
	'both limits NULL removes the login''s entry');
SELECT is((SELECT count(*)::int FROM schedphi.rate_limit WHERE tenant = :'tenant'), 1, 'only the role''s is left');
SELECT is(tst.error_of(format($$SELECT schedphi.set_rate_limit(%L, role => 'billing', login => 'tst_rl4', reveals_per_hour => 5)$$, :'tenant')),
	'22023: give either a role or a login', 'a role or a login, not both');
SELECT is(tst.error_of(format($$SELECT schedphi.set_rate_limit(%L, role => 'billing', reveals_per_hour => 0)$$, :'tenant')),
	'22023: reveals_per_hour must be between 1 and 1000000', 'a limit is positive');
SELECT is(tst.error_of(format($$SELECT schedphi.set_rate_limit(%L, role => 'janitor', reveals_per_hour => 5)$$, :'tenant')),
	'22023: unknown role', 'of a known role');
SELECT is(tst.error_of($$SET schedphi.reveal_rate_limit = 100000$$), '00000', 'the settings go up to a million now (was 4,000)');

-- an integration login syncing an EHR's patient list: 100,000 distinct
-- patients in an hour are counted exactly (the counting itself, as
-- patient_record and the views call it before they decrypt)
SET LOCAL schedphi.reveal_rate_limit = 100000;
SELECT is(tst.error_of(format($$SELECT count(schedphi._note_reveal(%L, 'tst-ehr-sync', md5('p' || g)::uuid))
							   FROM generate_series(1, 100000) g$$, :'tenant')), '00000',
	'100,000 distinct patients in an hour are allowed');
SELECT is(tst.error_of(format($$SELECT count(schedphi._note_reveal(%L, 'tst-ehr-sync', md5('p' || g)::uuid))
							   FROM generate_series(1, 100000, 7) g$$, :'tenant')), '00000',
	'any of them again does not count twice');
SELECT is(tst.error_of(format($$SELECT schedphi._note_reveal(%L, 'tst-ehr-sync', md5('p100001')::uuid)$$, :'tenant')),
	'SP429: rate limit exceeded: schedphi.reveal_rate_limit', 'the 100,001st is refused');
SELECT is(tst.error_of(format($$SELECT schedphi._note_reveal(%L, 'tst-ehr-sync-2', md5('p100001')::uuid)$$, :'tenant')),
	'00000', 'another actor is counted apart');

SELECT * FROM finish();
ROLLBACK;
