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
SELECT throws_ok($$SELECT count(*) FROM schedphi.patients$$, 'SP429', NULL, 'listing every patient counts too');
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION tst_rl2;
SELECT lives_ok(format($$SELECT schedphi.patient_record(%L)$$, :'p3'), 'limits are per actor');
SELECT lives_ok(format($$SELECT schedphi.find_patient(%L, mrn => 'SYN-0001')$$, :'tenant'), 'for lookups too');
RESET SESSION AUTHORIZATION;

SELECT * FROM finish();
ROLLBACK;
