-- Partition maintenance helpers used by gth-maintd's partitions job (daemon/jobs/partitions.py)
-- next to create_month_partition() / partition_bounds() / partition_key_column() of 0004.
--
-- All are SECURITY DEFINER (the default partitions have forced row-level security and the
-- daemon's role gth_maint owns nothing) with a pinned search_path, and executable by
-- gth_maint only. Callers set a short lock_timeout and retry with jitter.

-- Rows of the DEFAULT partition per UTC month (month NULL: a non-finite key such as
-- 'infinity', which no month partition can take). No rows when there is no default.
CREATE FUNCTION public.partition_default_months(p_parent regclass)
    RETURNS TABLE (month date, row_count bigint)
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_key     text := public.partition_key_column(p_parent);
    v_default regclass;
BEGIN
    SELECT b.partition INTO v_default
      FROM public.partition_bounds(p_parent) b WHERE b.is_default;
    IF v_default IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT CASE WHEN isfinite(%1$I) '
        '            THEN date_trunc(''month'', %1$I AT TIME ZONE ''UTC'')::date END, '
        '       count(*) '
        '  FROM %2$s GROUP BY 1 ORDER BY 1 NULLS LAST', v_key, v_default);
END
$$;

-- Every row of the DEFAULT partition of the table whose row type is given, for the export:
--   COPY (SELECT * FROM partition_default_rows(NULL::public.chat_messages)) TO STDOUT ...
CREATE FUNCTION public.partition_default_rows(p_row anyelement)
    RETURNS SETOF anyelement
    LANGUAGE plpgsql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_parent  regclass;
    v_default regclass;
    v_cols    text;
BEGIN
    SELECT t.typrelid::regclass INTO v_parent
      FROM pg_type t JOIN pg_class c ON c.oid = t.typrelid
     WHERE t.oid = pg_typeof(p_row) AND c.relkind = 'p';
    IF v_parent IS NULL THEN
        RAISE EXCEPTION 'partition_default_rows: % is not the row type of a partitioned table',
            pg_typeof(p_row) USING ERRCODE = 'wrong_object_type';
    END IF;
    SELECT b.partition INTO v_default
      FROM public.partition_bounds(v_parent) b WHERE b.is_default;
    IF v_default IS NULL THEN
        RETURN;
    END IF;
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_cols
      FROM pg_attribute a
     WHERE a.attrelid = v_parent AND a.attnum > 0 AND NOT a.attisdropped;
    RETURN QUERY EXECUTE format('SELECT %s FROM %s', v_cols, v_default);
END
$$;

-- One step of draining the DEFAULT partition for one month (gth-maintd run-job partitions
-- --drain-default). ATTACH of a month fails while rows of that month sit in the default
-- partition, so the rows go out first: the month's table <parent>_pYYYY_MM is created
-- unattached (LIKE the parent, a CHECK matching the bounds, a comment marking it as a drain
-- staging table), each call moves up to p_batch rows (DELETE from the default + INSERT into
-- that table, one statement) and, once no row of the month is left in the default
-- partition, the same call attaches it (the CHECK spares the validation scan). The caller
-- commits after each call. Moved rows are invisible through the parent between the first
-- and the last step; a month that fits in one batch moves and attaches in one transaction,
-- without any such gap. An interrupted drain resumes on the staging table it left.
-- Returns the rows moved by this call, whether the partition is now attached, its name.
CREATE FUNCTION public.partition_drain_step(p_parent regclass, p_month date, p_batch integer)
    RETURNS TABLE (moved integer, attached boolean, partition_name text)
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_key       text := public.partition_key_column(p_parent);
    v_schema    text;
    v_table     text;
    v_rls       boolean;
    v_force     boolean;
    v_name      text;
    v_from_text text;
    v_to_text   text;
    v_from      timestamptz;
    v_to        timestamptz;
    v_default   regclass;
    v_staged    regclass;
    v_cols      text;
    v_moved     integer;
    v_left      boolean;
    v_existing  record;
    v_marker    text;
