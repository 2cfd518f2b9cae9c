"""Realistic demo data for the Global Travel Hub schema, generated on the server.

    generate(conn)                      # "small": ~200 users, a few seconds
    generate(conn, "tiny")              # tests, well under 2 s
    generate(conn, "medium")            # 20k users, 80k bookings, 500k behaviour rows
    generate(conn, "bench", users=1_000_000, bookings=5_000_000, behavior_rows=20_000_000)

Every table is filled by set-based INSERT ... SELECT generate_series statements (no Python
row loops; the SQL is in daemon.demo_data_sql), committed in chunks. Values are
pseudo-random but deterministic for a seed. Content is Arabic-first (names, destinations
such as دبي, القاهرة, الرياض, إسطنبول, chat messages); bookings spread over the last 18
months; expired and live cache rows; pending payments both fresh and past expires_at;
soft-deleted users both past and within the 30-day grace period; chat, analytics and
behaviour rows in the current and previous months. The month partitions they need are
created first with create_month_partition(): the default partitions stay empty.

Audit trail: by default every audited row goes through its trigger and the global chain
lock (about 2k rows/s), in chunks of about a thousand rows. Bulk mode (default for
"medium" and "bench"; superuser only) loads with session_replication_role = replica, which
skips every trigger (audit, consent history, updated_at) and the foreign-key checks (the
generator satisfies them by construction), stages one audit row per loaded row of an
audited table and appends them with audit_append_staged() in the same transaction, so the
hash chain stays complete and verifies. Run it as a superuser or a BYPASSRLS role (row-level
security is forced on the user tables), into a schema without earlier demo rows of the same
seed: keys would collide.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.numeric import Int4, Int8

from daemon.demo_data_sql import (
    BOOKING_STEPS,
    CONSENT_STEP,
    FUNCTIONS,
    OTHER_STEPS,
    USER_STEPS,
    Step,
)


@dataclass(frozen=True)
class Scale:
    users: int
    bookings: int
    behavior_rows: int
    bulk: bool = False
    chunk: int = 1_000  # rows per transaction for audited tables (triggers) or all (bulk)


SCALES: dict[str, Scale] = {
    "tiny": Scale(users=12, bookings=30, behavior_rows=300),
    "small": Scale(users=200, bookings=600, behavior_rows=6_000),
    "medium": Scale(users=20_000, bookings=80_000, behavior_rows=500_000, bulk=True,
                    chunk=50_000),
    "bench": Scale(users=1_000_000, bookings=5_000_000, behavior_rows=20_000_000, bulk=True,
                   chunk=200_000),
}

# Audited tables and the column naming the data subject (as in their audit triggers).
AUDITED = {"users": "id", "oauth_accounts": "user_id", "bookings": "user_id",
           "booking_items": "user_id", "flight_bookings": "user_id",
           "hotel_bookings": "user_id", "crypto_payments": "user_id"}
SECRET_COLUMNS = ["access_token", "refresh_token", "id_token"]
PARTITIONED = ["chat_messages", "analytics_events", "user_behavior_log"]
UNAUDITED_CHUNK = 50_000


def plan(scale: str = "small", *, users: int | None = None, bookings: int | None = None,
         behavior_rows: int | None = None, bulk: bool | None = None,
         chunk: int | None = None) -> Scale:
    """The Scale for a named scale with any of its numbers overridden."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    base = SCALES[scale]
    changes: dict[str, Any] = {
        k: v for k, v in {"users": users, "bookings": bookings, "behavior_rows": behavior_rows,
                          "bulk": bulk, "chunk": chunk}.items() if v is not None}
    result = replace(base, **changes)
    if result.users < 1 or result.bookings < 0 or result.behavior_rows < 0 or result.chunk < 1:
        raise ValueError("users must be >= 1, bookings and behavior_rows >= 0, chunk >= 1")
    return result


