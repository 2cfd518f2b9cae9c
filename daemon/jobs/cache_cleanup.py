"""cache_cleanup (hourly): delete expired rows of the search caches in short batches.

Each batch is one committed transaction calling the SQL function cache_cleanup_step(), the
same function `CALL cleanup_expired_cache()` loops over (sql/migrations/0020), so the daemon
and people running SQL by hand share one implementation. The first call of a run chooses:
  * keyset (normal case): up to `batch_size` expired rows after a cursor on (expires_at, id)
    are picked through the expires_at index and deleted by ctid;
  * sweep (at least `sweep_threshold` of the rows expired, e.g. after downtime): expired rows
    are deleted in consecutive ranges of heap pages (TID range scans), reading the table once
    in physical order instead of one random heap access per expired row; each range is sized
    to delete about `batch_size` rows.
ctid identifies a row only within one heap, so the functions refuse partitioned tables; the
caches are plain tables.

The cutoff is the database's now() at the start of the run: rows expiring during the run are
left for the next one. Live rows are never touched (not even their hit_count), and a row
updated concurrently between pick and delete is skipped rather than deleted.

After a table lost more than `vacuum_after_rows` rows it gets VACUUM (ANALYZE), outside any
transaction, under its own statement timeout (`vacuum_timeout_ms`), so the dead tuples do not
slow the cache lookups until autovacuum comes by. A VACUUM that cannot get its lock within
lock_timeout is skipped with a warning (the deletes are done; autovacuum will follow).

rows = rows deleted. Dry run: counts the expired rows per table, deletes nothing.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.types.json import Jsonb

from daemon.db import error_text
from daemon.errors import JobFailed
from daemon.jobs._util import job_settings, session_settings
from daemon.jobs.base import Job, JobContext, JobResult
from daemon.settings import CacheCleanupSettings
from daemon.sqlfiles import query


def _q(name: str) -> sql.SQL:
    return query("cache_cleanup", name)


class CacheCleanupJob(Job):
    name = "cache_cleanup"
    supports_dry_run = True

    def run(self, ctx: JobContext) -> JobResult:
        settings = job_settings(ctx, CacheCleanupSettings)
        tables: dict[str, Any] = {}
        failed: dict[str, str] = {}
        stopped = False
        with ctx.connection() as conn:
            row = conn.execute("SELECT now()").fetchone()
            assert row is not None
            cutoff: datetime = row[0]
            for name in settings.tables:
                if ctx.should_stop():
                    stopped = True
                    break
                try:
                    tables[name] = self._one_table(ctx, conn, settings, name, cutoff)
                    stopped = stopped or bool(tables[name].get("stopped"))
                except (psycopg.Error, JobFailed) as exc:
                    failed[name] = error_text(exc)
                    ctx.log.error("cache cleanup failed for a table", table=name,
                                  error=failed[name])
        details: dict[str, Any] = {
            "cutoff": cutoff.isoformat(), "tables": tables, "dry_run": ctx.dry_run,
            "deleted": sum(t.get("deleted", 0) for t in tables.values()),
        }
        if stopped:
            details["stopped_early"] = True
        if failed:
            details["failed"] = failed
            raise JobFailed(
                "cache cleanup failed for " + ", ".join(f"{k} ({v})" for k, v in failed.items()),
                details,
            )
        ctx.log.info("cache cleanup done", deleted=details["deleted"], dry_run=ctx.dry_run,
                     stopped_early=stopped)
        return JobResult(details=details)

    def _one_table(
        self, ctx: JobContext, conn: psycopg.Connection[Any], settings: CacheCleanupSettings,
        name: str, cutoff: datetime,
    ) -> dict[str, Any]:
        found = conn.execute(_q("resolve_table"), {"name": name}).fetchone()
        if found is None:
            raise JobFailed(f"table {name!r} does not exist")
        regclass, schema, relname, relkind = found
        if relkind != "r":
            # ctid is only unique within one heap: a partitioned cache would need a per-partition
            # loop. Refuse instead of guessing (the SQL function refuses too).
            raise JobFailed(f"{regclass} is not a plain table (relkind {relkind})")
        ident = sql.Identifier(schema, relname)

        if ctx.dry_run:
            got = conn.execute(_q("count_expired").format(table=ident), {"cutoff": cutoff})
            expired = int(got.fetchone()[0])  # type: ignore[index]
            ctx.log.info("dry run: expired cache rows", table=regclass, would_delete=expired)
            return {"would_delete": expired, "deleted": 0}

        started = time.monotonic()
        deleted = batches = 0
        longest = 0.0
        state: Any = None
        stopped = False
        while True:
            if ctx.should_stop():
                stopped = True
                break
            t0 = time.monotonic()
            with conn.transaction():
                res = conn.execute(_q("cleanup_step"), {
                    "table": regclass, "batch_size": settings.batch_size, "cutoff": cutoff,
                    "state": Jsonb(state) if state is not None else None,
                    "sweep_threshold": settings.sweep_threshold,
                }).fetchone()
            longest = max(longest, time.monotonic() - t0)
            assert res is not None
            gone, done, state = res
            batches += 1
            deleted += gone
            ctx.add_rows(gone)
            if done:
                break

        mode = state.get("mode") if isinstance(state, dict) else None
        result: dict[str, Any] = {
            "deleted": deleted, "batches": batches, "mode": mode,
            "longest_batch_ms": round(longest * 1000, 1),
            "seconds": round(time.monotonic() - started, 3),
        }
        if stopped:
            result["stopped"] = True
        ctx.log.info("expired cache rows deleted", table=regclass, deleted=deleted, mode=mode,
                     batches=batches, longest_batch_ms=result["longest_batch_ms"],
                     stopped_early=stopped)
        if settings.vacuum_after_rows and deleted > settings.vacuum_after_rows and not stopped:
            result["vacuum"] = self._vacuum(ctx, conn, settings, ident, regclass)
        return result

    def _vacuum(
        self, ctx: JobContext, conn: psycopg.Connection[Any], settings: CacheCleanupSettings,
        ident: sql.Identifier, regclass: str,
    ) -> str:
        t0 = time.monotonic()
        try:
            with session_settings(conn, statement_timeout=settings.vacuum_timeout_ms):
                conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(ident))
        except pg_errors.LockNotAvailable as exc:
            ctx.log.warning("VACUUM skipped: table busy", table=regclass, error=error_text(exc))
            return "skipped: lock not available"
        seconds = round(time.monotonic() - t0, 3)
        ctx.log.info("VACUUM (ANALYZE) after cleanup", table=regclass, seconds=seconds)
        return f"done in {seconds} s"


JOB = CacheCleanupJob
