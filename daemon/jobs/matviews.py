"""matviews (hourly): REFRESH MATERIALIZED VIEW CONCURRENTLY for each configured view.

CONCURRENTLY builds the new contents next to the old ones and applies the difference under an
EXCLUSIVE lock, which blocks other refreshes and writes to the view but never readers. It
needs a unique, valid, non-partial index on plain columns; a view without one is a failure
for that view, never a silent fallback to the blocking refresh.

A view that was never populated (created WITH NO DATA: pg_class.relispopulated false) cannot
be refreshed concurrently and cannot be read either, so it gets one plain REFRESH first.

Each refresh runs in autocommit under the job's statement_timeout and lock_timeout (the wait
for another refresh in progress); a lock timeout is retried with jittered backoff
(`lock_retries`). One view's failure does not stop the others; the run fails at the end.
On success gth_maint_matview_last_refresh_timestamp_seconds{view} is set.

Privileges: the job runs REFRESH itself when its role may (owner, superuser, MAINTAIN /
pg_maintain on PostgreSQL 17+); otherwise it calls the SECURITY DEFINER function
refresh_materialized_view(view, concurrently) of the schema (sql/migrations/0007), which
does the same statement for the views it allows.

rows = views refreshed. Dry run: reports which views would be refreshed and how.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql

from daemon import metrics
from daemon.db import error_text, retry_on_lock_timeout
from daemon.errors import JobFailed
from daemon.jobs._util import job_settings
from daemon.jobs.base import Job, JobContext, JobResult
from daemon.settings import MatviewsSettings
from daemon.sqlfiles import query

REFRESH = sql.SQL("REFRESH MATERIALIZED VIEW {}")
REFRESH_CONCURRENTLY = sql.SQL("REFRESH MATERIALIZED VIEW CONCURRENTLY {}")


class MatviewsJob(Job):
    name = "matviews"
    supports_dry_run = True

    def run(self, ctx: JobContext) -> JobResult:
        settings = job_settings(ctx, MatviewsSettings)
        views: dict[str, Any] = {}
        failed: dict[str, str] = {}
        with ctx.connection() as conn:
            for view in settings.views:
                if ctx.should_stop():
                    views[view] = {"skipped": "stop requested"}
                    continue
                try:
                    views[view] = self._refresh(ctx, conn, settings, view)
                except (psycopg.Error, JobFailed) as exc:
                    failed[view] = error_text(exc)
                    ctx.log.error("materialized view refresh failed", view=view,
                                  error=failed[view])
        details: dict[str, Any] = {"views": views, "dry_run": ctx.dry_run}
        if failed:
            details["failed"] = failed
            raise JobFailed("refresh failed for " + ", ".join(f"{k} ({v})"
                                                              for k, v in failed.items()), details)
        return JobResult(details=details)

    def _refresh(
        self, ctx: JobContext, conn: psycopg.Connection[Any], settings: MatviewsSettings,
        view: str,
    ) -> dict[str, Any]:
        row = conn.execute(query("matviews", "describe"), {"name": view}).fetchone()
        if row is None:
            raise JobFailed(f"materialized view {view!r} does not exist")
        schema, relname, populated, has_unique, may_refresh = row
        ident = sql.Identifier(schema, relname)
        if not populated:
            # never populated: unreadable anyway, so the plain refresh blocks no one
            mode = "initial"
        elif has_unique:
            mode = "concurrent"
        else:
            raise JobFailed(
                f"{schema}.{relname} has no unique index on plain columns; REFRESH ... "
                "CONCURRENTLY needs one (a plain refresh would block readers)"
            )

        def refresh() -> None:
            if may_refresh:
                statement = REFRESH_CONCURRENTLY if mode == "concurrent" else REFRESH
                conn.execute(statement.format(ident))
            else:  # not the owner (PostgreSQL < 17 has no MAINTAIN privilege)
                conn.execute(query("matviews", "refresh_via_function"),
                             {"view": ident.as_string(conn), "concurrently": mode == "concurrent"})

        if ctx.dry_run:
            ctx.log.info("dry run: would refresh materialized view", view=view, mode=mode)
            return {"would_refresh": mode}

        started = time.monotonic()
        retry_on_lock_timeout(refresh, settings.lock_retries, label=f"refresh {schema}.{relname}")
        seconds = round(time.monotonic() - started, 3)
        metrics.MATVIEW_LAST_REFRESH.labels(view=view).set(time.time())
        ctx.add_rows(1)
        via = "statement" if may_refresh else "refresh_materialized_view()"
        ctx.log.info("materialized view refreshed", view=view, mode=mode, via=via,
                     seconds=seconds)
        return {"mode": mode, "via": via, "seconds": seconds}


JOB = MatviewsJob
