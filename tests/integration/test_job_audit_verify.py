"""audit_verify: a clean chain passes, every kind of tampering is detected at the right
first bad row, checkpoints in and outside the database catch tail truncation and
replacement, incremental runs verify only new rows."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from daemon import metrics
from daemon.errors import JobFailed
from daemon.jobs.audit_verify import CHECKPOINT_FILE, JOB

Conn = psycopg.Connection[Any]

# Small batches, blocks and a low parallel threshold, so that a few dozen rows already
# exercise batching, sealing and the split over two connections; "sequential" uses one
# connection and no seals (every row's own hashes, as before seals existed).
MODES = {
    "sequential": {"batch_size": 5, "parallel_connections": 1, "seal_block_rows": 0},
    "parallel": {"batch_size": 4, "parallel_connections": 2, "parallel_min_rows": 3,
                 "seal_block_rows": 4},
    "sealed, one connection": {"batch_size": 8, "parallel_connections": 1,
                               "seal_block_rows": 4},
}


def _audited_writes(conn: Conn, users: int, tag: str = "u") -> None:
    """Each user: users INSERT, bookings INSERT, crypto_payments INSERT (3 audit rows)."""
    for i in range(users):
        row = conn.execute(
            "INSERT INTO users (email, full_name, phone) VALUES (%s, %s, %s) RETURNING id",
            (f"{tag}{i}@example.com", f"مسافر {tag}{i}", f"+9665000{i:05d}"),
        ).fetchone()
        assert row is not None
        booking = conn.execute(
            "INSERT INTO bookings (user_id, booking_reference, booking_type, total_amount)"
            " VALUES (%s, %s, 'hotel', 1200) RETURNING id", (row[0], f"REF-{tag}-{i}"),
        ).fetchone()
        assert booking is not None
        conn.execute(
            "INSERT INTO crypto_payments (user_id, booking_id, amount, currency, network,"
            " fiat_amount, wallet_address, expires_at)"
            " VALUES (%s, %s, 0.01, 'BTC', 'bitcoin', 1200, 'bc1qexample', now() + interval '1 h')",
            (row[0], booking[0]),
        )


def _head(conn: Conn) -> int:
    row = conn.execute("SELECT max(chain_position) FROM audit_log").fetchone()
    assert row is not None
    return int(row[0])


def _id_at(conn: Conn, position: int) -> int:
    row = conn.execute("SELECT id FROM audit_log WHERE chain_position = %s",
                       (position,)).fetchone()
    assert row is not None
    return int(row[0])


def _tamper(conn: Conn, *statements: str | sql.Composed | sql.SQL) -> None:
    """As superuser with the guard triggers bypassed, in one transaction."""
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        for statement in statements:
            conn.execute(sql.SQL(statement) if isinstance(statement, str) else statement)


def _run(job_ctx: Any, mode: str = "sequential", **options: Any) -> Any:
    ctx = job_ctx("audit_verify", options=options, **MODES[mode])
    return ctx, JOB().run(ctx)


def _fails(job_ctx: Any, mode: str = "sequential", **options: Any) -> tuple[JobFailed, Any]:
    ctx = job_ctx("audit_verify", options=options, **MODES[mode])
    with pytest.raises(JobFailed) as caught:
        JOB().run(ctx)
    return caught.value, ctx


def _seals(conn: Conn) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(
        "SELECT seq, kind, first_position, last_position FROM maintenance.audit_seals"
        " ORDER BY seq")]


def _last_entry(conn: Conn) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT valid, full_pass, first_bad_position, first_bad_id, reason,"
        " verified_through_position FROM maintenance.audit_checkpoints ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert row is not None
    return tuple(row)


@pytest.mark.parametrize("mode", list(MODES))
def test_clean_chain_passes_and_writes_both_checkpoints(conn: Conn, job_ctx: Any,
                                                        mode: str) -> None:
    _audited_writes(conn, 9)
    head = _head(conn)
    ctx, result = _run(job_ctx, mode)
    assert result.details["mode"] == "full"
    assert result.details["rows_verified"] == head == 27
    assert ctx.rows == head
    assert metrics.AUDIT_CHAIN_VALID._value.get() == 1
    assert metrics.AUDIT_HEAD_ID._value.get() == head
    valid, full, bad_pos, _bad_id, reason, through = _last_entry(conn)
    assert (valid, full, bad_pos, reason, through) == (True, True, None, None, head)
    anchor = json.loads((ctx.state_dir / CHECKPOINT_FILE).read_text())
    row = conn.execute("SELECT row_hash, id FROM audit_log WHERE chain_position = %s",
                       (head,)).fetchone()
    assert row is not None
    assert anchor["position"] == head
    assert anchor["row_hash"] == bytes(row[0]).hex()
    assert anchor["audit_id"] == row[1]


def test_empty_chain_passes(conn: Conn, job_ctx: Any) -> None:
    _, result = _run(job_ctx)
    assert result.details["rows_verified"] == 0
    _, again = _run(job_ctx)
    assert again.details["mode"] == "incremental"


def test_incremental_verifies_only_new_rows(conn: Conn, job_ctx: Any) -> None:
    _audited_writes(conn, 4, "a")
    _run(job_ctx)
    _audited_writes(conn, 2, "b")
    _, result = _run(job_ctx)
    assert result.details["mode"] == "incremental"
    assert result.details["from_position"] == 13
    assert result.details["rows_verified"] == 6
    _, forced = _run(job_ctx, full=True)
    assert forced.details["mode"] == "full"
    assert forced.details["rows_verified"] == 18


def test_full_pass_when_the_last_one_is_old(conn: Conn, job_ctx: Any) -> None:
    _audited_writes(conn, 2)
    _run(job_ctx)
    conn.execute("UPDATE maintenance.audit_checkpoints SET verified_at = now() - interval '25 h'")
    _, result = _run(job_ctx)
    assert result.details["mode"] == "full"
    _, result = _run(job_ctx)
    assert result.details["mode"] == "incremental"


def test_redacted_user_still_verifies(conn: Conn, job_ctx: Any) -> None:
    _audited_writes(conn, 3)
    row = conn.execute("SELECT id FROM users WHERE email = 'u1@example.com'").fetchone()
    assert row is not None
    redacted = conn.execute("SELECT audit_redact_user(%s)", (row[0],)).fetchone()
    assert redacted is not None and redacted[0] == 3
    _, result = _run(job_ctx, "parallel")
    assert result.details["redacted_rows"] == 3
    assert result.details["rows_verified"] == 9


# -- the tamper matrix ------------------------------------------------------------------------
# Each case tampers with a chain of 30 rows (10 users) and returns the position and audit id
# of the first row the verifier must name, and the reason.

Tamper = Callable[[Conn], tuple[int, int | None, str]]


def _modified_payload(conn: Conn) -> tuple[int, int | None, str]:
    _tamper(conn, "UPDATE audit_log SET payload_bytes = audit_payload_bytes_v2("
                  "jsonb_set(payload, '{new,total_amount}', '1')) WHERE chain_position = 11")
    return 11, _id_at(conn, 11), "payload hash mismatch"


def _modified_hash(conn: Conn) -> tuple[int, int | None, str]:
    _tamper(conn, "UPDATE audit_log SET row_hash = sha256('forged'::bytea) "
                  "WHERE chain_position = 17")
    return 17, _id_at(conn, 17), "row hash mismatch"


def _modified_payload_and_hashes(conn: Conn) -> tuple[int, int | None, str]:
    # A forger recomputes the row's own hashes: the link to the next row breaks.
    _tamper(conn, """
        UPDATE audit_log a SET payload_bytes = '{"new": {"total_amount": 1}}',
               payload_hash = sha256('{"new": {"total_amount": 1}}'),
               row_hash = audit_row_hash_v2(a.prev_hash, a.chain_position, a.occurred_at,
                   a.table_name, a.operation, a.actor, a.row_id, a.user_id,
                   sha256('{"new": {"total_amount": 1}}'))
         WHERE chain_position = 8""")
    return 9, _id_at(conn, 9), "prev_hash mismatch"


def _deleted_row(conn: Conn) -> tuple[int, int | None, str]:
    _tamper(conn, "DELETE FROM audit_log WHERE chain_position = 14")
    return 15, _id_at(conn, 15), "position gap"


def _deleted_rows_across_batches(conn: Conn) -> tuple[int, int | None, str]:
    _tamper(conn, "DELETE FROM audit_log WHERE chain_position BETWEEN 4 AND 16")
    return 17, _id_at(conn, 17), "position gap"


def _shift_up_from(position: int) -> list[sql.Composed | sql.SQL]:
    """Make room at `position` (two steps: chain_position is unique, checked per row)."""
    return [
        sql.SQL("UPDATE audit_log SET chain_position = chain_position + 1000000 "
                "WHERE chain_position >= {}").format(sql.Literal(position)),
        sql.SQL("UPDATE audit_log SET chain_position = chain_position - 999999 "
                "WHERE chain_position >= 1000000"),
    ]


def _inserted_row(conn: Conn) -> tuple[int, int | None, str]:
    _tamper(conn, *_shift_up_from(12), """
        INSERT INTO audit_log (chain_position, occurred_at, table_name, operation, row_id,
                               actor, payload_bytes, payload_hash, prev_hash, row_hash)
        VALUES (12, now(), 'bookings', 'DELETE', gen_random_uuid(), 'intruder', '{}',
                sha256('{}'::bytea), sha256('guess'::bytea), sha256('guess2'::bytea))""")
    return 12, _id_at(conn, 12), "prev_hash mismatch"


def _inserted_forged_row(conn: Conn) -> tuple[int, int | None, str]:
    # A forged row with correct hashes of its own: the row after it no longer links.
    _tamper(conn, *_shift_up_from(20), """
        INSERT INTO audit_log (chain_position, occurred_at, table_name, operation, row_id,
                               actor, payload_bytes, payload_hash, prev_hash, row_hash)
        SELECT 20, t, 'bookings', 'DELETE', r, 'intruder', '{}', sha256('{}'),
               p.row_hash, audit_row_hash_v2(p.row_hash, 20, t, 'bookings', 'DELETE',
                                             'intruder', r, NULL, sha256('{}'))
          FROM (SELECT row_hash FROM audit_log WHERE chain_position = 19) p,
               (SELECT now() AS t, gen_random_uuid() AS r) x""")
    return 21, _id_at(conn, 21), "prev_hash mismatch"


def _reordered_rows(conn: Conn) -> tuple[int, int | None, str]:
    moved = _id_at(conn, 7)  # old position 7 goes to 6
    _tamper(conn,
            "UPDATE audit_log SET chain_position = 1000000 WHERE chain_position = 6",
            "UPDATE audit_log SET chain_position = 6 WHERE chain_position = 7",
            "UPDATE audit_log SET chain_position = 7 WHERE chain_position = 1000000")
    return 6, moved, "prev_hash mismatch"


def _first_row_deleted(conn: Conn) -> tuple[int, int | None, str]:
    _tamper(conn, "DELETE FROM audit_log WHERE chain_position = 1")
    return 2, _id_at(conn, 2), "position gap"


def _payload_removed_without_redaction(conn: Conn) -> tuple[int, int | None, str]:
    _tamper(conn, "UPDATE audit_log SET payload_bytes = NULL WHERE chain_position = 25")
    return 25, _id_at(conn, 25), "payload missing without redaction"


TAMPER_CASES: dict[str, Tamper] = {
    "modified_payload": _modified_payload,
    "modified_hash": _modified_hash,
    "modified_payload_and_own_hashes": _modified_payload_and_hashes,
    "deleted_row": _deleted_row,
    "deleted_rows_across_batches": _deleted_rows_across_batches,
    "first_row_deleted": _first_row_deleted,
    "inserted_row": _inserted_row,
    "inserted_forged_row": _inserted_forged_row,
    "reordered_rows": _reordered_rows,
    "payload_removed_without_redaction": _payload_removed_without_redaction,
}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("case", list(TAMPER_CASES))
def test_tampering_is_detected_at_the_first_bad_row(conn: Conn, job_ctx: Any, case: str,
                                                    mode: str) -> None:
    _audited_writes(conn, 10)
    verified_first = MODES[mode]["seal_block_rows"] > 0
    if verified_first:  # the tampering hits sealed, anchored blocks (1-4 .. 25-28)
        _run(job_ctx, mode)
        assert sorted(r[2:] for r in _seals(conn)) == [(f, f + 3) for f in range(1, 29, 4)]
    position, audit_id, reason = TAMPER_CASES[case](conn)
    error, ctx = _fails(job_ctx, mode, full=True)
    assert f"{reason} at position {position}" in str(error)
    assert f"audit_log id {audit_id}" in str(error)
    # The failure carries the evidence for the run history (daemon.runner records it).
    assert (error.details["first_bad_position"], error.details["first_bad_id"],
            error.details["reason"]) == (position, audit_id, reason)
    valid, full, bad_pos, bad_id, got_reason, _ = _last_entry(conn)
    assert (valid, full, bad_pos, bad_id, got_reason) == (False, True, position, audit_id,
                                                          reason)
    assert metrics.AUDIT_CHAIN_VALID._value.get() == 0
    anchor = ctx.state_dir / CHECKPOINT_FILE
    if verified_first:  # the anchor of the clean chain stays; a broken chain writes none
        assert json.loads(anchor.read_text())["position"] == 30
    else:
        assert not anchor.exists()
    # The schema's own verdict agrees.
    first = conn.execute("SELECT chain_position, id, reason FROM audit_chain_first_break()")
    assert first.fetchone() == (position, audit_id, reason)


def test_truncated_tail(conn: Conn, job_ctx: Any) -> None:
    _audited_writes(conn, 5)
    _run(job_ctx)
    _tamper(conn, "DELETE FROM audit_log WHERE chain_position > 12")
    error, _ = _fails(job_ctx)
    assert "truncated tail at position 13" in str(error)
    assert _last_entry(conn)[:5] == (False, False, 13, None, "truncated tail")


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_replaced_tail(conn: Conn, job_ctx: Any, mode: str) -> None:
    _audited_writes(conn, 5, "a")
    _run(job_ctx, mode)  # checkpoint at 15; with seals, blocks 1-4, 5-8, 9-12 sealed
    _tamper(conn, "DELETE FROM audit_log WHERE chain_position > 10")
    _audited_writes(conn, 3, "b")  # legitimate-looking rows re-extend the chain to 19
    assert conn.execute("SELECT verify_audit_log_integrity()").fetchone() == (True,)
    error, _ = _fails(job_ctx, mode)  # incremental: the checkpoint no longer matches
    assert f"replaced tail at position 15 (audit_log id {_id_at(conn, 15)})" in str(error)
    error, _ = _fails(job_ctx, mode)  # full, after a failure
    if mode == "sequential":
        assert f"replaced tail at position 15 (audit_log id {_id_at(conn, 15)})" in str(error)
    else:  # the sealed block 9-12 already differs: an earlier, more precise verdict
        assert f"rewritten rows at position 9 (audit_log id {_id_at(conn, 9)})" in str(error)


def test_truncated_tail_with_database_checkpoints_erased(conn: Conn, job_ctx: Any) -> None:
    """Whoever can rewrite audit_log can rewrite the checkpoint table: the file still knows."""
    _audited_writes(conn, 5)
    _run(job_ctx)
    _tamper(conn, "DELETE FROM audit_log WHERE chain_position > 9",
            "DELETE FROM maintenance.audit_checkpoints")
    error, _ = _fails(job_ctx)
    assert "truncated tail at position 10" in str(error)
    assert "checkpoint file" in str(error) or _last_entry(conn)[4] == "truncated tail"


def test_replaced_tail_with_database_checkpoints_erased(conn: Conn, job_ctx: Any) -> None:
    _audited_writes(conn, 4, "a")
    _run(job_ctx)  # anchor at 12
    _tamper(conn, "DELETE FROM audit_log WHERE chain_position > 6",
            "DELETE FROM maintenance.audit_checkpoints")
    _audited_writes(conn, 3, "b")
    error, _ = _fails(job_ctx)
    assert "replaced tail at position 12" in str(error)


def test_a_failure_keeps_every_run_full_and_failing(conn: Conn, job_ctx: Any) -> None:
    _audited_writes(conn, 4)
    _run(job_ctx)
    _tamper(conn, "UPDATE audit_log SET row_hash = sha256('x'::bytea) WHERE chain_position = 3")
    # An incremental run starts after the checkpoint and cannot see this; a full pass does.
    _, incremental = _run(job_ctx)
    assert incremental.details["mode"] == "incremental"
    _fails(job_ctx, full=True)
    error, _ = _fails(job_ctx)  # no --full: still a full pass after a failure
    assert "row hash mismatch at position 3" in str(error)
    assert _last_entry(conn)[1] is True


def test_runs_as_the_maintenance_role(db_url: str, conn: Conn, tmp_path: Any) -> None:
    """gth_maint's privileges suffice (read audit_log, write checkpoints)."""
    import contextlib
    import threading

    import structlog

    from daemon.jobs.base import JobContext
    from daemon.settings import Settings

    _audited_writes(conn, 3)
    app = Settings(database_url=SecretStr(db_url), state_dir=tmp_path / "state")
    app.state_dir.mkdir()
    settings = app.jobs.audit_verify.model_copy(update=MODES["parallel"])

    @contextlib.contextmanager
    def factory() -> Any:
        with psycopg.connect(db_url, autocommit=True) as connection:
            connection.execute("SET ROLE gth_maint")
            yield connection

    ctx = JobContext(task="audit_verify", settings=settings, app_settings=app,
                     connection_factory=factory, log=structlog.get_logger(),
                     stop_event=threading.Event())
    result = JOB().run(ctx)
    assert result.details["rows_verified"] == 9
    assert JOB().run(ctx).details["mode"] == "incremental"


def test_re_anchoring_after_an_accepted_truncation(conn: Conn, job_ctx: Any) -> None:
    """The documented procedure (docs/audit.md) brings a truncated chain back to valid."""
    _audited_writes(conn, 4)
    ctx, _ = _run(job_ctx)
    _tamper(conn, "DELETE FROM audit_log WHERE chain_position > 8")  # e.g. an older backup
    _fails(job_ctx)
    _fails(job_ctx, full=True)
    conn.execute("UPDATE maintenance.audit_checkpoints SET valid = false,"
                 " reason = 'superseded: INC-1' WHERE valid AND verified_through_position > 8")
    anchor = ctx.state_dir / CHECKPOINT_FILE
    anchor.rename(anchor.with_name("evidence-checkpoint.json"))
    _, result = _run(job_ctx, full=True)
    assert result.details["rows_verified"] == 8
    assert metrics.AUDIT_CHAIN_VALID._value.get() == 1
    _audited_writes(conn, 1, "after")
    _, result = _run(job_ctx)
    assert (result.details["mode"], result.details["rows_verified"]) == ("incremental", 3)
