-- Sealed blocks of the audit chain: the daily full verification hashes each block of rows
-- once, instead of every row twice (audit_log and its hash_version 2 are unchanged).
--
-- A seal says: chain positions first..last were verified row by row (payload hash, row
-- hash, links: audit_verify_range) and, in the same locked call, their stored bytes hashed
-- in chain order to `digest` (audit_block_digest). A later full pass re-hashes the block's
-- current bytes with ONE sha256 call and compares: equal means byte-identical to what was
-- verified, so the per-row hashes need not be recomputed; different sends the verifier back
-- to row-by-row verification from that block, which names the first bad row (or, when every
-- row's own hashes are consistent, reports the block as rewritten: that is a forger who
-- recomputed the hashes, which the chain alone cannot see).
--
-- The seal log is itself a hash chain (entry_hash covers the previous entry's hash and the
-- entry), append-only, and gth-maintd anchors its head with every checkpoint (in
-- maintenance.audit_checkpoints and in its state-directory file). A seal is trusted only once
-- a verification pass has anchored it: a seal forged by whoever can write this table is never
-- trusted, it only earns its block a row-by-row pass.
--
-- GDPR redaction changes a block's bytes: audit_redact_user() appends an 'unseal' entry for
-- every sealed block it touches. Sealing and redaction never interleave: sealers hold advisory
-- lock 6780008003 shared (so that parallel connections seal disjoint blocks at once),
-- redaction holds it exclusively; appends to the log take 6780008004 (always after 6780008003,
-- so the two never deadlock). The next full pass verifies unsealed blocks row by row and
-- seals them again.

CREATE TABLE maintenance.audit_seals (
    seq             bigint      NOT NULL,
    kind            text        NOT NULL,
    first_position  bigint      NOT NULL,
    last_position   bigint      NOT NULL,
    digest          bytea,
    first_prev_hash bytea,
    last_row_hash   bytea,
    redacted_rows   bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    prev_entry_hash bytea       NOT NULL,
    entry_hash      bytea       NOT NULL,
    CONSTRAINT audit_seals_pkey PRIMARY KEY (seq),
    CONSTRAINT audit_seals_kind_check CHECK (kind IN ('seal', 'unseal')),
    CONSTRAINT audit_seals_bounds_check CHECK (first_position > 0 AND last_position >= first_position),
    CONSTRAINT audit_seals_hashes_check CHECK (
        CASE kind WHEN 'seal' THEN octet_length(digest) = 32 AND octet_length(first_prev_hash) = 32
                                   AND octet_length(last_row_hash) = 32
                  ELSE digest IS NULL AND first_prev_hash IS NULL AND last_row_hash IS NULL END)
);
-- A block's newest entry, and the block holding a position (both read it backwards).
CREATE INDEX audit_seals_block_idx ON maintenance.audit_seals (first_position, seq);

COMMENT ON TABLE maintenance.audit_seals IS
    'Append-only, hash-chained log of sealed audit_log blocks (see 0033 and docs/audit.md): '
    'the newest entry of a block says whether its digest may stand in for per-row hashing.';

CREATE FUNCTION maintenance.audit_seals_guard() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'maintenance.audit_seals is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_seals_guard_update BEFORE UPDATE OR DELETE ON maintenance.audit_seals
    FOR EACH ROW EXECUTE FUNCTION maintenance.audit_seals_guard();
CREATE TRIGGER audit_seals_guard_truncate BEFORE TRUNCATE ON maintenance.audit_seals
    FOR EACH STATEMENT EXECUTE FUNCTION maintenance.audit_seals_guard();

-- An entry's hash: the previous entry's hash, then the entry's fields in binary.
CREATE FUNCTION public.audit_seal_entry_hash(
    p_prev_entry_hash bytea, p_seq bigint, p_kind text, p_first bigint, p_last bigint,
    p_digest bytea, p_first_prev_hash bytea, p_last_row_hash bytea, p_redacted bigint,
    p_created_at timestamptz)
    RETURNS bytea
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT sha256(
        p_prev_entry_hash
        || int8send(p_seq)
        || CASE p_kind WHEN 'seal' THEN '\x01'::bytea ELSE '\x00'::bytea END
        || int8send(p_first) || int8send(p_last)
        || coalesce(p_digest || p_first_prev_hash || p_last_row_hash, ''::bytea)
        || int8send(p_redacted)
        || timestamptz_send(p_created_at))
