"""Row-level security and privileges, table by table: gth_app acting as user A never sees or
changes user B's rows; gth_readonly writes nothing; gth_admin reads all; gth_maint gets
only what the maintenance jobs need."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

A = uuid.UUID("0000000a-0000-4000-8000-000000000000")
B = uuid.UUID("0000000b-0000-4000-8000-000000000000")

# table -> column naming the owning user
OWNER = {
    "users": "id", "user_consent_history": "user_id", "oauth_accounts": "user_id",
    "trips": "user_id", "chat_sessions": "user_id", "chat_messages": "user_id",
    "bookings": "user_id", "booking_items": "user_id", "flight_bookings": "user_id",
    "hotel_bookings": "user_id", "hotel_ratings": "user_id", "crypto_payments": "user_id",
    "trip_predictions": "user_id", "outcome_predictions": "user_id",
    "referrals": "referrer_user_id", "shared_content": "user_id",
    "analytics_events": "user_id", "user_behavior_log": "user_id",
}
PUBLIC_READ = {"hotel_ratings"}


def rows_for(uid: uuid.UUID, tag: str) -> dict[str, dict[str, Any]]:
    """One row per user-owned table for user `uid`, ids fixed in advance."""
    ids = {t: uuid.uuid4() for t in OWNER}
    ids["users"] = uid
    return {
        "users": {"id": uid, "email": f"{tag}@example.com", "full_name": f"مستخدم {tag}"},
        "user_consent_history": {"user_id": uid, "consent_type": "terms", "granted": True},
        "oauth_accounts": {"user_id": uid, "provider": "apple", "provider_account_id": tag,
                           "access_token": "secret-" + tag},
        "trips": {"id": ids["trips"], "user_id": uid, "title": "رحلة", "destination": "دبي"},
        "chat_sessions": {"id": ids["chat_sessions"], "user_id": uid, "thread_id": "t-" + tag},
        "chat_messages": {"session_id": ids["chat_sessions"], "user_id": uid, "role": "user",
                          "content": "أريد فندقا"},
        "bookings": {"id": ids["bookings"], "user_id": uid, "booking_reference": "R-" + tag,
                     "booking_type": "package", "total_amount": 2500,
                     "trip_id": ids["trips"]},
        "booking_items": {"id": ids["booking_items"], "booking_id": ids["bookings"],
                          "user_id": uid, "item_type": "hotel", "unit_price": 900,
                          "total_price": 900},
        "flight_bookings": {"booking_item_id": ids["booking_items"], "user_id": uid,
                            "airline_code": "MS", "flight_number": "MS911",
                            "origin_airport": "CAI", "destination_airport": "RUH",
                            "departure_at": "2026-03-01 08:00+00",
                            "arrival_at": "2026-03-01 11:00+00", "price": 700},
        "hotel_bookings": {"booking_item_id": ids["booking_items"], "user_id": uid,
                           "hotel_identifier": "hotel-" + tag, "hotel_name": "فندق النيل",
                           "city": "القاهرة", "check_in": "2026-03-01",
                           "check_out": "2026-03-04", "price_per_night": 300,
                           "total_price": 900},
        "hotel_ratings": {"user_id": uid, "booking_id": ids["bookings"],
                          "hotel_identifier": "hotel-" + tag, "rating": 4,
                          "would_rebook": True},
        "crypto_payments": {"user_id": uid, "booking_id": ids["bookings"], "amount": 0.05,
                            "currency": "ETH", "network": "ethereum", "fiat_amount": 2500,
                            "wallet_address": "0xabc", "expires_at": "2999-01-01"},
        "trip_predictions": {"user_id": uid, "predicted_destination": "إسطنبول",
                             "confidence_level": 0.7},
        "outcome_predictions": {"booking_id": ids["bookings"], "user_id": uid,
                                "predicted_rating": 4.2, "predicted_satisfaction": 0.8,
                                "confidence_level": 0.6},
        "referrals": {"referrer_user_id": uid, "referral_code": "CODE-" + tag},
        "shared_content": {"user_id": uid, "content_type": "trip", "content_id": tag,
                           "share_platform": "whatsapp"},
        "analytics_events": {"user_id": uid, "event_type": "app.open", "platform": "ios"},
        "user_behavior_log": {"user_id": uid, "action_type": "flight_search",
                              "action_data": '{"destination": "Cairo"}'},
    }


def insert(conn: psycopg.Connection[Any], table: str, values: dict[str, Any]) -> uuid.UUID:
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(sql.Placeholder() * len(values)))
    row = conn.execute(query, list(values.values())).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


@pytest.fixture
def two_users(conn: psycopg.Connection[Any]) -> dict[uuid.UUID, dict[str, uuid.UUID]]:
    """Users A and B with one row in every user-owned table each (inserted as superuser)."""
    made: dict[uuid.UUID, dict[str, uuid.UUID]] = {}
    for uid, tag in ((A, "a"), (B, "b")):
        made[uid] = {t: insert(conn, t, v) for t, v in rows_for(uid, tag).items()}
    return made


def act_as(conn: psycopg.Connection[Any], role: str, user: uuid.UUID | None) -> None:
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    conn.execute("SELECT set_config('app.current_user_id', %s, false)",
                 (str(user) if user else "",))


def count(conn: psycopg.Connection[Any], table: str, row_id: uuid.UUID) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE id = %s").format(
        sql.Identifier(table)), (row_id,)).fetchone()
    return int(row[0]) if row else -1


@pytest.mark.parametrize("table", sorted(OWNER))
def test_app_sees_and_changes_only_its_own_rows(
    conn: psycopg.Connection[Any], two_users: dict[uuid.UUID, dict[str, uuid.UUID]],
    table: str,
) -> None:
    own, other = two_users[A][table], two_users[B][table]
    ident = sql.Identifier(table)
    act_as(conn, "gth_app", A)

    assert count(conn, table, own) == 1
    assert count(conn, table, other) == (1 if table in PUBLIC_READ else 0)
    total = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(
        ident, sql.Identifier(OWNER[table])), (B,)).fetchone()
    assert total == ((1,) if table in PUBLIC_READ else (0,))

    # Inserting a row owned by B is refused.
    values = rows_for(B, "b2")[table]
    values.pop("id", None)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        insert(conn, table, values)

    # Updating or deleting B's row changes nothing (or is refused outright).
    for statement in (sql.SQL("UPDATE {} SET id = id WHERE id = %s"),
                      sql.SQL("DELETE FROM {} WHERE id = %s")):
        try:
            cur = conn.execute(statement.format(ident), (other,))
            assert cur.rowcount == 0
        except psycopg.errors.InsufficientPrivilege:
            pass

    # Handing one's own row to B is refused too.
    if table not in ("users", "user_consent_history"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("UPDATE {} SET {} = %s WHERE id = %s").format(
                ident, sql.Identifier(OWNER[table])), (B, own))

    conn.execute("RESET ROLE")
    assert count(conn, table, other) == 1


@pytest.mark.parametrize("table", sorted(OWNER))
def test_app_without_user_setting_sees_nothing(
    conn: psycopg.Connection[Any], two_users: dict[uuid.UUID, dict[str, uuid.UUID]],
    table: str,
) -> None:
    act_as(conn, "gth_app", None)
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    assert row.fetchone() == ((2,) if table in PUBLIC_READ else (0,))


def public_tables(conn: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in conn.execute(
        """SELECT c.relname FROM pg_class c
            WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'm')
            ORDER BY 1""").fetchall()]


def test_readonly_cannot_write_any_table(
    conn: psycopg.Connection[Any], two_users: dict[uuid.UUID, dict[str, uuid.UUID]],
) -> None:
    tables = public_tables(conn)
    assert len(tables) > 30  # parents, partitions, materialized views
    second = dict(conn.execute(
        """SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relnamespace = 'public'::regnamespace AND a.attnum = 2""").fetchall())
    act_as(conn, "gth_readonly", A)
    for table in tables:
        ident = sql.Identifier(table)
        column = sql.Identifier(second[table])
        for statement in (sql.SQL("INSERT INTO {} DEFAULT VALUES"),
                          sql.SQL("UPDATE {} SET {col} = {col}"),
                          sql.SQL("DELETE FROM {}"),
                          sql.SQL("TRUNCATE {}")):
            with pytest.raises(psycopg.errors.Error) as caught:
                conn.execute(statement.format(ident, col=column))
            assert isinstance(caught.value, psycopg.errors.InsufficientPrivilege | (
                psycopg.errors.WrongObjectType)), (table, statement)
    # ... but reads its own user's rows.
    assert conn.execute("SELECT count(*) FROM bookings").fetchone() == (1,)
    conn.execute("RESET ROLE")
    assert conn.execute("SELECT count(*) FROM bookings").fetchone() == (2,)


def test_readonly_and_admin_never_read_oauth_tokens(
    conn: psycopg.Connection[Any], two_users: dict[uuid.UUID, dict[str, uuid.UUID]],
) -> None:
    for role in ("gth_readonly", "gth_admin"):
        act_as(conn, role, A)
        assert conn.execute("SELECT count(provider) FROM oauth_accounts").fetchone() in (
            (1,), (2,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT access_token FROM oauth_accounts")
        conn.execute("RESET ROLE")
    act_as(conn, "gth_app", A)
    assert conn.execute("SELECT access_token FROM oauth_accounts").fetchall() == [("secret-a",)]


@pytest.mark.parametrize("table", sorted([*OWNER, "audit_log"]))
def test_admin_reads_everything_and_writes_nothing(
    conn: psycopg.Connection[Any], two_users: dict[uuid.UUID, dict[str, uuid.UUID]],
    table: str,
) -> None:
    ident = sql.Identifier(table)
    with conn.transaction():
        expected = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
    assert expected and expected[0] >= 2
    act_as(conn, "gth_admin", None)
    column = sql.Identifier("id")
    got = conn.execute(sql.SQL("SELECT count({}) FROM {}").format(column, ident)).fetchone()
    assert got == expected
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(sql.SQL("DELETE FROM {}").format(ident))


def test_app_roles_cannot_touch_audit_log(
    conn: psycopg.Connection[Any], two_users: dict[uuid.UUID, dict[str, uuid.UUID]],
) -> None:
    for role in ("gth_app", "gth_readonly", "gth_admin", "gth_maint"):
        act_as(conn, role, A)
        for statement in ("UPDATE audit_log SET payload_bytes = NULL",
                          "DELETE FROM audit_log", "TRUNCATE audit_log",
                          "INSERT INTO audit_log (chain_position) VALUES (99)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        conn.execute("RESET ROLE")
    # Nor may they forge entries through the append function.
    act_as(conn, "gth_app", A)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT audit_append('bookings', 'DELETE', %s, %s, 'x', '{}')", (A, A))


def test_audit_actor_is_the_acting_role(
    conn: psycopg.Connection[Any], two_users: dict[uuid.UUID, dict[str, uuid.UUID]],
) -> None:
    act_as(conn, "gth_app", A)
    conn.execute("SET app.actor = 'support-7'")
    conn.execute("UPDATE bookings SET status = 'confirmed'")
    conn.execute("RESET ROLE")
    row = conn.execute("SELECT actor, user_id, payload->'new'->>'status' FROM audit_log"
                       " ORDER BY chain_position DESC LIMIT 1").fetchone()
    assert row == ("gth_app/support-7", A, "confirmed")
