-- audit_verify: hash-chain verification in batches, checkpoints in maintenance.audit_checkpoints.

-- name: head
-- The newest chain row (one index probe on audit_log_chain_position_key).
SELECT a.id, a.chain_position, a.row_hash
FROM public.audit_log a
ORDER BY a.chain_position DESC
LIMIT 1;

-- name: verify_range
SELECT rows_checked, redacted_rows, last_position, last_hash,
       first_bad_position, first_bad_id, reason
FROM public.audit_verify_range(%(from_position)s, %(prev_hash)s, %(limit)s);

-- name: row_at
SELECT a.id, a.prev_hash, a.row_hash
FROM public.audit_log a
WHERE a.chain_position = %(position)s;

-- name: next_row_from
-- The first existing row at or after a position (to name the row after a gap).
SELECT a.chain_position, a.id
FROM public.audit_log a
WHERE a.chain_position >= %(position)s
ORDER BY a.chain_position
LIMIT 1;

-- name: last_checkpoint
-- The newest valid checkpoint: where an incremental pass starts, and the seal log entry it
-- anchored.
SELECT verified_through_position, row_hash, audit_id, verified_at, full_pass, seal_seq,
       seal_hash
FROM maintenance.audit_checkpoints
WHERE valid
ORDER BY id DESC
LIMIT 1;

-- name: last_entry
-- The newest pass, valid or not (a failed pass keeps every following run a full pass).
SELECT id, valid, full_pass, verified_at, reason, first_bad_position
FROM maintenance.audit_checkpoints
ORDER BY id DESC
LIMIT 1;

-- name: last_full_pass
SELECT max(verified_at)
FROM maintenance.audit_checkpoints
WHERE valid AND full_pass;

-- name: checkpoint_mismatch
-- The earliest valid checkpoint the chain no longer matches: its position is beyond the
-- head (truncated tail) or its row is gone or carries another hash (replaced tail).
SELECT c.verified_through_position, c.row_hash, c.audit_id, c.verified_at,
       a.id AS current_id, a.row_hash AS current_hash
FROM maintenance.audit_checkpoints c
LEFT JOIN public.audit_log a ON a.chain_position = c.verified_through_position
WHERE c.valid
  AND c.verified_through_position > 0
  AND a.row_hash IS DISTINCT FROM c.row_hash
ORDER BY c.verified_through_position
LIMIT 1;

-- name: insert_checkpoint
INSERT INTO maintenance.audit_checkpoints
    (verified_through_position, row_hash, audit_id, full_pass, valid, from_position,
     rows_checked, redacted_rows, duration_ms, first_bad_position, first_bad_id, reason,
     seal_seq, seal_hash)
VALUES (%(position)s, %(row_hash)s, %(audit_id)s, %(full_pass)s, %(valid)s, %(from_position)s,
        %(rows_checked)s, %(redacted_rows)s, %(duration_ms)s, %(first_bad_position)s,
        %(first_bad_id)s, %(reason)s, %(seal_seq)s, %(seal_hash)s)
RETURNING id, verified_at;

-- name: database_identity
SELECT current_database(), (SELECT system_identifier FROM pg_control_system())::text;

-- name: last_row_before
-- The last existing row of [from, before): where a gap starts.
SELECT max(a.chain_position)
FROM public.audit_log a
WHERE a.chain_position >= %(from_position)s AND a.chain_position < %(before)s;

-- name: verify_and_seal
SELECT rows_checked, redacted_rows, last_position, last_hash,
       first_bad_position, first_bad_id, reason, seal_seq
FROM public.audit_verify_and_seal(%(first)s, %(last)s, %(prev_hash)s);

-- name: check_sealed
SELECT first_position, last_position, seal_seq, status, first_prev_hash, last_row_hash,
       rows_found, redacted_rows
FROM public.audit_check_sealed_blocks(%(firsts)s, %(trusted_seq)s);

-- name: seal_blocks
-- Every block's newest seal log entry, in chain order.
SELECT DISTINCT ON (s.first_position)
       s.first_position, s.last_position, s.seq, s.kind, s.first_prev_hash
FROM maintenance.audit_seals s
ORDER BY s.first_position, s.seq DESC;

-- name: seal_log_break
SELECT seq, first_position, reason FROM public.audit_seal_log_first_break();

-- name: seal_entry
SELECT s.entry_hash, s.first_position FROM maintenance.audit_seals s WHERE s.seq = %(seq)s;

-- name: seal_entries_after
SELECT s.seq, s.kind, s.first_position, s.entry_hash
FROM maintenance.audit_seals s
WHERE s.seq > %(seq)s
ORDER BY s.seq;

-- name: seal_anchor_mismatch
-- The earliest seal log entry a valid checkpoint anchored that is gone or has another hash.
SELECT c.seal_seq, c.seal_hash, c.verified_at, s.entry_hash, s.first_position
FROM maintenance.audit_checkpoints c
LEFT JOIN maintenance.audit_seals s ON s.seq = c.seal_seq
WHERE c.valid
  AND c.seal_seq IS NOT NULL
  AND s.entry_hash IS DISTINCT FROM c.seal_hash
ORDER BY c.seal_seq
LIMIT 1;