$$;

-- The bytes of positions first..last, hashed in chain order: every stored field of every row
-- (positions, ids, times, hashes, the redaction mark, table/operation/actor and the payload,
-- variable-length parts length-prefixed), so any change to any row changes the digest.
-- The input comes from an ordered subquery (not string_agg(... ORDER BY), which sorts every
-- block again on PostgreSQL 15): a subquery with ORDER BY is never flattened and nothing
-- reorders its rows before the aggregate (PostgreSQL documents this pattern).
CREATE FUNCTION public.audit_block_digest(p_first bigint, p_last bigint)
    RETURNS TABLE (digest bytea, row_count bigint, redacted_rows bigint)
    LANGUAGE sql STABLE
    AS $$
    SELECT sha256(coalesce(string_agg(r.bytes, ''::bytea), ''::bytea)), count(*),
           count(*) FILTER (WHERE r.redacted)
      FROM (SELECT int8send(a.chain_position) || int8send(a.id)
                   || a.prev_hash || a.row_hash || a.payload_hash
                   || timestamptz_send(a.occurred_at) || uuid_send(a.row_id)
                   || coalesce('\x01'::bytea || uuid_send(a.user_id), '\x00'::bytea)
                   || int2send(a.hash_version)
                   || coalesce('\x01'::bytea || timestamptz_send(a.redacted_at), '\x00'::bytea)
                   || int4send(octet_length(a.actor))
                   || convert_to(a.table_name || ' ' || a.operation || ' ' || a.actor, 'UTF8')
                   || coalesce(int4send(octet_length(a.payload_bytes)) || a.payload_bytes,
                               '\xffffffff'::bytea) AS bytes,
                   a.payload_bytes IS NULL AND a.redacted_at IS NOT NULL AS redacted
              FROM public.audit_log a
             WHERE a.chain_position BETWEEN p_first AND p_last
             ORDER BY a.chain_position) r
$$;

-- Append one entry to the seal log, serialised by lock 6780008004 (held to commit).
CREATE FUNCTION public.audit_seal_append(p_kind text, p_first bigint, p_last bigint,
                                         p_digest bytea, p_first_prev_hash bytea,
                                         p_last_row_hash bytea, p_redacted bigint)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_seq  bigint;
    v_prev bytea;
    v_at   timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(6780008004);
    v_at := clock_timestamp();
    SELECT s.seq, s.entry_hash INTO v_seq, v_prev
      FROM maintenance.audit_seals s ORDER BY s.seq DESC LIMIT 1;
    v_seq := coalesce(v_seq, 0) + 1;
    v_prev := coalesce(v_prev, public.audit_zero_hash());
    INSERT INTO maintenance.audit_seals (seq, kind, first_position, last_position, digest,
                                         first_prev_hash, last_row_hash, redacted_rows,
                                         created_at, prev_entry_hash, entry_hash)
    VALUES (v_seq, p_kind, p_first, p_last, p_digest, p_first_prev_hash, p_last_row_hash,
            p_redacted, v_at, v_prev,
            public.audit_seal_entry_hash(v_prev, v_seq, p_kind, p_first, p_last, p_digest,
                                         p_first_prev_hash, p_last_row_hash, p_redacted, v_at));
    RETURN v_seq;
END
$$;
REVOKE EXECUTE ON FUNCTION public.audit_seal_append(text, bigint, bigint, bytea, bytea, bytea,
                                                    bigint) FROM PUBLIC;

-- A new block overlaps no sealed block; an existing block is sealed again with its own bounds.
CREATE FUNCTION public.audit_seal_check_bounds(p_first bigint, p_last bigint) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, public
    AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM maintenance.audit_seals s
                WHERE s.first_position <= p_last AND s.last_position >= p_first
                  AND (s.first_position, s.last_position) <> (p_first, p_last)) THEN
        RAISE EXCEPTION 'audit_verify_and_seal: positions % .. % overlap a sealed block with '
                        'other bounds', p_first, p_last
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION public.audit_seal_check_bounds(bigint, bigint) FROM PUBLIC;

