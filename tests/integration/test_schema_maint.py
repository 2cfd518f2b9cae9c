"""gth_maint, the daemon's role: exactly what the maintenance jobs need, nothing more."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

U = uuid.UUID("00000000-0000-4000-8000-0000000000f1")


@pytest.fixture
def maint(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("INSERT INTO users (id, email, created_at, deleted_at) VALUES"
                 " (%s, 'gone@example.com', now() - interval '90 days',"
                 " now() - interval '40 days'), (gen_random_uuid(), 'here@example.com', now(),"
                 " NULL)", (U,))
    booking = conn.execute("INSERT INTO bookings (user_id, booking_reference, booking_type,"
                           " total_amount) VALUES (%s, 'M-1', 'flight', 900) RETURNING id",
                           (U,)).fetchone()
    assert booking
    conn.execute(
        "INSERT INTO crypto_payments (user_id, booking_id, amount, currency, network,"
        " fiat_amount, wallet_address, created_at, expires_at, status, confirmed_at) VALUES"
        " (%(u)s, %(b)s, 1, 'BTC', 'bitcoin', 900, 'w', now() - interval '2 hours',"
        "  now() - interval '1 hour', 'pending', NULL),"
        " (%(u)s, %(b)s, 1, 'BTC', 'bitcoin', 900, 'w', now() - interval '2 hours',"
        "  now() - interval '1 hour', 'confirmed', now() - interval '90 minutes')",
        {"u": U, "b": booking[0]})
    conn.execute("INSERT INTO flight_search_cache (cache_key, origin, destination,"
                 " departure_date, results, created_at, expires_at) VALUES ('old', 'RUH', 'DXB',"
                 " '2026-01-01', '[]', now() - interval '2 days', now() - interval '1 day'),"
                 " ('new', 'RUH', 'DXB', '2026-01-01', '[]', now(), now() + interval '1 day')")
    conn.execute("SET ROLE gth_maint")
    return conn


def test_run_history_and_future_maintenance_tables(maint: psycopg.Connection[Any]) -> None:
    maint.execute("INSERT INTO maintenance.job_runs (task, trigger, scheduled_for, host, pid)"
                  " VALUES ('t', 'cli', now(), 'h', 1)")
    maint.execute("UPDATE maintenance.job_runs SET rows = 1")
    maint.execute("DELETE FROM maintenance.job_runs")
    maint.execute("RESET ROLE")
    maint.execute("CREATE TABLE maintenance.later_table (id int)")  # a later migration's table
    maint.execute("SET ROLE gth_maint")
    maint.execute("INSERT INTO maintenance.later_table VALUES (1)")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        maint.execute("CREATE TABLE maintenance.mine (id int)")


def test_cache_cleanup_privileges(maint: psycopg.Connection[Any]) -> None:
    gone = maint.execute("DELETE FROM flight_search_cache WHERE expires_at < now()")
    assert gone.rowcount == 1
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        maint.execute("UPDATE flight_search_cache SET hit_count = 0")


def test_payment_expiry_privileges(maint: psycopg.Connection[Any]) -> None:
    expired = maint.execute("UPDATE crypto_payments SET status = 'expired', updated_at = now()"
                            " WHERE expires_at < now()")
    assert expired.rowcount == 1  # only the pending one: confirmed payments are not touchable
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        maint.execute("UPDATE crypto_payments SET amount = 2")
    maint.execute("RESET ROLE")
    maint.execute("UPDATE crypto_payments SET status = 'pending' WHERE status = 'expired'")
    maint.execute("SET ROLE gth_maint")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # WITH CHECK: expired/failed only
        maint.execute("UPDATE crypto_payments SET status = 'confirmed' WHERE status = 'pending'")
    # The change is audited with the daemon as actor.
    maint.execute("UPDATE crypto_payments SET status = 'failed' WHERE status = 'pending'")
    maint.execute("RESET ROLE")
    actor = maint.execute("SELECT actor FROM audit_log WHERE table_name = 'crypto_payments'"
                          " ORDER BY chain_position DESC LIMIT 1").fetchone()
    assert actor == ("gth_maint",)


def test_gdpr_privileges(maint: psycopg.Connection[Any]) -> None:
    due = maint.execute("SELECT id FROM users WHERE deleted_at < now() - interval '30 days'")
    assert due.fetchall() == [(U,)]
    assert maint.execute("SELECT count(*) FROM users").fetchone() == (1,)  # soft-deleted only
    for statement in ("SELECT email FROM users", "SELECT * FROM bookings",
                      "DELETE FROM users", "SELECT * FROM user_behavior_log"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            maint.execute(statement)
    assert maint.execute("SELECT audit_redact_user(%s)", (U,)).fetchone() == (4,)
    assert maint.execute("SELECT verify_audit_log_integrity()").fetchone() == (True,)


def test_audit_verification_privileges(maint: psycopg.Connection[Any]) -> None:
    row = maint.execute("SELECT rows_checked, first_bad_position FROM"
                        " audit_verify_range(1, NULL, 1000)").fetchone()
    assert row == (5, None)  # 2 users, 1 booking, 2 payments
    assert maint.execute("SELECT chain_position FROM audit_chain_head()").fetchone() == (5,)


def test_vacuum_and_analyze(maint: psycopg.Connection[Any]) -> None:
    version = maint.execute("SHOW server_version_num").fetchone()
    assert version
    member = maint.execute(
        "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
        " WHERE r.rolname = 'pg_maintain'"
        " AND m.member = (SELECT oid FROM pg_roles WHERE rolname = 'gth_maint')").fetchone()
    if int(version[0]) >= 170000:
        assert member == (1,)
        maint.execute("ANALYZE bookings")
        maint.execute("VACUUM flight_search_cache")
    else:  # PostgreSQL 15/16: these run as the table owner (docs/schema.md)
        assert member == (0,)
