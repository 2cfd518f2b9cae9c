"""reindex (weekly): REINDEX INDEX CONCURRENTLY for btree indexes above the bloat threshold.

Bloat is estimated without contrib (pgstattuple is not in every build, e.g. the PostgreSQL 18
wheel): the expected size of a freshly built index, from the index's reltuples, the average
key width in pg_stats and the fillfactor, against its actual size (formula in
sql/queries/reindex.sql). bloat = 1 - expected / actual. An index is rebuilt when
  * bloat >= `bloat_ratio` (default 0.3: at least 30 % of its pages would go away), and
  * it is at least `min_index_bytes` big (small indexes are cheap to scan however bloated).
Indexes without statistics, non-btree indexes, exclusion-constraint indexes (REINDEX
CONCURRENTLY refuses them) and partitioned parent indexes (no storage; their partitions'
indexes are considered one by one) are skipped.

REINDEX / DROP INDEX CONCURRENTLY run in autocommit. They take SHARE UPDATE EXCLUSIVE on the
table, which conflicts with no read or write, then wait for older transactions; those waits
queue nobody behind them, so they get their own, longer lock_timeout
(`concurrent_lock_timeout_ms`) instead of the job's short one.

A REINDEX CONCURRENTLY that fails (timeout, cancellation, crash) leaves an invalid index named
<index>_ccnew (or <index>_ccold after the swap). Such leftovers are detected (invalid and named
_ccnew/_ccold[N]) and dropped with DROP INDEX CONCURRENTLY before the rebuilds and again after
a failed one, except while a backend is building an index on that table right now.

rows = indexes rebuilt. Dry run: lists the leftovers and the indexes it would rebuild.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql

from daemon.db import error_text
from daemon.errors import JobFailed
from daemon.jobs._util import job_settings, session_settings
from daemon.jobs.base import Job, JobContext, JobResult
from daemon.settings import ReindexSettings
from daemon.sqlfiles import query


def _q(name: str) -> sql.SQL:
    return query("reindex", name)


def estimates(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    cur = conn.execute(_q("btree_estimates"))
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def pick(rows: list[dict[str, Any]], settings: ReindexSettings) -> list[dict[str, Any]]:
    """Indexes to rebuild, the most wasted bytes first."""
    chosen = [r for r in rows if r["bloat"] is not None and r["bloat"] >= settings.bloat_ratio
              and r["bytes"] >= settings.min_index_bytes]
    return sorted(chosen, key=lambda r: r["bytes"] * r["bloat"], reverse=True)


class ReindexJob(Job):
    name = "reindex"
    supports_dry_run = True

    def run(self, ctx: JobContext) -> JobResult:
        settings = job_settings(ctx, ReindexSettings)
        failed: dict[str, str] = {}
        rebuilt: list[dict[str, Any]] = []
        with ctx.connection() as conn:
            dropped = self._drop_leftovers(ctx, conn, settings, failed)
            rows = estimates(conn)
            candidates = pick(rows, settings)
            no_stats = sum(1 for r in rows if r["bloat"] is None)
            ctx.log.info("index bloat estimated", indexes=len(rows), candidates=len(candidates),
                         without_statistics=no_stats, bloat_ratio=settings.bloat_ratio,
                         min_index_bytes=settings.min_index_bytes)
            if ctx.dry_run:
                return JobResult(details={
                    "dry_run": True, "would_drop_leftovers": dropped,
                    "would_reindex": [self._describe(r) for r in candidates],
                    "indexes_estimated": len(rows), "without_statistics": no_stats,
                })
            for row in candidates:
                if ctx.should_stop():
                    break
                name = f"{row['schema']}.{row['index_name']}"
                try:
                    rebuilt.append(self._reindex(ctx, conn, settings, row))
                except psycopg.Error as exc:
                    failed[name] = error_text(exc)
                    ctx.log.error("REINDEX CONCURRENTLY failed", index=name, error=failed[name])
                    dropped += self._drop_leftovers(ctx, conn, settings, failed)
        details: dict[str, Any] = {
            "reindexed": rebuilt, "leftovers_dropped": dropped,
            "candidates": len(candidates), "indexes_estimated": len(rows),
            "bytes_saved": sum(r["bytes_before"] - r["bytes_after"] for r in rebuilt),
        }
        ctx.log.info("reindex done", reindexed=len(rebuilt), leftovers_dropped=len(dropped),
                     bytes_saved=details["bytes_saved"], failed=len(failed))
        if failed:
            details["failed"] = failed
            raise JobFailed(f"{len(failed)} index operation(s) failed: "
                            + "; ".join(f"{k}: {v}" for k, v in sorted(failed.items())), details)
        return JobResult(details=details)

    @staticmethod
    def _describe(row: dict[str, Any]) -> dict[str, Any]:
        return {"index": f"{row['schema']}.{row['index_name']}", "bytes": row["bytes"],
                "estimated_bloat": row["bloat"]}

    def _reindex(self, ctx: JobContext, conn: psycopg.Connection[Any], settings: ReindexSettings,
                 row: dict[str, Any]) -> dict[str, Any]:
        ident = sql.Identifier(row["schema"], row["index_name"])
        started = time.monotonic()
        with session_settings(conn, lock_timeout=settings.concurrent_lock_timeout_ms):
            conn.execute(sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(ident))
        after = conn.execute(_q("index_state"),
                             {"schema": row["schema"], "name": row["index_name"]}).fetchone()
        result = {**self._describe(row), "bytes_before": row["bytes"],
                  "bytes_after": int(after[0]) if after else 0,
                  "seconds": round(time.monotonic() - started, 3)}
        ctx.add_rows(1)
        ctx.log.info("index rebuilt", index=result["index"], estimated_bloat=row["bloat"],
                     bytes_before=result["bytes_before"], bytes_after=result["bytes_after"],
                     seconds=result["seconds"])
        return result

    def _drop_leftovers(self, ctx: JobContext, conn: psycopg.Connection[Any],
                        settings: ReindexSettings, failed: dict[str, str]) -> list[str]:
        dropped: list[str] = []
        for schema, name, table, busy in conn.execute(_q("leftovers")).fetchall():
            label = f"{schema}.{name}"
            if busy:
                ctx.log.info("invalid index left alone: an index build is running on its table",
                             index=label, table=table)
                continue
            if ctx.dry_run:
                dropped.append(label)
                continue
            try:
                with session_settings(conn, lock_timeout=settings.concurrent_lock_timeout_ms):
                    conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
                        sql.Identifier(schema, name)))
            except psycopg.Error as exc:
                failed[label] = f"drop leftover: {error_text(exc)}"
                ctx.log.error("could not drop leftover invalid index", index=label,
                              error=failed[label])
                continue
            dropped.append(label)
            ctx.log.warning("dropped invalid index left by a failed REINDEX CONCURRENTLY",
                            index=label, table=table)
        return dropped


JOB = ReindexJob
