"""payment_expiry: due pending payments expire in batches, each change audited; a
confirmation racing the expiry is never overridden (exactly one of them wins)."""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from daemon.jobs.payment_expiry import JOB

Conn = psycopg.Connection[Any]

CONFIRM = ("UPDATE crypto_payments SET status = 'confirmed', confirmed_at = now(),"
           " confirmations = 3, tx_hash = %s WHERE id = %s AND status = 'pending'")


def _user_and_booking(conn: Conn) -> tuple[uuid.UUID, uuid.UUID]:
    tag = uuid.uuid4().hex[:10]
    user = conn.execute("INSERT INTO users (email) VALUES (%s) RETURNING id",
                        (f"payer-{tag}@example.com",)).fetchone()
    assert user is not None
    booking = conn.execute(
        "INSERT INTO bookings (user_id, booking_reference, booking_type, total_amount)"
        " VALUES (%s, %s, 'flight', 900) RETURNING id", (user[0], f"PAY-{tag}"),
    ).fetchone()
    assert booking is not None
    return user[0], booking[0]


def _payment(conn: Conn, owner: tuple[uuid.UUID, uuid.UUID], *, expires_in: str,
             status: str = "pending") -> uuid.UUID:
    row = conn.execute(
        """
        INSERT INTO crypto_payments (user_id, booking_id, amount, currency, network, fiat_amount,
                                     wallet_address, status, confirmed_at, created_at, expires_at)
        VALUES (%s, %s, 0.5, 'USDT', 'tron', 900, 'TXexampleWallet', %s,
                CASE WHEN %s = 'confirmed' THEN now() END,
                now() - interval '3 hours', now() + %s::interval)
        RETURNING id
        """,
        (owner[0], owner[1], status, status, expires_in),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def _status(conn: Conn, payment: uuid.UUID) -> str:
    row = conn.execute("SELECT status FROM crypto_payments WHERE id = %s", (payment,)).fetchone()
    assert row is not None
    return str(row[0])


def _transitions(conn: Conn, payment: uuid.UUID) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT payload->'old'->>'status', payload->'new'->>'status' FROM audit_log"
        " WHERE table_name = 'crypto_payments' AND operation = 'UPDATE' AND row_id = %s"
        " ORDER BY chain_position", (payment,),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def test_expires_only_due_pending_payments_in_batches(conn: Conn, job_ctx: Any) -> None:
    owner = _user_and_booking(conn)
    due = [_payment(conn, owner, expires_in=f"-{i + 1} minutes") for i in range(8)]
    live = _payment(conn, owner, expires_in="10 minutes")
    confirmed = _payment(conn, owner, expires_in="-2 hours", status="confirmed")
    failed = _payment(conn, owner, expires_in="-2 hours", status="failed")

    ctx = job_ctx("payment_expiry", batch_size=3)
    result = JOB().run(ctx)

    assert result.details["expired"] == 8
    assert result.details["batches"] == 3
    assert ctx.rows == 8
    assert all(_status(conn, p) == "expired" for p in due)
    assert _status(conn, live) == "pending"
    assert _status(conn, confirmed) == "confirmed"
    assert _status(conn, failed) == "failed"
    for payment in due:  # one audited change each
        assert _transitions(conn, payment) == [("pending", "expired")]
    assert conn.execute("SELECT verify_audit_log_integrity()").fetchone() == (True,)
    # Nothing left: a second run is a no-op.
    assert JOB().run(job_ctx("payment_expiry", batch_size=3)).details["expired"] == 0


def test_dry_run_counts_and_changes_nothing(conn: Conn, job_ctx: Any) -> None:
    owner = _user_and_booking(conn)
    due = [_payment(conn, owner, expires_in="-5 minutes") for _ in range(4)]
    _payment(conn, owner, expires_in="5 minutes")
    result = JOB().run(job_ctx("payment_expiry", dry_run=True))
    assert result.details["would_expire"] == 4
    assert all(_status(conn, p) == "pending" for p in due)


def test_confirmation_in_flight_is_skipped_and_wins(conn: Conn, db_url: str,
                                                    job_ctx: Any) -> None:
    """The confirm transaction holds the row: the expiry skips it; the confirmation commits.

    The open confirmation also holds the audit chain's lock (it wrote an audited row), so
    the expiry's own audited update waits for the confirmation to commit."""
    owner = _user_and_booking(conn)
    contested = _payment(conn, owner, expires_in="-2 minute")
    other = _payment(conn, owner, expires_in="-1 minute")
    results: list[Any] = []
    with psycopg.connect(db_url) as confirmer:  # not autocommit: the transaction stays open
        assert confirmer.execute(CONFIRM, ("0xabc", contested)).rowcount == 1
        ctx = job_ctx("payment_expiry", batch_size=10, lock_timeout_ms=30_000)
        thread = threading.Thread(target=lambda: results.append(JOB().run(ctx)))
        thread.start()
        _wait_for_lock_wait(conn)  # the expiry locked `other` and waits for the chain lock
        confirmer.commit()
    thread.join(timeout=30)
    assert results[0].details["expired"] == 1
    assert _status(conn, contested) == "confirmed"
    assert _status(conn, other) == "expired"
    assert _transitions(conn, contested) == [("pending", "confirmed")]


def test_expiry_in_flight_makes_the_confirmation_find_nothing(conn: Conn, db_url: str) -> None:
    """The expiry holds the row: the confirmation waits, then its WHERE status = 'pending'
    matches nothing. The payment stays expired."""
    owner = _user_and_booking(conn)
    contested = _payment(conn, owner, expires_in="-1 minute")
    confirmed_rows: list[int] = []

    def confirm() -> None:
        with psycopg.connect(db_url, autocommit=True) as confirmer:
            confirmed_rows.append(confirmer.execute(CONFIRM, ("0xdef", contested)).rowcount)

    with psycopg.connect(db_url) as expirer:
        got = expirer.execute("SELECT expired FROM expire_pending_payments(10)").fetchone()
        assert got == (1,)
        thread = threading.Thread(target=confirm)
        thread.start()
        _wait_for_lock_wait(conn)
        expirer.commit()
    thread.join(timeout=30)
    assert confirmed_rows == [0]
    assert _status(conn, contested) == "expired"
    assert _transitions(conn, contested) == [("pending", "expired")]


def _wait_for_lock_wait(conn: Conn) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity"
                           " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                           ).fetchone()
        if row and row[0] > 0:
            return
        time.sleep(0.02)
    raise AssertionError("the confirmation never waited for the expiry's row lock")


@pytest.mark.timeout(120)
def test_concurrent_confirmations_and_expiries_exactly_one_wins(conn: Conn, db_url: str,
                                                                 job_ctx: Any) -> None:
    owner = _user_and_booking(conn)
    payments = [_payment(conn, owner, expires_in="-1 minute") for _ in range(40)]
    won_by_confirm: set[uuid.UUID] = set()
    start = threading.Barrier(3)

    def confirmer(chunk: list[uuid.UUID]) -> None:
        with psycopg.connect(db_url, autocommit=True) as c:
            start.wait()
            for payment in chunk:
                if c.execute(CONFIRM, (f"0x{payment.hex}", payment)).rowcount == 1:
                    won_by_confirm.add(payment)

    order = payments[:]
    random.Random(7).shuffle(order)
    threads = [threading.Thread(target=confirmer, args=(order[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    start.wait()
    expired = 0
    for _ in range(20):
        expired += JOB().run(job_ctx("payment_expiry", batch_size=2)).details["expired"]
    for thread in threads:
        thread.join(timeout=60)
    expired += JOB().run(job_ctx("payment_expiry", batch_size=50)).details["expired"]

    assert len(won_by_confirm) + expired == len(payments)
    for payment in payments:
        status = _status(conn, payment)
        assert status == ("confirmed" if payment in won_by_confirm else "expired")
        assert _transitions(conn, payment) == [("pending", status)]
    assert conn.execute("SELECT verify_audit_log_integrity()").fetchone() == (True,)


def test_runs_as_the_maintenance_role(db_url: str, conn: Conn, tmp_path: Any) -> None:
    import structlog

    from daemon.jobs.base import JobContext
    from daemon.settings import Settings

    owner = _user_and_booking(conn)
    due = [_payment(conn, owner, expires_in="-1 minute") for _ in range(3)]
    app = Settings(database_url=SecretStr(db_url), state_dir=tmp_path)

    @contextlib.contextmanager
    def factory() -> Any:
        with psycopg.connect(db_url, autocommit=True) as connection:
            connection.execute("SET ROLE gth_maint")
            yield connection

    ctx = JobContext(task="payment_expiry",
                     settings=app.jobs.payment_expiry.model_copy(update={"batch_size": 2}),
                     app_settings=app, connection_factory=factory, log=structlog.get_logger(),
                     stop_event=threading.Event())
    assert JOB().run(ctx).details["expired"] == 3
    assert all(_status(conn, p) == "expired" for p in due)
    audit_actor = conn.execute(
        "SELECT DISTINCT actor FROM audit_log WHERE table_name = 'crypto_payments'"
        " AND operation = 'UPDATE'").fetchall()
    assert audit_actor == [("gth_maint",)]
