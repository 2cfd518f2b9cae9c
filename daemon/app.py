"""The long-running daemon: start-up, the main thread's signal loop, reload and shutdown.

Start-up order matters for operators: the HTTP endpoints come first (liveness passes
while migrations run, readiness does not), then the database with bounded retries,
migrations under an advisory lock, the pool, metric seeding from the run history, and
only then the scheduler and READY=1.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Any

import psycopg
import structlog

from daemon import db, history, metrics, systemd
from daemon.errors import EXIT_OK, ConfigError
from daemon.migrations import migrate
from daemon.runner import Runner
from daemon.scheduler import Scheduler
from daemon.settings import JOB_NAMES, Settings, load_settings
from daemon.signals import PidFile, SignalInbox, take_trigger_requests

log = structlog.get_logger("gth_maintd")


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.inbox = SignalInbox()
        self.stop_event = threading.Event()
        self.schema_loaded = False
        self._last_beat = 0.0
        self._db_up: bool | None = None
        self._conninfo = ""
        self._pool: Any = None
        self._embedded: Any = None
        self.runner: Runner | None = None
        self.scheduler: Scheduler | None = None

    # -- health -------------------------------------------------------------------------
    def healthy(self) -> tuple[bool, str]:
        if self.scheduler is None:
            return True, "starting"
        age = time.monotonic() - self._last_beat
        limit = 3 * self.settings.heartbeat_seconds + 10
        if age > limit:
            return False, f"scheduler heartbeat is {age:.0f} s old (limit {limit:.0f} s)"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if not self.schema_loaded or self._pool is None:
            return False, "starting: schema not loaded yet"
        try:
            with self._pool.connection(timeout=2) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:  # any failure means not ready; say why
            metrics.READY.set(0)
            return False, f"database unreachable: {db.one_line(exc)}"
        metrics.READY.set(1)
        return True, "ready"

    def _heartbeat(self) -> None:
        self._last_beat = time.monotonic()
        metrics.HEARTBEAT.set(time.time())
        systemd.watchdog()

    def _probe(self) -> None:
        try:
            with self._pool.connection(timeout=3) as conn:
                conn.execute("SELECT 1")
            up = True
        except Exception as exc:  # the probe's job is to notice, never to crash
            up = False
            if self._db_up is not False:
                log.warning("database unreachable", error=db.one_line(exc))
        if up and self._db_up is False:
            log.info("database reachable again")
        self._db_up = up
        metrics.DB_UP.set(1 if up else 0)
        metrics.READY.set(1 if up and self.schema_loaded else 0)

    # -- life cycle ---------------------------------------------------------------------
    def run(self) -> int:
        settings = self.settings
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        pidfile = PidFile(settings.state_dir)
        pidfile.acquire()
        self.inbox.install()
        try:
            self._start()
            return self._loop()
        finally:
            self._close()
            pidfile.release()

    def _start(self) -> None:
        settings = self.settings
        partition_tables = list(settings.jobs.partitions.tables)
        metrics.initialise(JOB_NAMES, partition_tables, settings.jobs.matviews.views)
        from daemon.http import serve

        self._http = serve(settings.metrics_host, settings.metrics_port, self.healthy, self.ready)
        log.info("gth-maintd starting", metrics=f"http://{settings.metrics_host}:"
                 f"{settings.metrics_port}/metrics", state_dir=str(settings.state_dir))
        embedded = settings.database_url is None
        if embedded:
            from daemon.embedded import EmbeddedPostgres

            self._embedded = EmbeddedPostgres(settings.state_dir)
            self._conninfo = self._embedded.start()
        else:
            assert settings.database_url is not None
            self._conninfo = settings.database_url.get_secret_value()
        with db.wait_for_database(self._conninfo, settings.startup_retry_seconds,
                                  settings.connect_timeout_seconds) as conn:
            report = migrate(conn)
            metrics.SCHEMA_VERSION.set(report.version)
            log.info("schema ready", version=report.version, applied=report.applied or None)
            if embedded:
                self._load_demo_data(conn)
            self._seed_metrics(conn)
        self.schema_loaded = True
        self._pool = db.make_pool(self._conninfo, settings.pool_max_size,
                                  settings.connect_timeout_seconds)
        self._pool.open(wait=False)
        self._probe()
        self.runner = Runner(lambda: self.settings, self._conninfo, self._pool, self.stop_event)
        self.scheduler = Scheduler(self.runner, lambda: self.settings, self._heartbeat,
                                   self._probe)
        self.scheduler.start()
        systemd.ready()
        log.info("gth-maintd ready", jobs=[n for n in JOB_NAMES
                                             if settings.jobs.get(n).enabled])

    def _load_demo_data(self, conn: psycopg.Connection[Any]) -> None:
        from daemon import demo_data

        row = conn.execute("SELECT EXISTS (SELECT 1 FROM users)").fetchone()
        if row and row[0]:
            log.info("embedded database already has data; not loading the demo set again")
            rebuilt = demo_data.rebuild_dropped_indexes(conn)
            if rebuilt:
                log.warning("an earlier bulk demo load stopped before rebuilding the audit_log "
                            "indexes it dropped; rebuilt them", indexes=rebuilt)
        else:
            counts = demo_data.generate(conn, scale=self.settings.demo_scale)
            log.info("demo data loaded", **{k: v for k, v in counts.items() if v})
        assert self._embedded is not None
        log.info("embedded PostgreSQL is running; connect with psql",
                 command=f"psql '{self._conninfo}'")

    def _seed_metrics(self, conn: psycopg.Connection[Any]) -> None:
        """Restore last-success gauges so a restart does not look like staleness."""
        for task, ts in history.last_success_times(conn).items():
            if task in JOB_NAMES:
                metrics.TASK_LAST_SUCCESS.labels(task=task).set(ts)
        audit = history.last_runs(conn).get("audit_verify")
        if audit and audit[4] in ("success", "failure"):
            metrics.AUDIT_CHAIN_VALID.set(1 if audit[4] == "success" else 0)
        refreshed = history.last_details(conn, "matviews") or {}
        for view, ts in (refreshed.get("refreshed_at") or {}).items():
            if view in self.settings.jobs.matviews.views:
                metrics.MATVIEW_LAST_REFRESH.labels(view=view).set(float(ts))

    def _loop(self) -> int:
        while True:
            signum = self.inbox.wait(timeout=1.0)
            if signum is None:
                continue
            if signum in (signal.SIGTERM, signal.SIGINT):
                return self._shutdown(signal.Signals(signum).name)
            if signum == signal.SIGHUP:
                self._reload()
            elif signum == signal.SIGUSR1:
                self._triggered()
            elif signum == signal.SIGUSR2:
                self._log_status()

    def _shutdown(self, why: str) -> int:
        grace = self.settings.shutdown_grace_seconds
        log.info("stopping", signal=why, grace_s=grace,
                 in_flight=self.runner.in_flight if self.runner else 0)
        systemd.stopping()
        self.stop_event.set()
        if self.scheduler:
            self.scheduler.shutdown()
        if self.runner:
            deadline = time.monotonic() + grace
            while self.runner.in_flight and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.runner.in_flight:
                cancelled = self.runner.cancel_all()
                log.warning("grace period over; cancelled in-flight statements",
                            statements=cancelled)
                end = time.monotonic() + 5
                while self.runner.in_flight and time.monotonic() < end:
                    time.sleep(0.1)
        log.info("stopped")
        return EXIT_OK

    def _reload(self) -> None:
        systemd.reloading()
        try:
            fresh = load_settings(self.settings.config)
            fixed = ("database_url", "metrics_host", "metrics_port", "state_dir")
            changed = [k for k in fixed if getattr(fresh, k) != getattr(self.settings, k)]
            if changed:
                log.warning("these settings need a restart; keeping the old values",
                            settings=changed)
                fresh = fresh.model_copy(update={k: getattr(self.settings, k) for k in fixed})
            self.settings = fresh
            if self.scheduler:
                self.scheduler.apply(fresh)
            log.info("configuration reloaded", config=str(fresh.config))
        except ConfigError as exc:
            log.error("reload refused; keeping the previous configuration", error=str(exc))
        finally:
            systemd.ready()

    def _triggered(self) -> None:
        requests, problems = take_trigger_requests(self.settings.state_dir)
        for problem in problems:
            log.error("ignored a malformed trigger request", problem=problem)
        enabled = [n for n in JOB_NAMES if self.settings.jobs.get(n).enabled]
        wanted: list[str] = []
        for tasks in requests:
            for task in (enabled if tasks == ["all"] else tasks):
                if task not in JOB_NAMES:
                    log.error("ignored trigger for an unknown job", task=task)
                elif task not in wanted:
                    wanted.append(task)
        if not requests and not problems:
            wanted = enabled
        log.info("trigger received", tasks=wanted)
        if self.scheduler and wanted:
            self.scheduler.run_now(wanted, trigger="signal")

    def _log_status(self) -> None:
        upcoming = self.scheduler.next_run_times() if self.scheduler else {}
        log.info("status", db_up=self._db_up, schema_loaded=self.schema_loaded,
                 in_flight=self.runner.in_flight if self.runner else 0,
                 next_runs={k: v.isoformat() if v else None for k, v in upcoming.items()})

    def _close(self) -> None:
        if self.scheduler:
            self.scheduler.shutdown()
        if self._pool is not None:
            with contextlib.suppress(Exception):
                self._pool.close(timeout=5)
        if getattr(self, "_http", None) is not None:
            self._http.shutdown()
        if self._embedded is not None:
            self._embedded.stop()