-- Verify positions first..last row by row given the hash expected before first, and seal
-- them when every row is good. A block is either new (overlapping no sealed block; blocks
-- need not be sealed in order, so that parallel connections can seal disjoint ranges) or an
-- existing block sealed again with its own bounds (after a redaction unsealed it). Same
-- result columns as audit_verify_range(), plus the seal's seq (NULL when the block was not
-- sealed because a row is bad or missing).
CREATE FUNCTION public.audit_verify_and_seal(p_first bigint, p_last bigint, p_prev_hash bytea)
    RETURNS TABLE (rows_checked bigint, redacted_rows bigint, last_position bigint,
                   last_hash bytea, first_bad_position bigint, first_bad_id bigint,
                   reason text, seal_seq bigint)
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v record;
    d record;
BEGIN
    IF p_first IS NULL OR p_last IS NULL OR p_first < 1 OR p_last < p_first
       OR octet_length(p_prev_hash) IS DISTINCT FROM 32 THEN
        RAISE EXCEPTION 'audit_verify_and_seal: bad block % .. % or previous hash', p_first, p_last
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock_shared(6780008003);  -- no redaction until this commits
    PERFORM public.audit_seal_check_bounds(p_first, p_last);  -- early, before the work
    SELECT * INTO v FROM public.audit_verify_range(p_first, p_prev_hash, p_last - p_first + 1);
    rows_checked := v.rows_checked;
    redacted_rows := v.redacted_rows;
    last_position := v.last_position;
    last_hash := v.last_hash;
    first_bad_position := v.first_bad_position;
    first_bad_id := v.first_bad_id;
    reason := v.reason;
    IF v.first_bad_position IS NULL AND v.last_position = p_last THEN
        SELECT * INTO d FROM public.audit_block_digest(p_first, p_last);
        PERFORM pg_advisory_xact_lock(6780008004);
        PERFORM public.audit_seal_check_bounds(p_first, p_last);  -- again, now serialised
        seal_seq := public.audit_seal_append('seal', p_first, p_last, d.digest, p_prev_hash,
                                             v.last_hash, d.redacted_rows);
    END IF;
    RETURN NEXT;
END
$$;
REVOKE EXECUTE ON FUNCTION public.audit_verify_and_seal(bigint, bigint, bytea) FROM PUBLIC;

-- Check sealed blocks (given by their first positions, in chain order) against their newest
-- seal, in one statement (one snapshot: a redaction commits its rows and its 'unseal' entry
-- together, so a concurrent redaction shows as 'unsealed', never as a mismatch).
-- status: 'match' (bytes identical to the seal), 'mismatch', or 'unsealed' (the newest entry
-- is not a seal, or not trusted yet: seq above p_trusted_seq; verify such blocks per row).
CREATE FUNCTION public.audit_check_sealed_blocks(p_firsts bigint[], p_trusted_seq bigint)
    RETURNS TABLE (first_position bigint, last_position bigint, seal_seq bigint, status text,
                   first_prev_hash bytea, last_row_hash bytea, rows_found bigint,
                   redacted_rows bigint)
    LANGUAGE sql STABLE
    AS $$
    SELECT f.first_position, s.last_position, s.seq,
           CASE WHEN s.seq IS NULL OR s.kind <> 'seal' OR s.seq > p_trusted_seq THEN 'unsealed'
                WHEN d.digest = s.digest
                     AND d.row_count = s.last_position - s.first_position + 1 THEN 'match'
                ELSE 'mismatch' END,
           s.first_prev_hash, s.last_row_hash, d.row_count, d.redacted_rows
      FROM unnest(p_firsts) WITH ORDINALITY f(first_position, n)
      LEFT JOIN LATERAL (SELECT e.* FROM maintenance.audit_seals e
                          WHERE e.first_position = f.first_position
                          ORDER BY e.seq DESC LIMIT 1) s ON true
      LEFT JOIN LATERAL (SELECT b.* FROM public.audit_block_digest(s.first_position,
                                                                   s.last_position) b
                          WHERE s.kind = 'seal' AND s.seq <= p_trusted_seq) d ON true
     ORDER BY f.n