BEGIN
    IF p_batch IS NULL OR p_batch < 1 THEN
        RAISE EXCEPTION 'partition_drain_step: batch must be positive' USING ERRCODE = '22023';
    END IF;
    SELECT n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity
      INTO v_schema, v_table, v_rls, v_force
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = p_parent;
    v_from_text := to_char(p_month, 'YYYY-MM') || '-01 00:00:00+00';
    v_to_text := to_char((date_trunc('month', p_month::timestamp) + interval '1 month')::date,
                         'YYYY-MM') || '-01 00:00:00+00';
    v_from := v_from_text::timestamptz;
    v_to := v_to_text::timestamptz;
    v_name := v_table || '_p' || to_char(p_month, 'YYYY_MM');
    v_marker := format('gth-maintd: staging table draining the default partition of %s.%s for %s',
                       v_schema, v_table, to_char(p_month, 'YYYY-MM'));

    FOR v_existing IN
        SELECT b.partition, b.range_from, b.range_to, c.relname
          FROM public.partition_bounds(p_parent) b JOIN pg_class c ON c.oid = b.partition
         WHERE NOT b.is_default
           AND coalesce(b.range_from, '-infinity') < v_to
           AND coalesce(b.range_to, 'infinity') > v_from
    LOOP
        -- Already attached: no row of the month can be in the default partition any more.
        RETURN QUERY SELECT 0, true, v_existing.relname::text;
        RETURN;
    END LOOP;

    SELECT b.partition INTO v_default
      FROM public.partition_bounds(p_parent) b WHERE b.is_default;
    IF v_default IS NULL THEN
        RAISE EXCEPTION '% has no default partition to drain', p_parent
            USING ERRCODE = 'undefined_table';
    END IF;

    v_staged := to_regclass(format('%I.%I', v_schema, v_name));
    IF v_staged IS NULL THEN
        EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING ALL)',
                       v_schema, v_name, v_schema, v_table);
        EXECUTE format('ALTER TABLE %I.%I ADD CONSTRAINT %I CHECK (%I IS NOT NULL AND %I >= %L AND %I < %L)',
                       v_schema, v_name, v_name || '_bounds_check',
                       v_key, v_key, v_from_text, v_key, v_to_text);
        EXECUTE format('COMMENT ON TABLE %I.%I IS %L', v_schema, v_name, v_marker);
        IF v_rls THEN
            EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', v_schema, v_name);
        END IF;
        IF v_force THEN
            EXECUTE format('ALTER TABLE %I.%I FORCE ROW LEVEL SECURITY', v_schema, v_name);
        END IF;
        v_staged := format('%I.%I', v_schema, v_name)::regclass;
    ELSIF obj_description(v_staged, 'pg_class') IS DISTINCT FROM v_marker THEN
        RAISE EXCEPTION 'table % exists, is not attached to % and is not a drain staging table',
            v_staged, p_parent USING ERRCODE = 'duplicate_table';
    END IF;

    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_cols
      FROM pg_attribute a
     WHERE a.attrelid = p_parent AND a.attnum > 0 AND NOT a.attisdropped
       AND a.attgenerated = '';
    -- ctid identifies a row within one heap: here always the default partition's own.
    EXECUTE format(
        'WITH moved AS ('
        '    DELETE FROM %1$s'
        '     WHERE ctid = ANY (ARRAY(SELECT ctid FROM %1$s'
        '                              WHERE %2$I >= $1 AND %2$I < $2 LIMIT $3))'
        '    RETURNING %3$s)'
        ' INSERT INTO %4$s (%3$s) SELECT %3$s FROM moved',
        v_default, v_key, v_cols, v_staged)
        USING v_from, v_to, p_batch;
    GET DIAGNOSTICS v_moved = ROW_COUNT;

    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE %I >= $1 AND %I < $2)',
                   v_default, v_key, v_key)
       INTO v_left USING v_from, v_to;
    IF v_left THEN
        RETURN QUERY SELECT v_moved, false, v_name;
        RETURN;
    END IF;

    BEGIN
        EXECUTE format('ALTER TABLE %I.%I ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)',
                       v_schema, v_table, v_staged, v_from_text, v_to_text);
    EXCEPTION WHEN check_violation THEN
        RAISE EXCEPTION 'cannot attach %: rows for that month are in the default partition',
            v_staged USING ERRCODE = '55G01';
    END;
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', v_staged, v_name || '_bounds_check');
    EXECUTE format('COMMENT ON TABLE %s IS NULL', v_staged);
    RETURN QUERY SELECT v_moved, true, v_name;
