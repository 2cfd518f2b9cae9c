"""The daemon as operators meet it: triggers, reload, shutdown, crashes, replicas."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.acceptance.conftest import cli, free_port, write_config

pytestmark = pytest.mark.slow


def runs(db_url: str, task: str | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT task, trigger, outcome, error, scheduled_for FROM maintenance.job_runs"
            " WHERE %(t)s::text IS NULL OR task = %(t)s ORDER BY id", {"t": task}).fetchall()


def hold_matview_lock(db_url: str) -> psycopg.Connection[Any]:
    """Block the matviews job for as long as the test wants: a run stays in flight."""
    holder = psycopg.connect(db_url)
    holder.execute("LOCK TABLE bookings IN ACCESS EXCLUSIVE MODE")  # the refresh reads it
    return holder


def blocked_on_the_lock(db_url: str) -> bool:
    """The matviews run really waits in the database (not just started), so a stop signal
    finds it in flight however loaded the machine is."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted"
                           " AND relation = 'public.bookings'::regclass").fetchone()
    return bool(row and row[0])


def slow_matviews_config(tmp_path: Path, **top: Any) -> str:
    return str(write_config(tmp_path / "slow.toml", {"matviews": {"lock_timeout_ms": 120_000}},
                            **top))


def test_trigger_runs_the_named_job_and_nothing_else(daemons: Any, daemon_env: dict[str, str],
                                                     db_url: str) -> None:
    daemon = daemons(daemon_env).wait_ready()
    result = cli("trigger", "history_prune", env=daemon_env)
    assert result.returncode == 0, result.stderr
    daemon.wait_until(lambda: runs(db_url), 20, "the triggered run")
    daemon.wait_until(lambda: daemon.metric("gth_maint_task_runs_total", task="history_prune",
                                            outcome="success") == 1, 10, "metrics")
    time.sleep(1)
    assert [(r[0], r[1], r[2]) for r in runs(db_url)] == [("history_prune", "signal", "success")]
    lines = [line for line in daemon.log().splitlines() if '"run finished"' in line]
    assert lines and '"task": "history_prune"' in lines[0] and '"run_id"' in lines[0]


def test_sighup_applies_a_new_schedule_and_refuses_a_broken_file(
        daemons: Any, daemon_env: dict[str, str], db_url: str, tmp_path: Path) -> None:
    config = Path(daemon_env["GTH_MAINT_CONFIG"])
    daemon = daemons(daemon_env).wait_ready()
    daemon.wait_until(lambda: (daemon.metric("gth_maint_task_interval_seconds",
                                             task="history_prune") or 0) > 86400, 10,
                      "the yearly interval (computed just after start-up)")
    write_config(config, {"history_prune": {"schedule": "*/2 * * * * *"}})
    daemon.signal(signal.SIGHUP)
    daemon.wait_until(lambda: any(r[1] == "schedule" for r in runs(db_url, "history_prune")),
                      20, "a run on the new schedule")
    daemon.wait_until(lambda: daemon.metric("gth_maint_task_interval_seconds",
                                            task="history_prune") == 2, 10, "the new interval")
    config.write_text("[jobs.history_prune]\nschedule = 'not cron'\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_until(lambda: "reload refused" in daemon.log(), 10, "the refusal")
    before = len(runs(db_url, "history_prune"))
    daemon.wait_until(lambda: len(runs(db_url, "history_prune")) >= before + 2, 20,
                      "the old schedule to keep running")
    assert daemon.get("/healthz")[0] == 200


def test_sigterm_during_a_run_exits_0_within_the_grace(
        daemons: Any, daemon_env: dict[str, str], db_url: str, tmp_path: Path) -> None:
    env = {**daemon_env, "GTH_MAINT_CONFIG": slow_matviews_config(tmp_path),
           "GTH_MAINT_SHUTDOWN_GRACE_SECONDS": "2"}
    daemon = daemons(env).wait_ready()
    holder = hold_matview_lock(db_url)
    try:
        assert cli("trigger", "matviews", env=env).returncode == 0
        daemon.wait_until(lambda: daemon.metric("gth_maint_task_running", task="matviews") == 1,
                          20, "the run to start")
        daemon.wait_until(lambda: blocked_on_the_lock(db_url), 20, "the run to wait on the lock")
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=15) == 0
        assert time.monotonic() - started < 2 + 6
    finally:
        holder.close()
    (row,) = runs(db_url, "matviews")
    assert row[2] == "failure" and "cancelled by shutdown" in row[3]
    with psycopg.connect(db_url, autocommit=True) as conn:  # no lock left behind
        assert conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                            ).fetchone() == (0,)


def test_second_sigterm_exits_at_once(daemons: Any, daemon_env: dict[str, str], db_url: str,
                                      tmp_path: Path) -> None:
    env = {**daemon_env, "GTH_MAINT_CONFIG": slow_matviews_config(tmp_path),
           "GTH_MAINT_SHUTDOWN_GRACE_SECONDS": "60"}
    daemon = daemons(env).wait_ready()
    holder = hold_matview_lock(db_url)
    try:
        cli("trigger", "matviews", env=env)
        daemon.wait_until(lambda: daemon.metric("gth_maint_task_running", task="matviews") == 1,
                          20, "the run to start")
        daemon.wait_until(lambda: blocked_on_the_lock(db_url), 20, "the run to wait on the lock")
        daemon.signal(signal.SIGTERM)
        time.sleep(0.5)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=5) == 143
    finally:
        holder.close()


