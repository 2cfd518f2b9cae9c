"""The hash-chained audit trail: ordering under concurrent writers, tamper detection (each
kind at the right position), GDPR redaction that keeps the chain valid, append-only guards."""

from __future__ import annotations

import itertools
import threading
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

ZERO = b"\x00" * 32


def add_users(conn: psycopg.Connection[Any], n: int, tag: str = "u") -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(n)]
    for i, uid in enumerate(ids):
        conn.execute("INSERT INTO users (id, email, full_name) VALUES (%s, %s, %s)",
                     (uid, f"{tag}{i}-{uid.hex[:6]}@example.com", f"مسافر {i}"))
    return ids


def verify(conn: psycopg.Connection[Any], start: int = 1, prev: bytes | None = ZERO,
           limit: int = 10**9) -> tuple[Any, ...]:
    row = conn.execute("SELECT * FROM audit_verify_range(%s, %s, %s)",
                       (start, prev, limit)).fetchone()
    assert row is not None
    return tuple(row)


def first_break(conn: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
    row = conn.execute("SELECT * FROM audit_chain_first_break()").fetchone()
    return tuple(row) if row else None


def test_chain_links_and_verifies(conn: psycopg.Connection[Any]) -> None:
    users = add_users(conn, 3)
    conn.execute("UPDATE users SET full_name = 'محمد' WHERE id = %s", (users[0],))
    conn.execute("DELETE FROM users WHERE id = %s", (users[2],))
    rows = conn.execute("SELECT chain_position, operation, prev_hash, row_hash, user_id"
                        " FROM audit_log ORDER BY chain_position").fetchall()
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert [r[1] for r in rows] == ["INSERT", "INSERT", "INSERT", "UPDATE", "DELETE"]
    assert rows[0][2] == ZERO
    for before, after in itertools.pairwise(rows):
        assert after[2] == before[3]
    assert rows[3][4] == users[0]
    assert verify(conn) == (5, 0, 5, rows[-1][3], None, None, None)
    assert conn.execute("SELECT verify_audit_log_integrity()").fetchone() == (True,)
    assert first_break(conn) is None
    head = conn.execute("SELECT * FROM audit_chain_head()").fetchone()
    assert head == (5, rows[-1][3])


def test_verify_in_chunks_continues_where_it_stopped(conn: psycopg.Connection[Any]) -> None:
    add_users(conn, 20)
    position, prev, total = 1, ZERO, 0
    while True:
        checked, _red, last, last_hash, bad, _id, _reason = verify(conn, position, prev, 7)
        assert bad is None
        total += checked
        if checked < 7:
            break
        position, prev = last + 1, last_hash
    assert total == 20
    # NULL as the previous hash: taken from the stored row before the range.
    assert verify(conn, 8, None, 5)[4] is None
    assert verify(conn, 8, None, 2**63 - 1)[:1] == (13,)  # no bigint overflow
    # An empty range past the head is fine and hands back the start state.
    assert verify(conn, 21, b"\x01" * 32, 5) == (0, 0, 20, b"\x01" * 32, None, None, None)


def test_parallel_writers_build_one_gap_free_chain(db_url: str) -> None:
    threads, per_thread = 8, 200
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def writer(n: int) -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as c:
                barrier.wait()
                for i in range(per_thread):
                    if i % 50 == 49:  # some multi-row transactions too
                        with c.transaction():
                            add_users(c, 3, f"t{n}x{i}-")
                    else:
                        add_users(c, 1, f"t{n}-{i}-")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    expected = threads * (per_thread + 2 * (per_thread // 50))
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*), min(chain_position), max(chain_position),"
                           " count(DISTINCT chain_position) FROM audit_log").fetchone()
        assert row == (expected, 1, expected, expected)
        assert verify(conn)[:1] == (expected,)
        assert conn.execute("SELECT verify_audit_log_integrity()").fetchone() == (True,)
        # Chain order is commit order: occurred_at never goes backwards along the chain.
        back = conn.execute(
            "SELECT count(*) FROM (SELECT occurred_at < lag(occurred_at) OVER"
            " (ORDER BY chain_position) AS back FROM audit_log) s WHERE back").fetchone()
        assert back == (0,)


def test_repeatable_read_cannot_fork_the_chain(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as one, \
            psycopg.connect(db_url, autocommit=True) as two:
        add_users(one, 1)
        with pytest.raises(psycopg.errors.UniqueViolation) as caught, one.transaction():
            one.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            one.execute("SELECT count(*) FROM users").fetchone()  # snapshot taken
            add_users(two, 1)  # commits position 2 after one's snapshot
            add_users(one, 1)  # would also be position 2
        assert caught.value.diag.constraint_name == "audit_log_chain_position_key"
        add_users(one, 1)  # a retry under READ COMMITTED works
        assert verify(one)[:5] == (3, 0, 3, verify(one)[3], None)


TAMPERS = [
    # (description, statement, first bad position, reason, good rows before it)
    ("payload edited",
     "UPDATE audit_log SET payload_bytes = audit_payload_bytes_v2("
     "jsonb_set(payload, '{new,full_name}', '\"X\"')) WHERE chain_position = 5",
     5, "payload hash mismatch", 4),
    ("payload bytes edited, same jsonb",  # whitespace only: the jsonb reads the same
     "UPDATE audit_log SET payload_bytes = payload_bytes || '\\x20'::bytea"
     " WHERE chain_position = 5", 5, "payload hash mismatch", 4),
    ("payload and its hash edited",
     "UPDATE audit_log SET payload_bytes = convert_to('{\"new\": {}}', 'UTF8'),"
     " payload_hash = sha256(convert_to('{\"new\": {}}', 'UTF8')) WHERE chain_position = 5",
     5, "row hash mismatch", 4),
    ("row rewritten with a consistent row hash",
     "UPDATE audit_log SET payload_bytes = convert_to('{\"new\": {}}', 'UTF8'),"
     " payload_hash = sha256(convert_to('{\"new\": {}}', 'UTF8')),"
     " row_hash = audit_row_hash_v2(prev_hash, chain_position, occurred_at, table_name,"
     " operation, actor, row_id, user_id, sha256(convert_to('{\"new\": {}}', 'UTF8')))"
     " WHERE chain_position = 5", 6, "prev_hash mismatch", 5),
    ("table_name changed", "UPDATE audit_log SET table_name = 'bookings'"
     " WHERE chain_position = 5", 5, "row hash mismatch", 4),
    ("occurred_at moved", "UPDATE audit_log SET occurred_at = occurred_at - interval '1 day'"
     " WHERE chain_position = 5", 5, "row hash mismatch", 4),
    ("actor changed", "UPDATE audit_log SET actor = 'someone_else' WHERE chain_position = 5",
     5, "row hash mismatch", 4),
    ("user_id changed", "UPDATE audit_log SET user_id = NULL WHERE chain_position = 5",
     5, "row hash mismatch", 4),
    ("prev_hash changed", "UPDATE audit_log SET prev_hash = sha256('x') WHERE chain_position = 5",
     5, "prev_hash mismatch", 4),
    ("row deleted", "DELETE FROM audit_log WHERE chain_position = 5", 6, "position gap", 4),
    ("position moved", "UPDATE audit_log SET chain_position = 100 WHERE chain_position = 8",
     9, "position gap", 7),
    ("payload removed without redaction",
     "UPDATE audit_log SET payload_bytes = NULL WHERE chain_position = 5",
     5, "payload missing without redaction", 4),
]


@pytest.mark.parametrize(("statement", "position", "reason", "good_before"),
                         [t[1:] for t in TAMPERS], ids=[t[0] for t in TAMPERS])
def test_tamper_is_detected_at_the_right_row(
    conn: psycopg.Connection[Any], statement: str, position: int, reason: str,
    good_before: int,
) -> None:
    add_users(conn, 10)
    assert verify(conn)[4] is None
    conn.execute("SET session_replication_role = replica")  # skips the guard triggers
    conn.execute(statement)
    conn.execute("RESET session_replication_role")
    checked, _redacted, last, last_hash, bad, bad_id, why = verify(conn)
    assert (bad, why) == (position, reason)
    expected_id = conn.execute("SELECT id FROM audit_log WHERE chain_position = %s",
                               (position,)).fetchone()
    assert expected_id and bad_id == expected_id[0]
    assert (checked, last) == (good_before, good_before)
    hash_row = conn.execute("SELECT row_hash FROM audit_log WHERE chain_position = %s",
                            (good_before,)).fetchone()
    assert hash_row and last_hash == hash_row[0]
    assert first_break(conn) == (position, bad_id, reason)
    assert conn.execute("SELECT verify_audit_log_integrity()").fetchone() == (False,)
    # Verifying from after the damage only (a later checkpoint) passes again.
    if reason != "position gap":
        assert verify(conn, position + 1, None)[4] is None


def test_redacted_user_still_verifies(conn: psycopg.Connection[Any]) -> None:
    keep, gone = add_users(conn, 2)
    conn.execute("UPDATE users SET full_name = 'ليلى' WHERE id = %s", (gone,))
    conn.execute("UPDATE users SET full_name = 'نور' WHERE id = %s", (keep,))
    before = conn.execute("SELECT chain_position, payload_hash, row_hash FROM audit_log"
                          " ORDER BY 1").fetchall()
    conn.execute("SET ROLE gth_maint")
    assert conn.execute("SELECT audit_redact_user(%s)", (gone,)).fetchone() == (2,)
    assert conn.execute("SELECT audit_redact_user(%s)", (gone,)).fetchone() == (0,)
    conn.execute("RESET ROLE")
    rows = conn.execute("SELECT user_id, payload IS NULL, redacted_at IS NOT NULL"
                        " FROM audit_log ORDER BY chain_position").fetchall()
    assert rows == [(keep, False, False), (gone, True, True), (gone, True, True),
                    (keep, False, False)]
    after = conn.execute("SELECT chain_position, payload_hash, row_hash FROM audit_log"
                         " ORDER BY 1").fetchall()
    assert after == before
    assert verify(conn)[:2] == (4, 2)
    assert conn.execute("SELECT verify_audit_log_integrity()").fetchone() == (True,)
    # Redacted payloads can't come back, not even as superuser.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE audit_log SET payload_bytes = '{}', redacted_at = NULL"
                     " WHERE user_id = %s", (gone,))
    # The generated payload column itself cannot be written at all.
    with pytest.raises(psycopg.errors.GeneratedAlways):
        conn.execute("UPDATE audit_log SET payload = '{}' WHERE user_id = %s", (keep,))


def test_counts_stop_at_the_first_bad_row(conn: psycopg.Connection[Any]) -> None:
    users = add_users(conn, 6)
    conn.execute("SELECT audit_redact_user(%s)", (users[1],))  # position 2
    conn.execute("SELECT audit_redact_user(%s)", (users[4],))  # position 5
    assert verify(conn)[:2] == (6, 2)
    conn.execute("SET session_replication_role = replica")
    conn.execute("UPDATE audit_log SET actor = 'x' WHERE chain_position = 4")
    conn.execute("RESET session_replication_role")
    checked, redacted, last, _hash, bad, _id, reason = verify(conn)
    assert (checked, redacted, last, bad, reason) == (3, 1, 3, 4, "row hash mismatch")
    # From the middle of the chain, with the stored hash before it.
    assert verify(conn, 5, None)[:5] == (2, 1, 6, verify(conn, 5, None)[3], None)


def test_erasure_then_redaction_keeps_the_chain_valid(conn: psycopg.Connection[Any]) -> None:
    """What a GDPR erasure does to the audit trail: the deletes are audited (with payloads),
    then every payload of the user is redacted; the chain still verifies."""
    keep, gone = add_users(conn, 2)
    booking = conn.execute(
        "INSERT INTO bookings (user_id, booking_reference, booking_type, total_amount)"
        " VALUES (%s, 'G-1', 'hotel', 700) RETURNING id", (gone,)).fetchone()
    assert booking
    conn.execute("INSERT INTO booking_items (booking_id, user_id, item_type, unit_price,"
                 " total_price) VALUES (%s, %s, 'hotel', 700, 700)", (booking[0], gone))
    conn.execute("INSERT INTO user_behavior_log (user_id, action_type) VALUES (%s, 'x')",
                 (gone,))
    with conn.transaction():
        conn.execute("DELETE FROM users WHERE id = %s", (gone,))  # cascades everywhere
        redacted = conn.execute("SELECT audit_redact_user(%s)", (gone,)).fetchone()
    assert redacted == (6,)  # 3 inserts and the 3 cascaded deletes
    for table in ("users", "bookings", "booking_items", "user_consent_history",
                  "user_behavior_log"):
        query = sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(
            sql.Identifier(table), sql.Identifier("id" if table == "users" else "user_id"))
        assert conn.execute(query, (gone,)).fetchone() == (0,)
    deletes = conn.execute("SELECT count(*) FROM audit_log WHERE user_id = %s"
                           " AND operation = 'DELETE' AND payload IS NULL", (gone,)).fetchone()
    assert deletes == (3,)
    assert verify(conn)[:2] == (7, 6)
    assert conn.execute("SELECT count(*) FROM users WHERE id = %s", (keep,)).fetchone() == (1,)


@pytest.mark.parametrize("statement", [
    "UPDATE audit_log SET actor = 'x'",
    "UPDATE audit_log SET payload_bytes = NULL",  # a redaction must set redacted_at too
    "UPDATE audit_log SET payload_bytes = NULL, redacted_at = now(), row_hash = sha256('x')",
    "UPDATE audit_log SET payload_bytes = payload_bytes || '\\x20'::bytea",
    "DELETE FROM audit_log",
    "TRUNCATE audit_log",
])
def test_audit_log_is_append_only_even_for_the_owner(
    conn: psycopg.Connection[Any], statement: str
) -> None:
    add_users(conn, 2)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)
    assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (2,)