END
$$;

-- Retention of one partition: DETACH, then DROP or move to an archive schema, in the
-- caller's single transaction (so a crash never leaves a detached table behind).
-- DETACH ... CONCURRENTLY is not an option: it is refused while the table has a DEFAULT
-- partition (and cannot run inside a transaction block). Plain DETACH takes ACCESS EXCLUSIVE
-- on the parent for a moment; while it waits for that lock every query on the parent queues
-- behind it, so the caller sets a short lock_timeout and retries with jitter.
-- Refuses the default partition, a partition reaching into the current UTC month or later,
-- and the last non-default partition.
CREATE FUNCTION public.retire_partition(p_parent regclass, p_partition regclass,
                                        p_action text, p_archive_schema text DEFAULT 'archive')
    RETURNS text
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_bound   record;
    v_others  integer;
    v_name    text;
    v_current timestamptz := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
BEGIN
    IF p_action IS NULL OR p_action NOT IN ('drop', 'archive') THEN
        RAISE EXCEPTION 'retire_partition: action must be drop or archive, not %', p_action
            USING ERRCODE = '22023';
    END IF;
    SELECT * INTO v_bound FROM public.partition_bounds(p_parent) b WHERE b.partition = p_partition;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not a partition of %', p_partition, p_parent
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF v_bound.is_default THEN
        RAISE EXCEPTION 'retire_partition: never the default partition %', p_partition
            USING ERRCODE = '22023';
    END IF;
    IF v_bound.range_to IS NULL OR v_bound.range_to > v_current THEN
        RAISE EXCEPTION 'retire_partition: % reaches into the current month or later', p_partition
            USING ERRCODE = '22023';
    END IF;
    SELECT count(*) INTO v_others
      FROM public.partition_bounds(p_parent) b
     WHERE NOT b.is_default AND b.partition <> p_partition;
    IF v_others = 0 THEN
        RAISE EXCEPTION 'retire_partition: % is the last partition of %', p_partition, p_parent
            USING ERRCODE = '22023';
    END IF;
    SELECT c.relname INTO v_name FROM pg_class c WHERE c.oid = p_partition;

    EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', p_parent, p_partition);
    IF p_action = 'drop' THEN
        EXECUTE format('DROP TABLE %s', p_partition);
        RETURN 'dropped';
    END IF;
    IF to_regclass(format('%I.%I', p_archive_schema, v_name)) IS NOT NULL THEN
        RAISE EXCEPTION 'archive schema % already has a table %', p_archive_schema, v_name
            USING ERRCODE = 'duplicate_table';
    END IF;
    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', p_archive_schema);
    EXECUTE format('ALTER TABLE %s SET SCHEMA %I', p_partition, p_archive_schema);
    RETURN format('%I.%I', p_archive_schema, v_name);
END
$$;

COMMENT ON FUNCTION public.partition_default_months(regclass) IS
    'Rows of the default partition per UTC month (NULL month: non-finite key).';
COMMENT ON FUNCTION public.partition_default_rows(anyelement) IS
    'The default partition''s rows of the partitioned table whose row type is passed '
    '(NULL::public.chat_messages), for exports; personal data: gth_maint only.';
COMMENT ON FUNCTION public.partition_drain_step(regclass, date, integer) IS
    'Move up to p_batch rows of one month out of the default partition into the month''s '
    'table and attach it once the month is empty in the default; call once per transaction.';
COMMENT ON FUNCTION public.retire_partition(regclass, regclass, text, text) IS
    'Detach a partition that ended before the current UTC month and drop it or move it to '
    'the archive schema; never the default or the last partition.';

REVOKE EXECUTE ON FUNCTION public.partition_default_months(regclass) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.partition_default_rows(anyelement) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.partition_drain_step(regclass, date, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.retire_partition(regclass, regclass, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.partition_default_months(regclass) TO gth_maint, gth_admin;
GRANT EXECUTE ON FUNCTION public.partition_default_rows(anyelement) TO gth_maint;
GRANT EXECUTE ON FUNCTION public.partition_drain_step(regclass, date, integer) TO gth_maint;
GRANT EXECUTE ON FUNCTION public.retire_partition(regclass, regclass, text, text) TO gth_maint;
