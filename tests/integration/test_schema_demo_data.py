"""The demo data generator on a real database: realistic content, every constraint holds,
the audit chain is complete and valid in trigger mode and in bulk mode."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from daemon import demo_data

ARABIC = "[\u0600-\u06FF]"


@pytest.fixture(params=[False, True], ids=["triggers", "bulk"])
def generated(request: pytest.FixtureRequest,
              conn: psycopg.Connection[Any]) -> tuple[psycopg.Connection[Any], dict[str, int]]:
    return conn, demo_data.generate(conn, "tiny", bulk=request.param)


def one(conn: psycopg.Connection[Any], query: str | sql.Composed,
        params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def test_counts_match_the_database(
    generated: tuple[psycopg.Connection[Any], dict[str, int]]
) -> None:
    conn, counts = generated
    assert counts["users"] == 12 and counts["bookings"] == 30
    assert counts["user_behavior_log"] == 300
    for table, n in counts.items():
        assert n > 0, table
        real = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(table))).fetchone()
        assert real == (n,), table


def test_audit_chain_is_complete_and_valid(
    generated: tuple[psycopg.Connection[Any], dict[str, int]]
) -> None:
    conn, counts = generated
    audited = sum(counts[t] for t in demo_data.AUDITED)
    assert one(conn, "SELECT count(*) FROM audit_log") == audited
    row = conn.execute("SELECT rows_checked, first_bad_position FROM"
                       " audit_verify_range(1, NULL, 1000000)").fetchone()
    assert row == (audited, None)
    assert one(conn, "SELECT count(DISTINCT table_name) FROM audit_log") == len(
        demo_data.AUDITED)
    assert one(conn, "SELECT count(*) FROM audit_log WHERE payload::text ~ 'access_token'") == 0
    # The trigger path continues the chain after the generator's rows.
    conn.execute("UPDATE bookings SET status = 'completed' WHERE status = 'confirmed'")
    assert one(conn, "SELECT verify_audit_log_integrity()") is True


def test_realistic_content(generated: tuple[psycopg.Connection[Any], dict[str, int]]) -> None:
    conn, _ = generated
    assert one(conn, "SELECT bool_and(full_name ~ %s) FROM users", (ARABIC,)) is True
    assert one(conn, "SELECT count(DISTINCT destination) FROM bookings") >= 5
    assert one(conn, "SELECT bool_or(destination IN ('دبي', 'القاهرة', 'الرياض', 'إسطنبول'))"
                     " FROM bookings") is True
    assert one(conn, "SELECT bool_and(content ~ %s) FROM chat_messages", (ARABIC,)) is True
    assert one(conn, "SELECT min(booked_at) >= now() - interval '549 days'"
                     " AND max(booked_at) <= now() FROM bookings") is True
    assert one(conn, "SELECT max(booked_at) - min(booked_at) > interval '180 days'"
                     " FROM bookings") is True
    # Both sides of every maintenance predicate.
    for cache in ("flight_search_cache", "hotel_search_cache"):
        assert one(conn, sql.SQL("SELECT count(*) FILTER (WHERE expires_at < now()) > 0"
                                 " AND count(*) FILTER (WHERE expires_at > now()) > 0"
                                 " FROM {}").format(sql.Identifier(cache)))
    assert one(conn, "SELECT count(*) FROM crypto_payments WHERE status = 'pending'"
                     " AND expires_at < now()") >= 1
    assert one(conn, "SELECT count(*) FROM crypto_payments WHERE status = 'pending'"
                     " AND expires_at > now()") >= 1
    assert one(conn, "SELECT count(*) FROM users"
                     " WHERE deleted_at < now() - interval '30 days'") >= 1
    assert one(conn, "SELECT count(*) FROM users"
                     " WHERE deleted_at >= now() - interval '30 days'") >= 1
    assert one(conn, "SELECT count(*) FROM hotel_ratings") >= 1
    assert one(conn, "SELECT count(*) FROM user_consent_history") == 36


def test_partitions_are_used_not_the_default(
    generated: tuple[psycopg.Connection[Any], dict[str, int]]
) -> None:
    conn, _ = generated
    for parent in demo_data.PARTITIONED:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(parent + "_default"))
        assert one(conn, query) == 0
    months = one(conn, "SELECT count(DISTINCT date_trunc('month', \"timestamp\""
                       " AT TIME ZONE 'UTC')) FROM user_behavior_log")
    assert months in (1, 2)  # current and previous month (one on the 1st at 00:00 UTC)
    assert one(conn, "SELECT min(\"timestamp\") >= date_trunc('month', now() AT TIME ZONE 'UTC'"
                     " - interval '1 month') AT TIME ZONE 'UTC' FROM user_behavior_log") is True


def test_views_are_refreshed(generated: tuple[psycopg.Connection[Any], dict[str, int]]) -> None:
    conn, _ = generated
    active = one(conn, "SELECT count(*) FROM users WHERE deleted_at IS NULL")
    assert one(conn, "SELECT count(*) FROM user_booking_stats") == active
    assert one(conn, "SELECT count(DISTINCT persona) FROM user_booking_stats") >= 2
    assert one(conn, "SELECT count(*) FROM hotel_social_proof WHERE persona_type = 'all'") >= 1


def test_seed_makes_it_reproducible(conn: psycopg.Connection[Any], db_url: str,
                                    cluster: Any) -> None:
    demo_data.generate(conn, "tiny", seed=7)
    first = conn.execute("SELECT id, total_amount, status, destination FROM bookings"
                         " ORDER BY id").fetchall()
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE demo_again TEMPLATE gth_template")
    try:
        with psycopg.connect(cluster.url("demo_again"), autocommit=True) as other:
            demo_data.generate(other, "tiny", seed=7)
            again = other.execute("SELECT id, total_amount, status, destination FROM bookings"
                                  " ORDER BY id").fetchall()
    finally:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute("DROP DATABASE demo_again")
    assert again == first
    # A second seed in the same database adds to the first one.
    demo_data.generate(conn, "tiny", seed=8)
    assert one(conn, "SELECT count(*) FROM bookings") == 60


def test_bulk_mode_needs_a_superuser(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET ROLE gth_admin")
    with pytest.raises(PermissionError):
        demo_data.generate(conn, "tiny", bulk=True)


def test_non_autocommit_connection_is_restored(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        counts = demo_data.generate(conn, "tiny", seed=3)
        assert conn.autocommit is False
        assert counts["users"] == 12


AUDIT_INDEXES = ("SELECT array_agg(pg_get_indexdef(indexrelid) ORDER BY indexrelid::regclass::text)"
                 " FROM pg_index WHERE indrelid = 'audit_log'::regclass")


def test_bulk_load_rebuilds_the_audit_indexes_it_dropped(conn: psycopg.Connection[Any]) -> None:
    before = one(conn, AUDIT_INDEXES)
    assert any("gin" in definition for definition in before)
    demo_data.generate(conn, "tiny", bulk=True)
    assert one(conn, AUDIT_INDEXES) == before
    # Also when the load fails half way (here: the same seed again, so keys collide).
    conn.execute("SET session_replication_role = replica")  # past the truncate guard
    conn.execute("TRUNCATE audit_log")  # empty again, so the indexes are dropped again
    conn.execute("RESET session_replication_role")
    with pytest.raises(psycopg.errors.UniqueViolation):
        demo_data.generate(conn, "tiny", bulk=True)
    assert one(conn, AUDIT_INDEXES) == before


def test_a_bulk_load_killed_half_way_leaves_its_indexes_to_the_next_load(
        conn: psycopg.Connection[Any], db_url: str) -> None:
    """kill -9 of the loader after it dropped audit_log's indexes: their definitions were
    committed with the drops, and the next load (or the embedded daemon's next start) builds
    them again."""
    before = one(conn, AUDIT_INDEXES)
    loader = textwrap.dedent(f"""
        import psycopg
        from daemon import demo_data
        with psycopg.connect({db_url!r}, application_name="killed_loader",
                             autocommit=True) as c:
            demo_data.generate(c, "tiny", bulk=True)
    """)
    with psycopg.connect(db_url, autocommit=True) as holder:
        holder.execute("BEGIN")
        # Blocks one of the load's last steps, after the audited tables are in.
        holder.execute("LOCK TABLE referrals IN SHARE MODE")
        proc = subprocess.Popen([sys.executable, "-c", loader])
        try:
            deadline = time.monotonic() + 60
            while one(conn, "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                            " 'killed_loader' AND wait_event_type = 'Lock'") == 0:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            proc.kill()
            proc.wait()
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE application_name = 'killed_loader'")
        finally:
            if proc.poll() is None:
                proc.kill()
            holder.execute("ROLLBACK")
    assert one(conn, "SELECT count(*) FROM audit_log") > 0  # the load was under way
    secondary = [d for d in before if "UNIQUE" not in d]
    assert one(conn, AUDIT_INDEXES) == [d for d in before if d not in secondary]
    assert one(conn, "SELECT count(*) FROM maintenance.demo_pending_indexes") == len(secondary)
    assert sorted(demo_data.rebuild_dropped_indexes(conn)) == sorted(
        d.split()[2] for d in secondary)
    assert one(conn, AUDIT_INDEXES) == before
    assert one(conn, "SELECT to_regclass('maintenance.demo_pending_indexes')") is None
    assert demo_data.rebuild_dropped_indexes(conn) == []  # nothing left to do
