-- GDPR erasure and analytics retention (see docs/gdpr.md for the field-by-field decisions).
--
-- ONE implementation, two callers:
--   * gth-maintd's gdpr_purge job: gdpr_due_users() for the list, then one
--     gdpr_erase_user() call per user (one transaction each), then
--     gdpr_purge_analytics_batch() per partition in committed batches;
--   * CALL gdpr_purge_old_data(); (psql, pg_cron) loops over the same functions and
--     COMMITs after every user and every batch (so it must be CALLed outside a transaction
--     block).
--
-- Erasure of one user, in ONE transaction (all or nothing):
--   * records the law requires keeping (bookings with their items, flight and hotel
--     details, crypto payments; default 7 years after the booking or its last payment)
--     stay, with personal fields scrubbed; those past the retention are deleted;
--   * everything else that references the user is deleted: every table with a foreign key
--     to users (found in the catalog, so new tables and detached/archived partitions are
--     included), through the partitioned parents for attached partitions;
--   * the users row is anonymised while retained records point at it, deleted otherwise;
--   * the user's audit payloads are redacted last (the erasure's own audit rows included);
--     hashes stay, so the chain still verifies;
--   * the erasure is recorded in gdpr_erasures; once every retained record has passed the
--     retention a later run deletes the records and the anonymised users row.
-- Replaces the earlier gdpr_erase_user(uuid, timestamptz) of 0006, which deleted the
-- bookings and payments the law requires keeping.

DO $$
DECLARE
    v_sig text;
BEGIN
    FOR v_sig IN
        SELECT p.oid::regprocedure::text FROM pg_proc p
         WHERE p.pronamespace = 'public'::regnamespace
           AND p.proname IN ('gdpr_erase_user', 'gdpr_purge_old_data')
    LOOP
        EXECUTE format('DROP ROUTINE %s', v_sig);
    END LOOP;
END
$$;

-- The register of erasures: proof that and when a user was erased, and what is still kept.
CREATE TABLE public.gdpr_erasures (
    user_id             uuid        NOT NULL,
    first_erased_at     timestamptz NOT NULL DEFAULT now(),
    last_run_at         timestamptz NOT NULL DEFAULT now(),
    user_row            text        NOT NULL,
    retained_bookings   integer     NOT NULL DEFAULT 0,
    oldest_retained_at  timestamptz,
    newest_retained_at  timestamptz,
    counts              jsonb       NOT NULL DEFAULT '{}',
    CONSTRAINT gdpr_erasures_pkey PRIMARY KEY (user_id),
    CONSTRAINT gdpr_erasures_user_row_check CHECK (user_row IN ('anonymised', 'deleted')),
    CONSTRAINT gdpr_erasures_retained_check CHECK (retained_bookings >= 0),
    CONSTRAINT gdpr_erasures_retained_dates_check
        CHECK ((retained_bookings = 0) = (oldest_retained_at IS NULL)),
    CONSTRAINT gdpr_erasures_deleted_check CHECK (user_row = 'anonymised' OR retained_bookings = 0)
);
CREATE INDEX gdpr_erasures_retention_idx ON public.gdpr_erasures (oldest_retained_at)
    WHERE user_row = 'anonymised';
CREATE INDEX gdpr_erasures_counts_gin ON public.gdpr_erasures USING gin (counts);
COMMENT ON TABLE public.gdpr_erasures IS
    'GDPR erasures done by gdpr_erase_user(): when, whether the users row was anonymised '
    '(retained legal records point at it) or deleted, and the rows deleted/scrubbed.';
ALTER TABLE public.gdpr_erasures ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.gdpr_erasures FORCE ROW LEVEL SECURITY;
REVOKE ALL ON public.gdpr_erasures FROM PUBLIC;
GRANT SELECT ON public.gdpr_erasures TO gth_admin, gth_maint;
CREATE POLICY gdpr_erasures_admin_read ON public.gdpr_erasures FOR SELECT
    TO gth_admin, gth_maint USING (true);

-- A booking is a legal record until p_cutoff (now() - retention) has passed both its
-- booking time and every payment made for it.
CREATE FUNCTION public.gdpr_booking_retained(p_booking_id uuid, p_booked_at timestamptz,
                                             p_cutoff timestamptz)
    RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, public
    AS $$
    SELECT p_booked_at >= p_cutoff
        OR EXISTS (SELECT 1 FROM public.crypto_payments p
                    WHERE p.booking_id = p_booking_id
                      AND greatest(p.created_at, p.confirmed_at) >= p_cutoff)
