-- Expired search-cache rows are deleted in short batches, one committed transaction each.
--
-- ONE implementation, two callers: gth-maintd's cache_cleanup job and
-- `CALL cleanup_expired_cache();` (psql, pg_cron; outside a transaction block) both loop
-- over cache_cleanup_step(), committing after every call. The job does it from Python so
-- it can stop between batches and count rows as it goes; the procedure COMMITs in PL/pgSQL.
--
-- Two ways to walk the table, chosen per run by cache_cleanup_step():
--   * keyset (the normal hourly case, few rows expired): batches pick the next rows after a
--     cursor on (expires_at, id) through the expires_at index and delete them by
--     `ctid = ANY(ARRAY(...))` (a TID scan, no second index probe). Batches of
--     `id IN (SELECT id ... LIMIT n)` instead rescan the dead index entries left by the
--     previous batches and get slower and slower.
--   * sweep (a large share expired, e.g. after downtime): every expired row reached through
--     the index costs a random heap access, which is cheap when few rows go but, with half
--     of a 1M-row table expired in scattered pages, ran ~8x slower than one big DELETE
--     (bench/bench_cache_cleanup.py). A sweep deletes expired rows in consecutive ranges of
--     heap pages (`ctid >= '(a,0)' AND ctid < '(b,0)'`, a TID range scan), reading the
--     table once in physical order like the big DELETE, still one short transaction per
--     range. It reads the whole table, so it is chosen only when at least
--     p_sweep_threshold of the rows are expired (estimated from a block sample).
--
-- ctid is unique only within one heap: the functions refuse partitioned tables (and anything
-- else that is not a plain table) instead of silently deleting the wrong rows.
-- Requirements on the table: columns `expires_at timestamptz` and `id`, an index leading
-- with expires_at.
--
-- Concurrency: a row updated by someone else between the pick and the delete (hit_count,
-- a refreshed expires_at) is not deleted: the TID no longer matches its new version, and
-- `expires_at < cutoff` is rechecked on it. Such a row goes in a later run if still expired.
-- The keyset cursor follows the rows *picked*, so a batch whose rows were all skipped does
-- not end the loop early.