def test_kill_9_during_a_run_is_marked_interrupted_after_restart(
        daemons: Any, daemon_env: dict[str, str], db_url: str, tmp_path: Path) -> None:
    env = {**daemon_env, "GTH_MAINT_CONFIG": slow_matviews_config(tmp_path)}
    daemon = daemons(env, "first").wait_ready()
    holder = hold_matview_lock(db_url)
    try:
        cli("trigger", "matviews", env=env)
        daemon.wait_until(lambda: runs(db_url, "matviews"), 20, "the run to start")
        daemon.kill()
    finally:
        holder.close()
    assert runs(db_url, "matviews")[0][2] == "running"
    again = daemons(env, "second").wait_ready()
    cli("trigger", "matviews", env=env)
    again.wait_until(lambda: len(runs(db_url, "matviews")) == 2
                     and runs(db_url, "matviews")[1][2] == "success", 30, "the next run")
    first = runs(db_url, "matviews")[0]
    assert first[2] == "failure" and first[3].startswith("interrupted")
    with psycopg.connect(db_url, autocommit=True) as conn:
        populated = conn.execute("SELECT bool_and(ispopulated) FROM pg_matviews").fetchone()
    assert populated == (True,)


def test_database_restart_during_a_run_is_survived(
        daemons: Any, daemon_env: dict[str, str], db_url: str, cluster: Any,
        tmp_path: Path) -> None:
    env = {**daemon_env, "GTH_MAINT_CONFIG": slow_matviews_config(tmp_path)}
    daemon = daemons(env).wait_ready()
    holder = hold_matview_lock(db_url)
    cli("trigger", "matviews", env=env)
    daemon.wait_until(lambda: daemon.metric("gth_maint_task_running", task="matviews") == 1,
                      20, "the run to start")
    cluster.stop("fast")
    holder.close()
    daemon.wait_until(lambda: daemon.metric("gth_maint_db_up") == 0, 20, "db_up to drop")
    assert daemon.get("/readyz")[0] == 503
    assert daemon.get("/healthz")[0] == 200
    cluster.start()
    back = time.monotonic()
    daemon.wait_until(lambda: daemon.metric("gth_maint_db_up") == 1, 15, "db_up to recover")
    daemon.wait_until(lambda: daemon.get("/readyz")[0] == 200, 15, "readiness to recover")
    cli("trigger", "matviews", env=env)
    daemon.wait_until(lambda: any(r[2] == "success" for r in runs(db_url, "matviews")), 15,
                      "a successful run after the restart")
    assert time.monotonic() - back < 15 + 15
    assert daemon.proc.poll() is None


def test_three_replicas_run_five_ticks_exactly_once(
        daemons: Any, daemon_env: dict[str, str], db_url: str, tmp_path: Path) -> None:
    first = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=12)
    if first.second > 50:
        first = first.replace(second=0) + timedelta(minutes=1)
    ticks = [first + timedelta(seconds=2 * i) for i in range(5)]
    seconds = ",".join(str(t.second) for t in ticks)
    schedule = f"{seconds} {first.minute} {first.hour} {first.day} {first.month} *"
    config = str(write_config(tmp_path / "replicas.toml",
                              {"history_prune": {"schedule": schedule}}))
    replicas = [daemons({**daemon_env, "GTH_MAINT_CONFIG": config,
                         "GTH_MAINT_METRICS_PORT": str(free_port()),
                         "GTH_MAINT_STATE_DIR": str(tmp_path / f"state{i}")}, f"replica{i}")
                for i in range(3)]
    for replica in replicas:
        replica.wait_ready()
    assert datetime.now(UTC) < first, "replicas started too slowly for the schedule"
    replicas[0].wait_until(lambda: datetime.now(UTC) > ticks[-1] + timedelta(seconds=4), 60,
                           "the last tick")
    recorded = runs(db_url, "history_prune")
    assert [r[4] for r in recorded] == ticks
    assert {r[2] for r in recorded} == {"success"}
    successes = sum(r.metric("gth_maint_task_runs_total", task="history_prune",
                             outcome="success") or 0 for r in replicas)
    skipped = sum(r.metric("gth_maint_task_runs_total", task="history_prune",
                           outcome="skipped") or 0 for r in replicas)
    assert (successes, skipped) == (5, 10)


def test_concurrent_startup_on_an_empty_database(
        daemons: Any, daemon_env: dict[str, str], empty_db_url: str, tmp_path: Path) -> None:
    from daemon.migrations import discover

    replicas = [daemons({**daemon_env, "GTH_MAINT_DATABASE_URL": empty_db_url,
                         "GTH_MAINT_METRICS_PORT": str(free_port()),
                         "GTH_MAINT_STATE_DIR": str(tmp_path / f"s{i}")}, f"boot{i}")
                for i in range(3)]
    for replica in replicas:
        replica.wait_ready(timeout=120)
    applied = sum(r.log().count('"migration applied"') for r in replicas)
    assert applied == len(discover())
    versions = {r.metric("gth_maint_schema_version") for r in replicas}
    assert versions == {float(discover()[-1].version)}


def test_status_and_run_job_summaries(daemon_env: dict[str, str], db_url: str) -> None:
    result = cli("run-job", "history_prune", env=daemon_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("history_prune: success")
    status = cli("status", env=daemon_env)
    assert status.returncode == 0, status.stderr
    line = next(ln for ln in status.stdout.splitlines() if ln.startswith("history_prune"))
    assert "success" in line
    assert runs(db_url, "history_prune")[0][1] == "cli"
