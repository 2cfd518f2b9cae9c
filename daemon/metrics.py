"""Every Prometheus metric of gth-maintd, declared once.

Label `task`, never `job` (Prometheus owns `job` and renames ours to `exported_job`).
Known label values are pre-initialised so series exist before the first run, `_created`
series are disabled, and no label takes unbounded values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from daemon import __version__

disable_created_metrics()  # type: ignore[no-untyped-call]

OUTCOMES = ("success", "failure", "skipped")

TASK_RUNS = Counter(
    "gth_maint_task_runs", "Job runs by outcome (skipped: another replica or run had it).",
    ["task", "outcome"],
)
TASK_DURATION = Histogram(
    "gth_maint_task_duration_seconds", "Wall time of job runs that executed.", ["task"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
TASK_LAST_SUCCESS = Gauge(
    "gth_maint_task_last_success_timestamp_seconds",
    "Unix time of the last successful run (seeded from the run history at startup).", ["task"],
)
TASK_RUNNING = Gauge("gth_maint_task_running", "1 while a run of the task is in flight here.",
                     ["task"])
TASK_ROWS = Counter("gth_maint_task_rows", "Rows processed by job runs.", ["task"])
TASK_INTERVAL = Gauge(
    "gth_maint_task_interval_seconds",
    "Longest gap between two scheduled runs of an enabled task (alert thresholds use it).",
    ["task"],
)
TASK_ENABLED = Gauge("gth_maint_task_enabled", "1 if the task is scheduled.", ["task"])
TASK_NEXT_RUN = Gauge("gth_maint_task_next_run_timestamp_seconds",
                      "Unix time of the next scheduled run.", ["task"])

DB_UP = Gauge("gth_maint_db_up", "1 if the last database probe succeeded.")
SCHEMA_VERSION = Gauge("gth_maint_schema_version", "Highest applied migration version.")
BUILD_INFO = Gauge("gth_maint_build_info", "Always 1; the version is in the label.", ["version"])
HEARTBEAT = Gauge("gth_maint_heartbeat_timestamp_seconds",
                  "Unix time of the scheduler's last heartbeat.")
READY = Gauge("gth_maint_ready", "1 when the schema is loaded and the database reachable.")

PARTITION_MONTHS_AHEAD = Gauge(
    "gth_maint_partition_months_ahead",
    "Whole months after the current one that already have a partition.", ["table"],
)
PARTITION_DEFAULT_ROWS = Gauge(
    "gth_maint_partition_default_rows", "Rows found in the table's default partition.", ["table"]
)
MATVIEW_LAST_REFRESH = Gauge(
    "gth_maint_matview_last_refresh_timestamp_seconds",
    "Unix time of the last successful refresh of the materialized view.", ["view"],
)
AUDIT_CHAIN_VALID = Gauge(
    "gth_maint_audit_chain_valid", "1 if the last verification passed, 0 if broken, NaN unknown."
)
AUDIT_VERIFIED_ROWS = Counter("gth_maint_audit_chain_verified_rows",
                              "Audit rows verified.")
AUDIT_HEAD_ID = Gauge("gth_maint_audit_chain_head_id",
                      "Chain position of the newest verified audit row.")


def initialise(
    tasks: Iterable[str], tables: Iterable[str] = (), views: Iterable[str] = ()
) -> None:
    """Create every known series so dashboards and alerts see zeros, not gaps."""
    BUILD_INFO.labels(version=__version__).set(1)
    AUDIT_CHAIN_VALID.set(math.nan)
    for task in tasks:
        for outcome in OUTCOMES:
            TASK_RUNS.labels(task=task, outcome=outcome)
        TASK_DURATION.labels(task=task)
        TASK_LAST_SUCCESS.labels(task=task)
        TASK_RUNNING.labels(task=task).set(0)
        TASK_ROWS.labels(task=task)
    for table in tables:
        PARTITION_DEFAULT_ROWS.labels(table=table)
    for view in views:
        MATVIEW_LAST_REFRESH.labels(view=view)
