"""vacuum_analyze updates last_analyze / last_vacuum (partitioned parents included); reindex
rebuilds a deliberately bloated index, leaves a fresh one alone and drops the invalid
leftovers of a failed REINDEX CONCURRENTLY."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from daemon.jobs.reindex import JOB as REINDEX
from daemon.jobs.reindex import estimates
from daemon.jobs.vacuum_analyze import JOB as VACUUM_ANALYZE

STATS = ("SELECT relname, last_analyze IS NOT NULL, last_vacuum IS NOT NULL"
         " FROM pg_stat_user_tables WHERE relname = ANY(%s)")


def _stats(conn: psycopg.Connection[Any], names: list[str]) -> dict[str, tuple[bool, bool]]:
    return {r[0]: (r[1], r[2]) for r in conn.execute(STATS, (names,))}


def _leaves(conn: psycopg.Connection[Any], parent: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT relid::regclass::text FROM pg_partition_tree(%s) WHERE isleaf", (parent,))]


def _not_today() -> int:
    return (datetime.now(UTC).weekday() + 1) % 7


def test_daily_analyze_covers_tables_parents_and_partitions(
    conn: psycopg.Connection[Any], job_ctx: Callable[..., Any]
) -> None:
    conn.execute("CREATE TABLE va_plain AS SELECT g AS id FROM generate_series(1, 1000) g")
    leaves = _leaves(conn, "chat_messages")
    names = ["va_plain", "chat_messages", *leaves]
    assert _stats(conn, names) == dict.fromkeys(names, (False, False))

    ctx = job_ctx("vacuum_analyze", tables=["va_plain", "chat_messages"],
                  vacuum_weekday=_not_today())
    result = VACUUM_ANALYZE().run(ctx)

    assert result.details["mode"] == "analyze"
    assert _stats(conn, names) == dict.fromkeys(names, (True, False))
    # one statement per plain table and parent, plus one per leaf where PostgreSQL 18 lets
    # the parent be analyzed ONLY (before 18, ANALYZE parent recurses into the leaves)
    expected = 2 + (len(leaves) if conn.info.server_version >= 180000 else 0)
    assert ctx.rows == result.details["relations"] == expected


def test_weekly_vacuum(conn: psycopg.Connection[Any], job_ctx: Callable[..., Any]) -> None:
    conn.execute("CREATE TABLE va_plain AS SELECT g AS id FROM generate_series(1, 1000) g")
    conn.execute("DELETE FROM va_plain WHERE id % 2 = 0")
    leaves = _leaves(conn, "user_behavior_log")
    ctx = job_ctx("vacuum_analyze", tables=["va_plain", "user_behavior_log"],
                  vacuum_weekday=_not_today(), options={"vacuum": True})
    result = VACUUM_ANALYZE().run(ctx)

    assert result.details["mode"] == "vacuum"
    stats = _stats(conn, ["va_plain", "user_behavior_log", *leaves])
    assert stats["va_plain"] == (True, True)
    assert stats["user_behavior_log"][0]  # the parent's own statistics
    assert all(stats[leaf] == (True, True) for leaf in leaves)
    row = conn.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'va_plain'")
    assert row.fetchone() == (0,)


def test_default_targets_every_public_table(
    conn: psycopg.Connection[Any], job_ctx: Callable[..., Any]
) -> None:
    result = VACUUM_ANALYZE().run(job_ctx("vacuum_analyze", dry_run=True,
                                          vacuum_weekday=_not_today()))
    planned = result.details["would_run"]
    parent = "ANALYZE ONLY" if conn.info.server_version >= 180000 else "ANALYZE"
    assert f"{parent} public.chat_messages" in planned
    assert "ANALYZE public.users" in planned
    assert not any("maintenance." in p for p in planned)
    assert _stats(conn, ["users"]) == {"users": (False, False)}


def _bloated_and_fresh(conn: psycopg.Connection[Any]) -> None:
    conn.execute("""
        CREATE TABLE rx_bloated (id integer PRIMARY KEY, pad integer);
        INSERT INTO rx_bloated SELECT g, g FROM generate_series(1, 100000) g;
        DELETE FROM rx_bloated WHERE id % 10 <> 0;  -- 90 % gone from every leaf page
        CREATE TABLE rx_fresh (id integer, pad integer);
        INSERT INTO rx_fresh SELECT g, g FROM generate_series(1, 100000) g;
        CREATE INDEX rx_fresh_id ON rx_fresh (id);
    """)
    conn.execute("VACUUM (ANALYZE) rx_bloated")
    conn.execute("VACUUM (ANALYZE) rx_fresh")


def _size(conn: psycopg.Connection[Any], index: str) -> int:
    row = conn.execute("SELECT pg_relation_size(%s::regclass)", (index,)).fetchone()
    assert row is not None
    return int(row[0])


def test_reindex_picks_the_bloated_index_only(
    conn: psycopg.Connection[Any], job_ctx: Callable[..., Any]
) -> None:
    _bloated_and_fresh(conn)
    est = {r["index_name"]: r for r in estimates(conn)}
    assert est["rx_bloated_pkey"]["bloat"] > 0.8
    assert abs(est["rx_fresh_id"]["bloat"]) < 0.1  # the estimate fits a fresh index
    bloated_before = _size(conn, "rx_bloated_pkey")
    fresh_before = _size(conn, "rx_fresh_id")
    small = REINDEX().run(job_ctx("reindex"))  # default 8 MB floor: the 2 MB index stays
    assert small.details["reindexed"] == []
    dry = REINDEX().run(job_ctx("reindex", dry_run=True, min_index_bytes=0))
    assert [r["index"] for r in dry.details["would_reindex"]] == ["public.rx_bloated_pkey"]
    assert _size(conn, "rx_bloated_pkey") == bloated_before

    ctx = job_ctx("reindex", min_index_bytes=1024 * 1024)
    result = REINDEX().run(ctx)

    assert [r["index"] for r in result.details["reindexed"]] == ["public.rx_bloated_pkey"]
    assert ctx.rows == 1
    assert _size(conn, "rx_bloated_pkey") < bloated_before / 4
    assert _size(conn, "rx_fresh_id") == fresh_before
    assert conn.execute("SELECT bool_and(indisvalid) FROM pg_index WHERE indexrelid IN"
                        " ('rx_bloated_pkey'::regclass, 'rx_fresh_id'::regclass)").fetchone() \
        == (True,)


def test_leftover_ccnew_indexes_are_dropped(
    conn: psycopg.Connection[Any], job_ctx: Callable[..., Any]
) -> None:
    conn.execute("CREATE TABLE rx_dup (v integer); INSERT INTO rx_dup VALUES (1), (1)")
    # A failed concurrent build leaves an invalid index behind, as REINDEX CONCURRENTLY does.
    for name in ("rx_dup_v_ccnew", "rx_dup_v_ccold1", "rx_dup_other"):
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY {} ON rx_dup (v)")
                         .format(sql.Identifier(name)))
    invalid = "SELECT relname FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid" \
              " WHERE NOT i.indisvalid ORDER BY 1"
    assert [r[0] for r in conn.execute(invalid)] == ["rx_dup_other", "rx_dup_v_ccnew",
                                                     "rx_dup_v_ccold1"]

    dry = REINDEX().run(job_ctx("reindex", dry_run=True))
    assert dry.details["would_drop_leftovers"] == ["public.rx_dup_v_ccnew",
                                                   "public.rx_dup_v_ccold1"]
    result = REINDEX().run(job_ctx("reindex"))
    assert result.details["leftovers_dropped"] == ["public.rx_dup_v_ccnew",
                                                   "public.rx_dup_v_ccold1"]
    # an invalid index that is not a REINDEX leftover is somebody else's business
    assert [r[0] for r in conn.execute(invalid)] == ["rx_dup_other"]
