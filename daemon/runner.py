"""One run of one job, whoever asked for it (schedule, signal, CLI, startup).

Around the job's own work the runner guarantees: at most one run of a task at a time
here (thread lock) and across replicas (session advisory lock on a dedicated connection),
at most one run per scheduled tick across replicas (unique key in the run history),
nothing on a hot standby, orphaned 'running' rows marked interrupted, per-job timeouts,
and the same history, metrics and log lines for every kind of trigger.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
import structlog
from psycopg_pool import ConnectionPool

from daemon import history, metrics
from daemon.db import LOCK_CLASS, connect, error_text, one_line, set_timeouts
from daemon.errors import JobFailed, MaintError
from daemon.jobs import job_class
from daemon.jobs.base import JobContext
from daemon.settings import Settings

log = structlog.get_logger("gth_maintd.runner")

HOST = socket.gethostname()


@dataclass
class RunOutcome:
    task: str
    outcome: str  # success | failure | skipped
    rows: int = 0
    error: str | None = None
    reason: str | None = None  # why a run was skipped
    details: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    duration: float = 0.0


class Runner:
    def __init__(
        self,
        settings: Callable[[], Settings],
        conninfo: str,
        pool: ConnectionPool[psycopg.Connection[Any]],
        stop_event: threading.Event | None = None,
    ) -> None:
        self._settings = settings
        self._conninfo = conninfo
        self._pool = pool
        self.stop_event = stop_event or threading.Event()
        self._task_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._active: set[psycopg.Connection[Any]] = set()
        self._in_flight = 0
        self._cancelled = False

    # -- what the daemon needs for shutdown -------------------------------------------
    @property
    def in_flight(self) -> int:
        with self._guard:
            return self._in_flight

    def cancel_all(self) -> int:
        """Cancel every in-flight statement on the server (shutdown grace expired)."""
        with self._guard:
            victims = list(self._active)
            self._cancelled = True
        for conn in victims:
            with contextlib.suppress(Exception):
                conn.cancel_safe(timeout=2)
        return len(victims)

    # -- a run --------------------------------------------------------------------------
    def run(self, task: str, trigger: str, scheduled_for: datetime | None = None,
            dry_run: bool = False, options: Mapping[str, Any] | None = None) -> RunOutcome:
        with self._guard:
            lock = self._task_locks.setdefault(task, threading.Lock())
        if not lock.acquire(blocking=False):
            return self._skipped(task, trigger, "a run of this task is already in flight here")
        with self._guard:
            self._in_flight += 1
        try:
            return self._run_locked(task, trigger, scheduled_for, dry_run, options or {})
        finally:
            with self._guard:
                self._in_flight -= 1
            lock.release()

    def _skipped(self, task: str, trigger: str, reason: str) -> RunOutcome:
        metrics.TASK_RUNS.labels(task=task, outcome="skipped").inc()
        log.info("run skipped", task=task, trigger=trigger, reason=reason)
        return RunOutcome(task, "skipped", reason=reason)

    def _run_locked(self, task: str, trigger: str, scheduled_for: datetime | None,
                    dry_run: bool, options: Mapping[str, Any]) -> RunOutcome:
        settings = self._settings()
        try:
            lock_conn = connect(self._conninfo, settings.connect_timeout_seconds)
        except MaintError as exc:
            return self._failed_before_start(task, trigger, str(exc))
        with lock_conn:
            try:
                claimed = self._claim(lock_conn, task, trigger, scheduled_for, dry_run)
            except psycopg.Error as exc:
                return self._failed_before_start(task, trigger, one_line(exc))
            if isinstance(claimed, str):
                return self._skipped(task, trigger, claimed)
            return self._execute(lock_conn, claimed, task, trigger, dry_run, options, settings)

    def _claim(self, conn: psycopg.Connection[Any], task: str, trigger: str,
               scheduled_for: datetime | None, dry_run: bool) -> history.Claim | str:
        """The run's history row, or the reason it must not run."""
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        if row and row[0]:
            return "connected to a hot standby; this replica runs nothing"
        got = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                           (LOCK_CLASS, task)).fetchone()
        if not got or not got[0]:
            return "another process holds this task's lock (running it now)"
        for orphan in history.mark_interrupted(conn, task):
            log.warning("orphaned run marked interrupted", task=task, history_id=orphan[0],
                        orphan_run_id=str(orphan[1]), orphan_host=orphan[2], orphan_pid=orphan[3])
        claim = history.claim(conn, task=task, trigger=trigger, scheduled_for=scheduled_for,
                              dry_run=dry_run, host=HOST, pid=os.getpid())
        if claim is None:
            return "this tick was already run by another replica"
        return claim

    def _failed_before_start(self, task: str, trigger: str, error: str) -> RunOutcome:
        metrics.TASK_RUNS.labels(task=task, outcome="failure").inc()
        log.error("run could not start", task=task, trigger=trigger, error=error)
        return RunOutcome(task, "failure", error=error)

    def _execute(self, lock_conn: psycopg.Connection[Any], claim: history.Claim, task: str,
                 trigger: str, dry_run: bool, options: Mapping[str, Any],
                 settings: Settings) -> RunOutcome:
        job_settings = settings.jobs.get(task)
        run_id = str(claim.run_id)
        bound = structlog.get_logger("gth_maintd.job").bind(task=task, run_id=run_id)
        structlog.contextvars.bind_contextvars(task=task, run_id=run_id)
        metrics.TASK_RUNNING.labels(task=task).set(1)
        started = time.monotonic()
        bound.info("run started", trigger=trigger, dry_run=dry_run,
                   scheduled_for=claim.scheduled_for.isoformat(), options=dict(options) or None)
        ctx = JobContext(
            task=task, settings=job_settings, app_settings=settings,
            connection_factory=lambda: self._job_connection(job_settings.statement_timeout_ms,
                                                            job_settings.lock_timeout_ms),
            log=bound, stop_event=self.stop_event, dry_run=dry_run, options=options,
            on_rows=lambda n: metrics.TASK_ROWS.labels(task=task).inc(n),
        )
        outcome = RunOutcome(task, "success", run_id=run_id)
        try:
            result = job_class(task)().run(ctx)
            outcome.details = result.details
        except Exception as exc:  # a failing job never stops the daemon
            outcome.outcome = "failure"
            if isinstance(exc, JobFailed):
                outcome.details = exc.details
            outcome.error = error_text(exc)
            if self._cancelled:
                outcome.error = f"cancelled by shutdown: {outcome.error}"
            unexpected = not isinstance(exc, MaintError | psycopg.Error)
            bound.error("run failed", error=outcome.error, exc_info=unexpected)
        finally:
            outcome.rows = ctx.rows
            outcome.duration = time.monotonic() - started
            metrics.TASK_RUNNING.labels(task=task).set(0)
            metrics.TASK_DURATION.labels(task=task).observe(outcome.duration)
            metrics.TASK_RUNS.labels(task=task, outcome=outcome.outcome).inc()
            if outcome.outcome == "success" and not dry_run:
                metrics.TASK_LAST_SUCCESS.labels(task=task).set(time.time())
            self._record(lock_conn, claim, outcome, bound)
            structlog.contextvars.unbind_contextvars("task", "run_id")
        bound.info("run finished", outcome=outcome.outcome, rows=outcome.rows,
                   duration_s=round(outcome.duration, 3), details=outcome.details or None)
        return outcome

    def _record(self, conn: psycopg.Connection[Any], claim: history.Claim, outcome: RunOutcome,
                bound: Any) -> None:
        try:
            history.finish(conn, claim.id, outcome=outcome.outcome, rows=outcome.rows,
                           error=outcome.error, details=outcome.details)
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (LOCK_CLASS, outcome.task))
        except psycopg.Error as exc:
            # The row stays 'running'; the next run marks it interrupted.
            bound.warning("could not record the run's end", error=one_line(exc))

    @contextlib.contextmanager
    def _job_connection(self, statement_timeout_ms: int,
                        lock_timeout_ms: int) -> Iterator[psycopg.Connection[Any]]:
        with self._pool.connection() as conn:
            set_timeouts(conn, statement_timeout_ms, lock_timeout_ms)
            with self._guard:
                self._active.add(conn)
            try:
                yield conn
            finally:
                with self._guard:
                    self._active.discard(conn)
