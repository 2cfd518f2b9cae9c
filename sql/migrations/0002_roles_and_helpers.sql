-- Roles, schema privileges and small helpers shared by the application schema.
--
-- Roles are cluster-wide while many databases of one cluster run these migrations (the
-- test template and its clones), so they are created only when missing, never with a bare
-- CREATE ROLE. They are NOLOGIN: deployments create login roles that are members of them
-- (CREATE ROLE app_login LOGIN IN ROLE gth_app, password set outside any SQL file).
--
-- The migrations must run as a superuser or a role with BYPASSRLS (on Supabase the
-- `postgres` role): row-level security is forced on the user tables, and the SECURITY
-- DEFINER functions of this schema (partitions, GDPR erasure, audit redaction) run as
-- that owner and must see every row.

DO $$
BEGIN
    IF getdatabaseencoding() <> 'UTF8' THEN
        RAISE EXCEPTION 'the Global Travel Hub schema needs a UTF8 database, not %',
            getdatabaseencoding() USING ERRCODE = 'feature_not_supported';
    END IF;
    IF NOT (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'migrations must run as a superuser or a BYPASSRLS role, not %',
            current_user USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['gth_app', 'gth_readonly', 'gth_admin', 'gth_maint'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object THEN
                NULL;  -- another database of this cluster created it a moment ago
            END;
        END IF;
    END LOOP;
END
$$;

-- Application roles use the public schema but never create objects in it.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO gth_app, gth_readonly, gth_admin, gth_maint;

-- The daemon's own schema: the run history and everything later migrations add there.
GRANT USAGE ON SCHEMA maintenance TO gth_maint;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA maintenance TO gth_maint;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA maintenance TO gth_maint;
ALTER DEFAULT PRIVILEGES IN SCHEMA maintenance
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO gth_maint;
ALTER DEFAULT PRIVILEGES IN SCHEMA maintenance
    GRANT USAGE, SELECT ON SEQUENCES TO gth_maint;

-- VACUUM / ANALYZE / REINDEX / REFRESH: PostgreSQL 17 added the predefined role
-- pg_maintain; on 15 and 16 those commands run as the table owner (see docs/schema.md).
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 170000 THEN
        IF NOT pg_has_role('gth_maint', 'pg_maintain', 'MEMBER') THEN
            EXECUTE 'GRANT pg_maintain TO gth_maint';
        END IF;
    END IF;
END
$$;

-- The acting application user: SET app.current_user_id = '<uuid>' (or set_config(...,
-- true) per transaction). NULL when unset, so policies match nothing.
CREATE FUNCTION public.app_current_user_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.current_user_id', true), '')::uuid $$;

COMMENT ON FUNCTION public.app_current_user_id() IS
    'The application user the session acts for (setting app.current_user_id), NULL if unset.';

-- updated_at maintenance for every table that has the column.
CREATE FUNCTION public.set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
