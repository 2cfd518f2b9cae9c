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
-- The newest valid checkpoint: where an incremental pass starts.
SELECT verified_through_position, row_hash, audit_id, verified_at, full_pass
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
     rows_checked, redacted_rows, duration_ms, first_bad_position, first_bad_id, reason)
VALUES (%(position)s, %(row_hash)s, %(audit_id)s, %(full_pass)s, %(valid)s, %(from_position)s,
        %(rows_checked)s, %(redacted_rows)s, %(duration_ms)s, %(first_bad_position)s,
        %(first_bad_id)s, %(reason)s)
RETURNING id, verified_at;

-- name: database_identity
SELECT current_database(), (SELECT system_identifier FROM pg_control_system())::text;

-- name: last_row_before
-- The last existing row of [from, before): where a gap starts.
SELECT max(a.chain_position)
FROM public.audit_log a
WHERE a.chain_position >= %(from_position)s AND a.chain_position < %(before)s;
