"""APScheduler 3.x wiring: cron ticks per job, a heartbeat, a database probe, triggers.

In-memory job store, jobs registered from code; the database (run history + advisory
locks, see daemon.runner) decides which replica runs a tick. Misfire grace is minutes,
not APScheduler's default second, so a late tick still runs; ticks coalesce and a job
never overlaps itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from daemon import metrics
from daemon.runner import Runner
from daemon.settings import JOB_NAMES, Settings, cron_trigger

log = structlog.get_logger("gth_maintd.scheduler")

MISFIRE_GRACE_SECONDS = 600
_INTERNAL = "internal"


def latest_fire_time(trigger: BaseTrigger, now: datetime, lookback: float) -> datetime | None:
    """The newest scheduled time <= now: the tick's identity, the same on every replica."""
    fire = trigger.get_next_fire_time(None, now - timedelta(seconds=lookback))
    latest = None
    while fire is not None and fire <= now:
        latest = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
    return latest


def longest_interval(trigger: BaseTrigger, now: datetime, horizon_days: int = 400,
                     max_fires: int = 3000) -> float:
    """Longest gap between consecutive fires: over a year for rare schedules, over the next
    3000 fires for frequent ones (10 days of a 5-minute schedule: weekly patterns show)."""
    end = now + timedelta(days=horizon_days)
    previous = trigger.get_next_fire_time(None, now)
    longest = 0.0
    for _ in range(max_fires):
        if previous is None or previous > end:
            break
        nxt = trigger.get_next_fire_time(previous, previous + timedelta(microseconds=1))
        if nxt is None:
            break
        longest = max(longest, (nxt - previous).total_seconds())
        previous = nxt
    return longest


class Scheduler:
    def __init__(self, runner: Runner, settings: Callable[[], Settings],
                 heartbeat: Callable[[], None], probe: Callable[[], None]) -> None:
        self._runner = runner
        self._settings = settings
        current = settings()
        self._sched = BackgroundScheduler(
            timezone=UTC,
            executors={
                "default": ThreadPoolExecutor(current.max_concurrent_jobs),
                _INTERNAL: ThreadPoolExecutor(2),
            },
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": MISFIRE_GRACE_SECONDS},
        )
        self._heartbeat = heartbeat
        self._probe = probe
        self._lock = threading.Lock()

    def start(self) -> None:
        settings = self._settings()
        self._sched.add_job(self._beat, IntervalTrigger(seconds=settings.heartbeat_seconds),
                            id="_heartbeat", executor=_INTERNAL, next_run_time=datetime.now(UTC))
        self._sched.add_job(self._probe, IntervalTrigger(seconds=settings.db_probe_seconds),
                            id="_db_probe", executor=_INTERNAL)
        self.apply(settings)
        self._sched.start()
        for name in JOB_NAMES:
            job_settings = settings.jobs.get(name)
            if job_settings.enabled and getattr(job_settings, "run_at_startup", False):
                self.run_now([name], trigger="startup")

    def shutdown(self) -> None:
        """Stop starting runs; in-flight runs are the daemon's business (grace, cancel)."""
        if self._sched.running:
            self._sched.shutdown(wait=False)

    def apply(self, settings: Settings) -> None:
        """(Re)register every job from settings: new schedules, enabled or disabled jobs."""
        now = datetime.now(UTC)
        with self._lock:
            for name in JOB_NAMES:
                job_settings = settings.jobs.get(name)
                existing = self._sched.get_job(name)
                if not job_settings.enabled:
                    if existing:
                        existing.remove()
                    metrics.TASK_ENABLED.labels(task=name).set(0)
                    metrics.TASK_INTERVAL.labels(task=name).set(0)
                    metrics.TASK_NEXT_RUN.labels(task=name).set(0)
                    continue
                trigger = cron_trigger(job_settings.schedule)
                self._sched.add_job(self._tick, trigger, args=[name, job_settings.schedule],
                                    id=name, name=name, replace_existing=True)
                metrics.TASK_ENABLED.labels(task=name).set(1)
        self._export_next_runs()
        # Off the start-up path: a frequent schedule takes a few hundred ms to walk.
        self._sched.add_job(self._export_intervals, args=[settings, now], executor=_INTERNAL,
                            id="_intervals", replace_existing=True, misfire_grace_time=None)

    def _export_intervals(self, settings: Settings, now: datetime) -> None:
        for name in JOB_NAMES:
            job_settings = settings.jobs.get(name)
            if job_settings.enabled:
                interval = longest_interval(cron_trigger(job_settings.schedule), now)
                metrics.TASK_INTERVAL.labels(task=name).set(interval)

    def run_now(self, names: list[str], trigger: str = "signal",
                options: dict[str, Any] | None = None) -> None:
        for name in names:
            self._sched.add_job(self._runner.run, args=[name, trigger], kwargs={"options": options},
                                id=f"{trigger}:{name}:{time.monotonic_ns()}", name=name,
                                misfire_grace_time=None)

    def next_run_times(self) -> dict[str, datetime | None]:
        # APScheduler sets next_run_time only once the scheduler is running.
        return {job.id: getattr(job, "next_run_time", None) for job in self._sched.get_jobs()
                if job.id in JOB_NAMES}

    def _tick(self, name: str, schedule: str) -> None:
        now = datetime.now(UTC)
        scheduled_for = latest_fire_time(cron_trigger(schedule), now, MISFIRE_GRACE_SECONDS + 60)
        self._runner.run(name, "schedule", scheduled_for or now)

    def _beat(self) -> None:
        self._heartbeat()
        self._export_next_runs()

    def _export_next_runs(self) -> None:
        for name, when in self.next_run_times().items():
            if when is not None:
                metrics.TASK_NEXT_RUN.labels(task=name).set(when.timestamp())
