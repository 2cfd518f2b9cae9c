"""audit_verify: verify the audit_log hash chain, incrementally or from the first row.

An incremental run starts at the newest valid checkpoint (maintenance.audit_checkpoints)
and verifies only the rows after it; a full run (every `full_every_hours`, with
`run-job audit_verify --full`, and after any failed pass) starts at position 1 with the
32 zero bytes. Both first compare the chain with every checkpoint ever recorded and with
the one kept outside the database in `<state_dir>/audit-checkpoint.json`: a checkpoint
beyond the current head is a 'truncated tail', a checkpoint whose row is gone or carries
another hash a 'replaced tail'.

A full run re-hashes each sealed block of `seal_block_rows` rows once and compares it with
its seal (maintenance.audit_seals, migration 0033) instead of recomputing every row's two
hashes; rows not sealed yet, and blocks a GDPR redaction unsealed, are verified row by row
and then sealed. Seals are trusted only once a valid pass has anchored the seal log's head
in its checkpoints (database and file). `--rehash` verifies every row's own hashes instead,
as an external auditor would. How the chain is walked: daemon/jobs/_audit_chain.py.

A broken chain records a failed pass, sets gth_maint_audit_chain_valid to 0 and raises
JobFailed naming the first bad row. Every run logs the chain head (position, id, hash)
so log archives anchor the chain outside the database too.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from daemon import metrics
from daemon.errors import JobFailed
from daemon.jobs._audit_chain import GROUP, ZERO_HASH, Block, Break, Walk, plan, verify
from daemon.jobs._util import job_settings
from daemon.jobs.base import Job, JobContext, JobOption, JobResult
from daemon.settings import AuditVerifySettings
from daemon.sqlfiles import query

CHECKPOINT_FILE = "audit-checkpoint.json"


@dataclass(frozen=True)
class Head:
    position: int
    audit_id: int | None
    row_hash: bytes


@dataclass
class SealState:
    """The seal log as this pass may use it: blocks, and up to which entry seals are trusted."""

    blocks: list[Block]
    trusted_seq: int
    trusted_hash: bytes | None
    problem: Break | None


class AuditVerify(Job):
    name = "audit_verify"
    supports_dry_run = False
    options = (
        JobOption("--full", "verify the whole chain from its first row, not only the rows "
                            "after the last checkpoint"),
        JobOption("--rehash", "a full pass that recomputes every row's own hashes instead of "
                              "comparing sealed blocks with their seals (slower)"),
    )

    def run(self, ctx: JobContext) -> JobResult:
        settings = job_settings(ctx, AuditVerifySettings)
        started = time.monotonic()
        file_path = ctx.state_dir / CHECKPOINT_FILE
        rehash = bool(ctx.options.get("rehash"))
        with ctx.connection() as conn:
            head = _head(conn)
            ctx.log.info("audit chain head", head_position=head.position, head_id=head.audit_id,
                         head_hash=head.row_hash.hex())
            identity = database_identity(conn)
            last_cp = conn.execute(query(GROUP, "last_checkpoint")).fetchone()
            last_entry = conn.execute(query(GROUP, "last_entry")).fetchone()
            forced = bool(ctx.options.get("full")) or rehash
            full, why = _choose_mode(conn, settings, forced, last_cp, last_entry)
            anchor = _read_file_checkpoint(ctx, file_path, identity)
            tail_break = _check_checkpoints(conn, head, anchor)
            seals = _seal_state(conn, last_cp, anchor)

        sealing = full and not rehash and settings.seal_block_rows > 0
        if full:
            start, prev = 1, ZERO_HASH
        else:
            assert last_cp is not None
            start, prev = int(last_cp[0]) + 1, bytes(last_cp[1] or ZERO_HASH)
        mode = "full" if full else "incremental"
        trusted = seals.trusted_seq if sealing else None
        ctx.log.info("audit verification starting", mode=mode, why=why, from_position=start,
                     to_position=head.position, rehash=rehash, seals_trusted_through=trusted)

        bad = _earliest(tail_break, seals.problem)
        walk = Walk(start=start, start_prev=prev, last_position=start - 1, last_hash=prev)
        if full or tail_break is None:
            segments = plan(start, head.position, seals.blocks, seals.trusted_seq,
                            settings.seal_block_rows if sealing else 0)
            walk = verify(ctx, settings, segments, prev, seals.trusted_seq, seals.blocks)
            bad = _earliest(bad, walk.bad)
        duration_ms = int((time.monotonic() - started) * 1000)
        details: dict[str, Any] = {
            "mode": mode, "why": why, "from_position": start, "rehash": rehash,
            "head_position": head.position, "head_id": head.audit_id,
            "head_hash": head.row_hash.hex(), "rows_verified": walk.rows,
            "redacted_rows": walk.redacted, "rows_newly_sealed": walk.sealed_rows,
            "rows_checked_by_seal": walk.seal_checked_rows,
            "duration_ms": duration_ms,
        }
        if walk.stopped and bad is None:
            ctx.log.warning("audit verification stopped before the head; no checkpoint written",
                            verified_through=walk.last_position, rows=walk.rows)
            details["stopped_early"] = True
            return JobResult(details=details)

        valid = bad is None
        with ctx.connection() as conn, conn.transaction():
            seal_seq, seal_hash = (_seal_anchor(conn, seals, walk, sealing) if valid
                                   else (None, None))
            row = conn.execute(query(GROUP, "insert_checkpoint"), {
                "position": walk.last_position if valid else max(walk.last_position, 0),
                "row_hash": walk.last_hash if walk.last_position > 0 else None,
                "audit_id": head.audit_id if valid and walk.last_position == head.position
                else None,
                "full_pass": full, "valid": valid, "from_position": start,
                "rows_checked": walk.rows, "redacted_rows": walk.redacted,
                "duration_ms": duration_ms,
                "first_bad_position": bad.position if bad else None,
                "first_bad_id": bad.audit_id if bad else None,
                "reason": bad.reason if bad else None,
                "seal_seq": seal_seq, "seal_hash": seal_hash,
            }).fetchone()
        assert row is not None
        details["checkpoint_id"] = int(row[0])
        metrics.AUDIT_CHAIN_VALID.set(1 if valid else 0)
        if bad is not None:
            details.update(first_bad_position=bad.position, first_bad_id=bad.audit_id,
                           reason=bad.reason, problem=bad.describe())
            ctx.log.error("audit chain broken", first_bad_position=bad.position,
                          first_bad_id=bad.audit_id, reason=bad.reason, detail=bad.detail,
                          head_position=head.position, head_hash=head.row_hash.hex())
            raise JobFailed(f"audit chain broken: {bad.describe()}", details)
        metrics.AUDIT_HEAD_ID.set(walk.last_position)
        details["seal_seq"] = seal_seq
        write_file_checkpoint(file_path, identity, walk.last_position, walk.last_hash,
                              head.audit_id, row[1], full, seal_seq, seal_hash)
        ctx.log.info("audit chain verified", mode=mode, rows=walk.rows,
                     redacted=walk.redacted, newly_sealed=walk.sealed_rows,
                     verified_through=walk.last_position, head_id=head.audit_id,
                     head_hash=walk.last_hash.hex(), seal_seq=seal_seq,
                     seal_hash=seal_hash.hex() if seal_hash else None,
                     duration_ms=duration_ms)
        return JobResult(details=details)


def _earliest(*breaks: Break | None) -> Break | None:
    found = [b for b in breaks if b is not None]
    return min(found, key=lambda b: b.position) if found else None


# -- choosing the pass and checking the checkpoints ---------------------------------------

def _head(conn: psycopg.Connection[Any]) -> Head:
    row = conn.execute(query(GROUP, "head")).fetchone()
    if row is None:
        return Head(0, None, ZERO_HASH)
    return Head(int(row[1]), int(row[0]), bytes(row[2]))


def database_identity(conn: psycopg.Connection[Any]) -> dict[str, str | None]:
    try:
        row = conn.execute(query(GROUP, "database_identity")).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        row = (conn.execute("SELECT current_database()").fetchone() or (None,))[0], None
    assert row is not None
    return {"database": row[0], "system_identifier": row[1]}


def _choose_mode(conn: psycopg.Connection[Any], settings: AuditVerifySettings, forced: bool,
                 last_cp: tuple[Any, ...] | None,
                 last_entry: tuple[Any, ...] | None) -> tuple[bool, str]:
    if forced:
        return True, "--full requested"
    if last_cp is None:
        return True, "no checkpoint yet"
    if last_entry is not None and not last_entry[1]:
        return True, f"the last pass failed ({last_entry[4]}); full until a full pass succeeds"
    row = conn.execute(query(GROUP, "last_full_pass")).fetchone()
    last_full: dt.datetime | None = row[0] if row else None
    if last_full is None:
        return True, "no full pass yet"
    now_row = conn.execute("SELECT now()").fetchone()
    assert now_row is not None
    if now_row[0] - last_full >= dt.timedelta(hours=settings.full_every_hours):
        return True, f"last full pass at {last_full.isoformat()}"
    return False, f"from checkpoint at position {last_cp[0]}"


def _check_checkpoints(conn: psycopg.Connection[Any], head: Head,
                       anchor: dict[str, Any] | None) -> Break | None:
    """The earliest checkpoint (database or file) the chain no longer matches."""
    found: list[Break] = []
    row = conn.execute(query(GROUP, "checkpoint_mismatch")).fetchone()
    if row is not None:
        found.append(_tail_break(head, int(row[0]), bytes(row[1]), row[4], row[5],
                                 f"checkpoint of {row[3].isoformat()}"))
    if anchor is not None and anchor["position"] > 0:
        position, expected = int(anchor["position"]), bytes.fromhex(anchor["row_hash"])
        current = conn.execute(query(GROUP, "row_at"), {"position": position}).fetchone()
        if current is None or bytes(current[2]) != expected:
            found.append(_tail_break(
                head, position, expected, current[0] if current else None,
                current[2] if current else None,
                f"checkpoint file of {anchor.get('verified_at')} (outside the database)"))
    return min(found, key=lambda b: b.position) if found else None


def _tail_break(head: Head, position: int, expected: bytes, current_id: int | None,
                current_hash: bytes | None, source: str) -> Break:
    if position > head.position:
        return Break(head.position + 1, None, "truncated tail",
                     f"{source} verified through position {position} (hash "
                     f"{expected.hex()}) but the chain now ends at position {head.position}")
    now = bytes(current_hash).hex() if current_hash is not None else "no row"
    return Break(position, current_id, "replaced tail",
                 f"{source} recorded hash {expected.hex()} at position {position}, "
                 f"the chain now has {now}")


# -- the seal log ----------------------------------------------------------------------------

def _seal_state(conn: psycopg.Connection[Any], last_cp: tuple[Any, ...] | None,
                anchor: dict[str, Any] | None) -> SealState:
    """Blocks, and the newest seal log entry both anchors (database, file) vouch for.

    A seal is trusted only up to the entry the newest valid checkpoint anchored, and no
    further than the file outside the database says (either alone when the other is gone);
    a log that is broken or no longer matches an anchor is a failed pass, and its seals are
    not used.
    """
    blocks = [Block(int(r[0]), int(r[1]), int(r[2]), str(r[3]),
                    bytes(r[4]) if r[4] is not None else None)
              for r in conn.execute(query(GROUP, "seal_blocks"))]
    # (seq, hash) each anchor vouches for; a file without one vouches for nothing.
    anchored: list[tuple[int, bytes | None]] = []
    if last_cp is not None and last_cp[5] is not None:
        anchored.append((int(last_cp[5]), bytes(last_cp[6])))
    if anchor is not None:
        anchored.append((int(anchor["seal_seq"]), bytes.fromhex(anchor["seal_hash"]))
                        if anchor.get("seal_seq") is not None else (0, None))
    trusted, trusted_hash = min(anchored, key=lambda a: a[0], default=(0, None))
    problems: list[Break] = []
    row = conn.execute(query(GROUP, "seal_log_break")).fetchone()
    if row is not None:
        problems.append(Break(int(row[1]), None, "seal log mismatch",
                              f"seal log entry {row[0]}: {row[2]}"))
        if trusted >= int(row[0]):
            trusted, trusted_hash = int(row[0]) - 1, None
    changed: list[Break] = []  # anchored entries that are gone or differ
    mismatch = conn.execute(query(GROUP, "seal_anchor_mismatch")).fetchone()
    if mismatch is not None:
        changed.append(_seal_anchor_break(int(mismatch[0]), bytes(mismatch[1]), mismatch[3],
                                          mismatch[4],
                                          f"checkpoint of {mismatch[2].isoformat()}"))
    if anchor is not None and anchor.get("seal_seq") is not None:
        seq, expected = int(anchor["seal_seq"]), bytes.fromhex(anchor["seal_hash"])
        current = conn.execute(query(GROUP, "seal_entry"), {"seq": seq}).fetchone()
        if current is None or bytes(current[0]) != expected:
            changed.append(_seal_anchor_break(
                seq, expected, current[0] if current else None, current[1] if current else None,
                f"checkpoint file of {anchor.get('verified_at')} (outside the database)"))
    if changed:
        trusted, trusted_hash = 0, None  # an anchored entry changed: no seal can be relied on
    return SealState(blocks, trusted, trusted_hash, _earliest(*problems, *changed))


def _seal_anchor_break(seq: int, expected: bytes, current_hash: bytes | None,
                       first_position: int | None, source: str) -> Break:
    now = bytes(current_hash).hex() if current_hash is not None else "no entry"
    return Break(int(first_position) if first_position is not None else 1, None,
                 "seal log mismatch", f"{source} anchored seal log entry {seq} with hash "
                 f"{expected.hex()}, the log now has {now}")


def _seal_anchor(conn: psycopg.Connection[Any], seals: SealState, walk: Walk,
                 sealing: bool) -> tuple[int | None, bytes | None]:
    """The seal log entry this valid pass vouches for.

    Every entry after the trusted one must be an 'unseal', a seal this pass wrote, or a seal
    superseded by one this pass wrote; the anchor stops before the first other entry (a seal
    nobody verified: left untrusted, so the next full pass verifies its block row by row).
    Passes that seal nothing carry the trusted anchor forward.
    """
    anchor: tuple[int | None, bytes | None] = (None, None)
    if seals.trusted_seq > 0 and seals.trusted_hash is not None:
        anchor = (seals.trusted_seq, seals.trusted_hash)
    if not sealing:
        return anchor
    mine = set(walk.sealed_seqs)
    entries = conn.execute(query(GROUP, "seal_entries_after"),
                           {"seq": seals.trusted_seq}).fetchall()
    newest_mine: dict[int, int] = {}
    for seq, _kind, first, _hash in entries:
        if seq in mine:
            newest_mine[first] = max(seq, newest_mine.get(first, 0))
    for seq, kind, first, entry_hash in entries:
        if not (kind == "unseal" or seq in mine or newest_mine.get(first, 0) > seq):
            break
        anchor = (int(seq), bytes(entry_hash))
    return anchor


# -- the checkpoint outside the database -----------------------------------------------------

def _read_file_checkpoint(ctx: JobContext, path: Path,
                          identity: dict[str, str | None]) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        int(data["position"])
        bytes.fromhex(data["row_hash"])
        if data.get("seal_seq") is not None:
            int(data["seal_seq"])
            bytes.fromhex(data["seal_hash"])
    except FileNotFoundError:
        ctx.log.info("no audit checkpoint file yet", path=str(path))
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise JobFailed(f"audit checkpoint file {path} is unreadable ({exc}); keep it as "
                        "evidence, then move it away to start a new anchor") from None
    same = all(data.get(k) == v for k, v in identity.items() if v is not None
               and data.get(k) is not None)
    if not same:
        keep = path.with_name(f"audit-checkpoint.{int(time.time())}.json")
        path.rename(keep)
        ctx.log.warning("audit checkpoint file belongs to another database; kept aside",
                        kept_as=str(keep), file_database=data.get("database"),
                        file_system_identifier=data.get("system_identifier"), **identity)
        return None
    return data


def write_file_checkpoint(path: Path, identity: dict[str, str | None], position: int,
                          row_hash: bytes, audit_id: int | None, verified_at: dt.datetime,
                          full: bool, seal_seq: int | None = None,
                          seal_hash: bytes | None = None) -> None:
    data = {**identity, "position": position, "row_hash": row_hash.hex(),
            "audit_id": audit_id, "verified_at": verified_at.isoformat(), "full_pass": full,
            "hash_version": 2, "seal_seq": seal_seq,
            "seal_hash": seal_hash.hex() if seal_hash is not None else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


JOB = AuditVerify
