"""The runner's guarantees on a real server: one run per tick across replicas, orphans."""

import threading
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from daemon import db
from daemon.runner import Runner
from daemon.settings import Settings
from tests.integration.test_job_audit_verify import _audited_writes, _tamper


@pytest.fixture
def make_runner(db_url: str, tmp_path: Any) -> Any:
    pools: list[Any] = []

    def build() -> Runner:
        settings = Settings(database_url=db_url, state_dir=tmp_path)
        pool = db.make_pool(db_url, 3, 5)
        pool.open(wait=True)
        pools.append(pool)
        return Runner(lambda: settings, db_url, pool)

    yield build
    for pool in pools:
        pool.close()


def test_a_tick_runs_once_across_replicas(make_runner: Any, conn: psycopg.Connection[Any]) -> None:
    runners = [make_runner() for _ in range(3)]
    ticks = [datetime(2026, 11, 22, 10, minute, tzinfo=UTC) for minute in range(0, 25, 5)]
    outcomes: list[str] = []
    barrier = threading.Barrier(3)

    def replica(runner: Runner) -> None:
        for tick in ticks:  # like a clock: every replica fires the same tick together
            barrier.wait(timeout=60)
            outcomes.append(runner.run("history_prune", "schedule", tick).outcome)

    threads = [threading.Thread(target=replica, args=(r,)) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    rows = conn.execute("SELECT scheduled_for, outcome FROM maintenance.job_runs"
                        " WHERE task = 'history_prune' ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == ticks
    assert {r[1] for r in rows} == {"success"}
    assert outcomes.count("success") == 5
    assert outcomes.count("skipped") == 10


def test_orphaned_run_is_marked_interrupted(make_runner: Any,
                                            conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO maintenance.job_runs (task, trigger, scheduled_for, host, pid)"
                 " VALUES ('history_prune', 'schedule', now() - interval '1 hour', 'gone', 1)")
    outcome = make_runner().run("history_prune", "cli")
    assert outcome.outcome == "success"
    rows = conn.execute("SELECT outcome, error FROM maintenance.job_runs"
                        " WHERE host = 'gone'").fetchall()
    assert rows[0][0] == "failure" and rows[0][1].startswith("interrupted")


def test_a_run_holding_the_task_lock_blocks_others(make_runner: Any, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, hashtext('history_prune'))", (db.LOCK_CLASS,))
        outcome = make_runner().run("history_prune", "cli")
    assert outcome.outcome == "skipped"
    assert "lock" in (outcome.reason or "")


def test_failures_are_recorded_not_raised(make_runner: Any, conn: psycopg.Connection[Any]) -> None:
    conn.execute("ALTER TABLE maintenance.job_runs RENAME COLUMN finished_at TO finished_at_x")
    try:
        outcome = make_runner().run("history_prune", "cli")
    finally:
        conn.execute("ALTER TABLE maintenance.job_runs RENAME COLUMN finished_at_x TO finished_at")
    assert outcome.outcome == "failure"
    assert outcome.error


def test_a_failed_run_records_what_the_job_found(make_runner: Any,
                                                 conn: psycopg.Connection[Any]) -> None:
    """A job's failure details land in job_runs like a success's: the evidence of a broken
    audit chain outlives the log line."""
    _audited_writes(conn, 1)
    _tamper(conn, "UPDATE audit_log SET payload_bytes = '{\"x\": 1}' WHERE chain_position = 2")
    outcome = make_runner().run("audit_verify", "cli", options={"full": True})
    assert outcome.outcome == "failure"
    assert outcome.details["first_bad_position"] == 2
    row = conn.execute("SELECT outcome, error, details FROM maintenance.job_runs"
                       " WHERE task = 'audit_verify' ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    assert row[0] == "failure" and "position 2" in row[1]
    assert row[2]["first_bad_position"] == 2 and row[2]["reason"] == outcome.details["reason"]


def test_a_replica_connected_to_a_hot_standby_runs_nothing(cluster: Any, db_url: str,
                                                           tmp_path: Any) -> None:
    import os
    import pwd

    from tests.pgcluster import RUN_AS, PgCluster

    standby = PgCluster(cluster.binaries)
    if os.geteuid() == 0:
        user = pwd.getpwnam(RUN_AS)
        os.chown(standby.datadir, user.pw_uid, user.pw_gid)
    standby.datadir.chmod(0o700)
    standby._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
                 "-D", str(standby.datadir), "-R", "-X", "stream", "--checkpoint=fast")
    with (standby.datadir / "postgresql.conf").open("a") as conf:
        conf.write(f"port = {standby.port}\nunix_socket_directories = '{standby.datadir}'\n")
    standby.start()
    try:
        standby_url = standby.url(db_url.rsplit("/", 1)[1])
        settings = Settings(database_url=standby_url, state_dir=tmp_path)
        pool = db.make_pool(standby_url, 2, 5)
        pool.open(wait=True)
        try:
            outcome = Runner(lambda: settings, standby_url, pool).run("history_prune", "schedule",
                                                                     datetime.now(UTC))
        finally:
            pool.close()
    finally:
        standby.destroy()
    assert outcome.outcome == "skipped"
    assert "hot standby" in (outcome.reason or "")
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM maintenance.job_runs").fetchone() == (0,)