CREATE OR REPLACE FUNCTION public.cache_cleanup_batch(
    p_table         regclass,
    p_batch_size    integer,
    p_cutoff        timestamptz,
    p_after_expires timestamptz DEFAULT NULL,
    p_after_id      text DEFAULT NULL
)
RETURNS TABLE (picked integer, deleted integer, last_expires_at timestamptz, last_id text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_kind    "char";
    v_id_type text;
    v_cursor  text := '';
BEGIN
    IF p_batch_size IS NULL OR p_batch_size < 1 THEN
        RAISE EXCEPTION 'cache_cleanup_batch: batch size must be positive, got %', p_batch_size;
    END IF;
    IF p_cutoff IS NULL THEN
        RAISE EXCEPTION 'cache_cleanup_batch: cutoff must not be NULL';
    END IF;
    SELECT c.relkind INTO v_kind FROM pg_class c WHERE c.oid = p_table;
    IF v_kind IS DISTINCT FROM 'r' THEN
        RAISE EXCEPTION 'cache_cleanup_batch: % is not a plain table (relkind %); ctid batches '
                        'need a single heap', p_table, v_kind;
    END IF;
    SELECT format_type(a.atttypid, a.atttypmod) INTO v_id_type
      FROM pg_attribute a
     WHERE a.attrelid = p_table AND a.attname = 'id' AND a.attnum > 0 AND NOT a.attisdropped;
    IF v_id_type IS NULL OR NOT EXISTS (
        SELECT 1 FROM pg_attribute a
         WHERE a.attrelid = p_table AND a.attname = 'expires_at' AND NOT a.attisdropped) THEN
        RAISE EXCEPTION 'cache_cleanup_batch: % needs columns id and expires_at', p_table;
    END IF;
    IF p_after_expires IS NOT NULL THEN
        -- The plain range on expires_at lets an index on expires_at alone start at the
        -- cursor; the row comparison then skips the ties already picked.
        v_cursor := format('AND expires_at >= $2 AND (expires_at, id) > ($2, $3::%s)', v_id_type);
    END IF;
    RETURN QUERY EXECUTE format($q$
        WITH picked AS MATERIALIZED (
            SELECT ctid AS tid, expires_at, id
              FROM %1$s
             WHERE expires_at < $1 %2$s
             ORDER BY expires_at, id
             LIMIT $4
        ), gone AS (
            DELETE FROM %1$s
             WHERE ctid = ANY (ARRAY(SELECT tid FROM picked))
               AND expires_at < $1
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM picked)::integer,
               (SELECT count(*) FROM gone)::integer,
               last.expires_at,
               last.id::text
          FROM (SELECT 1) AS one
          LEFT JOIN LATERAL (
              SELECT p.expires_at, p.id FROM picked p
               ORDER BY p.expires_at DESC, p.id DESC LIMIT 1
          ) AS last ON true
        $q$, p_table, v_cursor)
    USING p_cutoff, p_after_expires, p_after_id, p_batch_size;
END
$fn$;

COMMENT ON FUNCTION public.cache_cleanup_batch(regclass, integer, timestamptz, timestamptz, text) IS
    'Keyset primitive: delete up to p_batch_size rows with expires_at < p_cutoff after the '
    'cursor (p_after_expires, p_after_id); returns rows picked, rows deleted, the new cursor.';

-- Sweep primitive: delete the expired rows stored in heap pages [p_from_page, +p_pages).
CREATE OR REPLACE FUNCTION public.cache_cleanup_sweep(
    p_table     regclass,
    p_cutoff    timestamptz,
    p_from_page bigint,
    p_pages     integer
)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_kind    "char";
    v_deleted integer;
BEGIN
    SELECT c.relkind INTO v_kind FROM pg_class c WHERE c.oid = p_table;
    IF v_kind IS DISTINCT FROM 'r' THEN
        RAISE EXCEPTION 'cache_cleanup_sweep: % is not a plain table (relkind %); ctid ranges '
                        'need a single heap', p_table, v_kind;
    END IF;
    IF p_cutoff IS NULL OR p_from_page IS NULL OR p_pages IS NULL OR p_pages < 1 THEN
        RAISE EXCEPTION 'cache_cleanup_sweep: cutoff, first page and a positive page count needed';
    END IF;
    EXECUTE format('DELETE FROM %s WHERE ctid >= $1 AND ctid < $2 AND expires_at < $3', p_table)
      USING format('(%s,0)', p_from_page)::tid, format('(%s,0)', p_from_page + p_pages)::tid,
            p_cutoff;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END
$fn$;

-- One batch of a cleanup run; call it in a loop, one transaction per call, passing back the
-- state it returns (NULL the first time) until done. The first call chooses keyset or sweep.
-- A sweep sizes its page ranges to delete about p_batch_size rows each, learning from the
-- previous range, but never scans more than 8 x p_batch_size rows' worth of pages at once.
CREATE OR REPLACE FUNCTION public.cache_cleanup_step(
    p_table           regclass,
    p_batch_size      integer,
    p_cutoff          timestamptz,
    p_state           jsonb DEFAULT NULL,
    p_sweep_threshold real DEFAULT 0.2
)
RETURNS TABLE (deleted integer, done boolean, state jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_state   jsonb := p_state;
    v_pages   bigint;
    v_pct     float8;
    v_count   float8;
    v_all     float8;
    v_sampled float8;
    v_per_pg  float8;
    v_from    bigint;
    v_step    integer;
    v_max     integer;
    v_deleted integer;
    r         record;
BEGIN
    IF p_batch_size IS NULL OR p_batch_size < 1 THEN
        RAISE EXCEPTION 'cache_cleanup_step: batch size must be positive, got %', p_batch_size;
    END IF;
    IF v_state IS NULL THEN
        -- Choose from a block sample of at most ~200 pages (a few ms whatever the size; a
        -- count through the index would itself be a long transaction when half expired).
        v_state := '{"mode": "keyset"}';
        SELECT pg_relation_size(c.oid) / current_setting('block_size')::bigint INTO v_pages
          FROM pg_class c WHERE c.oid = p_table AND c.relkind = 'r';
        IF coalesce(p_sweep_threshold, 0) > 0 AND v_pages > 0 THEN
            v_pct := least(100, 100.0 * 200 / v_pages);
            EXECUTE format('SELECT count(*) FILTER (WHERE expires_at < $1), count(*)'
                           '  FROM %s TABLESAMPLE SYSTEM ($2)', p_table)
               INTO v_count, v_all USING p_cutoff, v_pct;
            IF v_all > 0 AND v_count >= p_sweep_threshold * v_all THEN
                v_sampled := greatest(v_pct / 100 * v_pages, 1);
                v_per_pg := greatest(v_all / v_sampled, 1);  -- rows per page
                v_state := jsonb_build_object(
                    'mode', 'sweep', 'page', 0, 'end', v_pages,
                    'pages', greatest(1, ceil(p_batch_size / greatest(v_count / v_sampled, 1))),
                    'max', greatest(1, ceil(8 * p_batch_size / v_per_pg)));
            END IF;
        END IF;
    END IF;

    IF v_state->>'mode' = 'keyset' THEN
        SELECT * INTO r
          FROM public.cache_cleanup_batch(p_table, p_batch_size, p_cutoff,
                                   (v_state->>'expires_at')::timestamptz, v_state->>'id');
        RETURN QUERY SELECT r.deleted, r.picked < p_batch_size,
                            jsonb_build_object('mode', 'keyset', 'expires_at', r.last_expires_at,
                                               'id', r.last_id);
        RETURN;
    END IF;

    v_from := (v_state->>'page')::bigint;
    v_step := (v_state->>'pages')::integer;
    v_max := (v_state->>'max')::integer;
    v_deleted := public.cache_cleanup_sweep(p_table, p_cutoff, v_from, v_step);
    v_step := CASE WHEN v_deleted = 0 THEN v_max
                   ELSE least(v_max, greatest(1, ceil(p_batch_size * v_step::float8 / v_deleted)))
              END;
    RETURN QUERY SELECT v_deleted, v_from + (v_state->>'pages')::bigint >= (v_state->>'end')::bigint,
                        v_state || jsonb_build_object('page', v_from + (v_state->>'pages')::bigint,
                                                      'pages', v_step);
END
$fn$;

COMMENT ON FUNCTION public.cache_cleanup_sweep(regclass, timestamptz, bigint, integer) IS
    'Delete the rows with expires_at < p_cutoff stored in heap pages [p_from_page, '
    'p_from_page + p_pages); returns the rows deleted.';
COMMENT ON FUNCTION public.cache_cleanup_step(regclass, integer, timestamptz, jsonb, real) IS
    'One batch of an expired-row cleanup (keyset or sweep, chosen on the first call); loop '
    'with the returned state, one transaction per call, until done. Shared by gth-maintd '
    'cache_cleanup and CALL cleanup_expired_cache().';

CREATE OR REPLACE PROCEDURE public.cleanup_expired_cache(
    p_batch_size      integer DEFAULT 2000,
    p_tables          text[]  DEFAULT ARRAY['flight_search_cache', 'hotel_search_cache'],
    p_sweep_threshold real    DEFAULT 0.2
)
LANGUAGE plpgsql
AS $proc$
DECLARE
    v_table  text;
    v_rel    regclass;
    v_cutoff timestamptz := now();
    v_state  jsonb;
    v_total  bigint;
    r        record;
BEGIN
    FOREACH v_table IN ARRAY p_tables LOOP
        v_rel := v_table::regclass;
        v_state := NULL;
        v_total := 0;
        LOOP
            SELECT * INTO r
              FROM public.cache_cleanup_step(v_rel, p_batch_size, v_cutoff, v_state, p_sweep_threshold);
            v_total := v_total + r.deleted;
            COMMIT;  -- one short transaction per batch
            EXIT WHEN r.done;
            v_state := r.state;
        END LOOP;
        RAISE NOTICE 'cleanup_expired_cache: % expired rows deleted from % (%)',
            v_total, v_rel, r.state->>'mode';
    END LOOP;
END
$proc$;

COMMENT ON PROCEDURE public.cleanup_expired_cache(integer, text[], real) IS
    'Hourly cache cleanup for psql or pg_cron: CALL cleanup_expired_cache(); outside a '
    'transaction block. Same batches as the gth-maintd cache_cleanup job; run VACUUM '
    '(ANALYZE) on the table afterwards when it deleted many rows (procedures cannot).';
