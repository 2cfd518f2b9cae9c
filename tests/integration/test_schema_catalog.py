"""The schema read from the catalog: keys, types, indexes, row-level security, roles."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

USER_TABLES = [
    "users", "user_consent_history", "oauth_accounts", "trips", "chat_sessions",
    "chat_messages", "bookings", "booking_items", "flight_bookings", "hotel_bookings",
    "hotel_ratings", "crypto_payments", "trip_predictions", "outcome_predictions", "referrals",
    "shared_content", "analytics_events", "user_behavior_log", "audit_log",
]
SEED_TABLES = [
    *USER_TABLES, "flight_search_cache", "hotel_search_cache",
]

# Tables of the application schema (no partitions: they inherit from their parent).
APP_TABLES_SQL = """
    SELECT c.oid::regclass::text, c.oid
      FROM pg_class c
     WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
       AND NOT c.relispartition
"""


def test_every_seed_table_exists(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(APP_TABLES_SQL).fetchall()
    names = {r[0] for r in rows}
    assert set(SEED_TABLES) <= names
    for view in ("user_booking_stats", "hotel_social_proof", "cache_performance"):
        assert conn.execute("SELECT to_regclass(%s) IS NOT NULL", (view,)).fetchone() == (True,)


def test_primary_keys_are_uuid_except_audit_log(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        """SELECT c.conrelid::regclass::text, a.attname, format_type(a.atttypid, a.atttypmod)
             FROM pg_constraint c
             JOIN pg_class t ON t.oid = c.conrelid
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
            WHERE c.contype = 'p' AND t.relnamespace = 'public'::regnamespace
              AND NOT t.relispartition AND t.relname = ANY(%s)""", (SEED_TABLES,)
    ).fetchall()
    assert len(rows) == len(SEED_TABLES)
    for table, column, type_ in rows:
        if table == "audit_log":
            assert type_ == "bigint"  # the chain is ordered by chain_position, not id
            continue
        assert (column, type_) == ("id", "uuid"), table


def test_no_timestamp_without_time_zone(conn: psycopg.Connection[Any]) -> None:
    bad = conn.execute(
        """SELECT c.relname || '.' || a.attname
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'm', 'v')
              AND a.attnum > 0 AND NOT a.attisdropped
              AND a.atttypid = 'timestamp'::regtype"""
    ).fetchall()
    assert bad == []


def test_every_jsonb_column_has_a_gin_index(conn: psycopg.Connection[Any]) -> None:
    missing = conn.execute(
        """SELECT c.relname || '.' || a.attname
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
              AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = 'jsonb'::regtype
              AND NOT EXISTS (
                  SELECT 1 FROM pg_index i
                    JOIN pg_class ic ON ic.oid = i.indexrelid
                    JOIN pg_am am ON am.oid = ic.relam
                   WHERE i.indrelid = c.oid AND am.amname = 'gin'
                     AND a.attnum = ANY (i.indkey::int2[]))"""
    ).fetchall()
    assert missing == []
    count = conn.execute(
        """SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
              AND NOT c.relispartition AND a.atttypid = 'jsonb'::regtype"""
    ).fetchone()
    assert count and count[0] >= 20


def test_every_foreign_key_has_a_leading_index(conn: psycopg.Connection[Any]) -> None:
    missing = conn.execute(
        """SELECT f.conname
             FROM pg_constraint f
             JOIN pg_class c ON c.oid = f.conrelid
            WHERE f.contype = 'f' AND c.relnamespace = 'public'::regnamespace
              AND NOT EXISTS (
                  SELECT 1 FROM pg_index i
                   WHERE i.indrelid = f.conrelid AND i.indpred IS NULL
                     AND (i.indkey::int2[])[0:cardinality(f.conkey) - 1]
                         @> f.conkey AND cardinality(f.conkey) <= i.indnkeyatts)"""
    ).fetchall()
    assert missing == []


@pytest.mark.parametrize(("table", "definition_part"), [
    ("flight_search_cache", "(expires_at)"),
    ("hotel_search_cache", "(expires_at)"),
    ("users", "(deleted_at) WHERE (deleted_at IS NOT NULL)"),
    ("crypto_payments", "(status, expires_at)"),
])
def test_maintenance_predicates_are_indexed(
    conn: psycopg.Connection[Any], table: str, definition_part: str
) -> None:
    defs = [r[0] for r in conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s",
        (table,)).fetchall()]
    assert any(definition_part in d for d in defs), defs


def test_every_constraint_is_named_explicitly(conn: psycopg.Connection[Any]) -> None:
    """Names follow <table>_..._(check|key|fkey|pkey); none is a generated '..._check1'."""
    rows = conn.execute(
        """SELECT c.conname, t.relname FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
            WHERE t.relnamespace = 'public'::regnamespace AND NOT t.relispartition
              AND c.contype IN ('c', 'f', 'u', 'p')"""
    ).fetchall()
    assert len(rows) > 150
    for name, table in rows:
        assert name.startswith(table + "_"), name
        assert not name[-1].isdigit(), name


def test_row_level_security_enabled_and_forced(conn: psycopg.Connection[Any]) -> None:
    rows = dict(conn.execute(
        """SELECT relname, relrowsecurity AND relforcerowsecurity FROM pg_class
            WHERE relnamespace = 'public'::regnamespace AND relname = ANY(%s)""",
        (USER_TABLES,)).fetchall())
    assert rows == {t: True for t in USER_TABLES}
    # ... and on every partition, so a partition queried directly shows nothing.
    parts = conn.execute(
        """SELECT c.relname FROM pg_class c WHERE c.relispartition AND c.relkind = 'r'
              AND c.relnamespace = 'public'::regnamespace
              AND NOT (c.relrowsecurity AND c.relforcerowsecurity)""").fetchall()
    assert parts == []
    policies = conn.execute("SELECT count(*) FROM pg_policies WHERE schemaname = 'public'")
    count = policies.fetchone()
    assert count and count[0] >= 15


def test_roles_exist_nologin_without_superpowers(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        """SELECT rolname, rolcanlogin, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb
             FROM pg_roles WHERE rolname LIKE 'gth\\_%' ORDER BY 1""").fetchall()
    assert [r[0] for r in rows] == ["gth_admin", "gth_app", "gth_maint", "gth_readonly"]
    assert all(not any(r[1:]) for r in rows)


def test_migrations_contain_no_password_and_no_bare_create_role() -> None:
    from daemon.sqlfiles import sql_root

    for path in sorted((sql_root() / "migrations").glob("*.sql")):
        code = "\n".join(line.split("--")[0] for line in path.read_text("utf-8").splitlines())
        assert not re.search(r"PASSWORD\s*(\'|\$|NULL)", code, re.IGNORECASE), path.name
        # Roles are created only inside a DO block that checks pg_roles first.
        assert not re.search(r"^\s*CREATE\s+ROLE", code, re.IGNORECASE | re.MULTILINE), path.name


def test_database_encoding_and_arabic_round_trip(conn: psycopg.Connection[Any]) -> None:
    name = "عبد الرحمن بن خالد — رحلة إلى دبي ✈️ ١٢٣"
    row = conn.execute(
        "INSERT INTO users (email, full_name, home_city) VALUES (%s, %s, %s)"
        " RETURNING full_name, convert_to(full_name, 'UTF8'), home_city, locale",
        ("arabic@example.com", name, "القاهرة"),
    ).fetchone()
    assert row is not None
    assert row[0] == name
    assert bytes(row[1]) == name.encode("utf-8")
    assert row[2] == "القاهرة"
    assert row[3] == "ar"
    # jsonb keeps Arabic as-is too (no \\u escapes in storage or output).
    back = conn.execute("SELECT (%s::jsonb)->>'city'", ('{"city": "إسطنبول"}',)).fetchone()
    assert back == ("إسطنبول",)