$$;

-- Users due: soft-deleted at least p_grace ago and never erased ('erase'), or erased with
-- retained records of which the oldest has passed the retention ('retention').
CREATE FUNCTION public.gdpr_due_users(p_grace interval, p_legal_retention interval,
                                      p_limit integer DEFAULT 1000)
    RETURNS TABLE (user_id uuid, deleted_at timestamptz, phase text)
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
    SELECT d.user_id, d.deleted_at, d.phase FROM (
        SELECT u.id AS user_id, u.deleted_at, 'erase' AS phase
          FROM public.users u
         WHERE u.deleted_at IS NOT NULL
           AND u.deleted_at <= now() - p_grace
           AND NOT EXISTS (SELECT 1 FROM public.gdpr_erasures e WHERE e.user_id = u.id)
        UNION ALL
        SELECT u.id, u.deleted_at, 'retention'
          FROM public.gdpr_erasures e
          JOIN public.users u ON u.id = e.user_id
         WHERE e.user_row = 'anonymised'
           AND (e.oldest_retained_at IS NULL OR e.oldest_retained_at < now() - p_legal_retention)
    ) d
     ORDER BY d.deleted_at, d.user_id
     LIMIT greatest(p_limit, 0)
$$;

-- Every table holding a user's rows: each single-column foreign key to users (partitioned
-- tables once, through the parent; detached/archived partitions keep their key and are
-- listed too), classified for gdpr_erase_user():
--   retained  legal records, kept scrubbed while their booking is within the retention;
--   unlink    referrals that brought the user: the referrer's row stays, the link goes;
--   late      deleted after the legal records are handled: audited tables (their first
--             write takes the audit chain lock), tables a legal record references (deleting
--             a trip cascades to its bookings), and the consent history (anonymising the
--             users row appends to it);
--   bulk      everything else, deleted first, before the transaction holds the chain lock.
CREATE FUNCTION public.gdpr_user_tables()
    RETURNS TABLE (tbl regclass, col name, kind text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, public
    AS $$
    WITH retained(rel) AS (
        SELECT unnest(ARRAY['public.bookings', 'public.booking_items', 'public.flight_bookings',
                            'public.hotel_bookings', 'public.crypto_payments',
                            'public.hotel_ratings']::regclass[])
    )
    SELECT c.conrelid::regclass, a.attname,
           CASE
               WHEN c.conrelid IN (SELECT rel FROM retained) THEN 'retained'
               WHEN c.conrelid = 'public.referrals'::regclass AND a.attname = 'referred_user_id'
                   THEN 'unlink'
               WHEN c.conrelid = 'public.user_consent_history'::regclass
                    OR EXISTS (SELECT 1 FROM pg_trigger t
                                WHERE t.tgrelid = c.conrelid
                                  AND t.tgfoid = 'public.audit_capture()'::regprocedure)
                    OR EXISTS (SELECT 1 FROM pg_constraint f
                                WHERE f.contype = 'f' AND f.confrelid = c.conrelid
                                  AND f.conrelid IN (SELECT rel FROM retained))
                   THEN 'late'
               ELSE 'bulk'
           END
      FROM pg_constraint c
      JOIN pg_class r ON r.oid = c.conrelid
      JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
     WHERE c.contype = 'f' AND c.confrelid = 'public.users'::regclass
       AND cardinality(c.conkey) = 1 AND NOT r.relispartition
     ORDER BY c.conrelid::regclass::text, a.attname
$$;

CREATE FUNCTION public.gdpr_erase_user(p_user_id uuid,
                                       p_legal_retention interval DEFAULT interval '7 years',
                                       p_deleted_before timestamptz DEFAULT NULL,
                                       p_dry_run boolean DEFAULT false)
    RETURNS jsonb
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_cutoff   timestamptz := now() - p_legal_retention;
    v_deleted_at timestamptz;
    v_first    boolean;
    v_keep     uuid[];
    v_drop     uuid[];
    v_deleted  jsonb := '{}';
    v_scrubbed jsonb := '{}';
    v_total    bigint;
    v_kept     bigint;
    v_redacted bigint := 0;
    v_oldest   timestamptz;
    v_newest   timestamptz;
    v_user_row text;
    v_fk       record;
BEGIN
    IF p_legal_retention IS NULL OR p_legal_retention < interval '0' THEN
        RAISE EXCEPTION 'gdpr_erase_user: legal retention must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_dry_run THEN
        SELECT u.deleted_at INTO v_deleted_at FROM public.users u
         WHERE u.id = p_user_id AND u.deleted_at IS NOT NULL
           AND u.deleted_at <= coalesce(p_deleted_before, now());
    ELSE
        -- Locked, and re-checked on the newest row version: a user restored a moment ago
        -- (deleted_at set back to NULL) is not erased.
        SELECT u.deleted_at INTO v_deleted_at FROM public.users u
         WHERE u.id = p_user_id AND u.deleted_at IS NOT NULL
           AND u.deleted_at <= coalesce(p_deleted_before, now())
           FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('user_id', p_user_id, 'erased', false,
                                  'reason', 'not soft-deleted before the grace cutoff');
    END IF;
    v_first := NOT EXISTS (SELECT 1 FROM public.gdpr_erasures e WHERE e.user_id = p_user_id);

    SELECT coalesce(array_agg(b.id) FILTER (WHERE r.retained), '{}'),
           coalesce(array_agg(b.id) FILTER (WHERE NOT r.retained), '{}'),
           min(r.record_at) FILTER (WHERE r.retained),
           max(r.record_at) FILTER (WHERE r.retained)
      INTO v_keep, v_drop, v_oldest, v_newest
      FROM public.bookings b
     CROSS JOIN LATERAL (
         SELECT public.gdpr_booking_retained(b.id, b.booked_at, v_cutoff) AS retained,
                greatest(b.booked_at, (SELECT max(greatest(p.created_at, p.confirmed_at))
                                         FROM public.crypto_payments p
                                        WHERE p.booking_id = b.id)) AS record_at) r
     WHERE b.user_id = p_user_id;
    v_user_row := CASE WHEN cardinality(v_keep) > 0 THEN 'anonymised' ELSE 'deleted' END;

    -- Counts first (identical for a dry run): every table with a foreign key to users.
    FOR v_fk IN SELECT * FROM public.gdpr_user_tables() LOOP
        EXECUTE format('SELECT count(*) FROM %s WHERE %I = $1', v_fk.tbl, v_fk.col)
           INTO v_total USING p_user_id;
        CONTINUE WHEN v_total = 0;
        IF v_fk.kind = 'unlink' THEN
            v_scrubbed := v_scrubbed || jsonb_build_object('referrals.referred_user_id', v_total);
            CONTINUE;
        END IF;
        v_kept := 0;
        IF v_fk.kind = 'retained' THEN
            EXECUTE format('SELECT count(*) FROM %s x WHERE x.%I = $1 AND %s', v_fk.tbl,
                           v_fk.col, CASE
                               WHEN v_fk.tbl = 'public.bookings'::regclass
                                   THEN 'x.id = ANY ($2)'
                               WHEN v_fk.tbl IN ('public.flight_bookings'::regclass,
                                                 'public.hotel_bookings'::regclass)
                                   THEN 'x.booking_item_id IN (SELECT i.id FROM '
                                        'public.booking_items i WHERE i.booking_id = ANY ($2))'
                               ELSE 'x.booking_id = ANY ($2)' END)
               INTO v_kept USING p_user_id, v_keep;
        END IF;
        IF v_kept > 0 AND v_first THEN  -- scrubbed once; later runs only delete
            v_scrubbed := v_scrubbed || jsonb_build_object(v_fk.tbl::text, v_kept);
        END IF;
        IF v_total > v_kept THEN
            v_deleted := v_deleted || jsonb_build_object(v_fk.tbl::text, v_total - v_kept);
        END IF;
    END LOOP;
    IF v_user_row = 'anonymised' AND v_first THEN
        v_scrubbed := v_scrubbed || jsonb_build_object('users', 1);
    ELSIF v_user_row = 'deleted' THEN
        v_deleted := v_deleted || jsonb_build_object('users', 1);
    END IF;
    IF p_dry_run THEN
        RETURN jsonb_build_object(
            'user_id', p_user_id, 'erased', false, 'dry_run', true,
            'phase', CASE WHEN v_first THEN 'erase' ELSE 'retention' END,
            'user_row', v_user_row, 'deleted', v_deleted, 'scrubbed', v_scrubbed,
            'retained_bookings', cardinality(v_keep),
            'audit_rows_to_redact', (SELECT count(*) FROM public.audit_log a
                                      WHERE a.user_id = p_user_id AND a.payload IS NOT NULL));
    END IF;

    -- 1. Bulk data first (chats, behaviour and analytics logs in every partition,
    --    predictions, shares, ...): no audit trigger, so this transaction does not hold the
    --    audit chain's lock yet. The first audited write below takes it until commit and
    --    every audited write elsewhere waits for it: keep that part short.
    FOR v_fk IN SELECT * FROM public.gdpr_user_tables() t WHERE t.kind IN ('bulk', 'unlink')
    LOOP
        IF v_fk.kind = 'unlink' THEN
            EXECUTE format('UPDATE %s SET %I = NULL WHERE %I = $1', v_fk.tbl, v_fk.col, v_fk.col)
              USING p_user_id;
        ELSE
            EXECUTE format('DELETE FROM %s WHERE %I = $1', v_fk.tbl, v_fk.col) USING p_user_id;
        END IF;
    END LOOP;

    -- 2. Legal records: unlink retained bookings from trips (deleting a trip cascades to its
    --    bookings) and scrub free text; delete the bookings past the retention (cascades to
    --    their items, flight/hotel details, payments, ratings and outcome predictions).
    UPDATE public.bookings b SET trip_id = NULL, metadata = NULL
     WHERE b.user_id = p_user_id AND b.id = ANY (v_keep)
       AND (b.trip_id IS NOT NULL OR b.metadata IS NOT NULL);
    DELETE FROM public.bookings b WHERE b.user_id = p_user_id AND b.id = ANY (v_drop);
    UPDATE public.booking_items i SET description = NULL, details = NULL
     WHERE i.user_id = p_user_id AND (i.description IS NOT NULL OR i.details IS NOT NULL);
    UPDATE public.flight_bookings f SET passenger_details = NULL, pnr = NULL
     WHERE f.user_id = p_user_id AND (f.passenger_details IS NOT NULL OR f.pnr IS NOT NULL);
    UPDATE public.hotel_bookings h SET details = NULL
     WHERE h.user_id = p_user_id AND h.details IS NOT NULL;
    UPDATE public.crypto_payments p SET metadata = NULL
     WHERE p.user_id = p_user_id AND p.metadata IS NOT NULL;
    -- Ratings live as long as their booking record: the stars stay (anonymous social proof
    -- for other travellers), the free text goes.
    DELETE FROM public.hotel_ratings h
     WHERE h.user_id = p_user_id AND (h.booking_id IS NULL OR h.booking_id <> ALL (v_keep));
    UPDATE public.hotel_ratings h SET review_text = NULL, aspects = NULL
     WHERE h.user_id = p_user_id AND (h.review_text IS NOT NULL OR h.aspects IS NOT NULL);

    -- 3. The users row, anonymised once, then the 'late' tables (OAuth accounts, trips, the
    --    consent history the anonymisation just appended to); or the row deleted.
    IF v_user_row = 'anonymised' AND v_first THEN
        UPDATE public.users u
           SET email = 'erased-' || replace(gen_random_uuid()::text, '-', '') || '@erased.invalid',
               full_name = NULL, phone = NULL, home_city = NULL, last_login_at = NULL,
               marketing_consent = false, marketing_consent_at = NULL,
               data_processing_consent = false, data_processing_consent_at = NULL,
               analytics_consent = false, analytics_consent_at = NULL
         WHERE u.id = p_user_id;
    END IF;
    FOR v_fk IN SELECT * FROM public.gdpr_user_tables() t WHERE t.kind = 'late' LOOP
        EXECUTE format('DELETE FROM %s WHERE %I = $1', v_fk.tbl, v_fk.col) USING p_user_id;
    END LOOP;
    IF v_user_row = 'deleted' THEN
        DELETE FROM public.users u WHERE u.id = p_user_id;
    END IF;

    -- 4. Audit payloads last, so the audit rows this erasure wrote are redacted too.
    v_redacted := public.audit_redact_user(p_user_id);

    INSERT INTO public.gdpr_erasures AS e (user_id, user_row, retained_bookings,
                                          oldest_retained_at, newest_retained_at, counts)
    VALUES (p_user_id, v_user_row, cardinality(v_keep), v_oldest, v_newest,
            jsonb_build_object('deleted', v_deleted, 'scrubbed', v_scrubbed,
                               'audit_redacted', v_redacted))
    ON CONFLICT (user_id) DO UPDATE
       SET last_run_at = now(), user_row = EXCLUDED.user_row,
           retained_bookings = EXCLUDED.retained_bookings,
           oldest_retained_at = EXCLUDED.oldest_retained_at,
           newest_retained_at = EXCLUDED.newest_retained_at,
           counts = jsonb_build_object(
               'deleted', e.counts -> 'deleted', 'scrubbed', e.counts -> 'scrubbed',
               'audit_redacted', e.counts -> 'audit_redacted',
               'retention_runs', coalesce(e.counts -> 'retention_runs', '[]')
                   || jsonb_build_array(jsonb_build_object('at', now(), 'deleted', v_deleted,
                                                           'audit_redacted', v_redacted)));
    RETURN jsonb_build_object(
        'user_id', p_user_id, 'erased', true, 'dry_run', false,
        'phase', CASE WHEN v_first THEN 'erase' ELSE 'retention' END,
        'user_row', v_user_row, 'deleted', v_deleted, 'scrubbed', v_scrubbed,
        'retained_bookings', cardinality(v_keep), 'audit_redacted', v_redacted);
END
$$;

COMMENT ON FUNCTION public.gdpr_erase_user(uuid, interval, timestamptz, boolean) IS
    'GDPR erasure of one user soft-deleted at or before p_deleted_before (default now()), in '
    'the caller''s single transaction: deletes their data (every table with a foreign key to '
    'users, every partition), scrubs and keeps legal records younger than p_legal_retention, '
    'anonymises or deletes the users row, redacts their audit payloads. p_dry_run: counts only.';

-- Analytics retention: leaf partitions of analytics_events and user_behavior_log holding
-- rows older than p_cutoff (dropping whole partitions is the partitions job's business;
-- rows of partitions that are kept are deleted here). Detached/archived partitions are
-- not included (the archive is kept on purpose; user erasure does reach them).
CREATE FUNCTION public.gdpr_analytics_partitions(p_cutoff timestamptz,
                                                 p_count boolean DEFAULT false)
    RETURNS TABLE (parent regclass, partition regclass, key_column name, due_rows bigint)
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_parent regclass;
    v_leaf   regclass;
    v_key    name;
    v_found  boolean;
BEGIN
    FOREACH v_parent IN ARRAY ARRAY['public.analytics_events',
                                    'public.user_behavior_log']::regclass[] LOOP
        SELECT a.attname INTO v_key
          FROM pg_partitioned_table pt
          JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
         WHERE pt.partrelid = v_parent;
        FOR v_leaf IN SELECT t.relid FROM pg_partition_tree(v_parent) t
                       WHERE t.isleaf ORDER BY t.relid::text LOOP
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE %I < $1)', v_leaf, v_key)
               INTO v_found USING p_cutoff;
            CONTINUE WHEN NOT v_found;
            parent := v_parent;
            partition := v_leaf;
            key_column := v_key;
            due_rows := NULL;
            IF p_count THEN
                EXECUTE format('SELECT count(*) FROM %s WHERE %I < $1', v_leaf, v_key)
                   INTO due_rows USING p_cutoff;
            END IF;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;

