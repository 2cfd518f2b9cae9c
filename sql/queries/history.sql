-- Run history of gth-maintd (maintenance.job_runs). Loaded by daemon/history.py.

-- name: claim
-- The first replica to insert (task, scheduled_for) owns the tick.
INSERT INTO maintenance.job_runs (task, trigger, scheduled_for, dry_run, host, pid)
VALUES (%(task)s, %(trigger)s, coalesce(%(scheduled_for)s, clock_timestamp()), %(dry_run)s,
        %(host)s, %(pid)s)
ON CONFLICT ON CONSTRAINT job_runs_task_tick_key DO NOTHING
RETURNING id, run_id, scheduled_for

-- name: finish
UPDATE maintenance.job_runs
   SET finished_at = clock_timestamp(), outcome = %(outcome)s, rows = %(rows)s,
       error = %(error)s, details = %(details)s
 WHERE id = %(id)s

-- name: mark_interrupted
-- Only called while holding the task's advisory lock: any run still 'running' is orphaned.
UPDATE maintenance.job_runs
   SET finished_at = clock_timestamp(), outcome = 'failure',
       error = 'interrupted: the process running it (' || host || ' pid ' || pid || ') died'
 WHERE task = %(task)s AND outcome = 'running'
RETURNING id, run_id, host, pid

-- name: last_success
SELECT DISTINCT ON (task) task, extract(epoch FROM finished_at)::float8
  FROM maintenance.job_runs
 WHERE outcome = 'success' AND NOT dry_run
 ORDER BY task, finished_at DESC

-- name: last_runs
SELECT DISTINCT ON (task) task, trigger, started_at, finished_at, outcome, rows, error, host
  FROM maintenance.job_runs
 ORDER BY task, started_at DESC

-- name: last_details
SELECT details
  FROM maintenance.job_runs
 WHERE task = %(task)s AND outcome = 'success' AND NOT dry_run AND details IS NOT NULL
 ORDER BY finished_at DESC
 LIMIT 1
