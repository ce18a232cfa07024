-- Installation: what CREATE EXTENSION makes, that a second database and a
-- re-install work, and that schedphi.* settings cannot be invented.
SELECT extname, extrelocatable, extnamespace::regnamespace AS schema
FROM pg_extension WHERE extname = 'schedphi';
SELECT extversion = (SELECT default_version FROM pg_available_extensions WHERE name = 'schedphi') AS current_version
FROM pg_extension WHERE extname = 'schedphi';

-- The group roles, NOLOGIN.
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'schedphi\_%' ORDER BY 1;

-- The public API.
SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS arguments,
	   pg_get_function_result(p.oid) AS result
FROM pg_proc p
WHERE p.pronamespace = 'schedphi'::regnamespace AND p.proname !~ '^_'
ORDER BY 1, 2;
SELECT c.relname, c.relkind FROM pg_class c
WHERE c.relnamespace = 'schedphi'::regnamespace AND c.relkind IN ('r', 'v', 'p')
  AND c.relname !~ '^audit_log_[0-9]{6}$'  -- monthly partitions, made by the audit worker
ORDER BY 1;

-- Every key leads with the tenant (but the restricted ZIP3 zones': reference
-- data of the installation, no tenant's; a reference table under Citus).
SELECT conrelid::regclass AS tbl, conname
FROM pg_constraint
WHERE connamespace = 'schedphi'::regnamespace AND contype IN ('p', 'f', 'u', 'x')
  AND (SELECT attname FROM pg_attribute WHERE attrelid = conrelid AND attnum = conkey[1]) <> 'tenant'
  AND conrelid <> 'schedphi.zip3_restricted'::regclass;

-- The library reserves the schedphi. prefix: no placeholder can be set.
SET schedphi.tenant = '00000000-0000-0000-0000-000000000000';
SELECT set_config('schedphi.role', 'admin', false);

-- A second database installs the extension alongside (the roles exist).
CREATE DATABASE schedphi_regress_second;
\c schedphi_regress_second
SET client_min_messages = warning;
CREATE EXTENSION schedphi CASCADE;
SELECT count(*) AS roles FROM pg_roles WHERE rolname LIKE 'schedphi\_%';
\c schedphi_regress
DROP DATABASE schedphi_regress_second;

-- Drop and re-create in the same database.
DROP EXTENSION schedphi;
CREATE EXTENSION schedphi;
SELECT count(*) AS tables FROM pg_tables WHERE schemaname = 'schedphi' AND tablename !~ '^audit_log_[0-9]{6}$';
