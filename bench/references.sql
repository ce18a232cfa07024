-- Loaded by bench/run.sh after bench/setup.sql (the other benchmarks do not
-- need these tables).
--
-- Two more references of benchmark 3, to show in the same run what the
-- data model's foreign keys and audit record cost: copies of appointment
-- and appointment_actor with the same columns, defaults, checks and indexes
-- (the exclusion constraint among them) but no foreign keys.  The nofk_
-- copy keeps the appointment's audit trigger; the noaudit_ copy has none.
CREATE TABLE bench.nofk_appointment (LIKE schedphi.appointment INCLUDING ALL);
CREATE TABLE bench.nofk_appointment_actor (LIKE schedphi.appointment_actor INCLUDING ALL);
CREATE TRIGGER audit AFTER UPDATE OR DELETE ON bench.nofk_appointment
	FOR EACH ROW EXECUTE FUNCTION schedphi._audit_write('patient', 'appointment');
CREATE TRIGGER audit_insert AFTER INSERT ON bench.nofk_appointment REFERENCING NEW TABLE AS inserted
	FOR EACH STATEMENT EXECUTE FUNCTION schedphi._audit_write('patient', 'appointment');
CREATE TABLE bench.noaudit_appointment (LIKE schedphi.appointment INCLUDING ALL);
CREATE TABLE bench.noaudit_appointment_actor (LIKE schedphi.appointment_actor INCLUDING ALL);


-- They start with a copy of every loaded booking, like bench.bare.
ALTER TABLE bench.nofk_appointment DISABLE TRIGGER audit_insert;
INSERT INTO bench.nofk_appointment SELECT * FROM schedphi.appointment;
ALTER TABLE bench.nofk_appointment ENABLE TRIGGER audit_insert;
INSERT INTO bench.nofk_appointment_actor SELECT * FROM schedphi.appointment_actor;
INSERT INTO bench.noaudit_appointment SELECT * FROM schedphi.appointment;
INSERT INTO bench.noaudit_appointment_actor SELECT * FROM schedphi.appointment_actor;

VACUUM ANALYZE bench.nofk_appointment, bench.nofk_appointment_actor,
	bench.noaudit_appointment, bench.noaudit_appointment_actor;