-- One committed batch of the analytics retention on one leaf partition: keyset on the
-- partition key, deletes by ctid (unique within this one heap).
CREATE FUNCTION public.gdpr_purge_analytics_batch(p_partition regclass, p_cutoff timestamptz,
                                                  p_batch_size integer,
                                                  p_after timestamptz DEFAULT NULL)
    RETURNS TABLE (picked integer, deleted integer, last_key timestamptz)
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_key name;
BEGIN
    IF p_batch_size IS NULL OR p_batch_size < 1 OR p_cutoff IS NULL THEN
        RAISE EXCEPTION 'gdpr_purge_analytics_batch: batch size > 0 and a cutoff are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT a.attname INTO v_key
      FROM unnest(ARRAY['public.analytics_events', 'public.user_behavior_log']::regclass[]) p
      JOIN pg_partition_tree(p) t ON t.relid = p_partition AND t.isleaf AND t.level > 0
      JOIN pg_partitioned_table pt ON pt.partrelid = p
      JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0];
    IF v_key IS NULL THEN
        RAISE EXCEPTION 'gdpr_purge_analytics_batch: % is not a partition of analytics_events '
                        'or user_behavior_log', p_partition
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY EXECUTE format($q$
        WITH picked AS MATERIALIZED (
            SELECT ctid AS tid, %1$I AS k
              FROM %2$s
             WHERE %1$I < $1 AND %1$I >= $2
             ORDER BY %1$I
             LIMIT $3
        ), gone AS (
            DELETE FROM %2$s
             WHERE ctid = ANY (ARRAY(SELECT tid FROM picked)) AND %1$I < $1
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM picked)::integer, (SELECT count(*) FROM gone)::integer,
               (SELECT max(k) FROM picked)
        $q$, v_key, p_partition)
    USING p_cutoff, coalesce(p_after, '-infinity'::timestamptz), p_batch_size;
