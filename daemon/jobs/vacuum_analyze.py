"""vacuum_analyze (daily): ANALYZE every day, VACUUM (ANALYZE) on `vacuum_weekday` (UTC).

Targets: `tables` from the configuration, or every table of schema public that is not a
partition (plain tables and partitioned parents). Every statement runs in autocommit (VACUUM
cannot run in a transaction block) under the job's statement_timeout and lock_timeout; a
lock timeout is retried with jittered backoff (`lock_retries`) and then counted as a failure
for that relation only: the others still run and the run fails at the end.

Partitioned tables. Autovacuum vacuums and analyzes the partitions but never ANALYZEs a
partitioned parent, so the planner has no statistics for queries over the whole hierarchy
unless someone runs ANALYZE on the parent. Each leaf partition is handled as its own
statement (one busy partition fails one statement, not the whole hierarchy, and the job can
stop between partitions), then the parent:
  * PostgreSQL 18+: leaves get ANALYZE / VACUUM (ANALYZE) like plain tables, then
    `ANALYZE ONLY parent` samples the hierarchy for the parent's own statistics.
  * before 18 (no ONLY): leaves get VACUUM without ANALYZE on the vacuum day and nothing on
    other days, then `ANALYZE parent`, which analyzes the parent and recurses into every
    leaf, so each leaf is analyzed exactly once either way.

rows = relations processed (one per statement that succeeded: a table, a partition, a parent).
Option --vacuum runs the VACUUM (ANALYZE) pass whatever the weekday. Dry run: lists the
statements it would run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from daemon.db import error_text, retry_on_lock_timeout
from daemon.errors import JobFailed
from daemon.jobs._util import job_settings, server_version
from daemon.jobs.base import Job, JobContext, JobOption, JobResult
from daemon.settings import VacuumAnalyzeSettings
from daemon.sqlfiles import query

ANALYZE_ONLY_SINCE = 180000  # ANALYZE ONLY <partitioned table> exists from PostgreSQL 18

COMMANDS = {
    "ANALYZE": sql.SQL("ANALYZE {}"),
    "ANALYZE ONLY": sql.SQL("ANALYZE ONLY {}"),
    "VACUUM": sql.SQL("VACUUM {}"),
    "VACUUM (ANALYZE)": sql.SQL("VACUUM (ANALYZE) {}"),
}


@dataclass(frozen=True)
class Step:
    command: str
    schema: str
    relname: str

    @property
    def target(self) -> str:
        return f"{self.schema}.{self.relname}"

    @property
    def statement(self) -> sql.Composed:
        return COMMANDS[self.command].format(sql.Identifier(self.schema, self.relname))

    def describe(self) -> str:
        return f"{self.command} {self.target}"


def plan_steps(
    conn: psycopg.Connection[Any], settings: VacuumAnalyzeSettings, vacuum: bool
) -> tuple[list[Step], dict[str, str]]:
    """The statements of this run, and the configured names that could not be planned."""
    version = server_version(conn)
    problems: dict[str, str] = {}
    targets: list[tuple[int, str, str, str]] = []
    if settings.tables:
        for name in settings.tables:
            row = conn.execute(query("vacuum_analyze", "resolve"), {"name": name}).fetchone()
            if row is None:
                problems[name] = "does not exist"
            elif row[3] not in ("r", "p", "m"):
                problems[name] = f"not a table (relkind {row[3]})"
            else:
                targets.append((int(row[0]), row[1], row[2], row[3]))
    else:
        rows = conn.execute(query("vacuum_analyze", "public_tables")).fetchall()
        targets = [(int(r[0]), r[1], r[2], r[3]) for r in rows]

    plain = "VACUUM (ANALYZE)" if vacuum else "ANALYZE"
    steps: list[Step] = []
    for oid, schema, relname, relkind in targets:
        if relkind != "p":
            steps.append(Step(plain, schema, relname))
            continue
        leaves = conn.execute(query("vacuum_analyze", "leaves"), {"parent": oid}).fetchall()
        for leaf_schema, leaf_name in leaves:
            if version >= ANALYZE_ONLY_SINCE:
                steps.append(Step(plain, leaf_schema, leaf_name))
            elif vacuum:
                steps.append(Step("VACUUM", leaf_schema, leaf_name))
        parent = "ANALYZE ONLY" if version >= ANALYZE_ONLY_SINCE else "ANALYZE"
        steps.append(Step(parent, schema, relname))
    return steps, problems


class VacuumAnalyzeJob(Job):
    name = "vacuum_analyze"
    supports_dry_run = True
    options = (JobOption("--vacuum", "run the weekly VACUUM (ANALYZE) pass today"),)

    def run(self, ctx: JobContext) -> JobResult:
        settings = job_settings(ctx, VacuumAnalyzeSettings)
        today = datetime.now(UTC).weekday()
        vacuum = bool(ctx.options.get("vacuum")) or today == settings.vacuum_weekday
        failed: dict[str, str] = {}
        done: list[str] = []
        slowest: tuple[float, str] = (0.0, "")
        stopped = False
        with ctx.connection() as conn:
            steps, problems = plan_steps(conn, settings, vacuum)
            failed.update(problems)
            ctx.log.info("vacuum/analyze pass", mode="vacuum" if vacuum else "analyze",
                         statements=len(steps), dry_run=ctx.dry_run)
            if ctx.dry_run:
                return JobResult(details={
                    "mode": "vacuum" if vacuum else "analyze", "dry_run": True,
                    "would_run": [s.describe() for s in steps], "problems": problems,
                })
            started = time.monotonic()
            for step in steps:
                if ctx.should_stop():
                    stopped = True
                    break
                t0 = time.monotonic()
                try:
                    retry_on_lock_timeout(lambda s=step: conn.execute(s.statement),  # type: ignore[misc]
                                          settings.lock_retries, label=step.describe())
                except psycopg.Error as exc:
                    failed[step.target] = f"{step.command}: {error_text(exc)}"
                    ctx.log.error("vacuum/analyze statement failed", statement=step.describe(),
                                  error=error_text(exc))
                    continue
                seconds = time.monotonic() - t0
                slowest = max(slowest, (seconds, step.describe()))
                done.append(step.describe())
                ctx.add_rows(1)
                ctx.log.debug("statement done", statement=step.describe(),
                              seconds=round(seconds, 3))
        details: dict[str, Any] = {
            "mode": "vacuum" if vacuum else "analyze",
            "relations": len(done),
            "seconds": round(time.monotonic() - started, 3),
            "slowest": {"statement": slowest[1], "seconds": round(slowest[0], 3)},
        }
        if stopped:
            details["stopped_early"] = True
        ctx.log.info("vacuum/analyze done", mode=details["mode"], relations=len(done),
                     failed=len(failed), seconds=details["seconds"], stopped_early=stopped)
        if failed:
            details["failed"] = failed
            raise JobFailed(f"{len(failed)} relation(s) failed: "
                            + "; ".join(f"{k}: {v}" for k, v in sorted(failed.items())), details)
        return JobResult(details=details)


JOB = VacuumAnalyzeJob