$$;

-- The first entry of the seal log that is out of place: a missing seq, a broken link, or an
-- entry whose hash does not match its fields. No row when the log is intact.
CREATE FUNCTION public.audit_seal_log_first_break()
    RETURNS TABLE (seq bigint, first_position bigint, reason text)
    LANGUAGE sql STABLE
    AS $$
    SELECT x.seq, x.first_position, x.reason
      FROM (SELECT s.seq, s.first_position,
                   CASE WHEN s.seq <> row_number() OVER w THEN 'missing entries'
                        WHEN s.prev_entry_hash
                             <> coalesce(lag(s.entry_hash) OVER w, public.audit_zero_hash())
                            THEN 'prev_entry_hash mismatch'
                        WHEN s.entry_hash <> public.audit_seal_entry_hash(
                                 s.prev_entry_hash, s.seq, s.kind, s.first_position,
                                 s.last_position, s.digest, s.first_prev_hash,
                                 s.last_row_hash, s.redacted_rows, s.created_at)
                            THEN 'entry hash mismatch'
                   END AS reason
              FROM maintenance.audit_seals s
            WINDOW w AS (ORDER BY s.seq)) x
     WHERE x.reason IS NOT NULL
     ORDER BY x.seq
     LIMIT 1
$$;

-- GDPR erasure of a user's audit payloads; hashes and the chain stay intact. Replaces 0005's
-- version: every sealed block holding a redacted row is unsealed in the same transaction.
CREATE OR REPLACE FUNCTION public.audit_redact_user(p_user_id uuid) RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_positions bigint[];
    v_block     record;
BEGIN
    PERFORM pg_advisory_xact_lock(6780008003);  -- waits for sealers in progress
    WITH redacted AS (
        UPDATE public.audit_log
           SET payload_bytes = NULL, redacted_at = now()
         WHERE user_id = p_user_id AND payload_bytes IS NOT NULL
        RETURNING chain_position)
    SELECT coalesce(array_agg(r.chain_position), '{}') INTO v_positions FROM redacted r;
    FOR v_block IN  -- the newest entry of each block holding a redacted position
        SELECT DISTINCT b.first_position, b.last_position, b.kind
          FROM unnest(v_positions) p(pos)
          CROSS JOIN LATERAL (SELECT s.first_position, s.last_position, s.kind
                                FROM maintenance.audit_seals s
                               WHERE s.first_position <= p.pos
                               ORDER BY s.first_position DESC, s.seq DESC
                               LIMIT 1) b
         WHERE b.last_position >= p.pos
         ORDER BY b.first_position
    LOOP
        IF v_block.kind = 'seal' THEN
            PERFORM public.audit_seal_append('unseal', v_block.first_position,
                                             v_block.last_position, NULL, NULL, NULL, 0);
        END IF;
    END LOOP;
    RETURN cardinality(v_positions);
END
$$;

-- Checkpoints anchor the seal log too: the newest entry a valid pass vouches for.
ALTER TABLE maintenance.audit_checkpoints
    ADD COLUMN seal_seq bigint,
    ADD COLUMN seal_hash bytea,
    ADD CONSTRAINT audit_checkpoints_seal_check
        CHECK ((seal_seq IS NULL) = (seal_hash IS NULL) AND (seal_seq IS NULL OR seal_seq > 0));

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gth_maint') THEN
        -- Only through audit_verify_and_seal() (the schema's default privileges would
        -- otherwise let the daemon's role write maintenance tables directly).
        REVOKE ALL ON maintenance.audit_seals FROM gth_maint;
        GRANT SELECT ON maintenance.audit_seals TO gth_maint;
        GRANT EXECUTE ON FUNCTION public.audit_verify_and_seal(bigint, bigint, bytea)
            TO gth_maint;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gth_admin') THEN
        GRANT SELECT ON maintenance.audit_seals TO gth_admin;
        GRANT EXECUTE ON FUNCTION public.audit_verify_and_seal(bigint, bigint, bytea)
            TO gth_admin;
    END IF;
END
$$;
