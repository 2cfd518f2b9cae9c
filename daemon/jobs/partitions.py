"""partitions (daily, and once at startup): premade month partitions, default-partition
watch, retention.

For every table of `tables` (range-partitioned monthly on one timestamptz column, with a
default partition <parent>_default and months <parent>_pYYYY_MM), in this order:

1. Creation. The current UTC month and `months_ahead` months after it must exist; missing
   ones are created (this also catches up after downtime, since the window is anchored at
   today). At most `max_new_partitions_per_table` partitions are created per table and run,
   window months first; the rest is logged as capped. Creation goes through
   create_month_partition() (sql/migrations/0004): CREATE TABLE ... LIKE + CHECK + ATTACH
   PARTITION, which needs SHARE UPDATE EXCLUSIVE on the parent, so it neither waits for nor
   blocks queries and inserts on the parent (CREATE TABLE ... PARTITION OF would take
   ACCESS EXCLUSIVE). ATTACH does take ACCESS EXCLUSIVE on the default partition while it
   checks it: every DDL statement runs in its own short transaction under the job's short
   lock_timeout (100 ms by default) and is retried with exponential backoff and jitter
   (`ddl_retries`), so a long analytics query delays the DDL, never the inserts.
   A window month whose rows already sit in the default partition cannot be attached: it
   is reported as blocked (and fails the run) until a drain moves those rows.
2. Default partition. Its rows are counted per month (gth_maint_partition_default_rows)
   and exported as CSV to <state_dir>/<export_dir>/<schema>.<table>.default.csv (mode 0600:
   personal data), replaced atomically on every run and removed once the default partition
   is empty. Nothing is moved automatically. `run-job partitions --drain-default` moves
   them: for each month with rows (window months first, then the others, within the same
   per-run cap; months already past retention and non-finite keys stay), the month's table
   is created unattached, rows move in committed batches of `drain_batch_size` (DELETE from
   the default + INSERT in one statement), and the last batch attaches it
   (partition_drain_step() in sql/migrations/0021). A month that fits in one batch moves
   and attaches in a single transaction.
3. Retention, in separate transactions after all creation: partitions wholly older than
   the table's retention_months are detached and dropped or moved to `archive_schema`
   (`retention_action`), one transaction per partition (retire_partition()). Never the
   default partition, the current or a future month, or the last non-default partition.
   DETACH ... CONCURRENTLY would avoid the ACCESS EXCLUSIVE lock on the parent, but
   PostgreSQL refuses it while a default partition exists; plain DETACH therefore runs
   under the short lock_timeout with retries, so while it waits the queries queued behind
   it wait at most that long.

One table's failure never stops the others; the run fails at the end, after doing all.
gth_maint_partition_months_ahead{table} = whole months after the current one covered
contiguously from it (-1 when the current month itself has no partition).
rows = partitions created + partitions retired + rows moved out of default partitions.
Dry run: reports what would be created, drained and retired; changes nothing, writes no file.
"""

from __future__ import annotations

import contextlib
import os
import time
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from daemon import metrics
from daemon.db import error_text, retry_on_lock_timeout
from daemon.errors import JobFailed
from daemon.jobs._util import job_settings
from daemon.jobs.base import Job, JobContext, JobOption, JobResult
from daemon.partitioning import (
    CreationPlan,
    NotPartitioned,
    TableState,
    current_month,
    inspect,
    month_label,
    plan_creation,
    plan_retention,
)
from daemon.settings import PartitionsSettings
from daemon.sqlfiles import query


def _labels(months: list[date]) -> list[str]:
    return [month_label(m) for m in months]


