"""audit_verify: verify the audit_log hash chain, incrementally or from the first row.

An incremental run starts at the newest valid checkpoint (maintenance.audit_checkpoints)
and verifies only the rows after it; a full run (every `full_every_hours`, with
`run-job audit_verify --full`, and after any failed pass) starts at position 1 with the
32 zero bytes. Both first compare the chain with every checkpoint ever recorded and with
the one kept outside the database in `<state_dir>/audit-checkpoint.json`: a checkpoint
beyond the current head is a 'truncated tail', a checkpoint whose row is gone or carries
another hash a 'replaced tail'. Rows are verified by the schema's audit_verify_range() in
batches of `batch_size` positions, on up to `parallel_connections` connections verifying
disjoint position ranges; a range after the first starts from its first row's stored
prev_hash, and the join between two ranges is checked separately (that prev_hash must equal
the previous range's last row_hash), so the result is the same as one sequential pass.

A broken chain records a failed pass, sets gth_maint_audit_chain_valid to 0 and raises
JobFailed naming the first bad row. Every run logs the chain head (position, id, hash)
so log archives anchor the chain outside the database too.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from daemon import metrics
from daemon.errors import JobFailed
from daemon.jobs._util import job_settings
from daemon.jobs.base import Job, JobContext, JobOption, JobResult
from daemon.settings import AuditVerifySettings
from daemon.sqlfiles import query

GROUP = "audit_verify"
ZERO_HASH = bytes(32)
CHECKPOINT_FILE = "audit-checkpoint.json"


@dataclass(frozen=True)
class Head:
    position: int
    audit_id: int | None
    row_hash: bytes


@dataclass(frozen=True)
class Break:
    position: int
    audit_id: int | None
    reason: str
    detail: str = ""

    def describe(self) -> str:
        row = f"position {self.position}"
        if self.audit_id is not None:
            row += f" (audit_log id {self.audit_id})"
        return f"{self.reason} at {row}" + (f": {self.detail}" if self.detail else "")


@dataclass
class Walk:
    """The outcome of verifying positions [start, end] given the hash before start."""

    start: int
    start_prev: bytes
    rows: int = 0
    redacted: int = 0
    last_position: int = 0
    last_hash: bytes = ZERO_HASH
    bad: Break | None = None
    stopped: bool = False


class AuditVerify(Job):
    name = "audit_verify"
    supports_dry_run = False
    options = (JobOption("--full", "verify the whole chain from its first row, not only the "
                                   "rows after the last checkpoint"),)

    def run(self, ctx: JobContext) -> JobResult:
        settings = job_settings(ctx, AuditVerifySettings)
        started = time.monotonic()
        file_path = ctx.state_dir / CHECKPOINT_FILE
        with ctx.connection() as conn:
            head = _head(conn)
            ctx.log.info("audit chain head", head_position=head.position, head_id=head.audit_id,
                         head_hash=head.row_hash.hex())
            identity = database_identity(conn)
            last_cp = conn.execute(query(GROUP, "last_checkpoint")).fetchone()
            last_entry = conn.execute(query(GROUP, "last_entry")).fetchone()
            full, why = _choose_mode(conn, settings, bool(ctx.options.get("full")), last_cp,
                                     last_entry)
            anchor = _read_file_checkpoint(ctx, file_path, identity)
            tail_break = _check_checkpoints(conn, head, anchor)

        if full:
            start, prev = 1, ZERO_HASH
        else:
            assert last_cp is not None
            start, prev = int(last_cp[0]) + 1, bytes(last_cp[1] or ZERO_HASH)
        ctx.log.info("audit verification starting", mode="full" if full else "incremental",
                     why=why, from_position=start, to_position=head.position)

        bad: Break | None = tail_break
        walk = Walk(start=start, start_prev=prev, last_position=start - 1, last_hash=prev)
        if full or tail_break is None:
            walk = _verify(ctx, settings, start, prev, head.position)
            if walk.bad is not None and (bad is None or walk.bad.position <= bad.position):
                bad = walk.bad
        duration_ms = int((time.monotonic() - started) * 1000)
        details: dict[str, Any] = {
            "mode": "full" if full else "incremental", "why": why, "from_position": start,
            "head_position": head.position, "head_id": head.audit_id,
            "head_hash": head.row_hash.hex(), "rows_verified": walk.rows,
            "redacted_rows": walk.redacted, "duration_ms": duration_ms,
        }
        if walk.stopped and bad is None:
            ctx.log.warning("audit verification stopped before the head; no checkpoint written",
                            verified_through=walk.last_position, rows=walk.rows)
            details["stopped_early"] = True
            return JobResult(details=details)

        valid = bad is None
        with ctx.connection() as conn, conn.transaction():
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
            raise JobFailed(f"audit chain broken: {bad.describe()}")
        metrics.AUDIT_HEAD_ID.set(walk.last_position)
        write_file_checkpoint(file_path, identity, walk.last_position, walk.last_hash,
                               head.audit_id, row[1], full)
        ctx.log.info("audit chain verified", mode=details["mode"], rows=walk.rows,
                     redacted=walk.redacted, verified_through=walk.last_position,
                     head_id=head.audit_id, head_hash=walk.last_hash.hex(),
                     duration_ms=duration_ms)
        return JobResult(details=details)


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


# -- the checkpoint outside the database -----------------------------------------------------

def _read_file_checkpoint(ctx: JobContext, path: Path,
                          identity: dict[str, str | None]) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        int(data["position"])
        bytes.fromhex(data["row_hash"])
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
                           full: bool) -> None:
    data = {**identity, "position": position, "row_hash": row_hash.hex(),
            "audit_id": audit_id, "verified_at": verified_at.isoformat(), "full_pass": full,
            "hash_version": 2}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# -- walking the chain ------------------------------------------------------------------------

def _verify(ctx: JobContext, settings: AuditVerifySettings, start: int, prev: bytes,
            end: int) -> Walk:
    """Verify positions start..end, split over parallel connections when worth it."""
    total = end - start + 1
    workers = min(settings.parallel_connections, max(1, total // settings.parallel_min_rows))
    if total <= 0 or workers <= 1:
        return _walk(ctx, settings, start, prev, end)
    bounds = [start + total * i // workers for i in range(workers)] + [end + 1]
    with ctx.connection() as conn:
        seeds = [prev]
        for first in bounds[1:-1]:
            row = conn.execute(query(GROUP, "row_at"), {"position": first}).fetchone()
            if row is None:  # a gap right at the split: one sequential pass names it exactly
                return _walk(ctx, settings, start, prev, end)
            seeds.append(bytes(row[1]))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="audit-verify") as pool:
        futures = [pool.submit(_walk, ctx, settings, bounds[i], seeds[i], bounds[i + 1] - 1,
                               False) for i in range(workers)]
        walks = [f.result() for f in futures]
    return _join(ctx, walks)


def _join(ctx: JobContext, walks: list[Walk]) -> Walk:
    """Combine consecutive range walks into the result of one sequential walk."""
    result = Walk(start=walks[0].start, start_prev=walks[0].start_prev,
                  last_position=walks[0].start - 1, last_hash=walks[0].start_prev)
    for index, walk in enumerate(walks):
        if index > 0 and walk.start_prev != result.last_hash:
            with ctx.connection() as conn:
                row = conn.execute(query(GROUP, "row_at"), {"position": walk.start}).fetchone()
            result.bad = Break(walk.start, row[0] if row else None, "prev_hash mismatch",
                               f"expected {result.last_hash.hex()}, stored "
                               f"{walk.start_prev.hex()}")
            return result
        result.rows += walk.rows
        result.redacted += walk.redacted
        result.last_position, result.last_hash = walk.last_position, walk.last_hash
        if walk.bad is not None or walk.stopped:
            result.bad, result.stopped = walk.bad, walk.stopped
            return result
    return result


_rows_lock = threading.Lock()


def _walk(ctx: JobContext, settings: AuditVerifySettings, start: int, prev: bytes,
          end: int, server_parallel: bool = True) -> Walk:
    walk = Walk(start=start, start_prev=prev, last_position=start - 1, last_hash=prev)
    position = start
    with ctx.connection() as conn:
        if not server_parallel:
            # The job's own connections already use the cores: parallel workers under each
            # would only compete with them (measured: slower, see bench/compare_audit.py).
            conn.execute("SET max_parallel_workers_per_gather = 0")
        while position <= end:
            if ctx.should_stop():
                walk.stopped = True
                break
            limit = min(settings.batch_size, end - position + 1)
            row = conn.execute(query(GROUP, "verify_range"), {
                "from_position": position, "prev_hash": walk.last_hash, "limit": limit,
            }).fetchone()
            assert row is not None
            checked, redacted, last_position, last_hash, bad_position, bad_id, reason = row
            detail = ""
            if bad_position is not None and reason == "position gap":
                # rows_checked counts the missing positions too: count the rows that exist.
                before = conn.execute(query(GROUP, "last_row_before"), {
                    "from_position": position, "before": bad_position}).fetchone()
                last_existing = int(before[0]) if before and before[0] is not None \
                    else position - 1
                checked = last_existing - position + 1
                detail = f"positions {last_existing + 1}..{int(bad_position) - 1} are missing"
            _count(ctx, int(checked))
            walk.rows += int(checked)
            walk.redacted += int(redacted)
            if bad_position is not None:
                walk.bad = Break(int(bad_position), bad_id, str(reason), detail)
                break
            if last_position is None or int(last_position) < position:
                walk.bad = _empty_range(conn, position, end)
                break
            walk.last_position, walk.last_hash = int(last_position), bytes(last_hash)
            position = walk.last_position + 1
    return walk


def _empty_range(conn: psycopg.Connection[Any], position: int, end: int) -> Break:
    """No row at all in a batch's positions: name the row after the hole."""
    row = conn.execute(query(GROUP, "next_row_from"), {"position": position}).fetchone()
    if row is not None and int(row[0]) <= end:
        return Break(int(row[0]), int(row[1]), "position gap",
                     f"positions {position}..{int(row[0]) - 1} are missing")
    return Break(position, None, "truncated tail",
                 f"positions {position}..{end} vanished while they were being verified")


def _count(ctx: JobContext, rows: int) -> None:
    if rows <= 0:
        return
    metrics.AUDIT_VERIFIED_ROWS.inc(rows)
    with _rows_lock:
        ctx.add_rows(rows)


JOB = AuditVerify
