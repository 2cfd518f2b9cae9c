"""cache_cleanup: only expired rows go, live rows (and their hit counts) stay untouched; the
job and CALL cleanup_expired_cache() share one SQL implementation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from daemon.errors import JobFailed
from daemon.jobs.cache_cleanup import JOB

FLIGHTS = """
INSERT INTO flight_search_cache (cache_key, origin, destination, departure_date, results,
                                 hit_count, created_at, expires_at)
SELECT 'f' || g, 'CAI', 'DXB', current_date + 30, jsonb_build_object('n', g), g,
       timestamptz '2001-01-01 00:00:00+00',
       CASE WHEN g <= 12 THEN timestamptz '2001-01-01 00:00:00+00' + interval '1 day'  -- ties
            WHEN g <= 30 THEN now() - g * interval '1 minute'                          -- expired
            ELSE now() + interval '1 hour' END                                         -- live
  FROM generate_series(1, 50) g
"""
HOTELS = """
INSERT INTO hotel_search_cache (cache_key, city, check_in, check_out, results, hit_count,
                                created_at, expires_at)
SELECT 'h' || g, 'Cairo', current_date + 10, current_date + 12, '{}', 100 + g,
       now() - interval '2 days',
       CASE WHEN g <= 15 THEN now() - interval '5 minutes' ELSE now() + interval '1 day' END
  FROM generate_series(1, 20) g
"""
LIVE = sql.SQL("SELECT id, cache_key, hit_count, expires_at, results FROM {}"
              " WHERE expires_at > now() ORDER BY id")
COUNTS = sql.SQL("SELECT count(*) FILTER (WHERE expires_at <= now()),"
                 " count(*) FILTER (WHERE expires_at > now()) FROM {}")


def _fill(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    conn.execute(FLIGHTS)
    conn.execute(HOTELS)
    return {t: conn.execute(LIVE.format(sql.Identifier(t))).fetchall()
            for t in ("flight_search_cache", "hotel_search_cache")}


def _counts(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, int]]:
    out = {}
    for table in ("flight_search_cache", "hotel_search_cache"):
        row = conn.execute(COUNTS.format(sql.Identifier(table))).fetchone()
        assert row is not None
        out[table] = (row[0], row[1])
    return out


def test_only_expired_rows_go_and_live_rows_are_untouched_dry_run_first(
    conn: psycopg.Connection[Any], job_ctx: Callable[..., Any]
) -> None:
    live_before = _fill(conn)
    dry = JOB().run(job_ctx("cache_cleanup", dry_run=True))
    assert dry.details["tables"]["flight_search_cache"]["would_delete"] == 30
    assert dry.details["tables"]["hotel_search_cache"]["would_delete"] == 15
    assert _counts(conn) == {"flight_search_cache": (30, 20), "hotel_search_cache": (15, 5)}

    # keyset mode, batches smaller than the 12-row tie on expires_at
    ctx = job_ctx("cache_cleanup", batch_size=5, sweep_threshold=0)
    result = JOB().run(ctx)

    assert _counts(conn) == {"flight_search_cache": (0, 20), "hotel_search_cache": (0, 5)}
    for table, rows in live_before.items():  # live rows, hit_count included, unchanged
        assert conn.execute(LIVE.format(sql.Identifier(table))).fetchall() == rows
    tables = result.details["tables"]
    assert tables["flight_search_cache"]["deleted"] == 30
    assert tables["flight_search_cache"]["batches"] == 7  # six full batches, then an empty one
    assert tables["hotel_search_cache"]["deleted"] == 15
    assert tables["flight_search_cache"]["mode"] == "keyset"
    assert ctx.rows == 45
    assert "vacuum" not in tables["flight_search_cache"]  # 30 < vacuum_after_rows


def test_sweep_when_most_rows_expired(
    conn: psycopg.Connection[Any], job_ctx: Callable[..., Any]
) -> None:
    """Half the table expired, scattered over the heap: the run sweeps page ranges."""
    conn.execute("""
        INSERT INTO hotel_search_cache (cache_key, city, check_in, check_out, results,
                                        hit_count, created_at, expires_at)
        SELECT 's' || g, 'Giza', current_date + 1, current_date + 2, '{}', g,
               now() - interval '2 days',
               now() + CASE WHEN g % 2 = 0 THEN interval '-1 hour' ELSE interval '1 hour' END
          FROM generate_series(1, 3000) g ORDER BY random()
    """)
    conn.execute("ANALYZE hotel_search_cache")
    live_before = conn.execute(LIVE.format(sql.Identifier("hotel_search_cache"))).fetchall()
    ctx = job_ctx("cache_cleanup", tables=["hotel_search_cache"], batch_size=100)
    table = JOB().run(ctx).details["tables"]["hotel_search_cache"]
    assert table["mode"] == "sweep"
    assert table["deleted"] == 1500 and table["batches"] > 5
    assert conn.execute(LIVE.format(sql.Identifier("hotel_search_cache"))).fetchall() \
        == live_before
    assert _counts(conn)["hotel_search_cache"] == (0, 1500)


def test_vacuum_after_a_big_cleanup(
    conn: psycopg.Connection[Any], job_ctx: Callable[..., Any]
) -> None:
    _fill(conn)
    result = JOB().run(job_ctx("cache_cleanup", batch_size=1000, vacuum_after_rows=10))
    assert result.details["tables"]["flight_search_cache"]["vacuum"].startswith("done")
    assert "vacuum" not in result.details["tables"]["hotel_search_cache"] or \
        result.details["tables"]["hotel_search_cache"]["vacuum"].startswith("done")


def test_procedure_shares_the_batches(conn: psycopg.Connection[Any]) -> None:
    live_before = _fill(conn)
    conn.execute("CALL cleanup_expired_cache(4)")
    assert _counts(conn) == {"flight_search_cache": (0, 20), "hotel_search_cache": (0, 5)}
    for table, rows in live_before.items():
        assert conn.execute(LIVE.format(sql.Identifier(table))).fetchall() == rows


def test_partitioned_or_missing_tables_are_refused(
    conn: psycopg.Connection[Any], job_ctx: Callable[..., Any]
) -> None:
    with pytest.raises(psycopg.errors.RaiseException, match="not a plain table"):
        conn.execute("SELECT * FROM cache_cleanup_batch('chat_messages', 10, now())")
    _fill(conn)
    ctx = job_ctx("cache_cleanup", tables=["no_such_cache", "chat_messages",
                                           "hotel_search_cache"])
    with pytest.raises(JobFailed, match=r"no_such_cache.*chat_messages") as failed:
        JOB().run(ctx)
    assert set(failed.value.details["failed"]) == {"no_such_cache", "chat_messages"}
    # the failing tables did not stop the good one
    assert _counts(conn)["hotel_search_cache"] == (0, 5)