def counts(scale: Scale) -> dict[str, int]:
    """How many row numbers each generator statement walks through."""
    sessions = max(1, scale.users // 2)
    return {
        "users": scale.users, "bookings": scale.bookings, "behavior_rows": scale.behavior_rows,
        "sessions": sessions, "messages": sessions * 6,
        "events": max(10, scale.behavior_rows // 4), "caches": max(12, scale.users // 5),
        "referrals": max(1, scale.users // 10), "shares": max(1, scale.users // 8),
        "predictions": max(1, scale.users // 4),
    }


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """Inclusive ranges 1..total in pieces of at most size."""
    for lo in range(1, total + 1, size):
        yield lo, min(lo + size - 1, total)


def statement(step: Step, bulk: bool) -> sql.Composed:
    """The step's INSERT; in bulk mode an audited table also stages its audit rows."""
    body = sql.SQL(step.body)  # static text of daemon.demo_data_sql
    if not (bulk and step.table in AUDITED):
        return sql.Composed([body])
    return sql.SQL(
        "WITH ins AS ({body} RETURNING *) "
        "INSERT INTO pg_temp.demo_audit_stage (occurred_at, table_name, operation, row_id,"
        " user_id, actor, payload) "
        "SELECT ins.created_at, {table}, 'INSERT', ins.id, ins.{subject},"
        " current_user || '/demo-bulk',"
        " jsonb_build_object('new', to_jsonb(ins) - %(secrets)s::text[]) FROM ins"
    ).format(body=body, table=sql.Literal(step.table),
             subject=sql.Identifier(AUDITED[step.table]))


def steps(bulk: bool) -> list[Step]:
    consent = [CONSENT_STEP] if bulk else []
    return [*USER_STEPS, *consent, *BOOKING_STEPS, *OTHER_STEPS]


def generate(conn: psycopg.Connection[Any], scale: str = "small", seed: int = 42, *,
             users: int | None = None, bookings: int | None = None,
             behavior_rows: int | None = None, bulk: bool | None = None,
             chunk: int | None = None) -> dict[str, int]:
    """Fill the schema with demo data; returns the rows inserted per table."""
    chosen = plan(scale, users=users, bookings=bookings, behavior_rows=behavior_rows,
                  bulk=bulk, chunk=chunk)
    was_autocommit = conn.autocommit
    if not was_autocommit:
        conn.commit()
        conn.autocommit = True
    try:
        return _generate(conn, chosen, seed)
    finally:
        if chosen.bulk and conn.execute("SHOW session_replication_role").fetchone() != (
                "origin",):
            conn.execute("RESET session_replication_role")
        conn.autocommit = was_autocommit


def _generate(conn: psycopg.Connection[Any], chosen: Scale, seed: int) -> dict[str, int]:
    if chosen.bulk:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        superuser = row.fetchone()
        if not superuser or not superuser[0]:
            raise PermissionError("bulk mode needs a superuser (session_replication_role)")
    rebuild_dropped_indexes(conn)  # an earlier bulk load killed before it rebuilt them
    conn.execute("SELECT set_config('gth_demo.seed', %s, false)", (str(seed),))
    conn.execute(FUNCTIONS)
    _create_partitions(conn)
    if chosen.bulk:
        _drop_audit_indexes(conn)
    try:
        return _load(conn, chosen, seed)
    finally:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()
        rebuild_dropped_indexes(conn)  # also after a failure: never leave audit_log unindexed


def _load(conn: psycopg.Connection[Any], chosen: Scale, seed: int) -> dict[str, int]:
    if chosen.bulk:
        conn.execute("SET session_replication_role = replica")
    planned = counts(chosen)
    totals: dict[str, int] = {}
    for step in steps(chosen.bulk):
        audited = step.table in AUDITED
        size = chosen.chunk if audited or chosen.bulk else max(chosen.chunk, UNAUDITED_CHUNK)
        query = statement(step, chosen.bulk)
        total = 0
        for lo, hi in chunks(planned[step.count_key], size):
            params = {"seed": Int4(seed), "users": Int8(chosen.users), "lo": Int8(lo),
                      "hi": Int8(hi), "secrets": SECRET_COLUMNS}
            with conn.transaction():
                total += max(conn.execute(query, params).rowcount, 0)
                if chosen.bulk and audited:
                    conn.execute("SELECT audit_append_staged('pg_temp.demo_audit_stage')")
        totals[step.table] = total
    if not chosen.bulk:
        totals["user_consent_history"] = 3 * totals["users"]  # written by the users trigger
    conn.execute("RESET session_replication_role")
    for view in ("user_booking_stats", "hotel_social_proof"):
        conn.execute("SELECT refresh_materialized_view(%s::regclass, false)", (view,))
    if chosen.bulk:
        conn.execute("ANALYZE")
    return totals


# The definitions of the indexes a bulk load dropped, kept in the database in the same
# transaction as the drops: a load killed half way (kill -9, a lost connection) leaves them
# here, and the next load (or the embedded daemon's next start) builds them again.
PENDING_INDEXES = sql.Identifier("maintenance", "demo_pending_indexes")


def _drop_audit_indexes(conn: psycopg.Connection[Any]) -> None:
    """Into an empty audit_log, load without its secondary indexes and build them at the end
    (as pg_restore does): the GIN index alone nearly doubles the cost of every appended row.
    Nothing is dropped when audit_log has rows."""
    if conn.execute("SELECT EXISTS (SELECT FROM public.audit_log)").fetchone() != (False,):
        return
    with conn.transaction():
        rows = conn.execute(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid)"
            "  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = 'public.audit_log'::regclass"
            "   AND NOT i.indisunique AND NOT i.indisprimary").fetchall()
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY,"
                             " definition text NOT NULL)").format(PENDING_INDEXES))
        for name, definition in rows:
            conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s) ON CONFLICT (name) DO NOTHING")
                         .format(PENDING_INDEXES), (name, definition))
            conn.execute(sql.SQL("DROP INDEX public.{}").format(sql.Identifier(name)))