def test_oauth_tokens_never_reach_the_audit_log(conn: psycopg.Connection[Any]) -> None:
    (uid,) = add_users(conn, 1)
    conn.execute("INSERT INTO oauth_accounts (user_id, provider, provider_account_id,"
                 " access_token, refresh_token, id_token) VALUES"
                 " (%s, 'google', 'g-1', 'AT-secret', 'RT-secret', 'ID-secret')", (uid,))
    conn.execute("UPDATE oauth_accounts SET access_token = 'AT-2', refresh_token = 'RT-2'")
    conn.execute("UPDATE oauth_accounts SET scope = 'email'")
    conn.execute("DELETE FROM oauth_accounts")
    rows = conn.execute("SELECT operation, payload::text FROM audit_log"
                        " WHERE table_name = 'oauth_accounts' ORDER BY chain_position").fetchall()
    assert [r[0] for r in rows] == ["INSERT", "UPDATE", "DELETE"]  # token refresh not logged
    for _op, text in rows:
        assert "secret" not in text and "AT-2" not in text
        assert not any(k in text for k in ('"access_token"', '"refresh_token"', '"id_token"'))


@pytest.mark.parametrize("table", ["users", "oauth_accounts", "bookings", "booking_items",
                                   "flight_bookings", "hotel_bookings", "crypto_payments"])
def test_critical_tables_are_audited(conn: psycopg.Connection[Any], table: str) -> None:
    row = conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass"
        " AND tgfoid = 'audit_capture'::regproc AND NOT tgisinternal", (table,)).fetchone()
    assert row == (1,)


def test_bulk_append_continues_the_chain(conn: psycopg.Connection[Any]) -> None:
    add_users(conn, 3)
    conn.execute("""CREATE TEMP TABLE staged AS
        SELECT g AS seq, now() - interval '1 hour' + g * interval '1 second' AS occurred_at,
               'bookings'::text AS table_name, 'INSERT'::text AS operation,
               gen_random_uuid() AS row_id, NULL::uuid AS user_id, 'loader'::text AS actor,
               jsonb_build_object('new', jsonb_build_object('n', g, 'city', 'الرياض'))
                   AS payload
          FROM generate_series(1, 50) g""")
    with conn.transaction():
        assert conn.execute("SELECT audit_append_staged('staged')").fetchone() == (50,)
    assert verify(conn)[:5] == (53, 0, 53, verify(conn)[3], None)
    add_users(conn, 1)  # the trigger path continues after the bulk rows
    assert verify(conn)[:1] == (54,)
