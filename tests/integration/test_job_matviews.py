"""matviews: a never-populated view is populated first; later refreshes are CONCURRENTLY, so
readers querying during a refresh are not blocked; the refresh is visible afterwards."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from daemon import metrics
from daemon.db import set_timeouts
from daemon.errors import JobFailed
from daemon.jobs.base import JobContext
from daemon.jobs.matviews import JOB

# Each row of slow_mv costs 0.1 s to compute: 12 rows make a refresh of about 1.2 s.
SLOW_VIEW = """
CREATE TABLE slow_src (id integer PRIMARY KEY, v integer NOT NULL);
INSERT INTO slow_src SELECT g, g FROM generate_series(1, 12) g;
CREATE FUNCTION slow_value(integer) RETURNS integer LANGUAGE sql VOLATILE
    AS 'SELECT $1 FROM pg_sleep(0.1)';
CREATE MATERIALIZED VIEW slow_mv AS SELECT id, slow_value(v) AS v FROM slow_src WITH NO DATA;
CREATE UNIQUE INDEX slow_mv_id ON slow_mv (id);
"""


def _seed_bookings(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("INSERT INTO users (email, full_name) VALUES ('mv@example.com', 'M V')"
                       " RETURNING id").fetchone()
    assert row is not None
    conn.execute(
        "INSERT INTO bookings (user_id, booking_reference, booking_type, status, total_amount)"
        " VALUES (%s, 'MV-1', 'hotel', 'confirmed', 500), (%s, 'MV-2', 'flight', 'completed', 300)",
        (row[0], row[0]))
    return str(row[0])


def test_refresh_is_visible_afterwards(
    conn: psycopg.Connection[Any], job_ctx: Callable[..., Any]
) -> None:
    user_id = _seed_bookings(conn)
    dry = JOB().run(job_ctx("matviews", dry_run=True))
    assert dry.details["views"]["user_booking_stats"] == {"would_refresh": "concurrent"}
    assert conn.execute("SELECT count(*) FROM user_booking_stats WHERE user_id = %s",
                        (user_id,)).fetchone() == (0,)
    before = time.time()
    ctx = job_ctx("matviews")
    result = JOB().run(ctx)

    assert conn.execute("SELECT paid_bookings, total_spent FROM user_booking_stats"
                        " WHERE user_id = %s", (user_id,)).fetchone() == (2, 800)
    assert {v["mode"] for v in result.details["views"].values()} == {"concurrent"}
    assert ctx.rows == 2
    for view in ("user_booking_stats", "hotel_social_proof"):
        assert metrics.MATVIEW_LAST_REFRESH.labels(view=view)._value.get() >= before


def test_readers_are_not_blocked_during_refresh(
    conn: psycopg.Connection[Any], db_url: str, job_ctx: Callable[..., Any]
) -> None:
    conn.execute(SLOW_VIEW)
    # Never populated: one plain REFRESH first (CONCURRENTLY refuses an unpopulated view).
    first = JOB().run(job_ctx("matviews", views=["slow_mv"]))
    assert first.details["views"]["slow_mv"]["mode"] == "initial"
    assert conn.execute("SELECT sum(v) FROM slow_mv").fetchone() == (78,)

    conn.execute("UPDATE slow_src SET v = v * 10")
    latencies: list[tuple[float, float]] = []  # (start, seconds)
    stop = threading.Event()

    def reader() -> None:
        with psycopg.connect(db_url, autocommit=True) as rconn:
            while not stop.is_set():
                t0 = time.monotonic()
                rconn.execute("SELECT sum(v) FROM slow_mv").fetchone()
                latencies.append((t0, time.monotonic() - t0))
                time.sleep(0.02)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        time.sleep(0.2)
        t_start = time.monotonic()
        second = JOB().run(job_ctx("matviews", views=["slow_mv"]))
        t_end = time.monotonic()
        time.sleep(0.1)
    finally:
        stop.set()
        thread.join()

    assert second.details["views"]["slow_mv"]["mode"] == "concurrent"
    refresh_seconds = t_end - t_start
    assert refresh_seconds >= 1.0  # the view really was slow to refresh
    during = [s for t0, s in latencies if t_start <= t0 <= t_end]
    assert len(during) >= 10, "the reader kept querying while the refresh ran"
    # A blocked reader would wait for the whole refresh (> 1 s); an unblocked one takes ms.
    assert max(during) < 0.5, f"reader blocked: max {max(during):.3f} s during refresh"
    print(f"refresh {refresh_seconds:.2f} s, {len(during)} reads during it, "
          f"max read {max(during) * 1000:.1f} ms")
    assert conn.execute("SELECT sum(v) FROM slow_mv").fetchone() == (780,)


def test_runs_as_the_daemon_role(conn: psycopg.Connection[Any], db_url: str,
                                 job_ctx: Callable[..., Any]) -> None:
    """As gth_maint (not the owner): PostgreSQL 17+ refreshes through pg_maintain, older
    versions through the SECURITY DEFINER refresh_materialized_view()."""
    user_id = _seed_bookings(conn)
    base = job_ctx("matviews")

    @contextlib.contextmanager
    def as_daemon_role() -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(db_url, autocommit=True) as c:
            c.execute("SET ROLE gth_maint")
            set_timeouts(c, base.settings.statement_timeout_ms, base.settings.lock_timeout_ms)
            yield c

    ctx = JobContext(task="matviews", settings=base.settings, app_settings=base.app_settings,
                     connection_factory=as_daemon_role, log=base.log,
                     stop_event=threading.Event())
    result = JOB().run(ctx)
    expected = "statement" if conn.info.server_version >= 170000 else \
        "refresh_materialized_view()"
    assert {v["via"] for v in result.details["views"].values()} == {expected}
    assert conn.execute("SELECT paid_bookings FROM user_booking_stats WHERE user_id = %s",
                        (user_id,)).fetchone() == (2,)


def test_bad_views_fail_the_run_but_not_the_others(
    conn: psycopg.Connection[Any], job_ctx: Callable[..., Any]
) -> None:
    conn.execute("CREATE MATERIALIZED VIEW no_key_mv AS SELECT 1 AS x")
    _seed_bookings(conn)
    ctx = job_ctx("matviews", views=["missing_mv", "no_key_mv", "user_booking_stats"])
    with pytest.raises(JobFailed,
                       match=r"missing_mv .*does not exist.*no_key_mv .*unique index") as failed:
        JOB().run(ctx)
    assert set(failed.value.details["failed"]) == {"missing_mv", "no_key_mv"}
    assert "user_booking_stats" in failed.value.details["views"]
    assert conn.execute("SELECT count(*) FROM user_booking_stats").fetchone() == (1,)
