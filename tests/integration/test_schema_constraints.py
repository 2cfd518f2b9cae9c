"""Every named constraint rejects a violating row, and reports its own name."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

U1 = uuid.UUID("00000000-0000-4000-8000-000000000001")
U2 = uuid.UUID("00000000-0000-4000-8000-000000000002")
TRIP = uuid.UUID("00000000-0000-4000-8000-0000000000a1")
SESSION = uuid.UUID("00000000-0000-4000-8000-0000000000b1")
BOOKING = uuid.UUID("00000000-0000-4000-8000-0000000000c1")
ITEM = uuid.UUID("00000000-0000-4000-8000-0000000000d1")
OTHER_BOOKING = uuid.UUID("00000000-0000-4000-8000-0000000000c2")


def insert(conn: psycopg.Connection[Any], table: str, values: dict[str, Any]) -> None:
    cols = list(values)
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in cols),
        sql.SQL(", ").join(sql.Placeholder() for _ in cols),
    )
    conn.execute(query, [values[c] for c in cols])


def valid(table: str) -> dict[str, Any]:
    """A row of `table` that passes every constraint (given the `base` fixture)."""
    rows: dict[str, dict[str, Any]] = {
        "users": {"email": f"{uuid.uuid4()}@example.com", "full_name": "سارة"},
        "user_consent_history": {"user_id": U1, "consent_type": "marketing", "granted": True},
        "oauth_accounts": {"user_id": U1, "provider": "google",
                           "provider_account_id": str(uuid.uuid4())},
        "trips": {"user_id": U1, "title": "رحلة", "destination": "دبي",
                  "start_date": "2026-01-01", "end_date": "2026-01-05", "budget": 1000},
        "chat_sessions": {"user_id": U1, "thread_id": str(uuid.uuid4())},
        "chat_messages": {"session_id": SESSION, "user_id": U1, "role": "user",
                          "content": "مرحبا"},
        "bookings": {"user_id": U1, "booking_reference": str(uuid.uuid4()),
                     "booking_type": "hotel", "total_amount": 100,
                     "start_date": "2026-01-01", "end_date": "2026-01-03"},
        "booking_items": {"booking_id": BOOKING, "user_id": U1, "item_type": "hotel",
                          "unit_price": 100, "total_price": 100},
        "flight_bookings": {"booking_item_id": ITEM, "user_id": U1, "airline_code": "SV",
                            "flight_number": "SV123", "origin_airport": "RUH",
                            "destination_airport": "DXB",
                            "departure_at": "2026-01-01 08:00+00",
                            "arrival_at": "2026-01-01 10:00+00", "price": 900},
        "hotel_bookings": {"booking_item_id": ITEM, "user_id": U1, "hotel_identifier": "h-1",
                           "hotel_name": "فندق", "city": "دبي", "check_in": "2026-01-01",
                           "check_out": "2026-01-03", "price_per_night": 50,
                           "total_price": 100, "star_rating": 4, "country_code": "AE"},
        "hotel_ratings": {"user_id": U1, "booking_id": BOOKING, "hotel_identifier": "h-1",
                          "rating": 5},
        "flight_search_cache": {"cache_key": str(uuid.uuid4()), "origin": "RUH",
                                "destination": "CAI", "departure_date": "2026-02-01",
                                "results": "[]", "expires_at": "2999-01-01"},
        "hotel_search_cache": {"cache_key": str(uuid.uuid4()), "city": "القاهرة",
                               "check_in": "2026-02-01", "check_out": "2026-02-03",
                               "results": "[]", "expires_at": "2999-01-01"},
        "crypto_payments": {"user_id": U1, "booking_id": BOOKING, "amount": "0.01",
                            "currency": "BTC", "network": "bitcoin", "fiat_amount": 100,
                            "wallet_address": "bc1q", "expires_at": "2999-01-01"},
        "trip_predictions": {"user_id": U1, "predicted_destination": "دبي",
                             "confidence_level": "0.87"},
        "outcome_predictions": {"booking_id": BOOKING, "user_id": U1,
                                "predicted_rating": "4.5", "predicted_satisfaction": "0.85",
                                "confidence_level": "0.82"},
        "referrals": {"referrer_user_id": U1, "referral_code": f"C-{uuid.uuid4().hex[:10]}"},
        "shared_content": {"user_id": U1, "content_type": "trip", "content_id": "trip-1",
                           "share_platform": "telegram"},
        "analytics_events": {"user_id": U1, "event_type": "page.view", "platform": "web"},
        "user_behavior_log": {"user_id": U1, "action_type": "hotel_search",
                              "device_type": "mobile"},
    }
    return dict(rows[table])


@pytest.fixture
def base(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("INSERT INTO users (id, email) VALUES (%s, 'one@example.com'),"
                 " (%s, 'two@example.com')", (U1, U2))
    conn.execute("INSERT INTO trips (id, user_id, title, destination) VALUES"
                 " (%s, %s, 'عمرة', 'مكة')", (TRIP, U1))
    conn.execute("INSERT INTO chat_sessions (id, user_id, thread_id) VALUES"
                 " (%s, %s, 'thread-base')", (SESSION, U1))
    conn.execute("INSERT INTO bookings (id, user_id, booking_reference, booking_type,"
                 " total_amount) VALUES (%s, %s, 'REF-BASE', 'hotel', 500),"
                 " (%s, %s, 'REF-OTHER', 'hotel', 500)", (BOOKING, U1, OTHER_BOOKING, U2))
    conn.execute("INSERT INTO booking_items (id, booking_id, user_id, item_type, unit_price,"
                 " total_price) VALUES (%s, %s, %s, 'hotel', 500, 500)", (ITEM, BOOKING, U1))
    conn.execute("INSERT INTO hotel_ratings (user_id, booking_id, hotel_identifier, rating)"
                 " VALUES (%s, %s, 'h-dup', 4)", (U1, BOOKING))
    conn.execute("INSERT INTO crypto_payments (user_id, booking_id, amount, currency, network,"
                 " fiat_amount, wallet_address, expires_at, tx_hash) VALUES (%s, %s, 1, 'ETH',"
                 " 'ethereum', 10, 'w', '2999-01-01', 'tx-dup')", (U1, BOOKING))
    insert(conn, "flight_search_cache", valid("flight_search_cache") | {"cache_key": "dup"})
    insert(conn, "hotel_search_cache", valid("hotel_search_cache") | {"cache_key": "dup"})
    insert(conn, "oauth_accounts", valid("oauth_accounts") | {"provider_account_id": "dup"})
    insert(conn, "referrals", valid("referrals") | {"referral_code": "DUP-CODE"})
    return conn


CASES: list[tuple[str, dict[str, Any], str]] = [
    ("users", {"email": "not-an-email"}, "users_email_format_check"),
    ("users", {"email": "ONE@Example.COM"}, "users_email_lower_key"),
    ("users", {"phone": "call me"}, "users_phone_format_check"),
    ("users", {"locale": "arabic"}, "users_locale_check"),
    ("users", {"preferred_currency": "riyal"}, "users_currency_check"),
    ("users", {"marketing_consent": True}, "users_marketing_consent_at_check"),
    ("users", {"data_processing_consent": True}, "users_data_processing_consent_at_check"),
    ("users", {"analytics_consent": True}, "users_analytics_consent_at_check"),
    ("users", {"created_at": "2026-01-02", "deleted_at": "2026-01-01"},
     "users_deleted_after_created_check"),
    ("user_consent_history", {"consent_type": "spam"}, "user_consent_history_type_check"),
    ("user_consent_history", {"source": "pigeon"}, "user_consent_history_source_check"),
    ("user_consent_history", {"user_id": uuid.uuid4()}, "user_consent_history_user_id_fkey"),
    ("oauth_accounts", {"provider": "myspace"}, "oauth_accounts_provider_check"),
    ("oauth_accounts", {"provider_account_id": "dup"}, "oauth_accounts_provider_account_key"),
    ("oauth_accounts", {"user_id": uuid.uuid4()}, "oauth_accounts_user_id_fkey"),
    ("trips", {"end_date": "2025-12-31"}, "trips_dates_check"),
    ("trips", {"end_date": "2026-01-01"}, "trips_dates_check"),
    ("trips", {"budget": 0}, "trips_budget_check"),
    ("trips", {"budget": -10}, "trips_budget_check"),
    ("trips", {"currency": "usd"}, "trips_currency_check"),
    ("trips", {"travelers_count": 0}, "trips_travelers_count_check"),
    ("trips", {"status": "dreaming"}, "trips_status_check"),
    ("trips", {"user_id": uuid.uuid4()}, "trips_user_id_fkey"),
    ("chat_sessions", {"status": "open"}, "chat_sessions_status_check"),
    ("chat_sessions", {"thread_id": ""}, "chat_sessions_thread_id_check"),
    ("chat_sessions", {"thread_id": "thread-base"}, "chat_sessions_thread_id_key"),
    ("chat_sessions", {"user_id": U2, "trip_id": TRIP}, "chat_sessions_trip_fkey"),
    ("chat_sessions", {"user_id": uuid.uuid4()}, "chat_sessions_user_id_fkey"),
    ("chat_messages", {"role": "bot"}, "chat_messages_role_check"),
    ("chat_messages", {"tokens_used": -1}, "chat_messages_tokens_used_check"),
    ("chat_messages", {"user_id": U2}, "chat_messages_session_fkey"),
    ("bookings", {"booking_type": "cruise"}, "bookings_type_check"),
    ("bookings", {"status": "maybe"}, "bookings_status_check"),
    ("bookings", {"total_amount": 0}, "bookings_total_amount_check"),
    ("bookings", {"total_amount": -1}, "bookings_total_amount_check"),
    ("bookings", {"currency": "SR"}, "bookings_currency_check"),
    ("bookings", {"end_date": "2025-12-01"}, "bookings_dates_check"),
    ("bookings", {"booked_at": "2026-01-02", "cancelled_at": "2026-01-01"},
     "bookings_cancelled_after_booked_check"),
    ("bookings", {"booking_reference": "REF-BASE"}, "bookings_reference_key"),
    ("bookings", {"user_id": U2, "trip_id": TRIP}, "bookings_trip_fkey"),
    ("bookings", {"user_id": uuid.uuid4()}, "bookings_user_id_fkey"),
    ("booking_items", {"item_type": "spa"}, "booking_items_type_check"),
    ("booking_items", {"quantity": 0}, "booking_items_quantity_check"),
    ("booking_items", {"unit_price": 0}, "booking_items_unit_price_check"),
    ("booking_items", {"total_price": -5}, "booking_items_total_price_check"),
    ("booking_items", {"currency": "$"}, "booking_items_currency_check"),
    ("booking_items", {"status": "lost"}, "booking_items_status_check"),
    ("booking_items", {"booking_id": OTHER_BOOKING}, "booking_items_booking_fkey"),
    ("flight_bookings", {"airline_code": "SVX"}, "flight_bookings_airline_code_check"),
    ("flight_bookings", {"origin_airport": "riyadh"}, "flight_bookings_origin_check"),
    ("flight_bookings", {"destination_airport": "D"}, "flight_bookings_destination_check"),
    ("flight_bookings", {"destination_airport": "RUH"}, "flight_bookings_route_check"),
    ("flight_bookings", {"arrival_at": "2026-01-01 07:00+00"}, "flight_bookings_times_check"),
    ("flight_bookings", {"cabin_class": "cargo"}, "flight_bookings_cabin_class_check"),
    ("flight_bookings", {"passenger_count": 0}, "flight_bookings_passenger_count_check"),
    ("flight_bookings", {"price": 0}, "flight_bookings_price_check"),
    ("flight_bookings", {"currency": "euro"}, "flight_bookings_currency_check"),
    ("flight_bookings", {"user_id": U2}, "flight_bookings_item_fkey"),
    ("hotel_bookings", {"check_out": "2026-01-01"}, "hotel_bookings_dates_check"),
    ("hotel_bookings", {"star_rating": 6}, "hotel_bookings_star_rating_check"),
    ("hotel_bookings", {"star_rating": "0.5"}, "hotel_bookings_star_rating_check"),
    ("hotel_bookings", {"country_code": "ARE"}, "hotel_bookings_country_code_check"),
    ("hotel_bookings", {"rooms": 0}, "hotel_bookings_rooms_check"),
    ("hotel_bookings", {"guests": 0}, "hotel_bookings_guests_check"),
    ("hotel_bookings", {"price_per_night": 0}, "hotel_bookings_price_per_night_check"),
    ("hotel_bookings", {"total_price": 0}, "hotel_bookings_total_price_check"),
    ("hotel_bookings", {"currency": "dirham"}, "hotel_bookings_currency_check"),
    ("hotel_bookings", {"booking_item_id": uuid.uuid4()}, "hotel_bookings_item_fkey"),
    ("hotel_ratings", {"rating": 0}, "hotel_ratings_rating_check"),
    ("hotel_ratings", {"rating": 6}, "hotel_ratings_rating_check"),
    ("hotel_ratings", {"hotel_identifier": "h-dup"}, "hotel_ratings_booking_key"),
    ("hotel_ratings", {"booking_id": OTHER_BOOKING}, "hotel_ratings_booking_fkey"),
    ("hotel_ratings", {"user_id": uuid.uuid4(), "booking_id": None},
     "hotel_ratings_user_id_fkey"),
    ("flight_search_cache", {"return_date": "2026-01-31"}, "flight_search_cache_dates_check"),
    ("flight_search_cache", {"passengers": 0}, "flight_search_cache_passengers_check"),
    ("flight_search_cache", {"cabin_class": "deck"}, "flight_search_cache_cabin_class_check"),
    ("flight_search_cache", {"hit_count": -1}, "flight_search_cache_hit_count_check"),
    ("flight_search_cache", {"created_at": "2026-01-02", "expires_at": "2026-01-02"},
     "flight_search_cache_expiry_check"),
    ("flight_search_cache", {"cache_key": "dup"}, "flight_search_cache_key_key"),
    ("hotel_search_cache", {"check_out": "2026-02-01"}, "hotel_search_cache_dates_check"),
    ("hotel_search_cache", {"guests": 0}, "hotel_search_cache_guests_check"),
    ("hotel_search_cache", {"rooms": -1}, "hotel_search_cache_rooms_check"),
    ("hotel_search_cache", {"hit_count": -3}, "hotel_search_cache_hit_count_check"),
    ("hotel_search_cache", {"created_at": "2026-01-02", "expires_at": "2026-01-01"},
     "hotel_search_cache_expiry_check"),
    ("hotel_search_cache", {"cache_key": "dup"}, "hotel_search_cache_key_key"),
    ("crypto_payments", {"status": "refunded"}, "crypto_payments_status_check"),
    ("crypto_payments", {"amount": 0}, "crypto_payments_amount_check"),
    ("crypto_payments", {"fiat_amount": -1}, "crypto_payments_fiat_amount_check"),
    ("crypto_payments", {"exchange_rate": 0}, "crypto_payments_exchange_rate_check"),
    ("crypto_payments", {"currency": "bitcoin!"}, "crypto_payments_currency_check"),
    ("crypto_payments", {"fiat_currency": "sar"}, "crypto_payments_fiat_currency_check"),
    ("crypto_payments", {"network": "dogenet"}, "crypto_payments_network_check"),
    ("crypto_payments", {"confirmations": -1}, "crypto_payments_confirmations_check"),
    ("crypto_payments", {"created_at": "2026-01-02", "expires_at": "2026-01-01"},
     "crypto_payments_expiry_check"),
    ("crypto_payments", {"status": "confirmed"}, "crypto_payments_confirmed_at_check"),
    ("crypto_payments", {"tx_hash": "tx-dup"}, "crypto_payments_tx_hash_key"),
    ("crypto_payments", {"booking_id": OTHER_BOOKING}, "crypto_payments_booking_fkey"),
    ("trip_predictions", {"predicted_start_date": "2026-03-02",
                          "predicted_end_date": "2026-03-01"}, "trip_predictions_dates_check"),
    ("trip_predictions", {"predicted_budget": 0}, "trip_predictions_budget_check"),
    ("trip_predictions", {"confidence_level": "1.001"}, "trip_predictions_confidence_check"),
    ("trip_predictions", {"confidence_level": "-0.1"}, "trip_predictions_confidence_check"),
    ("trip_predictions", {"status": "guessing"}, "trip_predictions_status_check"),
    ("trip_predictions", {"user_id": uuid.uuid4()}, "trip_predictions_user_id_fkey"),
    ("outcome_predictions", {"predicted_rating": "0.99"},
     "outcome_predictions_predicted_rating_check"),
    ("outcome_predictions", {"predicted_rating": "5.01"},
     "outcome_predictions_predicted_rating_check"),
    ("outcome_predictions", {"actual_rating": 6}, "outcome_predictions_actual_rating_check"),
    ("outcome_predictions", {"predicted_satisfaction": "1.2"},
     "outcome_predictions_satisfaction_check"),
    ("outcome_predictions", {"confidence_level": "2"}, "outcome_predictions_confidence_check"),
    ("outcome_predictions", {"prediction_accuracy": "1.1"},
     "outcome_predictions_accuracy_check"),
    ("outcome_predictions", {"created_at": "2026-01-02", "evaluated_at": "2026-01-01"},
     "outcome_predictions_evaluated_check"),
    ("outcome_predictions", {"booking_id": OTHER_BOOKING}, "outcome_predictions_booking_fkey"),
    ("referrals", {"referred_user_id": U1}, "referrals_self_check"),
    ("referrals", {"status": "paid"}, "referrals_status_check"),
    ("referrals", {"reward_amount": 0}, "referrals_reward_amount_check"),
    ("referrals", {"referral_code": "no spaces"}, "referrals_code_format_check"),
    ("referrals", {"signed_up_at": "2026-01-02", "converted_at": "2026-01-01"},
     "referrals_converted_after_signup_check"),
    ("referrals", {"referral_code": "DUP-CODE"}, "referrals_code_key"),
    ("referrals", {"referrer_user_id": uuid.uuid4()}, "referrals_referrer_fkey"),
    ("referrals", {"referred_user_id": uuid.uuid4()}, "referrals_referred_fkey"),
    ("shared_content", {"content_type": "meme"}, "shared_content_type_check"),
    ("shared_content", {"share_platform": "fax"}, "shared_content_platform_check"),
    ("shared_content", {"click_count": -1}, "shared_content_click_count_check"),
    ("shared_content", {"click_count": 5, "conversion_count": -1},
     "shared_content_conversion_count_check"),
    ("shared_content", {"click_count": 1, "conversion_count": 2},
     "shared_content_conversions_le_clicks_check"),
    ("shared_content", {"user_id": uuid.uuid4()}, "shared_content_user_id_fkey"),
    ("analytics_events", {"event_type": "Page View"}, "analytics_events_event_type_check"),
    ("analytics_events", {"platform": "fax"}, "analytics_events_platform_check"),
    ("analytics_events", {"user_id": uuid.uuid4()}, "analytics_events_user_id_fkey"),
    ("user_behavior_log", {"action_type": "Search!"}, "user_behavior_log_action_type_check"),
    ("user_behavior_log", {"device_type": "tv"}, "user_behavior_log_device_type_check"),
    ("user_behavior_log", {"duration_ms": -1}, "user_behavior_log_duration_check"),
    ("user_behavior_log", {"user_id": uuid.uuid4()}, "user_behavior_log_user_id_fkey"),
]


@pytest.mark.parametrize(("table", "override", "constraint"), CASES,
                         ids=[f"{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_violating_row_fails_with_constraint_name(
    base: psycopg.Connection[Any], table: str, override: dict[str, Any], constraint: str
) -> None:
    with pytest.raises(psycopg.errors.IntegrityError) as caught:
        insert(base, table, valid(table) | override)
    assert caught.value.diag.constraint_name == constraint


@pytest.mark.parametrize("table", sorted({c[0] for c in CASES}))
def test_valid_row_is_accepted(base: psycopg.Connection[Any], table: str) -> None:
    insert(base, table, valid(table))


AUDIT_ROW = {
    "chain_position": 1, "occurred_at": "2026-01-01", "table_name": "users",
    "operation": "INSERT", "row_id": U1, "actor": "t", "payload_bytes": b"{}",
    "payload_hash": b"\x00" * 32, "prev_hash": b"\x00" * 32, "row_hash": b"\x00" * 32,
}
AUDIT_CASES: list[tuple[dict[str, Any], str]] = [
    ({"operation": "MERGE"}, "audit_log_operation_check"),
    ({"chain_position": 0}, "audit_log_chain_position_check"),
    ({"row_hash": b"\x00"}, "audit_log_hash_length_check"),
    ({"hash_version": 1}, "audit_log_hash_version_check"),
    ({"table_name": "users x"}, "audit_log_table_name_check"),
    ({"redacted_at": "2026-01-01"}, "audit_log_redaction_check"),
]


@pytest.mark.parametrize(("override", "constraint"), AUDIT_CASES,
                         ids=[c[1] for c in AUDIT_CASES])
def test_audit_log_constraints(
    conn: psycopg.Connection[Any], override: dict[str, Any], constraint: str
) -> None:
    with pytest.raises(psycopg.errors.IntegrityError) as caught:
        insert(conn, "audit_log", AUDIT_ROW | override)
    assert caught.value.diag.constraint_name == constraint


def test_audit_log_chain_position_is_unique(conn: psycopg.Connection[Any]) -> None:
    insert(conn, "audit_log", AUDIT_ROW)
    with pytest.raises(psycopg.errors.UniqueViolation) as caught:
        insert(conn, "audit_log", AUDIT_ROW)
    assert caught.value.diag.constraint_name == "audit_log_chain_position_key"


def test_every_check_and_key_constraint_has_a_case(conn: psycopg.Connection[Any]) -> None:
    tested = {c[2] for c in CASES} | {c[1] for c in AUDIT_CASES} | {
        "audit_log_chain_position_key"}
    rows = conn.execute(
        """SELECT c.conname FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
            WHERE t.relnamespace = 'public'::regnamespace AND t.relname = ANY(%s)
              AND c.contype IN ('c', 'u')
              AND c.conname NOT LIKE '%%\\_id\\_user\\_key'""",  # FK targets, not rules
        ([c[0] for c in CASES] + ["audit_log"],),
    ).fetchall()
    untested = {r[0] for r in rows} - tested
    assert untested == set()

