"""audit_verify with sealed blocks (migration 0033): full passes seal what they verified and
later compare blocks with their seals; seals are trusted only once anchored; redaction
unseals; a chain rewritten with recomputed hashes, a forged seal and a tampered seal log are
all caught."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from daemon import metrics
from daemon.jobs.audit_verify import CHECKPOINT_FILE
from tests.integration.test_job_audit_verify import (
    _audited_writes,
    _fails,
    _id_at,
    _last_entry,
    _run,
    _seals,
    _tamper,
)

Conn = psycopg.Connection[Any]
MODE = "parallel"  # blocks of 4 rows, two connections

# A forger who edits row 10 and recomputes every hash after it: the chain alone is
# consistent again (verify_audit_log_integrity() is true).
REWRITE_FROM_10 = """
DO $$
DECLARE
    r      record;
    v_prev bytea := (SELECT row_hash FROM audit_log WHERE chain_position = 9);
    v_hash bytea;
BEGIN
    UPDATE audit_log SET payload_bytes = '{"forged": 1}', payload_hash = sha256('{"forged": 1}')
     WHERE chain_position = 10;
    FOR r IN SELECT * FROM audit_log WHERE chain_position >= 10 ORDER BY chain_position LOOP
        v_hash := audit_row_hash_v2(v_prev, r.chain_position, r.occurred_at, r.table_name,
                                    r.operation, r.actor, r.row_id, r.user_id, r.payload_hash);
        UPDATE audit_log SET prev_hash = v_prev, row_hash = v_hash WHERE id = r.id;
        v_prev := v_hash;
    END LOOP;