END
$$;

-- For psql and pg_cron: the same work as the gdpr_purge job, one commit per user and per
-- batch. CALL gdpr_purge_old_data(); outside a transaction block.
CREATE PROCEDURE public.gdpr_purge_old_data(p_grace_days integer DEFAULT 30,
                                            p_legal_retention_years integer DEFAULT 7,
                                            p_analytics_retention_days integer DEFAULT 730,
                                            p_batch_size integer DEFAULT 1000,
                                            p_max_users integer DEFAULT 1000)
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_grace     interval := make_interval(days => p_grace_days);
    v_retention interval := make_interval(years => p_legal_retention_years);
    v_before    timestamptz := now() - make_interval(days => p_grace_days);
    v_cutoff    timestamptz := now() - make_interval(days => p_analytics_retention_days);
    v_users     uuid[];
    v_user      uuid;
    v_erased    integer := 0;
    v_rows      bigint := 0;
    v_parts     regclass[];
    v_part      regclass;
    v_after     timestamptz;
    b           record;
BEGIN
    v_users := ARRAY(SELECT d.user_id FROM public.gdpr_due_users(v_grace, v_retention,
                                                                 p_max_users) d);
    FOREACH v_user IN ARRAY v_users LOOP
        IF (public.gdpr_erase_user(v_user, v_retention, v_before) ->> 'erased')::boolean THEN
            v_erased := v_erased + 1;
        END IF;
        COMMIT;  -- one transaction per user
    END LOOP;
    v_parts := ARRAY(SELECT a.partition FROM public.gdpr_analytics_partitions(v_cutoff) a);
    FOREACH v_part IN ARRAY v_parts LOOP
        v_after := NULL;
        LOOP
            SELECT * INTO b FROM public.gdpr_purge_analytics_batch(v_part, v_cutoff,
                                                                   p_batch_size, v_after);
            v_rows := v_rows + b.deleted;
            COMMIT;  -- one transaction per batch
            EXIT WHEN b.picked < p_batch_size;
            v_after := b.last_key;
        END LOOP;
    END LOOP;
    RAISE NOTICE 'gdpr_purge_old_data: % users erased, % analytics rows older than % deleted',
        v_erased, v_rows, v_cutoff;