class PartitionsJob(Job):
    name = "partitions"
    supports_dry_run = True
    options = (
        JobOption("--drain-default",
                  "move rows found in default partitions into their month partitions "
                  "(creating them) in committed batches"),
    )

    def run(self, ctx: JobContext) -> JobResult:
        settings = job_settings(ctx, PartitionsSettings)
        drain = bool(ctx.options.get("drain_default"))
        now_month = current_month()
        report: dict[str, dict[str, Any]] = {name: {} for name in settings.tables}
        failed: dict[str, str] = {}
        states: dict[str, TableState] = {}
        with ctx.connection() as conn:
            # 1 + 2: creation (a drain creates too), then the default partition's rows.
            for name, table in settings.tables.items():
                entry = report[name]
                try:
                    states[name] = self._creation(ctx, conn, settings, name, now_month, drain,
                                                  table.retention_months, entry, failed)
                    self._default_rows(ctx, conn, settings, states[name], entry)
                except (NotPartitioned, psycopg.Error, JobFailed, OSError) as exc:
                    failed[name] = error_text(exc)
                    ctx.log.error("partition maintenance failed for a table", table=name,
                                  error=failed[name])
            # 3: retention, in its own transactions after all creation.
            for name, table in settings.tables.items():
                if name not in states:
                    continue
                try:
                    self._retention(ctx, conn, settings, states[name], now_month,
                                    table.retention_months, report[name], failed)
                except (psycopg.Error, JobFailed) as exc:
                    failed[f"{name} retention"] = error_text(exc)
                    ctx.log.error("partition retention failed", table=name,
                                  error=error_text(exc))
        details: dict[str, Any] = {"month": month_label(now_month), "drain_default": drain,
                                   "dry_run": ctx.dry_run, "tables": report}
        if failed:
            details["failed"] = failed
            raise JobFailed("partition maintenance failed: "
                            + "; ".join(f"{k}: {v}" for k, v in failed.items()), details)
        return JobResult(details=details)

    # -- DDL plumbing -------------------------------------------------------------------

    def _ddl(self, conn: psycopg.Connection[Any], settings: PartitionsSettings, name: str,
             params: dict[str, Any], label: str) -> tuple[Any, ...]:
        """One statement in its own short transaction, retried after lock timeouts."""

        def attempt() -> tuple[Any, ...]:
            with conn.transaction():
                row = conn.execute(query("partitions", name), params).fetchone()
            assert row is not None
            return tuple(row)

        result: tuple[Any, ...] = retry_on_lock_timeout(attempt, settings.ddl_retries,
                                                        label=label)
        return result

    # -- 1. creation --------------------------------------------------------------------

    def _creation(self, ctx: JobContext, conn: psycopg.Connection[Any],
                  settings: PartitionsSettings, name: str, now_month: date, drain: bool,
                  retention: int | None, entry: dict[str, Any],
                  failed: dict[str, str]) -> TableState:
        state = inspect(conn, name)
        plan = plan_creation(state, now_month, settings.months_ahead,
                             settings.max_new_partitions_per_table, drain, retention)
        self._log_plan(ctx, state, plan, entry)
        if plan.blocked and not ctx.dry_run:
            failed[f"{name} blocked"] = (
                f"months {', '.join(_labels(plan.blocked))} have rows in the default partition;"
                " run `gth-maintd run-job partitions --drain-default`")
        if ctx.dry_run:
            entry["would_create"] = _labels(plan.create)
            entry["would_drain"] = {month_label(m): state.default_months.get(m, 0)
                                    for m in plan.drain}
            self._set_months_ahead(state, now_month, entry)
            return state

        created: list[str] = []
        for month in plan.create:
            if ctx.should_stop():
                entry["stopped_early"] = True
                break
            label = f"create {state.regclass} {month_label(month)}"
            try:
                (partition,) = self._ddl(conn, settings, "create_month",
                                         {"parent": state.regclass, "month": month}, label)
            except psycopg.Error as exc:
                failed[f"{name} {month_label(month)}"] = error_text(exc)
                ctx.log.error("partition creation failed", table=name,
                              month=month_label(month), error=error_text(exc))
                continue
            created.append(partition)
            ctx.add_rows(1)
        drained: dict[str, int] = {}
        for month in plan.drain:
            if ctx.should_stop():
                entry["stopped_early"] = True
                break
            try:
                drained[month_label(month)] = self._drain_month(ctx, conn, settings, state, month)
            except (psycopg.Error, JobFailed) as exc:
                failed[f"{name} drain {month_label(month)}"] = error_text(exc)
                ctx.log.error("draining the default partition failed", table=name,
                              month=month_label(month), error=error_text(exc))
        entry["created"] = created
        if drain:
            entry["drained_rows"] = drained
        state = inspect(conn, name)  # what is there now, for the metrics and retention
        self._set_months_ahead(state, now_month, entry)
        ctx.log.info("partitions ensured", table=name, created=created,
                     drained_rows=sum(drained.values()), months_ahead=entry["months_ahead"])
        return state

    def _log_plan(self, ctx: JobContext, state: TableState, plan: CreationPlan,
                  entry: dict[str, Any]) -> None:
        if plan.capped:
            entry["capped"] = _labels(plan.capped)
            ctx.log.warning(
                "partition creation capped: max_new_partitions_per_table reached; the rest "
                "is left for the next run", table=state.name, capped=entry["capped"],
                creating=_labels(plan.new_partitions))
        if plan.blocked:
            entry["blocked"] = _labels(plan.blocked)
            ctx.log.error(
                "months cannot be created: their rows sit in the default partition; run "
                "`gth-maintd run-job partitions --drain-default`", table=state.name,
                blocked=entry["blocked"])
        if plan.expired_in_default:
            entry["expired_left_in_default"] = _labels(plan.expired_in_default)
            ctx.log.warning("default partition rows older than the retention are not drained",
                            table=state.name, months=entry["expired_left_in_default"])
        if plan.undrainable_rows:
            entry["undrainable_rows"] = plan.undrainable_rows
            ctx.log.warning("default partition rows with a non-finite key cannot be drained",
                            table=state.name, rows=plan.undrainable_rows)

    def _drain_month(self, ctx: JobContext, conn: psycopg.Connection[Any],
                     settings: PartitionsSettings, state: TableState, month: date) -> int:
        moved_total = 0
        idle_steps = 0
        label = f"drain {state.regclass} {month_label(month)}"
        started = time.monotonic()
        while True:
            if ctx.should_stop():
                ctx.log.warning("drain interrupted; it resumes on the next run", table=state.name,
                                month=month_label(month), moved=moved_total)
                return moved_total
            moved, attached, partition = self._ddl(
                conn, settings, "drain_step",
                {"parent": state.regclass, "month": month, "batch": settings.drain_batch_size},
                label)
            moved_total += int(moved)
            ctx.add_rows(moved)
            if attached:
                ctx.add_rows(1)
                ctx.log.info("default partition drained into its month", table=state.name,
                             partition=partition, moved=moved_total,
                             seconds=round(time.monotonic() - started, 3))
                return moved_total
            idle_steps = idle_steps + 1 if moved == 0 else 0
            if idle_steps >= 3:
                raise JobFailed(f"drain of {state.regclass} {month_label(month)} makes no progress")

    def _set_months_ahead(self, state: TableState, now_month: date,
                          entry: dict[str, Any]) -> None:
        ahead = state.months_ahead(now_month)
        metrics.PARTITION_MONTHS_AHEAD.labels(table=state.name).set(ahead)
        entry["months_ahead"] = ahead

    # -- 2. default partition -----------------------------------------------------------

    def _default_rows(self, ctx: JobContext, conn: psycopg.Connection[Any],
                      settings: PartitionsSettings, state: TableState,
                      entry: dict[str, Any]) -> None:
        if state.default is None:
            entry["default_partition"] = None
            metrics.PARTITION_DEFAULT_ROWS.labels(table=state.name).set(0)
            return
        file_name = f"{state.schema}.{state.relname}.default.csv"
        path = Path(ctx.state_dir) / settings.export_dir / file_name
        count = state.default_rows
        if count and not ctx.dry_run:
            count = self._export(conn, state, path)
            entry["export"] = str(path)
        elif not count and not ctx.dry_run:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # the file always shows what the default partition holds now
        metrics.PARTITION_DEFAULT_ROWS.labels(table=state.name).set(count)
        entry["default_rows"] = count
        if count:
            per_month = {month_label(m): n for m, n in state.default_months.items()}
            entry["default_rows_by_month"] = per_month
            ctx.log.warning("rows found in the default partition", table=state.name,
                            rows=count, by_month=per_month, export=entry.get("export"))

    def _export(self, conn: psycopg.Connection[Any], state: TableState, path: Path) -> int:
        """COPY the default partition to CSV in one snapshot; returns the rows written."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        statement = query("partitions", "export_default").format(
            parent=sql.Identifier(state.schema, state.relname))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                rows = conn.execute(query("partitions", "default_months"),
                                    {"parent": state.regclass}).fetchall()
                with conn.cursor().copy(statement) as copy:
                    for chunk in copy:
                        handle.write(chunk)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return sum(int(r[1]) for r in rows)

    # -- 3. retention -------------------------------------------------------------------

    def _retention(self, ctx: JobContext, conn: psycopg.Connection[Any],
                   settings: PartitionsSettings, state: TableState, now_month: date,
                   retention: int | None, entry: dict[str, Any], failed: dict[str, str]) -> None:
        expired = plan_retention(state, now_month, retention)
        if ctx.dry_run:
            entry["would_retire"] = [p.regclass for p in expired]
            if expired:
                ctx.log.info("dry run: partitions past retention", table=state.name,
                             partitions=entry["would_retire"], action=settings.retention_action)
            return
        retired: dict[str, str] = {}
        for part in expired:
            if ctx.should_stop():
                entry["stopped_early"] = True
                break
            try:
                (where,) = self._ddl(conn, settings, "retire", {
                    "parent": state.regclass, "partition": part.regclass,
                    "action": settings.retention_action,
                    "archive_schema": settings.archive_schema,
                }, f"retire {part.regclass}")
            except psycopg.Error as exc:
                failed[f"{state.name} retire {part.relname}"] = error_text(exc)
                ctx.log.error("partition retention failed", table=state.name,
                              partition=part.regclass, error=error_text(exc))
                continue
            retired[part.regclass] = where
            ctx.add_rows(1)
        if retired:
            ctx.log.info("partitions past retention detached", table=state.name,
                         retention_months=retention, action=settings.retention_action,
                         retired=retired)
        entry["retired"] = retired


JOB = PartitionsJob
