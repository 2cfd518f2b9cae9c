-- Monthly range partitions (UTC bounds) for chat_messages, analytics_events and
-- user_behavior_log, each with a DEFAULT partition <parent>_default and month partitions
-- <parent>_pYYYY_MM.
--
-- create_month_partition() never uses CREATE TABLE ... PARTITION OF (ACCESS EXCLUSIVE on the
-- parent: a long analytics query would block every insert behind it). It creates a plain
-- table LIKE the parent, adds a CHECK matching the bounds (so ATTACH does not scan it) and
-- attaches it, which needs only SHARE UPDATE EXCLUSIVE on the parent. ATTACH still scans
-- the DEFAULT partition for rows of the new month (indexed on the key, so fast) and clones
-- the parent's foreign keys (a short SHARE ROW EXCLUSIVE lock on users / chat_sessions).
-- Callers set lock_timeout and retry.

CREATE FUNCTION public.partition_bounds(p_parent regclass)
    RETURNS TABLE (partition regclass, is_default boolean, range_from timestamptz,
                   range_to timestamptz)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, public
    AS $$
    SELECT p.oid::regclass,
           p.bound = 'DEFAULT',
           CASE WHEN p.m[1] IN ('MINVALUE', 'MAXVALUE') THEN NULL
                ELSE btrim(p.m[1], '''')::timestamptz END,
           CASE WHEN p.m[2] IN ('MINVALUE', 'MAXVALUE') THEN NULL
                ELSE btrim(p.m[2], '''')::timestamptz END
      FROM (SELECT c.oid,
                   pg_get_expr(c.relpartbound, c.oid) AS bound,
                   regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                '^FOR VALUES FROM \((.*)\) TO \((.*)\)$') AS m
              FROM pg_inherits i
              JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = p_parent) p
     ORDER BY p.bound = 'DEFAULT', 3
$$;

COMMENT ON FUNCTION public.partition_bounds(regclass) IS
    'Partitions of a range-partitioned table with their bounds (NULL for MINVALUE/MAXVALUE '
    'and for the DEFAULT partition), default last, then by lower bound.';

-- The partition key column of a table range-partitioned on one timestamptz column, or an
-- error. Used by create_month_partition() and the partition maintenance helpers (0021).
CREATE FUNCTION public.partition_key_column(p_parent regclass)
    RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_key text;
BEGIN
    SELECT a.attname INTO v_key
      FROM pg_partitioned_table pt
      JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
     WHERE pt.partrelid = p_parent AND pt.partstrat = 'r' AND pt.partnatts = 1
       AND a.atttypid = 'timestamptz'::regtype;
    IF v_key IS NULL THEN
        RAISE EXCEPTION '% is not range-partitioned on one timestamptz column', p_parent
            USING ERRCODE = 'wrong_object_type';
    END IF;
    RETURN v_key;
END
$$;

CREATE FUNCTION public.create_month_partition(p_parent regclass, p_month date)
    RETURNS text
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_schema    text;
    v_table     text;
    v_key       text;
    v_rls       boolean;
    v_force     boolean;
    v_name      text;
    v_from_text text;
    v_to_text   text;
    v_from      timestamptz;
    v_to        timestamptz;
    v_existing  record;
    v_default   regclass;
    v_in_default boolean;