END
$$;

COMMENT ON PROCEDURE public.gdpr_purge_old_data(integer, integer, integer, integer, integer) IS
    'Daily GDPR purge for psql or pg_cron (CALL outside a transaction block): erases users '
    'soft-deleted longer than the grace period, one commit per user, then deletes analytics '
    'older than the retention in committed batches. Same functions as the gdpr_purge job.';

REVOKE EXECUTE ON FUNCTION public.gdpr_user_tables() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.gdpr_due_users(interval, interval, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.gdpr_erase_user(uuid, interval, timestamptz, boolean)
    FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.gdpr_analytics_partitions(timestamptz, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.gdpr_purge_analytics_batch(regclass, timestamptz, integer,
                                                             timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON PROCEDURE public.gdpr_purge_old_data(integer, integer, integer, integer,
                                                       integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.gdpr_due_users(interval, interval, integer)
    TO gth_maint, gth_admin;
GRANT EXECUTE ON FUNCTION public.gdpr_erase_user(uuid, interval, timestamptz, boolean)
    TO gth_maint, gth_admin;
GRANT EXECUTE ON FUNCTION public.gdpr_analytics_partitions(timestamptz, boolean)
    TO gth_maint, gth_admin;
GRANT EXECUTE ON FUNCTION public.gdpr_purge_analytics_batch(regclass, timestamptz, integer,
                                                            timestamptz) TO gth_maint, gth_admin;
GRANT EXECUTE ON PROCEDURE public.gdpr_purge_old_data(integer, integer, integer, integer, integer)
    TO gth_maint, gth_admin;