END
$$"""


def test_a_full_pass_seals_and_the_next_compares_blocks(conn: Conn, job_ctx: Any) -> None:
    _audited_writes(conn, 10)  # 30 rows: blocks 1-4 .. 25-28, rows 29-30 not a block yet
    ctx, first = _run(job_ctx, MODE)
    assert (first.details["rows_newly_sealed"], first.details["rows_checked_by_seal"]) == (28, 0)
    assert first.details["seal_seq"] == 7
    row = conn.execute("SELECT seal_seq, seal_hash FROM maintenance.audit_checkpoints"
                       " ORDER BY id DESC LIMIT 1").fetchone()
    entry = conn.execute("SELECT entry_hash FROM maintenance.audit_seals WHERE seq = 7").fetchone()
    assert row is not None and entry is not None and row == (7, entry[0])
    anchor = json.loads((ctx.state_dir / CHECKPOINT_FILE).read_text())
    assert (anchor["seal_seq"], anchor["seal_hash"]) == (7, bytes(entry[0]).hex())

    _audited_writes(conn, 2, "b")  # 36 rows: 29-32 and 33-36 become blocks
    _, second = _run(job_ctx, MODE, full=True)
    assert second.details["rows_verified"] == 36
    assert (second.details["rows_checked_by_seal"], second.details["rows_newly_sealed"]) == (28, 8)
    _, third = _run(job_ctx, MODE, full=True)
    assert (third.details["rows_checked_by_seal"], third.details["rows_newly_sealed"]) == (36, 0)
    assert metrics.AUDIT_CHAIN_VALID._value.get() == 1


def test_rehash_recomputes_every_row_and_seals_nothing(conn: Conn, job_ctx: Any) -> None:
    _audited_writes(conn, 4)
    _run(job_ctx, MODE)
    _, result = _run(job_ctx, MODE, rehash=True)
    assert result.details["mode"] == "full" and result.details["rehash"] is True
    assert (result.details["rows_checked_by_seal"], result.details["rows_newly_sealed"]) == (0, 0)
    assert result.details["seal_seq"] == 3  # the anchor is carried forward


def test_incremental_passes_do_not_use_or_write_seals(conn: Conn, job_ctx: Any) -> None:
    _audited_writes(conn, 4)
    _run(job_ctx, MODE)
    _audited_writes(conn, 4, "b")
    _, result = _run(job_ctx, MODE)
    assert result.details["mode"] == "incremental"
    assert (result.details["rows_checked_by_seal"], result.details["rows_newly_sealed"]) == (0, 0)
    assert len(_seals(conn)) == 3


@pytest.mark.parametrize("erase_database_checkpoints", [False, True])
def test_a_chain_rewritten_with_recomputed_hashes_is_caught(
        conn: Conn, job_ctx: Any, erase_database_checkpoints: bool) -> None:
    _audited_writes(conn, 10)
    _run(job_ctx, MODE)
    statements = [REWRITE_FROM_10]
    if erase_database_checkpoints:  # the file outside the database still anchors the seals
        statements.append("DELETE FROM maintenance.audit_checkpoints")
    _tamper(conn, *statements)
    assert conn.execute("SELECT verify_audit_log_integrity()").fetchone() == (True,)
    counted = metrics.AUDIT_VERIFIED_ROWS._value.get()
    error, ctx = _fails(job_ctx, MODE, full=True)
    assert f"rewritten rows at position 9 (audit_log id {_id_at(conn, 9)})" in str(error)
    assert _last_entry(conn)[:5] == (False, True, 9, _id_at(conn, 9), "rewritten rows")
    # Both connections fell back to row by row up to the head; each row is counted once.
    assert ctx.rows == 30
    assert metrics.AUDIT_VERIFIED_ROWS._value.get() - counted == 30


def test_a_field_outside_the_row_hash_is_caught_by_the_seal(conn: Conn, job_ctx: Any) -> None:
    """audit_log.id is not in the row hash, but it is in the block digest: a changed id is
    reported as rewritten rows. The fallback verifies to the head while the other
    connection verifies its own share: each row is still counted once."""
    _audited_writes(conn, 10)
    _run(job_ctx, MODE)
    _tamper(conn, "UPDATE audit_log SET id = DEFAULT WHERE chain_position = 10")
    counted = metrics.AUDIT_VERIFIED_ROWS._value.get()
    error, ctx = _fails(job_ctx, MODE, full=True)
    assert "rewritten rows at position 9" in str(error)
    assert ctx.rows == 30
    assert metrics.AUDIT_VERIFIED_ROWS._value.get() - counted == 30


def test_a_forged_seal_is_not_trusted(conn: Conn, job_ctx: Any) -> None:
    """A seal appended after tampering is not anchored: its block is verified row by row."""
    _audited_writes(conn, 10)
    _run(job_ctx, MODE)
    _tamper(conn, "UPDATE audit_log SET payload_bytes = '{\"forged\": 1}'"
                  " WHERE chain_position = 11")
    conn.execute("""
        SELECT audit_seal_append('seal', 9, 12, d.digest,
                                 (SELECT prev_hash FROM audit_log WHERE chain_position = 9),
                                 (SELECT row_hash FROM audit_log WHERE chain_position = 12), 0)
          FROM audit_block_digest(9, 12) d""")
    assert conn.execute("SELECT count(*) FROM audit_seal_log_first_break()").fetchone() == (0,)
    error, _ = _fails(job_ctx, MODE, full=True)
    assert f"payload hash mismatch at position 11 (audit_log id {_id_at(conn, 11)})" in str(error)


@pytest.mark.parametrize("tampering, reason", [
    ("UPDATE maintenance.audit_seals SET digest = sha256('x'::bytea) WHERE first_position = 13",
     "seal log entry {seq}: entry hash mismatch"),
    ("DELETE FROM maintenance.audit_seals WHERE first_position = 13",
     "seal log entry {next}: missing entries"),
])
def test_a_tampered_seal_log_fails_the_pass(conn: Conn, job_ctx: Any, tampering: str,
                                            reason: str) -> None:
    _audited_writes(conn, 10)
    _run(job_ctx, MODE)
    row = conn.execute("SELECT seq FROM maintenance.audit_seals WHERE first_position = 13")
    seq = row.fetchone()[0]  # type: ignore[index]
    _tamper(conn, tampering)
    error, _ = _fails(job_ctx, MODE, full=True)
    assert "seal log mismatch at position" in str(error)
    assert reason.format(seq=seq, next=seq + 1) in str(error) or "anchored seal log" in str(error)
    # The chain itself was still verified row by row (nothing trusted): the rows are fine.
    assert _last_entry(conn)[4] == "seal log mismatch"


def test_an_erased_seal_log_contradicts_the_anchors(conn: Conn, job_ctx: Any) -> None:
    _audited_writes(conn, 10)
    _run(job_ctx, MODE)
    _tamper(conn, "DELETE FROM maintenance.audit_seals")
    error, _ = _fails(job_ctx, MODE, full=True)
    assert "seal log mismatch" in str(error) and "anchored seal log entry 7" in str(error)


def test_redaction_unseals_and_the_next_full_pass_seals_again(conn: Conn,
                                                              job_ctx: Any) -> None:
    _audited_writes(conn, 10)
    _run(job_ctx, MODE)
    user = conn.execute("SELECT id FROM users WHERE email = 'u1@example.com'").fetchone()
    assert user is not None
    assert conn.execute("SELECT audit_redact_user(%s)", (user[0],)).fetchone() == (3,)
    # positions 4, 5, 6: blocks 1-4 and 5-8 are unsealed, in the same transaction
    assert [s[1:] for s in _seals(conn)[-2:]] == [("unseal", 1, 4), ("unseal", 5, 8)]
    checked = conn.execute("SELECT first_position, status FROM"
                           " audit_check_sealed_blocks('{1,5,9}', 100)").fetchall()
    assert checked == [(1, "unsealed"), (5, "unsealed"), (9, "match")]
    _, result = _run(job_ctx, MODE, full=True)
    assert result.details["redacted_rows"] == 3
    assert (result.details["rows_newly_sealed"], result.details["rows_checked_by_seal"]) == (8, 20)
    _, again = _run(job_ctx, MODE, full=True)
    assert (again.details["rows_newly_sealed"], again.details["rows_checked_by_seal"]) == (0, 28)
    assert again.details["redacted_rows"] == 3


def test_the_seal_log_is_append_only_and_blocks_never_overlap(conn: Conn,
                                                              job_ctx: Any) -> None:
    _audited_writes(conn, 4)
    _run(job_ctx, MODE)
    for statement in ("UPDATE maintenance.audit_seals SET redacted_rows = 1",
                      "DELETE FROM maintenance.audit_seals", "TRUNCATE maintenance.audit_seals"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="overlap"):
        conn.execute("SELECT * FROM audit_verify_and_seal(3, 6, audit_zero_hash())")
    # Sealing a block with a bad row seals nothing and names the row.
    _tamper(conn, "UPDATE audit_log SET row_hash = sha256('x'::bytea) WHERE chain_position = 10")
    prev = conn.execute("SELECT row_hash FROM audit_log WHERE chain_position = 8").fetchone()
    assert prev is not None
    row = conn.execute("SELECT first_bad_position, reason, seal_seq"
                       " FROM audit_verify_and_seal(9, 12, %s)", (prev[0],)).fetchone()
    assert row == (10, "row hash mismatch", None)


def test_the_maintenance_role_cannot_write_seals(conn: Conn) -> None:
    conn.execute("SET ROLE gth_maint")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("INSERT INTO maintenance.audit_seals (seq, kind, first_position,"
                     " last_position, created_at, prev_entry_hash, entry_hash)"
                     " VALUES (1, 'unseal', 1, 4, now(), '', '')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT audit_seal_append('unseal', 1, 4, NULL, NULL, NULL, 0)")


def test_a_redaction_in_progress_never_fails_a_sealing_pass(conn: Conn, job_ctx: Any,
                                                            db_url: str) -> None:
    """Redaction holds the seal lock: the pass verifies those blocks without sealing them."""
    _audited_writes(conn, 4)
    user = conn.execute("SELECT id FROM users WHERE email = 'u1@example.com'").fetchone()
    assert user is not None
    with psycopg.connect(db_url) as gdpr:  # one erasure transaction, not committed yet
        gdpr.execute("SELECT audit_redact_user(%s)", (user[0],))
        ctx = job_ctx("audit_verify", options={"full": True}, parallel_connections=1,
                      seal_block_rows=4, lock_timeout_ms=100)
        from daemon.jobs.audit_verify import JOB
        result = JOB().run(ctx)
        assert (result.details["rows_verified"], result.details["rows_newly_sealed"]) == (12, 0)
        gdpr.commit()
    _, after = _run(job_ctx, MODE, full=True)
    assert (after.details["redacted_rows"], after.details["rows_newly_sealed"]) == (3, 12)


def test_re_anchoring_after_a_broken_seal_log(conn: Conn, job_ctx: Any) -> None:
    """The documented procedure (docs/audit.md) starts a new seal log once the incident is
    closed: forget the seal anchors, move the file aside, clear the log, run a full pass."""
    _audited_writes(conn, 10)
    ctx, _ = _run(job_ctx, MODE)
    _tamper(conn, "UPDATE maintenance.audit_seals SET redacted_rows = 5 WHERE seq = 2")
    _fails(job_ctx, MODE, full=True)
    conn.execute("UPDATE maintenance.audit_checkpoints SET seal_seq = NULL, seal_hash = NULL"
                 " WHERE seal_seq IS NOT NULL")
    anchor = ctx.state_dir / CHECKPOINT_FILE
    anchor.rename(anchor.with_name("evidence-checkpoint.json"))
    with conn.transaction():
        conn.execute("ALTER TABLE maintenance.audit_seals DISABLE TRIGGER USER")
        conn.execute("TRUNCATE maintenance.audit_seals")
        conn.execute("ALTER TABLE maintenance.audit_seals ENABLE TRIGGER USER")
    _, result = _run(job_ctx, MODE, full=True)
    assert (result.details["rows_verified"], result.details["rows_newly_sealed"]) == (30, 28)
    assert metrics.AUDIT_CHAIN_VALID._value.get() == 1


def test_the_gdpr_job_over_sealed_blocks_keeps_the_chain_verifiable(conn: Conn,
                                                                    job_ctx: Any) -> None:
    """An erasure (gdpr_purge) redacts rows inside sealed blocks: the blocks are unsealed in
    the same transaction, and the next full pass verifies and seals them again."""
    _audited_writes(conn, 10)
    _run(job_ctx, MODE)
    conn.execute("UPDATE users SET created_at = now() - interval '90 days',"
                 " deleted_at = now() - interval '40 days'"
                 " WHERE email IN ('u2@example.com', 'u7@example.com')")
    from daemon.jobs.gdpr_purge import JOB as GDPR
    GDPR().run(job_ctx("gdpr_purge"))
    unsealed = [s[2] for s in _seals(conn) if s[1] == "unseal"]
    assert unsealed  # the erased users' rows were in sealed blocks
    _, result = _run(job_ctx, MODE, full=True)
    assert result.details["redacted_rows"] >= 6
    assert result.details["rows_newly_sealed"] >= 4 * len(set(unsealed))
    assert metrics.AUDIT_CHAIN_VALID._value.get() == 1
