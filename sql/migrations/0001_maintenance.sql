-- gth-maintd's own bookkeeping: the run history (in the spirit of pg_cron's job_run_details).
-- The unique key on (task, scheduled_for) is what makes a scheduled tick run at most once
-- across all replicas: the first replica to insert the row owns the tick.

CREATE SCHEMA IF NOT EXISTS maintenance;

CREATE TABLE maintenance.job_runs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    task          text        NOT NULL,
    trigger       text        NOT NULL,
    scheduled_for timestamptz NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at   timestamptz,
    outcome       text        NOT NULL DEFAULT 'running',
    rows          bigint      NOT NULL DEFAULT 0,
    dry_run       boolean     NOT NULL DEFAULT false,
    error         text,
    details       jsonb,
    host          text        NOT NULL,
    pid           integer     NOT NULL,
    CONSTRAINT job_runs_run_id_key UNIQUE (run_id),
    CONSTRAINT job_runs_task_tick_key UNIQUE (task, scheduled_for),
    CONSTRAINT job_runs_trigger_check CHECK (trigger IN ('schedule', 'signal', 'cli', 'startup')),
    CONSTRAINT job_runs_outcome_check CHECK (outcome IN ('running', 'success', 'failure')),
    CONSTRAINT job_runs_rows_check CHECK (rows >= 0),
    CONSTRAINT job_runs_finished_check CHECK ((outcome = 'running') = (finished_at IS NULL))
);

COMMENT ON TABLE maintenance.job_runs IS
    'One row per gth-maintd job run; outcome failure with error ''interrupted: ...'' marks runs '
    'whose process died.';

-- Last success per task (status, metric seeding) and pruning by age.
CREATE INDEX job_runs_task_success_idx ON maintenance.job_runs (task, finished_at DESC)
    WHERE outcome = 'success' AND NOT dry_run;
CREATE INDEX job_runs_task_started_idx ON maintenance.job_runs (task, started_at DESC);
CREATE INDEX job_runs_started_idx ON maintenance.job_runs (started_at);
CREATE INDEX job_runs_running_idx ON maintenance.job_runs (task) WHERE outcome = 'running';
CREATE INDEX job_runs_details_gin ON maintenance.job_runs USING gin (details);
