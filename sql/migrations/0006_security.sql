-- Privileges and row-level security.
--
-- gth_app      the application, acting for the user in app.current_user_id: reads and
--              writes only that user's rows; hotel ratings are public.
-- gth_readonly read-only sessions acting for a user (same row filter, no writes at all).
-- gth_admin    reads every row for analytics (no writes; never the OAuth token columns).
-- gth_maint    gth-maintd: only what the maintenance jobs need (see docs/schema.md).
--
-- RLS is enabled AND forced on every table holding a user's data (forced: the owner is
-- filtered too, unless it is a superuser or BYPASSRLS role as required in 0002). Policies
-- call app_current_user_id() once per statement ((SELECT ...) makes it an InitPlan).

DO $$
DECLARE
    -- table -> column naming the user who owns the row
    v_tables text[][] := ARRAY[
        ['users', 'id'],
        ['user_consent_history', 'user_id'],
        ['oauth_accounts', 'user_id'],
        ['trips', 'user_id'],
        ['chat_sessions', 'user_id'],
        ['chat_messages', 'user_id'],
        ['bookings', 'user_id'],
        ['booking_items', 'user_id'],
        ['flight_bookings', 'user_id'],
        ['hotel_bookings', 'user_id'],
        ['hotel_ratings', 'user_id'],
        ['crypto_payments', 'user_id'],
        ['trip_predictions', 'user_id'],
        ['outcome_predictions', 'user_id'],
        ['referrals', 'referrer_user_id'],
        ['shared_content', 'user_id'],
        ['analytics_events', 'user_id'],
        ['user_behavior_log', 'user_id']];
    v_table text;
    v_col   text;
    i       integer;
BEGIN
    FOR i IN 1 .. array_length(v_tables, 1) LOOP
        v_table := v_tables[i][1];
        v_col := v_tables[i][2];
        EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', v_table);
        EXECUTE format('ALTER TABLE public.%I FORCE ROW LEVEL SECURITY', v_table);
        EXECUTE format(
            'CREATE POLICY %I ON public.%I FOR ALL TO gth_app, gth_readonly '
            'USING (%I = (SELECT public.app_current_user_id())) '
            'WITH CHECK (%I = (SELECT public.app_current_user_id()))',
            v_table || '_owner_access', v_table, v_col, v_col);
        EXECUTE format('CREATE POLICY %I ON public.%I FOR SELECT TO gth_admin USING (true)',
                       v_table || '_admin_read', v_table);
        IF v_table NOT IN ('user_consent_history', 'users') THEN
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON public.%I TO gth_app',
                           v_table);
        END IF;
        IF v_table <> 'oauth_accounts' THEN
            EXECUTE format('GRANT SELECT ON public.%I TO gth_readonly, gth_admin', v_table);
        END IF;
    END LOOP;
END
$$;

-- Users: the app reads and changes its own row and signs up (inserts a row whose id it
-- set in app.current_user_id); it never hard-deletes (soft delete via deleted_at).
GRANT SELECT, INSERT, UPDATE ON public.users TO gth_app;
-- Consent history is append-only for the application.
GRANT SELECT, INSERT ON public.user_consent_history TO gth_app;
-- OAuth tokens: only the application (for its own user) ever reads them.
GRANT SELECT (id, user_id, provider, provider_account_id, provider_email, token_expires_at,
              scope, profile, created_at, updated_at)
    ON public.oauth_accounts TO gth_readonly, gth_admin;

-- Public data: hotel ratings are social proof, readable by everyone.
CREATE POLICY hotel_ratings_public_read ON public.hotel_ratings FOR SELECT TO PUBLIC
    USING (true);
-- A referred user sees the referral that brought them.
CREATE POLICY referrals_referred_read ON public.referrals FOR SELECT TO gth_app, gth_readonly
    USING (referred_user_id = (SELECT public.app_current_user_id()));
-- Anonymous analytics (before login) have no user.
CREATE POLICY analytics_events_anonymous_insert ON public.analytics_events FOR INSERT
    TO gth_app WITH CHECK (user_id IS NULL);

-- Partitions: reachable only through their parent. Those already created get RLS too
-- (create_month_partition does it for new ones).
DO $$
DECLARE
    v_part regclass;
BEGIN
    FOR v_part IN
        SELECT i.inhrelid::regclass FROM pg_inherits i
         WHERE i.inhparent IN ('public.chat_messages'::regclass,
                               'public.analytics_events'::regclass,
                               'public.user_behavior_log'::regclass)
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', v_part);
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', v_part);
    END LOOP;
END
$$;

-- Search caches hold no personal data: no row-level security.
GRANT SELECT, INSERT, UPDATE, DELETE ON public.flight_search_cache, public.hotel_search_cache
    TO gth_app;
GRANT SELECT ON public.flight_search_cache, public.hotel_search_cache
    TO gth_readonly, gth_admin;

-- Audit log: nobody but the audit functions writes; admins and the daemon read.
ALTER TABLE public.audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.audit_log FORCE ROW LEVEL SECURITY;
REVOKE ALL ON public.audit_log FROM PUBLIC;
GRANT SELECT ON public.audit_log TO gth_admin, gth_maint;
CREATE POLICY audit_log_admin_read ON public.audit_log FOR SELECT TO gth_admin USING (true);
CREATE POLICY audit_log_maint_read ON public.audit_log FOR SELECT TO gth_maint USING (true);

------------------------------------------------------------------------------------------
-- gth_maint: exactly what the jobs do.
------------------------------------------------------------------------------------------
-- cache cleanup: find and delete expired rows.
GRANT SELECT, DELETE ON public.flight_search_cache, public.hotel_search_cache TO gth_maint;
-- payment expiry: pending -> expired / failed.
GRANT SELECT ON public.crypto_payments TO gth_maint;
GRANT UPDATE (status, updated_at) ON public.crypto_payments TO gth_maint;
CREATE POLICY crypto_payments_maint_read ON public.crypto_payments FOR SELECT TO gth_maint
    USING (true);
CREATE POLICY crypto_payments_maint_expire ON public.crypto_payments FOR UPDATE TO gth_maint
    USING (status = 'pending') WITH CHECK (status IN ('expired', 'failed'));
-- GDPR: find soft-deleted users; the erasure itself runs through SECURITY DEFINER functions
-- (audit_redact_user() of 0005 and the GDPR job's own functions, 0032).
GRANT SELECT (id, deleted_at) ON public.users TO gth_maint;
CREATE POLICY users_maint_read_deleted ON public.users FOR SELECT TO gth_maint
    USING (deleted_at IS NOT NULL);
-- partitions
REVOKE EXECUTE ON FUNCTION public.create_month_partition(regclass, date) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.detach_month_partition(regclass, date, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.create_month_partition(regclass, date) TO gth_maint, gth_admin;
GRANT EXECUTE ON FUNCTION public.detach_month_partition(regclass, date, boolean) TO gth_maint;

