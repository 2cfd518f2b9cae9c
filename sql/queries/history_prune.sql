-- history_prune: delete old finished rows of maintenance.job_runs in keyset batches.
-- Never touches 'running' rows, and keeps the newest successful run of every task so the
-- daemon can still seed gth_maint_task_last_success_timestamp_seconds after a restart.

-- name: protected_ids
SELECT DISTINCT ON (task) id
FROM maintenance.job_runs
WHERE outcome = 'success' AND NOT dry_run
ORDER BY task, finished_at DESC;

-- name: count_due
SELECT count(*)
FROM maintenance.job_runs
WHERE started_at < %(cutoff)s
  AND outcome <> 'running'
  AND id <> ALL (%(protected)s::bigint[]);

-- name: delete_batch
-- Keyset on (started_at, id) so every batch starts after the previous one instead of
-- rescanning the dead index entries it left; rows are deleted by ctid (a plain table).
WITH victims AS (
    SELECT ctid, started_at, id
    FROM maintenance.job_runs
    WHERE started_at < %(cutoff)s
      AND (started_at, id) > (%(after_started)s, %(after_id)s)
      AND outcome <> 'running'
      AND id <> ALL (%(protected)s::bigint[])
    ORDER BY started_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM maintenance.job_runs r
    WHERE r.ctid = ANY (ARRAY(SELECT ctid FROM victims))
      AND r.outcome <> 'running'
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS deleted, v.started_at, v.id
FROM victims v
ORDER BY v.started_at DESC, v.id DESC
LIMIT 1;

-- name: count_checkpoints_due
SELECT count(*)
FROM maintenance.audit_checkpoints c
WHERE c.valid AND NOT c.full_pass AND c.verified_at < %(cutoff)s
  AND c.id < (SELECT max(v.id) FROM maintenance.audit_checkpoints v WHERE v.valid);

-- name: delete_checkpoints_batch
-- Thin the audit_verify checkpoints: valid incremental ones older than keep_days go; every
-- full-pass checkpoint (one a day), every failed pass (evidence) and the newest valid
-- checkpoint (where the next incremental run starts) stay.
WITH victims AS (
    SELECT c.id
    FROM maintenance.audit_checkpoints c
    WHERE c.valid AND NOT c.full_pass AND c.verified_at < %(cutoff)s
      AND c.id < (SELECT max(v.id) FROM maintenance.audit_checkpoints v WHERE v.valid)
    ORDER BY c.id
    LIMIT %(limit)s
)
DELETE FROM maintenance.audit_checkpoints c
USING victims
WHERE c.id = victims.id;
