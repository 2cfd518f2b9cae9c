"""history_prune: keep the daemon's own run history bounded.

Deletes rows of maintenance.job_runs that started more than `keep_days` ago and are
finished (never a 'running' row: that is a live run, or an orphan the runner marks as
interrupted). The newest successful run of each task is always kept, so the last-success
gauges can still be seeded from the history after a restart even for a task that has not
succeeded within keep_days. Deletion goes in committed keyset batches.

It also thins maintenance.audit_checkpoints (audit_verify writes one row an hour): valid
incremental checkpoints older than keep_days go; full-pass checkpoints (one a day), failed
passes (evidence) and the newest valid checkpoint stay.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from daemon.jobs._util import job_settings
from daemon.jobs.base import Job, JobContext, JobResult
from daemon.settings import HistoryPruneSettings
from daemon.sqlfiles import query

GROUP = "history_prune"
_START = dt.datetime(1, 1, 1, tzinfo=dt.UTC)


class HistoryPrune(Job):
    name = "history_prune"
    supports_dry_run = True

    def run(self, ctx: JobContext) -> JobResult:
        settings = job_settings(ctx, HistoryPruneSettings)
        keep_days = settings.keep_days
        batch_size = settings.batch_size
        with ctx.connection() as conn:
            cutoff_row = conn.execute(
                "SELECT now() - make_interval(days => %s)", (keep_days,)
            ).fetchone()
            assert cutoff_row is not None
            cutoff: dt.datetime = cutoff_row[0]
            protected = [r[0] for r in conn.execute(query(GROUP, "protected_ids")).fetchall()]
            params: dict[str, Any] = {"cutoff": cutoff, "protected": protected}
            if ctx.dry_run:
                row = conn.execute(query(GROUP, "count_due"), params).fetchone()
                due = int(row[0]) if row else 0
                row = conn.execute(query(GROUP, "count_checkpoints_due"), params).fetchone()
                checkpoints = int(row[0]) if row else 0
                ctx.log.info("dry run: run history rows that would be deleted", rows=due,
                             audit_checkpoints=checkpoints, cutoff=cutoff.isoformat(),
                             keep_days=keep_days)
                return JobResult(details={"would_delete": due,
                                          "would_delete_checkpoints": checkpoints,
                                          "cutoff": cutoff.isoformat(),
                                          "kept_latest_success": len(protected)})
            deleted = 0
            batches = 0
            after_started, after_id = _START, 0
            stopped = False
            while True:
                if ctx.should_stop():
                    stopped = True
                    break
                with conn.transaction():
                    row = conn.execute(query(GROUP, "delete_batch"), {
                        **params, "after_started": after_started, "after_id": after_id,
                        "limit": batch_size,
                    }).fetchone()
                if row is None:
                    break
                count, after_started, after_id = int(row[0]), row[1], int(row[2])
                deleted += count
                batches += 1
                ctx.add_rows(count)
            checkpoints = 0
            while not stopped and not ctx.should_stop():
                with conn.transaction():
                    gone = conn.execute(query(GROUP, "delete_checkpoints_batch"),
                                        {"cutoff": cutoff, "limit": batch_size}).rowcount
                checkpoints += gone
                ctx.add_rows(gone)
                if gone < batch_size:
                    break
        ctx.log.info("run history pruned", deleted=deleted, batches=batches,
                     audit_checkpoints_deleted=checkpoints, cutoff=cutoff.isoformat(),
                     stopped_early=stopped)
        return JobResult(details={"deleted": deleted, "batches": batches,
                                  "audit_checkpoints_deleted": checkpoints,
                                  "cutoff": cutoff.isoformat(), "stopped_early": stopped})


JOB = HistoryPrune