BEGIN
    IF p_month IS NULL OR p_parent IS NULL THEN
        RAISE EXCEPTION 'create_month_partition: parent and month are required'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity
      INTO v_schema, v_table, v_rls, v_force
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = p_parent AND c.relkind = 'p';
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not a partitioned table', p_parent USING ERRCODE = 'wrong_object_type';
    END IF;
    v_key := public.partition_key_column(p_parent);

    v_from_text := to_char(p_month, 'YYYY-MM') || '-01 00:00:00+00';
    v_to_text := to_char((date_trunc('month', p_month::timestamp) + interval '1 month')::date,
                         'YYYY-MM') || '-01 00:00:00+00';
    v_from := v_from_text::timestamptz;
    v_to := v_to_text::timestamptz;
    v_name := v_table || '_p' || to_char(p_month, 'YYYY_MM');

    -- Idempotent: the month already has its partition (under any name) -> its name.
    FOR v_existing IN
        SELECT b.partition, b.range_from, b.range_to, c.relname
          FROM public.partition_bounds(p_parent) b JOIN pg_class c ON c.oid = b.partition
         WHERE NOT b.is_default
           AND coalesce(b.range_from, '-infinity') < v_to
           AND coalesce(b.range_to, 'infinity') > v_from
    LOOP
        IF v_existing.range_from = v_from AND v_existing.range_to = v_to THEN
            RETURN v_existing.relname::text;
        END IF;
        RAISE EXCEPTION 'partition % of % overlaps month %', v_existing.partition, p_parent,
            to_char(p_month, 'YYYY-MM') USING ERRCODE = 'invalid_object_definition';
    END LOOP;
    IF to_regclass(format('%I.%I', v_schema, v_name)) IS NOT NULL THEN
        RAISE EXCEPTION 'table %.% exists but is not attached to %', v_schema, v_name, p_parent
            USING ERRCODE = 'duplicate_table';
    END IF;

    -- Rows of that month already in the DEFAULT partition would make ATTACH fail.
    SELECT b.partition INTO v_default
      FROM public.partition_bounds(p_parent) b WHERE b.is_default;
    IF v_default IS NOT NULL THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE %I >= $1 AND %I < $2)',
                       v_default, v_key, v_key)
           INTO v_in_default USING v_from, v_to;
        IF v_in_default THEN
            RAISE EXCEPTION 'cannot create partition %.% for month %: rows for that month are in the default partition %',
                v_schema, v_name, to_char(p_month, 'YYYY-MM'), v_default
                USING ERRCODE = '55G01',
                      HINT = 'Move those rows out of the default partition first (detach it, '
                             'create the month, re-insert, re-attach).';
        END IF;
    END IF;

    EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING ALL)',
                   v_schema, v_name, v_schema, v_table);
    EXECUTE format('ALTER TABLE %I.%I ADD CONSTRAINT %I CHECK (%I IS NOT NULL AND %I >= %L AND %I < %L)',
                   v_schema, v_name, v_name || '_bounds_check',
                   v_key, v_key, v_from_text, v_key, v_to_text);
    BEGIN
        EXECUTE format('ALTER TABLE %I.%I ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                       v_schema, v_table, v_schema, v_name, v_from_text, v_to_text);
    EXCEPTION WHEN check_violation THEN
        RAISE EXCEPTION 'cannot create partition %.% for month %: rows for that month are in the default partition',
            v_schema, v_name, to_char(p_month, 'YYYY-MM') USING ERRCODE = '55G01';
    END;
    -- Redundant now that the partition constraint holds.
    EXECUTE format('ALTER TABLE %I.%I DROP CONSTRAINT %I', v_schema, v_name, v_name || '_bounds_check');
    -- Partitions queried directly (not through the parent) keep the parent's protection:
    -- row-level security with no policy of their own shows nothing to non-owners.
    IF v_rls THEN
        EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', v_schema, v_name);
    END IF;
    IF v_force THEN
        EXECUTE format('ALTER TABLE %I.%I FORCE ROW LEVEL SECURITY', v_schema, v_name);
    END IF;
    RETURN v_name;
END
$$;

COMMENT ON FUNCTION public.create_month_partition(regclass, date) IS
    'Create and attach the month partition <parent>_pYYYY_MM (UTC bounds) of p_month; returns '
    'its name, also when it already exists. SQLSTATE 55G01 when rows of that month sit in '
    'the default partition.';

-- Retention: detach (and by default drop) one month partition. DETACH without CONCURRENTLY
-- (not allowed while a DEFAULT partition exists) takes ACCESS EXCLUSIVE on the parent for a
-- moment: callers set a short lock_timeout and retry. Returns NULL when there is no such
-- partition.
CREATE FUNCTION public.detach_month_partition(p_parent regclass, p_month date,
                                              p_drop boolean DEFAULT true)
    RETURNS text
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_part regclass;
    v_name text;
    v_from timestamptz := (to_char(p_month, 'YYYY-MM') || '-01 00:00:00+00')::timestamptz;
BEGIN
    SELECT b.partition INTO v_part
      FROM public.partition_bounds(p_parent) b
     WHERE NOT b.is_default AND b.range_from = v_from;
    IF v_part IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT c.relname INTO v_name FROM pg_class c WHERE c.oid = v_part;
    EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', p_parent, v_part);
    IF p_drop THEN
        EXECUTE format('DROP TABLE %s', v_part);
    END IF;
    RETURN v_name;
END
$$;

COMMENT ON FUNCTION public.detach_month_partition(regclass, date, boolean) IS
    'Detach the month partition of p_month from p_parent and drop it unless p_drop is false; '
    'returns its name or NULL when there is none.';

CREATE TABLE public.chat_messages (
    id          uuid        NOT NULL DEFAULT gen_random_uuid(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    session_id  uuid        NOT NULL,
    user_id     uuid        NOT NULL,
    role        text        NOT NULL,
    content     text        NOT NULL,
    tokens_used integer,
    metadata    jsonb,
    CONSTRAINT chat_messages_pkey PRIMARY KEY (id, created_at),
    CONSTRAINT chat_messages_session_fkey FOREIGN KEY (session_id, user_id)
        REFERENCES public.chat_sessions (id, user_id) ON DELETE CASCADE,
    CONSTRAINT chat_messages_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES public.users (id) ON DELETE CASCADE,
    CONSTRAINT chat_messages_role_check CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    CONSTRAINT chat_messages_tokens_used_check CHECK (tokens_used >= 0)
) PARTITION BY RANGE (created_at);
CREATE INDEX chat_messages_session_idx ON public.chat_messages (session_id, user_id, created_at);
CREATE INDEX chat_messages_user_idx ON public.chat_messages (user_id);
CREATE INDEX chat_messages_created_at_idx ON public.chat_messages (created_at);
CREATE INDEX chat_messages_metadata_gin ON public.chat_messages USING gin (metadata);
CREATE TABLE public.chat_messages_default PARTITION OF public.chat_messages DEFAULT;

CREATE TABLE public.analytics_events (
    id          uuid        NOT NULL DEFAULT gen_random_uuid(),
    occurred_at timestamptz NOT NULL DEFAULT now(),
    user_id     uuid,
    session_key text,
    event_type  text        NOT NULL,
    event_data  jsonb,
    page        text,
    platform    text,
    CONSTRAINT analytics_events_pkey PRIMARY KEY (id, occurred_at),
    CONSTRAINT analytics_events_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES public.users (id) ON DELETE CASCADE,
    CONSTRAINT analytics_events_event_type_check CHECK (event_type ~ '^[a-z][a-z0-9_.]{0,62}$'),
    CONSTRAINT analytics_events_platform_check CHECK (platform IN ('web', 'ios', 'android', 'api'))
) PARTITION BY RANGE (occurred_at);
CREATE INDEX analytics_events_user_idx ON public.analytics_events (user_id, occurred_at);
CREATE INDEX analytics_events_occurred_at_idx ON public.analytics_events (occurred_at);
CREATE INDEX analytics_events_event_data_gin ON public.analytics_events USING gin (event_data);
CREATE TABLE public.analytics_events_default PARTITION OF public.analytics_events DEFAULT;

-- The seed's behaviour log keeps its column name "timestamp".
CREATE TABLE public.user_behavior_log (
    id          uuid        NOT NULL DEFAULT gen_random_uuid(),
    "timestamp" timestamptz NOT NULL DEFAULT now(),
    user_id     uuid        NOT NULL,
    session_id  uuid,
    action_type text        NOT NULL,
    action_data jsonb,
    device_type text,
    duration_ms integer,
    CONSTRAINT user_behavior_log_pkey PRIMARY KEY (id, "timestamp"),
    CONSTRAINT user_behavior_log_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES public.users (id) ON DELETE CASCADE,
    CONSTRAINT user_behavior_log_action_type_check CHECK (action_type ~ '^[a-z][a-z0-9_.]{0,62}$'),
    CONSTRAINT user_behavior_log_device_type_check
        CHECK (device_type IN ('mobile', 'desktop', 'tablet', 'other')),
    CONSTRAINT user_behavior_log_duration_check CHECK (duration_ms >= 0)
) PARTITION BY RANGE ("timestamp");
CREATE INDEX user_behavior_log_user_idx ON public.user_behavior_log (user_id, "timestamp");
CREATE INDEX user_behavior_log_timestamp_idx ON public.user_behavior_log ("timestamp");
CREATE INDEX user_behavior_log_action_data_gin ON public.user_behavior_log USING gin (action_data);
CREATE TABLE public.user_behavior_log_default PARTITION OF public.user_behavior_log DEFAULT;

-- The current month (UTC) and the next three.
DO $$
DECLARE
    v_parent regclass;
    v_month  date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    i        integer;
BEGIN
    FOREACH v_parent IN ARRAY ARRAY['public.chat_messages', 'public.analytics_events',
                                    'public.user_behavior_log']::regclass[] LOOP
        FOR i IN 0..3 LOOP
            PERFORM public.create_month_partition(v_parent, (v_month + make_interval(months => i))::date);
        END LOOP;
    END LOOP;
END
$$;
