"""Personas (each threshold), social proof, K-factor, the dashboard, cache_performance and
the materialized views."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest

ECONOMY, MID, LUXURY = "مسافر_اقتصادي", "مسافر_متوسط", "باحث_عن_فخامة"


def user(conn: psycopg.Connection[Any], *amounts: str, status: str = "confirmed") -> uuid.UUID:
    uid = uuid.uuid4()
    conn.execute("INSERT INTO users (id, email) VALUES (%s, %s)", (uid, f"{uid}@example.com"))
    for amount in amounts:
        conn.execute("INSERT INTO bookings (user_id, booking_reference, booking_type, status,"
                     " total_amount, destination) VALUES (%s, %s, 'hotel', %s, %s, 'دبي')",
                     (uid, str(uuid.uuid4()), status, amount))
    return uid


def persona(conn: psycopg.Connection[Any], uid: uuid.UUID) -> str:
    row = conn.execute("SELECT calculate_traveler_persona(%s)", (uid,)).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize(("amounts", "expected"), [
    ((), MID),
    (("1.00",), ECONOMY),
    (("1499.99",), ECONOMY),
    (("1500.00",), MID),
    (("1000", "2000"), MID),          # average exactly 1500
    (("4999.99",), MID),
    (("5000.00",), LUXURY),
    (("4000", "6000"), LUXURY),       # average exactly 5000
    (("99999",), LUXURY),
])
def test_persona_thresholds(
    conn: psycopg.Connection[Any], amounts: tuple[str, ...], expected: str
) -> None:
    uid = user(conn, *amounts)
    assert persona(conn, uid) == expected
    conn.execute("SELECT refresh_materialized_view('user_booking_stats', false)")
    stats = conn.execute("SELECT persona FROM user_booking_stats WHERE user_id = %s", (uid,))
    assert stats.fetchone() == (expected,)


def test_persona_ignores_unpaid_bookings(conn: psycopg.Connection[Any]) -> None:
    uid = user(conn, "9000", status="cancelled")
    assert persona(conn, uid) == MID
    conn.execute("INSERT INTO bookings (user_id, booking_reference, booking_type, status,"
                 " total_amount) VALUES (%s, 'P-1', 'flight', 'completed', 300)", (uid,))
    assert persona(conn, uid) == ECONOMY


def rate(conn: psycopg.Connection[Any], uid: uuid.UUID, hotel: str, stars: int,
         rebook: bool, exceeded: bool) -> None:
    conn.execute("INSERT INTO hotel_ratings (user_id, hotel_identifier, rating, would_rebook,"
                 " exceeded_expectations) VALUES (%s, %s, %s, %s, %s)",
                 (uid, hotel, stars, rebook, exceeded))


def stay(conn: psycopg.Connection[Any], uid: uuid.UUID, hotel: str, amount: str) -> None:
    booking = conn.execute(
        "INSERT INTO bookings (user_id, booking_reference, booking_type, status, total_amount)"
        " VALUES (%s, %s, 'hotel', 'completed', %s) RETURNING id",
        (uid, str(uuid.uuid4()), amount)).fetchone()
    assert booking
    item = conn.execute(
        "INSERT INTO booking_items (booking_id, user_id, item_type, unit_price, total_price)"
        " VALUES (%s, %s, 'hotel', %s, %s) RETURNING id",
        (booking[0], uid, amount, amount)).fetchone()
    assert item
    conn.execute("INSERT INTO hotel_bookings (booking_item_id, user_id, hotel_identifier,"
                 " hotel_name, city, check_in, check_out, price_per_night, total_price)"
                 " VALUES (%s, %s, %s, 'برج', 'دبي', '2026-01-01', '2026-01-02', %s, %s)",
                 (item[0], uid, hotel, amount, amount))


def test_hotel_social_proof_per_persona(conn: psycopg.Connection[Any]) -> None:
    cheap, rich = user(conn), user(conn)
    stay(conn, cheap, "hotel-123", "800")
    stay(conn, rich, "hotel-123", "8000")
    stay(conn, rich, "hotel-123", "9000")
    rate(conn, cheap, "hotel-123", 3, False, False)
    rate(conn, rich, "hotel-123", 5, True, True)
    rate(conn, rich, "hotel-123", 4, True, False)
    conn.execute("SET ROLE gth_maint")
    conn.execute("SELECT refresh_materialized_view('hotel_social_proof')")
    conn.execute("RESET ROLE")
    conn.execute("SET ROLE gth_app")  # social proof is public
    lux = conn.execute("SELECT * FROM get_hotel_social_proof('hotel-123', %s)", (LUXURY,))
    described = [d.name for d in lux.description or []]
    assert described == ["avg_rating", "total_bookings", "rebook_rate", "exceeded_rate",
                         "trust_score"]
    trust = (Decimal("0.5") * (Decimal("4.5") - 1) / 4 + Decimal("0.25") * 1
             + Decimal("0.25") * Decimal("0.5")) * 2 / 12
    assert lux.fetchone() == (Decimal("4.50"), 2, Decimal("1.000"), Decimal("0.500"),
                              round(trust, 3))
    eco = conn.execute("SELECT * FROM get_hotel_social_proof('hotel-123', %s)", (ECONOMY,))
    assert eco.fetchone()[:4] == (Decimal("3.00"), 1, Decimal("0"), Decimal("0"))  # type: ignore[index]
    every = conn.execute("SELECT * FROM get_hotel_social_proof('hotel-123')").fetchone()
    assert every and every[:3] == (Decimal("4.00"), 3, Decimal("0.667"))
    unknown = conn.execute("SELECT * FROM get_hotel_social_proof('nowhere')").fetchone()
    assert unknown == (0, 0, 0, 0, 0)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT * FROM get_hotel_social_proof('hotel-123', 'tourist')")
    assert conn.execute("SELECT count(*) FROM hotel_social_proof").fetchone() == (3,)


def test_materialized_views_can_refresh_concurrently(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        """SELECT c.relname, i.indisunique, i.indpred IS NULL, i.indexprs IS NULL
             FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
            WHERE c.relkind = 'm' AND i.indisunique""").fetchall()
    assert sorted(rows) == [("hotel_social_proof", True, True, True),
                            ("user_booking_stats", True, True, True)]
    user(conn, "100")
    conn.execute("SET ROLE gth_maint")
    for view in ("user_booking_stats", "hotel_social_proof"):
        conn.execute("SELECT refresh_materialized_view(%s)", (view,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT refresh_materialized_view('cache_performance')")
    version = conn.execute("SHOW server_version_num").fetchone()
    if version and int(version[0]) < 170000:  # 17+: pg_maintain may refresh directly
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("REFRESH MATERIALIZED VIEW user_booking_stats")
    conn.execute("RESET ROLE")
    nulls = conn.execute("SELECT count(*) FROM user_booking_stats WHERE user_id IS NULL"
                         " OR persona IS NULL").fetchone()
    assert nulls == (0,)


def test_user_booking_stats_is_not_public(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET ROLE gth_app")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM user_booking_stats")


def test_k_factor(conn: psycopg.Connection[Any]) -> None:
    referrer, a, b, c = (user(conn) for _ in range(4))
    for code, referred, status in (("K-0001", a, "signed_up"), ("K-0002", b, "converted"),
                                   ("K-0003", None, "pending")):
        conn.execute("INSERT INTO referrals (referrer_user_id, referred_user_id, referral_code,"
                     " status) VALUES (%s, %s, %s, %s)", (referrer, referred, code, status))
    conn.execute("INSERT INTO shared_content (user_id, content_type, content_id, share_platform,"
                 " click_count, conversion_count) VALUES (%s, 'trip', 't', 'telegram', 9, 3)",
                 (referrer,))
    assert conn.execute("SELECT calculate_k_factor(%s)", (referrer,)).fetchone() == (5,)
    assert conn.execute("SELECT calculate_k_factor(%s)", (c,)).fetchone() == (0,)
    assert conn.execute("SELECT calculate_k_factor()").fetchone() == (Decimal("1.250"),)
    conn.execute("SET ROLE gth_app")
    conn.execute("SELECT set_config('app.current_user_id', %s, false)", (str(c),))
    assert conn.execute("SELECT calculate_k_factor(%s)", (referrer,)).fetchone() == (0,)


def test_user_dashboard(conn: psycopg.Connection[Any]) -> None:
    uid = user(conn, "700", "900")
    conn.execute("INSERT INTO user_behavior_log (user_id, action_type) VALUES (%s, 'search')",
                 (uid,))
    conn.execute("INSERT INTO trip_predictions (user_id, predicted_destination,"
                 " confidence_level) VALUES (%s, 'القاهرة', 0.9)", (uid,))
    conn.execute("SET ROLE gth_app")
    conn.execute("SELECT set_config('app.current_user_id', %s, false)", (str(uid),))
    row = conn.execute("SELECT get_user_analytics_dashboard(%s)", (uid,)).fetchone()
    assert row is not None
    board = row[0]
    assert board["persona"] == ECONOMY
    assert board["total_bookings"] == 2
    assert board["total_spent"] == 1600
    assert board["top_destinations"] == [{"destination": "دبي", "bookings": 2}]
    assert board["actions_last_30_days"] == 1
    assert board["predictions"] == [{"destination": "القاهرة", "confidence": 0.9}]
    other = conn.execute("SELECT get_user_analytics_dashboard(gen_random_uuid())").fetchone()
    assert other and other[0]["total_bookings"] == 0


def test_cache_performance(conn: psycopg.Connection[Any]) -> None:
    for key, hits, ttl in (("a", 3, "1 hour"), ("b", 0, "-1 minute"), ("c", 1, "-1 hour")):
        conn.execute(
            "INSERT INTO hotel_search_cache (cache_key, city, check_in, check_out, results,"
            " hit_count, created_at, expires_at) VALUES (%s, 'الرياض', '2026-01-01',"
            " '2026-01-02', '[]', %s, now() - interval '2 hours', now() + %s::interval)",
            (key, hits, ttl))
    rows = conn.execute("SELECT cache_name, total_entries, live_entries, expired_entries,"
                        " total_hits, hit_rate, reuse_rate FROM cache_performance"
                        " ORDER BY 1").fetchall()
    assert rows == [("flight_search_cache", 0, 0, 0, 0, None, None),
                    ("hotel_search_cache", 3, 1, 2, 4, Decimal("0.571"), Decimal("0.667"))]
