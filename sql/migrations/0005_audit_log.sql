-- Hash-chained, redactable audit trail (hash_version 2).
--
-- Every audited row change appends one row. Rows form a single chain ordered by
-- chain_position (1, 2, 3, ... without gaps; NOT by id, identities commit out of order):
--
--   payload_bytes = convert_to(payload::text, 'UTF8'), fixed once at append time: the
--                   canonical payload, stored; payload (jsonb) is a generated column parsed
--                   from it, so verification hashes raw bytes and never renders JSONB
--   payload_hash  = sha256(payload_bytes)
--   row_hash      = sha256(prev_hash || canonical fields)            (audit_row_hash_v2)
--   prev_hash     = row_hash of position - 1 (32 zero bytes for position 1)
--
-- canonical fields (binary, independent of TimeZone/DateStyle/client encoding), in order:
--   int8send(chain_position)                                          8 bytes
--   timestamptz_send(occurred_at)    microseconds since 2000-01-01 00:00:00 UTC, 8 bytes
--   uuid_send(row_id)                                                 16 bytes
--   payload_hash                                                      32 bytes
--   '\x01' || uuid_send(user_id), or '\x00' when user_id IS NULL       17 or 1 bytes
--   convert_to(table_name || ' ' || operation || ' ' || actor, 'UTF8')  the rest
--     (table_name and operation contain no space, checked; actor is the rest of the input:
--      every field before it has a fixed or self-delimiting length, so the encoding is
--      unambiguous; the database encoding is UTF8, 0002)
--
-- GDPR: audit_redact_user() sets payload_bytes = NULL (payload follows) and redacted_at;
-- payload_hash and row_hash stay, so the chain still verifies (a redacted row's payload is
-- simply not re-hashed).
--
-- Concurrency: the append takes pg_advisory_xact_lock(6780008002) (single-bigint key space,
-- which never collides with gth-maintd's two-int locks), then reads the head with
-- ORDER BY chain_position DESC LIMIT 1. Under READ COMMITTED every statement takes a new
-- snapshot, so it sees the previous holder's committed row; the lock is held to commit.
-- Under REPEATABLE READ / SERIALIZABLE the snapshot may predate the previous holder's
-- commit: the insert then fails on audit_log_chain_position_key (SQLSTATE 23505) instead
-- of forking the chain; retry the transaction. No head row is updated per audited row.

-- The generated payload column's expression. IMMUTABLE: the database encoding is UTF8 for
-- the database's life (0002), so the conversion cannot change.
CREATE FUNCTION public.audit_payload_from_bytes(p_bytes bytea) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT convert_from(p_bytes, 'UTF8')::jsonb $$;

CREATE TABLE public.audit_log (
    id             bigint GENERATED ALWAYS AS IDENTITY,
    chain_position bigint      NOT NULL,
    occurred_at    timestamptz NOT NULL,
    table_name     text        NOT NULL,
    operation      text        NOT NULL,
    row_id         uuid        NOT NULL,
    user_id        uuid,
    actor          text        NOT NULL,
    payload_bytes  bytea,
    payload        jsonb GENERATED ALWAYS AS (public.audit_payload_from_bytes(payload_bytes))
                   STORED,
    payload_hash   bytea       NOT NULL,
    prev_hash      bytea       NOT NULL,
    row_hash       bytea       NOT NULL,
    redacted_at    timestamptz,
    hash_version   smallint    NOT NULL DEFAULT 2,
    CONSTRAINT audit_log_pkey PRIMARY KEY (id),
    CONSTRAINT audit_log_chain_position_key UNIQUE (chain_position),
    CONSTRAINT audit_log_chain_position_check CHECK (chain_position > 0),
    CONSTRAINT audit_log_operation_check CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
    CONSTRAINT audit_log_table_name_check CHECK (table_name <> '' AND strpos(table_name, ' ') = 0),
    CONSTRAINT audit_log_hash_length_check
        CHECK (octet_length(payload_hash) = 32 AND octet_length(prev_hash) = 32
               AND octet_length(row_hash) = 32),
    CONSTRAINT audit_log_hash_version_check CHECK (hash_version = 2),
    CONSTRAINT audit_log_redaction_check CHECK (redacted_at IS NULL OR payload_bytes IS NULL)
);
CREATE INDEX audit_log_user_idx ON public.audit_log (user_id, occurred_at);
CREATE INDEX audit_log_row_idx ON public.audit_log (table_name, row_id);
CREATE INDEX audit_log_occurred_at_idx ON public.audit_log (occurred_at);
CREATE INDEX audit_log_payload_gin ON public.audit_log USING gin (payload jsonb_path_ops);

COMMENT ON TABLE public.audit_log IS
    'Append-only, SHA-256 hash-chained audit trail (hash_version 2, see docs/schema.md); '
    'payload is redactable for GDPR, hashes are not.';
COMMENT ON COLUMN public.audit_log.payload_bytes IS
    'The canonical payload: the UTF-8 bytes hashed into payload_hash. NULL once redacted.';
COMMENT ON COLUMN public.audit_log.payload IS
    'payload_bytes parsed as jsonb (generated, read-only).';

CREATE FUNCTION public.audit_zero_hash() RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea $$;

-- The canonical payload bytes (computed once, at append time).
CREATE FUNCTION public.audit_payload_bytes_v2(p_payload jsonb) RETURNS bytea
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT convert_to(p_payload::text, 'UTF8') $$;

-- Inlined into the verifier's query (a single SELECT of one expression).
CREATE FUNCTION public.audit_row_hash_v2(
    p_prev_hash bytea, p_chain_position bigint, p_occurred_at timestamptz, p_table_name text,
    p_operation text, p_actor text, p_row_id uuid, p_user_id uuid, p_payload_hash bytea)
    RETURNS bytea
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT sha256(
        p_prev_hash
        || int8send(p_chain_position)
        || timestamptz_send(p_occurred_at)
        || uuid_send(p_row_id)
        || p_payload_hash
        || coalesce('\x01'::bytea || uuid_send(p_user_id), '\x00'::bytea)
        || convert_to(p_table_name || ' ' || p_operation || ' ' || p_actor, 'UTF8'))
$$;

COMMENT ON FUNCTION public.audit_row_hash_v2(bytea, bigint, timestamptz, text, text, text, uuid,
                                             uuid, bytea) IS
    'Canonical row hash of audit_log hash_version 2 (binary encoding, see docs/schema.md).';

-- The one place that extends the chain. Only callable from a trigger (the audited tables'
-- triggers): a direct call from an application session is refused.
CREATE FUNCTION public.audit_append(p_table_name text, p_operation text, p_row_id uuid,
                                   p_user_id uuid, p_actor text, p_payload jsonb)
    RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_payload      bytea := public.audit_payload_bytes_v2(p_payload);
    v_payload_hash bytea := sha256(v_payload);
    v_position     bigint;
    v_prev         bytea;
    v_at           timestamptz;
BEGIN
    IF pg_trigger_depth() < 1 THEN
        RAISE EXCEPTION 'audit_append may only be called by an audit trigger'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM pg_advisory_xact_lock(6780008002);
    SELECT a.chain_position, a.row_hash INTO v_position, v_prev
      FROM public.audit_log a ORDER BY a.chain_position DESC LIMIT 1;
    v_position := coalesce(v_position, 0) + 1;
    v_prev := coalesce(v_prev, public.audit_zero_hash());
    v_at := clock_timestamp();
    INSERT INTO public.audit_log (chain_position, occurred_at, table_name, operation, row_id,
                                  user_id, actor, payload_bytes, payload_hash, prev_hash,
                                  row_hash)
    VALUES (v_position, v_at, p_table_name, p_operation, p_row_id, p_user_id, p_actor,
            v_payload, v_payload_hash, v_prev,
            public.audit_row_hash_v2(v_prev, v_position, v_at, p_table_name, p_operation,
                                     p_actor, p_row_id, p_user_id, v_payload_hash));
    RETURN v_position;
END
$$;
REVOKE EXECUTE ON FUNCTION public.audit_append(text, text, uuid, uuid, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.audit_append(text, text, uuid, uuid, text, jsonb)
    TO gth_app, gth_admin, gth_maint;

-- AFTER ROW trigger of the audited tables. Arguments: the column naming the data subject
-- (user id), then columns never to store (secrets such as OAuth tokens).
-- Runs as the invoker so that actor is the real role (current_user), plus the optional
-- application setting app.actor ("gth_app/support-agent-7").
CREATE FUNCTION public.audit_capture() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_exclude text[] := CASE WHEN TG_NARGS > 1 THEN TG_ARGV[1:TG_NARGS - 1] ELSE '{}' END;
    v_new     jsonb;
    v_old     jsonb;
    v_row     jsonb;
    v_payload jsonb;
    v_actor   text := current_user::text
                      || coalesce('/' || nullif(current_setting('app.actor', true), ''), '');
BEGIN
    IF TG_OP <> 'DELETE' THEN
        v_new := to_jsonb(NEW) - v_exclude;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        v_old := to_jsonb(OLD) - v_exclude;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF (v_new - 'updated_at') = (v_old - 'updated_at') THEN
            RETURN NULL;  -- nothing audited changed (e.g. only a token was refreshed)
        END IF;
        v_payload := jsonb_build_object('old', v_old, 'new', v_new);
    ELSIF TG_OP = 'INSERT' THEN
        v_payload := jsonb_build_object('new', v_new);
    ELSE
        v_payload := jsonb_build_object('old', v_old);
    END IF;
    v_row := coalesce(v_new, v_old);
    PERFORM public.audit_append(TG_TABLE_NAME::text, TG_OP, (v_row ->> 'id')::uuid,
                                (v_row ->> TG_ARGV[0])::uuid, v_actor, v_payload);
    RETURN NULL;
END
$$;

CREATE TRIGGER users_audit AFTER INSERT OR UPDATE OR DELETE ON public.users
    FOR EACH ROW EXECUTE FUNCTION public.audit_capture('id');
CREATE TRIGGER oauth_accounts_audit AFTER INSERT OR UPDATE OR DELETE ON public.oauth_accounts
    FOR EACH ROW EXECUTE FUNCTION public.audit_capture('user_id', 'access_token',
                                                       'refresh_token', 'id_token');
CREATE TRIGGER bookings_audit AFTER INSERT OR UPDATE OR DELETE ON public.bookings
    FOR EACH ROW EXECUTE FUNCTION public.audit_capture('user_id');
CREATE TRIGGER booking_items_audit AFTER INSERT OR UPDATE OR DELETE ON public.booking_items
    FOR EACH ROW EXECUTE FUNCTION public.audit_capture('user_id');
CREATE TRIGGER flight_bookings_audit AFTER INSERT OR UPDATE OR DELETE ON public.flight_bookings
    FOR EACH ROW EXECUTE FUNCTION public.audit_capture('user_id');
CREATE TRIGGER hotel_bookings_audit AFTER INSERT OR UPDATE OR DELETE ON public.hotel_bookings
    FOR EACH ROW EXECUTE FUNCTION public.audit_capture('user_id');
CREATE TRIGGER crypto_payments_audit AFTER INSERT OR UPDATE OR DELETE ON public.crypto_payments
    FOR EACH ROW EXECUTE FUNCTION public.audit_capture('user_id');

-- Append-only: the only UPDATE allowed is a redaction (payload_bytes -> NULL, redacted_at
-- set; the generated payload follows).
CREATE FUNCTION public.audit_log_guard() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND OLD.payload_bytes IS NOT NULL AND NEW.payload_bytes IS NULL
       AND OLD.redacted_at IS NULL AND NEW.redacted_at IS NOT NULL
       AND (to_jsonb(NEW) - '{payload,payload_bytes,redacted_at}'::text[])
           = (to_jsonb(OLD) - '{payload,payload_bytes,redacted_at}'::text[])
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % refused (only audit_redact_user() may redact payloads)',
        TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_guard_update BEFORE UPDATE ON public.audit_log
    FOR EACH ROW EXECUTE FUNCTION public.audit_log_guard();
CREATE TRIGGER audit_log_guard_delete BEFORE DELETE ON public.audit_log
    FOR EACH ROW EXECUTE FUNCTION public.audit_log_guard();
CREATE TRIGGER audit_log_guard_truncate BEFORE TRUNCATE ON public.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION public.audit_log_guard();

-- GDPR erasure of a user's audit payloads; hashes and the chain stay intact.
CREATE FUNCTION public.audit_redact_user(p_user_id uuid) RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_count bigint;
BEGIN
    UPDATE public.audit_log
       SET payload_bytes = NULL, redacted_at = now()
     WHERE user_id = p_user_id AND payload_bytes IS NOT NULL;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
REVOKE EXECUTE ON FUNCTION public.audit_redact_user(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.audit_redact_user(uuid) TO gth_maint, gth_admin;

-- Verify positions p_from_position .. p_from_position + p_limit - 1 given the row_hash
-- expected before p_from_position (32 zero bytes before position 1; NULL = take the stored
-- row_hash of position p_from_position - 1, or zeros for position 1). One ordered index scan
-- with lag()/lead(), no row-by-row loop.
-- Result (one row): rows_checked / redacted_rows = good rows before the first bad one (all
-- rows of the range when none is bad); last_position / last_hash = the last good row (the
-- start state when the first row is bad), i.e. where the next call continues;
-- first_bad_position / first_bad_id / reason = the first bad row, NULL when all are good.
-- Reasons: 'position gap', 'prev_hash mismatch', 'unknown hash_version',
-- 'payload missing without redaction', 'payload hash mismatch', 'row hash mismatch'.
CREATE FUNCTION public.audit_verify_range(p_from_position bigint, p_prev_hash bytea,
                                          p_limit bigint)
    RETURNS TABLE (rows_checked bigint, redacted_rows bigint, last_position bigint,
                   last_hash bytea, first_bad_position bigint, first_bad_id bigint,
                   reason text)
    LANGUAGE sql STABLE
    -- The per-row hashing (the expensive part) runs in parallel workers below a Gather
    -- Merge that keeps chain order for the window functions.
    SET parallel_setup_cost = 100
    SET parallel_tuple_cost = 0.001
    SET min_parallel_index_scan_size = 0
    AS $$
    WITH start AS (
        SELECT coalesce(p_prev_hash,
                        CASE WHEN p_from_position = 1 THEN public.audit_zero_hash()
                             ELSE (SELECT a.row_hash FROM public.audit_log a
                                    WHERE a.chain_position = p_from_position - 1) END) AS hash
    ), checked AS (
        SELECT y.id, y.chain_position, y.redacted, y.rn,
               coalesce(y.lag_hash, (SELECT hash FROM start)) AS expected_prev,
               CASE
                   WHEN y.chain_position <> p_from_position - 1 + y.rn
                       THEN 'position gap'
                   WHEN y.prev_hash IS DISTINCT FROM coalesce(y.lag_hash, (SELECT hash FROM start))
                       THEN 'prev_hash mismatch'
                   ELSE y.local_reason
               END AS reason
          FROM (SELECT x.id, x.chain_position, x.prev_hash, x.redacted, x.local_reason,
                       row_number() OVER w AS rn,
                       lag(x.row_hash) OVER w AS lag_hash
                  FROM (SELECT a.id,
                               a.chain_position,
                               a.row_hash,
                               a.prev_hash,
                               a.payload_bytes IS NULL AND a.redacted_at IS NOT NULL
                                   AS redacted,
                               CASE
                                   WHEN a.hash_version <> 2
                                       THEN 'unknown hash_version'
                                   WHEN a.payload_bytes IS NULL AND a.redacted_at IS NULL
                                       THEN 'payload missing without redaction'
                                   WHEN a.payload_bytes IS NOT NULL
                                        AND sha256(a.payload_bytes) <> a.payload_hash
                                       THEN 'payload hash mismatch'
                                   WHEN public.audit_row_hash_v2(a.prev_hash, a.chain_position,
                                                                 a.occurred_at, a.table_name,
                                                                 a.operation, a.actor, a.row_id,
                                                                 a.user_id, a.payload_hash)
                                        <> a.row_hash
                                       THEN 'row hash mismatch'
                               END AS local_reason
                          FROM public.audit_log a
                         WHERE a.chain_position >= p_from_position
                           AND a.chain_position < p_from_position
                                 + least(p_limit, 9223372036854775807 - p_from_position)
                         ORDER BY a.chain_position
                        OFFSET 0) x
                WINDOW w AS (ORDER BY x.chain_position)) y
    ), summary AS (
        SELECT count(*) AS n,
               count(*) FILTER (WHERE c.redacted) AS n_redacted,
               max(c.chain_position) AS last_pos,
               min(c.rn) FILTER (WHERE c.reason IS NOT NULL) AS bad_rn,
               min(c.chain_position) FILTER (WHERE c.reason IS NOT NULL) AS bad_position,
               (array_agg(c.id ORDER BY c.rn) FILTER (WHERE c.reason IS NOT NULL))[1] AS bad_id,
               (array_agg(c.reason ORDER BY c.rn)
                    FILTER (WHERE c.reason IS NOT NULL))[1] AS bad_reason,
               (array_agg(c.expected_prev ORDER BY c.rn)
                    FILTER (WHERE c.reason IS NOT NULL))[1] AS hash_before_bad
          FROM checked c
    )
    SELECT CASE WHEN m.bad_rn IS NULL THEN m.n ELSE m.bad_rn - 1 END,
           CASE WHEN m.bad_rn IS NULL THEN m.n_redacted
                ELSE (SELECT count(*) FROM public.audit_log a
                       WHERE a.chain_position >= p_from_position
                         AND a.chain_position < m.bad_position
                         AND a.payload_bytes IS NULL AND a.redacted_at IS NOT NULL) END,
           CASE WHEN m.bad_rn IS NULL THEN coalesce(m.last_pos, p_from_position - 1)
                ELSE p_from_position + m.bad_rn - 2 END,
           CASE WHEN m.bad_rn IS NOT NULL THEN m.hash_before_bad
                WHEN m.last_pos IS NULL THEN s.hash
                ELSE (SELECT a.row_hash FROM public.audit_log a
                       WHERE a.chain_position = m.last_pos) END,
           m.bad_position,
           m.bad_id,
           m.bad_reason
      FROM summary m CROSS JOIN start s
$$;

COMMENT ON FUNCTION public.audit_verify_range(bigint, bytea, bigint) IS
    'Verify p_limit chain positions from p_from_position given the hash expected before it; '
    'returns good rows checked, redacted rows, where to continue, and the first bad row.';

-- The whole chain: the first broken row, no row when the chain is intact.
CREATE FUNCTION public.audit_chain_first_break()
    RETURNS TABLE (chain_position bigint, id bigint, reason text)
    LANGUAGE sql STABLE
    AS $$
    SELECT v.first_bad_position, v.first_bad_id, v.reason
      FROM public.audit_verify_range(1, public.audit_zero_hash(), 9223372036854775807) v
     WHERE v.first_bad_position IS NOT NULL
$$;

CREATE FUNCTION public.verify_audit_log_integrity() RETURNS boolean
    LANGUAGE sql STABLE
    AS $$ SELECT NOT EXISTS (SELECT 1 FROM public.audit_chain_first_break()) $$;

CREATE FUNCTION public.audit_chain_head()
    RETURNS TABLE (chain_position bigint, row_hash bytea)
    LANGUAGE sql STABLE
    AS $$
    SELECT a.chain_position, a.row_hash FROM public.audit_log a
     ORDER BY a.chain_position DESC LIMIT 1
$$;

-- Bulk loads (demo data, imports) that wrote audited tables with the audit triggers
-- bypassed (session_replication_role = replica, superuser only) append their audit rows
-- here: p_staging has columns (seq bigint, occurred_at timestamptz, table_name text,
-- operation text, row_id uuid, user_id uuid, actor text, payload jsonb); rows are chained
-- in seq order after the current head. The chain is inherently sequential, so this is a
-- loop; it runs once per load. Returns the number of rows appended.
CREATE FUNCTION public.audit_append_staged(p_staging regclass) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_head_position bigint;
    v_head_hash     bytea;
    v_prev          bytea;
    v_hashes        bytea[] := '{}';
    v_count         bigint;
    r               record;
BEGIN
    PERFORM pg_advisory_xact_lock(6780008002);
    SELECT a.chain_position, a.row_hash INTO v_head_position, v_head_hash
      FROM public.audit_log a ORDER BY a.chain_position DESC LIMIT 1;
    v_head_position := coalesce(v_head_position, 0);
    v_head_hash := coalesce(v_head_hash, public.audit_zero_hash());
    v_prev := v_head_hash;
    -- Canonical payloads and their hashes set-based (the expensive part, parallel-safe) ...
    DROP TABLE IF EXISTS pg_temp.audit_staged_rows;
    EXECUTE format(
        'CREATE TEMP TABLE audit_staged_rows ON COMMIT DROP AS
         SELECT b.*, sha256(b.payload_bytes) AS payload_hash
           FROM (SELECT row_number() OVER (ORDER BY s.seq) AS n, s.occurred_at, s.table_name,
                        s.operation, s.row_id, s.user_id, s.actor,
                        public.audit_payload_bytes_v2(s.payload) AS payload_bytes
                   FROM %s s) b', p_staging);
    -- ... then the inherently sequential row hashes, kept in memory ...
    FOR r IN SELECT * FROM pg_temp.audit_staged_rows ORDER BY n LOOP
        v_prev := public.audit_row_hash_v2(v_prev, v_head_position + r.n, r.occurred_at,
                                           r.table_name, r.operation, r.actor, r.row_id,
                                           r.user_id, r.payload_hash);
        v_hashes := array_append(v_hashes, v_prev);
    END LOOP;
    -- ... and one INSERT.
    INSERT INTO public.audit_log (chain_position, occurred_at, table_name, operation, row_id,
                                  user_id, actor, payload_bytes, payload_hash, prev_hash,
                                  row_hash)
    SELECT v_head_position + h.n, h.occurred_at, h.table_name, h.operation, h.row_id,
           h.user_id, h.actor, h.payload_bytes, h.payload_hash,
           coalesce(lag(u.row_hash) OVER (ORDER BY h.n), v_head_hash), u.row_hash
      FROM pg_temp.audit_staged_rows h
      JOIN unnest(v_hashes) WITH ORDINALITY u(row_hash, n) ON u.n = h.n
     ORDER BY h.n;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    DROP TABLE pg_temp.audit_staged_rows;
    RETURN v_count;
END
$$;
REVOKE EXECUTE ON FUNCTION public.audit_append_staged(regclass) FROM PUBLIC;
