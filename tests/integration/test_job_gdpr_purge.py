"""gdpr_purge: a user soft-deleted past the grace period disappears from every table and
every partition (a pg_dump of the whole database no longer contains their email, name or
phone), legal records stay scrubbed, other users are untouched, the audit chain still
verifies, each user is erased in one transaction, old analytics go in batches."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from daemon.errors import JobFailed
from daemon.jobs.audit_verify import JOB as AUDIT_VERIFY
from daemon.jobs.gdpr_purge import JOB

Conn = psycopg.Connection[Any]


@dataclass
class Person:
    id: uuid.UUID
    email: str
    name: str
    phone: str
    recent_booking: uuid.UUID
    old_booking: uuid.UUID


def _one(conn: Conn, statement: str, params: Any = None) -> Any:
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    return row[0]


def _person(conn: Conn, tag: str, *, name: str, phone: str, deleted_days_ago: int | None,
            archived_chat: bool = False) -> Person:
    """A user with rows in every table that holds personal data."""
    email = f"{tag}.{uuid.uuid4().hex[:6]}@example.com"
    uid = _one(conn, """
        INSERT INTO users (email, full_name, phone, home_city, created_at, deleted_at,
                           marketing_consent, marketing_consent_at)
        VALUES (%s, %s, %s, 'الرياض', now() - interval '400 days',
                now() - make_interval(days => %s), true, now() - interval '300 days')
        RETURNING id""", (email, name, phone, deleted_days_ago))
    who = {"name": name, "email": email, "phone": phone}
    conn.execute("INSERT INTO user_consent_history (user_id, consent_type, granted, details)"
                 " VALUES (%s, 'terms', true, %s)", (uid, Jsonb(who)))
    conn.execute("""
        INSERT INTO oauth_accounts (user_id, provider, provider_account_id, provider_email,
                                    access_token, profile)
        VALUES (%s, 'google', %s, %s, 'tok', %s)""",
                 (uid, f"g-{uuid.uuid4()}", email, Jsonb(who)))
    trip = _one(conn, """
        INSERT INTO trips (user_id, title, destination, start_date, end_date, preferences)
        VALUES (%s, %s, 'دبي', current_date + 30, current_date + 35, %s) RETURNING id""",
                (uid, f"رحلة {name}", Jsonb(who)))
    session = _one(conn, """
        INSERT INTO chat_sessions (user_id, trip_id, thread_id, title)
        VALUES (%s, %s, %s, %s) RETURNING id""", (uid, trip, f"thread-{uuid.uuid4()}", name))
    conn.execute("INSERT INTO chat_messages (session_id, user_id, role, content) VALUES"
                 " (%s, %s, 'user', %s)", (session, uid, f"أنا {name}، رقمي {phone}"))
    if archived_chat:
        # A message of 14 months ago in a month partition that is then archived (detached
        # and moved to the archive schema): erasure must reach it too.
        month = _one(conn, "SELECT (date_trunc('month', now()) - interval '14 months')::date")
        part = _one(conn, "SELECT create_month_partition('chat_messages', %s)", (month,))
        conn.execute("INSERT INTO chat_messages (session_id, user_id, role, content, created_at)"
                     " VALUES (%s, %s, 'user', %s, %s::date + 3)",
                     (session, uid, f"بريدي {email}", month))
        conn.execute("SELECT retire_partition('chat_messages', %s::regclass, 'archive')", (part,))

    def booking(ref: str, age: str, amount: int, trip_id: Any) -> uuid.UUID:
        bid = _one(conn, """
            INSERT INTO bookings (user_id, trip_id, booking_reference, booking_type, status,
                                  total_amount, destination, metadata, booked_at, created_at)
            VALUES (%s, %s, %s, 'hotel', 'confirmed', %s, 'القاهرة', %s,
                    now() - %s::interval, now() - %s::interval)
            RETURNING id""", (uid, trip_id, ref, amount, Jsonb(who), age, age))
        item = _one(conn, """
            INSERT INTO booking_items (booking_id, user_id, item_type, description, unit_price,
                                       total_price, details)
            VALUES (%s, %s, 'hotel', %s, %s, %s, %s) RETURNING id""",
                    (bid, uid, f"غرفة باسم {name}", amount, amount,
                     Jsonb(who)))
        conn.execute("""
            INSERT INTO hotel_bookings (booking_item_id, user_id, hotel_identifier, hotel_name,
                                        city, check_in, check_out, price_per_night,
                                        total_price, details)
            VALUES (%s, %s, 'hotel-cairo-1', 'فندق النيل', 'القاهرة', current_date,
                    current_date + 2, %s, %s, %s)""",
                     (item, uid, amount / 2, amount, Jsonb(who)))
        flight_item = _one(conn, """
            INSERT INTO booking_items (booking_id, user_id, item_type, unit_price, total_price)
            VALUES (%s, %s, 'flight', 300, 300) RETURNING id""", (bid, uid))
        conn.execute("""
            INSERT INTO flight_bookings (booking_item_id, user_id, airline_code, flight_number,
                                         origin_airport, destination_airport, departure_at,
                                         arrival_at, pnr, price, passenger_details)
            VALUES (%s, %s, 'SV', 'SV301', 'RUH', 'CAI', now() + interval '1 day',
                    now() + interval '1 day 3 hours', %s, 300, %s)""",
                     (flight_item, uid, f"PNR{tag[:3].upper()}", Jsonb(who)))
        conn.execute("""
            INSERT INTO crypto_payments (user_id, booking_id, amount, currency, network,
                                         fiat_amount, wallet_address, tx_hash, status,
                                         confirmed_at, metadata, created_at, expires_at)
            VALUES (%s, %s, 0.1, 'BTC', 'bitcoin', %s, 'bc1qdeposit', %s, 'confirmed',
                    now() - %s::interval, %s, now() - %s::interval,
                    now() - %s::interval + interval '1 hour')""",
                     (uid, bid, amount, f"tx-{uuid.uuid4()}", age,
                      Jsonb(who), age, age))
        conn.execute("""
            INSERT INTO hotel_ratings (user_id, booking_id, hotel_identifier, rating,
                                       would_rebook, review_text, aspects)
            VALUES (%s, %s, 'hotel-cairo-1', 5, true, %s, %s)""",
                     (uid, bid, f"إقامة رائعة - {name}", Jsonb(who)))
        conn.execute("""
            INSERT INTO outcome_predictions (booking_id, user_id, predicted_rating,
                                             predicted_satisfaction, confidence_level, features)
            VALUES (%s, %s, 4.5, 0.8, 0.7, %s)""", (bid, uid, Jsonb(who)))
        return uuid.UUID(str(bid))

    recent = booking(f"R-{tag}-{uuid.uuid4().hex[:6]}", "20 days", 2500, trip)
    old = booking(f"O-{tag}-{uuid.uuid4().hex[:6]}", "8 years", 700, None)
    conn.execute("INSERT INTO trip_predictions (user_id, predicted_destination, confidence_level,"
                 " features) VALUES (%s, 'دبي', 0.87, %s)",
                 (uid, Jsonb(who)))
    conn.execute("INSERT INTO referrals (referrer_user_id, referral_code, metadata)"
                 " VALUES (%s, %s, %s)", (uid, f"CODE-{uuid.uuid4().hex[:8]}",
                                           Jsonb(who)))
    conn.execute("INSERT INTO shared_content (user_id, content_type, content_id, share_platform,"
                 " share_url, metadata) VALUES (%s, 'trip', %s, 'whatsapp', %s, %s)",
                 (uid, str(trip), f"https://share.example/{email}", Jsonb(who)))
    conn.execute("INSERT INTO analytics_events (user_id, event_type, event_data, platform)"
                 " VALUES (%s, 'page.view', %s, 'web')", (uid, Jsonb(who)))
    conn.execute("INSERT INTO user_behavior_log (user_id, action_type, action_data, device_type)"
                 " VALUES (%s, 'hotel_search', %s, 'mobile')",
                 (uid, Jsonb(who)))
    return Person(uuid.UUID(str(uid)), email, name, phone, recent, old)


def _dump(cluster: Any, db_url: str) -> str:
    out = subprocess.run([cluster.bin("pg_dump"), "--no-owner", db_url], check=True,
                         capture_output=True, timeout=120)
    # \restrict / \unrestrict carry a random key per dump (PostgreSQL 15.14+, 18.0+).
    return "\n".join(line for line in out.stdout.decode("utf-8").splitlines()
                     if not line.startswith(("\\restrict", "\\unrestrict")))


def _hex(value: str) -> str:
    """How a value inside a bytea column (audit_log.payload_bytes) appears in a plain dump."""
    return value.encode().hex()


def _snapshot(conn: Conn, users: list[uuid.UUID]) -> dict[str, Any]:
    """Every row of the given users in users and bookings, plus their booking totals."""
    return {
        "users": conn.execute("SELECT to_jsonb(u) FROM users u WHERE id = ANY(%s) ORDER BY id",
                              (users,)).fetchall(),
        "bookings": conn.execute("SELECT to_jsonb(b) FROM bookings b WHERE user_id = ANY(%s)"
                                 " ORDER BY id", (users,)).fetchall(),
        "total": conn.execute("SELECT sum(total_amount) FROM bookings WHERE user_id = ANY(%s)",
                              (users,)).fetchone(),
    }


def _rows_of(conn: Conn, user: uuid.UUID) -> dict[str, int]:
    counts = {}
    for table, column in [("oauth_accounts", "user_id"), ("user_consent_history", "user_id"),
                          ("trips", "user_id"), ("chat_sessions", "user_id"),
                          ("chat_messages", "user_id"), ("trip_predictions", "user_id"),
                          ("outcome_predictions", "user_id"), ("referrals", "referrer_user_id"),
                          ("shared_content", "user_id"), ("analytics_events", "user_id"),
                          ("user_behavior_log", "user_id"), ("bookings", "user_id"),
                          ("booking_items", "user_id"), ("flight_bookings", "user_id"),
                          ("hotel_bookings", "user_id"), ("hotel_ratings", "user_id"),
                          ("crypto_payments", "user_id")]:
        counts[table] = _one(conn, f"SELECT count(*) FROM {table} WHERE {column} = %s", (user,))  # noqa: S608
    return counts


NAME_A = "فاطمة الزهراء بنت عبدالرحمن"
PHONE_A = "+966551239876"


def test_purge_erases_everything_personal(cluster: Any, db_url: str, conn: Conn,
                                          job_ctx: Any) -> None:
    a = _person(conn, "fatima.purge", name=NAME_A, phone=PHONE_A, deleted_days_ago=45,
                archived_chat=True)
    b = _person(conn, "grace", name="خالد ضمن المهلة", phone="+966500000222", deleted_days_ago=5)
    c = _person(conn, "active", name="Layla Active", phone="+971500000333", deleted_days_ago=None)
    conn.execute("INSERT INTO referrals (referrer_user_id, referred_user_id, referral_code)"
                 " VALUES (%s, %s, 'C-BROUGHT-A')", (c.id, a.id))
    before = _snapshot(conn, [b.id, c.id])
    rows_b, rows_c = _rows_of(conn, b.id), _rows_of(conn, c.id)
    dump = _dump(cluster, db_url)
    assert a.email in dump and NAME_A in dump and PHONE_A in dump  # the check below is real
    # Audit payloads are dumped as bytea hex (their jsonb column is generated, not dumped).
    assert _hex(a.email) in dump and _hex(NAME_A) in dump and _hex(PHONE_A) in dump

    ctx = job_ctx("gdpr_purge", grace_days=30, batch_size=2)
    result = JOB().run(ctx)

    assert result.details["users_erased"] == 1
    assert result.details["deleted_rows"]["chat_messages"] == 1
    assert any(k.startswith("archive.") for k in result.details["deleted_rows"])
    dump = _dump(cluster, db_url)
    for secret in (a.email, NAME_A, PHONE_A, a.email.split("@")[0]):
        assert secret not in dump and _hex(secret) not in dump
    assert b.email in dump and c.email in dump  # the others are all still there

    # Other users: every row and booking total unchanged; the grace-period user untouched.
    assert _snapshot(conn, [b.id, c.id]) == before
    assert _rows_of(conn, b.id) == rows_b and _rows_of(conn, c.id) == rows_c

    # The erased user: legal records kept and scrubbed, everything else gone.
    left = _rows_of(conn, a.id)
    kept = {"bookings": 1, "booking_items": 2, "flight_bookings": 1, "hotel_bookings": 1,
            "hotel_ratings": 1, "crypto_payments": 1}
    assert {k: v for k, v in left.items() if v} == kept
    user = conn.execute("SELECT email, full_name, phone, home_city, marketing_consent"
                        " FROM users WHERE id = %s", (a.id,)).fetchone()
    assert user is not None
    assert user[0].startswith("erased-") and user[0].endswith("@erased.invalid")
    assert user[1:] == (None, None, None, False)
    booking = conn.execute("SELECT id, total_amount, metadata, trip_id, destination"
                           " FROM bookings WHERE user_id = %s", (a.id,)).fetchone()
    assert booking is not None
    assert (booking[0], booking[1], booking[2], booking[3]) == (a.recent_booking, 2500, None, None)
    assert conn.execute("SELECT rating, review_text, aspects FROM hotel_ratings"
                        " WHERE user_id = %s", (a.id,)).fetchone() == (5, None, None)
    assert conn.execute("SELECT count(*) FROM referrals WHERE referral_code = 'C-BROUGHT-A'"
                        " AND referred_user_id IS NULL").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM audit_log WHERE user_id = %s"
                        " AND payload IS NOT NULL", (a.id,)).fetchone() == (0,)
    assert conn.execute("SELECT user_row, retained_bookings FROM gdpr_erasures"
                        " WHERE user_id = %s", (a.id,)).fetchone() == ("anonymised", 1)

    # The chain still verifies (in the database and with the audit job).
    assert conn.execute("SELECT verify_audit_log_integrity()").fetchone() == (True,)
    verified = AUDIT_VERIFY().run(job_ctx("audit_verify"))
    assert verified.details["redacted_rows"] > 0

    # Nothing more to do on the next run; the grace-period user is still waiting.
    again = JOB().run(job_ctx("gdpr_purge", grace_days=30))
    assert again.details["users_erased"] == 0


def test_user_without_legal_records_is_deleted_and_retention_expiry(conn: Conn,
                                                                     job_ctx: Any) -> None:
    a = _person(conn, "retained", name="سارة", phone="+966511111111", deleted_days_ago=40)
    d = _person(conn, "onlyold", name="عمر", phone="+966522222222", deleted_days_ago=40)
    # d's only recent booking goes: what is left is the 8-year-old one, past retention.
    conn.execute("DELETE FROM bookings WHERE id = %s", (d.recent_booking,))
    JOB().run(job_ctx("gdpr_purge"))
    assert conn.execute("SELECT count(*) FROM users WHERE id = %s", (d.id,)).fetchone() == (0,)
    assert conn.execute("SELECT user_row FROM gdpr_erasures WHERE user_id = %s",
                        (d.id,)).fetchone() == ("deleted",)
    assert conn.execute("SELECT user_row FROM gdpr_erasures WHERE user_id = %s",
                        (a.id,)).fetchone() == ("anonymised",)

    # Seven years later (simulated): the retained records and the users row go.
    conn.execute("UPDATE bookings SET booked_at = booked_at - interval '8 years',"
                 " created_at = created_at - interval '8 years' WHERE user_id = %s", (a.id,))
    conn.execute("UPDATE crypto_payments SET created_at = created_at - interval '8 years',"
                 " confirmed_at = confirmed_at - interval '8 years',"
                 " expires_at = expires_at - interval '8 years' WHERE user_id = %s", (a.id,))
    conn.execute("UPDATE gdpr_erasures SET oldest_retained_at = oldest_retained_at"
                 " - interval '8 years' WHERE user_id = %s", (a.id,))
    dry = JOB().run(job_ctx("gdpr_purge", dry_run=True))
    assert [u["phase"] for u in dry.details["users"]] == ["retention"]
    result = JOB().run(job_ctx("gdpr_purge"))
    assert result.details["phases"] == {"retention": 1}
    assert conn.execute("SELECT count(*) FROM users WHERE id = %s", (a.id,)).fetchone() == (0,)
    assert sum(_rows_of(conn, a.id).values()) == 0
    assert conn.execute("SELECT user_row, retained_bookings FROM gdpr_erasures"
                        " WHERE user_id = %s", (a.id,)).fetchone() == ("deleted", 0)
    assert conn.execute("SELECT count(*) FROM audit_log WHERE user_id = %s"
                        " AND payload IS NOT NULL", (a.id,)).fetchone() == (0,)
    assert conn.execute("SELECT verify_audit_log_integrity()").fetchone() == (True,)


def test_dry_run_lists_and_changes_nothing(cluster: Any, db_url: str, conn: Conn,
                                           job_ctx: Any) -> None:
    a = _person(conn, "dry", name="نورة", phone="+966533333333", deleted_days_ago=31)
    _person(conn, "young", name="ريم", phone="+966544444444", deleted_days_ago=29)
    conn.execute("INSERT INTO analytics_events (event_type, occurred_at) VALUES"
                 " ('page.view', now() - interval '800 days')")
    before = _dump(cluster, db_url)
    result = JOB().run(job_ctx("gdpr_purge", dry_run=True))
    assert _dump(cluster, db_url) == before
    assert result.details["users_due"] == 1
    listed = result.details["users"][0]
    assert listed["user_id"] == str(a.id)
    assert listed["user_row"] == "anonymised"
    assert listed["deleted"]["oauth_accounts"] == 1
    assert listed["deleted"]["bookings"] == 1  # the 8-year-old one
    assert listed["scrubbed"]["bookings"] == 1
    assert listed["audit_rows_to_redact"] > 0
    assert result.details["analytics_rows"] == 1


def _due_trio(conn: Conn) -> list[Person]:
    return [_person(conn, f"p{i}", name=f"مستخدم {i}", phone=f"+96655000000{i}",
                    deleted_days_ago=60 - i * 10) for i in range(3)]


def _assert_erased(conn: Conn, p: Person) -> None:
    assert conn.execute("SELECT count(*) FROM gdpr_erasures WHERE user_id = %s",
                        (p.id,)).fetchone() == (1,)
    assert _rows_of(conn, p.id)["oauth_accounts"] == 0
    assert _one(conn, "SELECT email FROM users WHERE id = %s", (p.id,)) != p.email


def _assert_untouched(conn: Conn, p: Person, rows: dict[str, int]) -> None:
    assert conn.execute("SELECT count(*) FROM gdpr_erasures WHERE user_id = %s",
                        (p.id,)).fetchone() == (0,)
    assert _rows_of(conn, p.id) == rows
    assert conn.execute("SELECT email, full_name FROM users WHERE id = %s",
                        (p.id,)).fetchone() == (p.email, p.name)
    assert conn.execute("SELECT count(*) FROM audit_log WHERE user_id = %s AND payload IS NULL",
                        (p.id,)).fetchone() == (0,)


def test_a_failing_user_leaves_earlier_users_erased_and_later_ones_untouched(
        conn: Conn, job_ctx: Any) -> None:
    people = _due_trio(conn)
    rows = [_rows_of(conn, p.id) for p in people]
    conn.execute("""
        CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'simulated failure for %', OLD.user_id; END $$""")
    conn.execute(f"""
        CREATE TRIGGER test_refuse BEFORE DELETE ON oauth_accounts FOR EACH ROW
        WHEN (OLD.user_id = '{people[1].id}') EXECUTE FUNCTION test_refuse()""")
    with pytest.raises(JobFailed, match=str(people[1].id)) as failed:
        JOB().run(job_ctx("gdpr_purge"))
    assert failed.value.details["failed_user_id"] == str(people[1].id)
    assert failed.value.details["users_erased"] == 1
    _assert_erased(conn, people[0])
    _assert_untouched(conn, people[1], rows[1])
    _assert_untouched(conn, people[2], rows[2])
    assert conn.execute("SELECT verify_audit_log_integrity()").fetchone() == (True,)


@pytest.mark.timeout(120)
def test_a_killed_erasure_is_rolled_back_completely(conn: Conn, job_ctx: Any) -> None:
    people = _due_trio(conn)
    rows = [_rows_of(conn, p.id) for p in people]
    conn.execute("""
        CREATE FUNCTION test_stall() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(60); RETURN OLD; END $$""")
    conn.execute(f"""
        CREATE TRIGGER test_stall BEFORE DELETE ON oauth_accounts FOR EACH ROW
        WHEN (OLD.user_id = '{people[1].id}') EXECUTE FUNCTION test_stall()""")
    failures: list[BaseException] = []

    def run() -> None:
        try:
            JOB().run(job_ctx("gdpr_purge"))
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    killed = False
    while time.monotonic() < deadline and not killed:
        killed = bool(_one(conn, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                 " WHERE wait_event = 'PgSleep' AND datname = current_database()"))
        time.sleep(0.05)
    thread.join(timeout=60)
    assert killed and failures and isinstance(failures[0], JobFailed)
    _assert_erased(conn, people[0])
    _assert_untouched(conn, people[1], rows[1])
    _assert_untouched(conn, people[2], rows[2])


def _old_analytics(conn: Conn) -> None:
    month = _one(conn, "SELECT (date_trunc('month', now()) - interval '26 months')::date")
    conn.execute("SELECT create_month_partition('analytics_events', %s)", (month,))
    conn.execute("""
        INSERT INTO analytics_events (event_type, occurred_at, event_data)
        SELECT 'page.view', ts, '{"n": 1}'
          FROM unnest(ARRAY[%s::date + interval '1 day', %s::date + interval '2 days',
                            %s::date + interval '2 days', now() - interval '900 days',
                            now() - interval '1000 days', now() - interval '3 days']) ts""",
                 (month, month, month))
    active = _one(conn, "INSERT INTO users (email) VALUES (%s) RETURNING id",
                  (f"analytics-{uuid.uuid4().hex[:8]}@example.com",))
    conn.execute("""
        INSERT INTO user_behavior_log (user_id, action_type, "timestamp")
        SELECT %s, 'hotel_search', ts
          FROM unnest(ARRAY[now() - interval '800 days', now() - interval '5 days']) ts""",
                 (active,))


def test_old_analytics_purged_in_batches(conn: Conn, job_ctx: Any) -> None:
    _old_analytics(conn)
    result = JOB().run(job_ctx("gdpr_purge", batch_size=2, analytics_retention_days=730))
    assert result.details["analytics_rows"] == 6
    assert result.details["analytics_batches"] >= 4
    assert conn.execute("SELECT count(*) FROM analytics_events WHERE occurred_at <"
                        " now() - interval '730 days'").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM user_behavior_log WHERE \"timestamp\" <"
                        " now() - interval '730 days'").fetchone() == (0,)
    assert _one(conn, "SELECT count(*) FROM analytics_events") == 1
    assert _one(conn, "SELECT count(*) FROM user_behavior_log") == 1


def test_call_gdpr_purge_old_data_does_the_same(conn: Conn) -> None:
    a = _person(conn, "bycall", name="منى", phone="+966577777777", deleted_days_ago=31)
    _old_analytics(conn)
    conn.execute("CALL gdpr_purge_old_data()")
    assert conn.execute("SELECT user_row FROM gdpr_erasures WHERE user_id = %s",
                        (a.id,)).fetchone() == ("anonymised",)
    assert _rows_of(conn, a.id)["chat_messages"] == 0
    assert conn.execute("SELECT count(*) FROM analytics_events WHERE occurred_at <"
                        " now() - interval '730 days'").fetchone() == (0,)
    assert conn.execute("SELECT verify_audit_log_integrity()").fetchone() == (True,)


def test_runs_as_the_maintenance_role(db_url: str, conn: Conn, tmp_path: Any) -> None:
    import structlog

    from daemon.jobs.base import JobContext
    from daemon.settings import Settings

    a = _person(conn, "asmaint", name="ياسمين", phone="+966588888888", deleted_days_ago=31)
    _old_analytics(conn)
    app = Settings(database_url=SecretStr(db_url), state_dir=tmp_path)

    @contextlib.contextmanager
    def factory() -> Any:
        with psycopg.connect(db_url, autocommit=True) as connection:
            connection.execute("SET ROLE gth_maint")
            yield connection

    for dry_run in (True, False):
        ctx = JobContext(task="gdpr_purge", settings=app.jobs.gdpr_purge, app_settings=app,
                         connection_factory=factory, log=structlog.get_logger(),
                         stop_event=threading.Event(), dry_run=dry_run)
        result = JOB().run(ctx)
    assert result.details["users_erased"] == 1
    assert result.details["analytics_rows"] == 6
    assert _rows_of(conn, a.id)["oauth_accounts"] == 0


def test_user_tables_are_classified(conn: Conn) -> None:
    kinds = {(str(t), str(c)): k for t, c, k in
             conn.execute("SELECT tbl::text, col, kind FROM gdpr_user_tables()").fetchall()}
    assert kinds[("referrals", "referred_user_id")] == "unlink"
    for table in ("bookings", "booking_items", "flight_bookings", "hotel_bookings",
                  "crypto_payments", "hotel_ratings"):
        assert kinds[(table, "user_id")] == "retained"
    for table in ("oauth_accounts", "trips", "user_consent_history"):
        assert kinds[(table, "user_id")] == "late"  # audited, referenced by a record, consent
    for table in ("chat_messages", "chat_sessions", "analytics_events", "user_behavior_log",
                  "trip_predictions", "outcome_predictions", "shared_content"):
        assert kinds[(table, "user_id")] == "bulk"
    assert kinds[("referrals", "referrer_user_id")] == "bulk"


def test_erase_refuses_users_not_soft_deleted_past_the_cutoff(conn: Conn) -> None:
    active = _person(conn, "alive", name="حسن", phone="+966599999999", deleted_days_ago=None)
    young = _person(conn, "recent", name="علي", phone="+966598888888", deleted_days_ago=3)
    before = _rows_of(conn, active.id), _rows_of(conn, young.id)
    for person in (active, young):
        got = _one(conn, "SELECT gdpr_erase_user(%s, interval '7 years',"
                         " now() - interval '30 days')", (person.id,))
        assert got["erased"] is False
    assert (_rows_of(conn, active.id), _rows_of(conn, young.id)) == before
    assert _one(conn, "SELECT count(*) FROM gdpr_erasures") == 0