def rebuild_dropped_indexes(conn: psycopg.Connection[Any]) -> list[str]:
    """Build the audit_log indexes a bulk load dropped and has not rebuilt; their names."""
    found = conn.execute("SELECT to_regclass('maintenance.demo_pending_indexes') IS NOT NULL"
                         ).fetchone()
    if not found or not found[0]:
        return []
    rebuilt = []
    for name, definition in conn.execute(
            sql.SQL("SELECT name, definition FROM {} ORDER BY name").format(PENDING_INDEXES)
    ).fetchall():
        present = conn.execute("SELECT to_regclass(format('public.%%I', %s::text)) IS NOT NULL",
                               (name,)).fetchone()
        if not present or not present[0]:
            # pg_get_indexdef's own text: the server's definition of an index it just had
            conn.execute(sql.SQL(definition))
            rebuilt.append(name)
    conn.execute(sql.SQL("DROP TABLE {}").format(PENDING_INDEXES))
    return rebuilt


def _create_partitions(conn: psycopg.Connection[Any]) -> None:
    """Month partitions from three months back (UTC) to now; the next months exist already."""
    conn.execute(
        "SELECT public.create_month_partition(p::regclass, m::date)"
        "  FROM unnest(%s::text[]) p,"
        "       generate_series(date_trunc('month', now() AT TIME ZONE 'UTC')"
        "                       - interval '3 months',"
        "                       date_trunc('month', now() AT TIME ZONE 'UTC'),"
        "                       interval '1 month') m",
        (PARTITIONED,),
    ).fetchall()


def main() -> None:  # pragma: no cover - manual use: python -m daemon.demo_data URL [scale]
    import json
    import sys

    url = sys.argv[1]
    scale = sys.argv[2] if len(sys.argv) > 2 else "small"
    with psycopg.connect(url, autocommit=True) as conn:
        print(json.dumps(generate(conn, scale), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
