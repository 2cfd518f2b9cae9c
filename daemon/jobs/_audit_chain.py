"""Walking the audit chain for the audit_verify job: plan, split, verify, join.

Not a job module (the registry only imports names in daemon.settings.JOB_NAMES).

A pass covers positions start..head as a list of segments in chain order:

  * "sealed": a block whose newest seal is trusted (anchored by an earlier pass): one
    sha256 over the block's bytes, compared with the seal (audit_check_sealed_blocks);
  * "seal":   a block to verify row by row and then seal (audit_verify_and_seal): blocks
    after the sealed region, and blocks a GDPR redaction unsealed;
  * "rows":   row-by-row verification only (audit_verify_range in batches): the partial
    block at the head, incremental passes, --rehash and passes with sealing off.

Segments are split over up to `parallel_connections` connections in contiguous ranges; a
range after the first starts from the hash its first row claims (the seal's or the row's
stored prev_hash), and the join between two ranges is checked separately, so the result,
including the first bad row, is the same as one sequential pass.

A sealed block whose bytes differ from its seal sends that range back to row-by-row
verification from the block: a bad row found there is the verdict; when every row's own
hashes are consistent, the block was rewritten with recomputed hashes ('rewritten rows').
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg

from daemon import metrics
from daemon.jobs.base import JobContext
from daemon.settings import AuditVerifySettings
from daemon.sqlfiles import query

GROUP = "audit_verify"
ZERO_HASH = bytes(32)
# Relative cost per row, to balance the connections: re-hashing a sealed block's bytes
# against verifying a row's own two hashes (measured: about 1.6 and 3 microseconds), and
# both plus the block digest when sealing.
WEIGHTS = {"sealed": 1.0, "rows": 2.0, "seal": 3.0}

Conn = psycopg.Connection[Any]


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
    sealed_rows: int = 0  # rows verified row by row and sealed by this walk
    seal_checked_rows: int = 0  # rows verified by comparing their block with its seal
    sealed_seqs: list[int] = field(default_factory=list)
    # The last position of this connection's share: rows a fallback verifies past it are
    # counted in the metrics by the join, not here (the connection owning them counts its
    # own as it goes; counting them here too would count them twice).
    share_last: int | None = None
    counted: int = 0  # rows this walk counted in the metrics


@dataclass(frozen=True)
class Block:
    """A block's newest entry in maintenance.audit_seals."""

    first: int
    last: int
    seq: int
    kind: str
    first_prev_hash: bytes | None


@dataclass(frozen=True)
class Segment:
    first: int
    last: int
    kind: str  # "sealed", "seal" or "rows"

    @property
    def rows(self) -> int:
        return self.last - self.first + 1


def plan(start: int, head: int, blocks: list[Block], trusted_seq: int,
         block_rows: int) -> list[Segment]:
    """Segments covering start..head; block_rows 0 means: no seals (rows only)."""
    if start > head:
        return []
    if block_rows <= 0:
        return [Segment(start, head, "rows")]
    by_first = {b.first: b for b in blocks}
    starts = sorted(by_first)
    segments: list[Segment] = []
    position = start
    while position <= head:
        block = by_first.get(position)
        if block is not None and block.last <= head:
            trusted = block.kind == "seal" and block.seq <= trusted_seq
            segments.append(Segment(position, block.last, "sealed" if trusted else "seal"))
            position = block.last + 1
            continue
        after = bisect.bisect_right(starts, position)
        next_start = starts[after] if after < len(starts) else None
        if block is None:
            limit = min(head, position + block_rows - 1,
                        next_start - 1 if next_start is not None else head)
            fills_gap = next_start is not None and limit == next_start - 1
            if limit - position + 1 == block_rows or fills_gap:
                segments.append(Segment(position, limit, "seal"))
                position = limit + 1
                continue
        end = head if next_start is None else min(head, next_start - 1)
        if segments and segments[-1].kind == "rows":
            segments[-1] = Segment(segments[-1].first, end, "rows")
        else:
            segments.append(Segment(position, end, "rows"))
        position = end + 1
    return segments


def split(segments: list[Segment], workers: int) -> list[list[Segment]]:
    """Contiguous groups of about equal cost; "rows" segments may be cut anywhere."""
    if not segments:
        return []
    if workers <= 1:
        return [segments]
    target = sum(s.rows * WEIGHTS[s.kind] for s in segments) / workers
    groups: list[list[Segment]] = [[]]
    load = 0.0
    queue = deque(segments)
    while queue:
        seg = queue.popleft()
        cost = seg.rows * WEIGHTS[seg.kind]
        if len(groups) == workers or load + cost <= target:
            groups[-1].append(seg)
            load += cost
            continue
        room = target - load
        if seg.kind == "rows":
            take = int(room / WEIGHTS["rows"])
            if take >= 1:
                groups[-1].append(Segment(seg.first, seg.first + take - 1, "rows"))
                seg = Segment(seg.first + take, seg.last, "rows")
            queue.appendleft(seg)
        elif room >= cost / 2 or not groups[-1]:  # an atomic block: where most of it fits
            groups[-1].append(seg)
        else:
            queue.appendleft(seg)
        groups.append([])
        load = 0.0
    return [g for g in groups if g]


def verify(ctx: JobContext, settings: AuditVerifySettings, segments: list[Segment],
           prev: bytes, trusted_seq: int, blocks: list[Block]) -> Walk:
    """Verify the planned segments, on parallel connections when worth it."""
    start = segments[0].first if segments else 1
    total = sum(s.rows for s in segments)
    workers = min(settings.parallel_connections, max(1, total // settings.parallel_min_rows))
    groups = split(segments, workers)
    end = segments[-1].last if segments else 0
    if len(groups) <= 1:
        return _run_group(ctx, settings, segments, prev, trusted_seq, end, True)
    first_prev = {b.first: b.first_prev_hash for b in blocks}
    seeds = [prev]
    with ctx.connection() as conn:
        for group in groups[1:]:
            seg = group[0]
            claimed = first_prev.get(seg.first) if seg.kind == "sealed" else None
            if claimed is None:
                row = conn.execute(query(GROUP, "row_at"), {"position": seg.first}).fetchone()
                if row is None:  # a gap right at the split: one sequential pass names it
                    return _run_group(ctx, settings, segments, prev, trusted_seq, end, True)
                claimed = bytes(row[1])
            seeds.append(claimed)
    with ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="audit-verify") as pool:
        futures = [pool.submit(_run_group, ctx, settings, group, seeds[i], trusted_seq, end,
                               False) for i, group in enumerate(groups)]
        walks = [f.result() for f in futures]
    result = _join(ctx, walks, start)
    # A fallback past its share verified rows whose owner stopped before them (it found
    # the same break): count them once, now that the pass's verdict is known.
    _count(ctx, result, result.rows - sum(w.counted for w in walks))
    return result


def _join(ctx: JobContext, walks: list[Walk], start: int) -> Walk:
    """Combine consecutive range walks into the result of one sequential walk."""
    result = Walk(start=start, start_prev=walks[0].start_prev, last_position=start - 1,
                  last_hash=walks[0].start_prev)
    for index, walk in enumerate(walks):
        result.sealed_seqs.extend(walk.sealed_seqs)
        if index > 0 and walk.start_prev != result.last_hash:
            with ctx.connection() as conn:
                row = conn.execute(query(GROUP, "row_at"), {"position": walk.start}).fetchone()
            result.bad = Break(walk.start, row[0] if row else None, "prev_hash mismatch",
                               f"expected {result.last_hash.hex()}, stored "
                               f"{walk.start_prev.hex()}")
            return result
        result.rows += walk.rows
        result.redacted += walk.redacted
        result.sealed_rows += walk.sealed_rows
        result.seal_checked_rows += walk.seal_checked_rows
        result.last_position, result.last_hash = walk.last_position, walk.last_hash
        if walk.bad is not None or walk.stopped:
            result.bad, result.stopped = walk.bad, walk.stopped
            return result
    return result


def _run_group(ctx: JobContext, settings: AuditVerifySettings, segments: list[Segment],
               prev: bytes, trusted_seq: int, pass_end: int, server_parallel: bool) -> Walk:
    """One connection's contiguous share; pass_end bounds the row-by-row fallback."""
    start = segments[0].first if segments else 1
    walk = Walk(start=start, start_prev=prev, last_position=start - 1, last_hash=prev,
                share_last=segments[-1].last if segments else None)
    with ctx.connection() as conn:
        if not server_parallel:
            # The job's own connections already use the cores: parallel workers under each
            # would only compete with them (measured: slower, see bench/compare_audit.py).
            conn.execute("SET max_parallel_workers_per_gather = 0")
        index = 0
        while index < len(segments) and walk.bad is None and not walk.stopped:
            seg = segments[index]
            if seg.kind == "sealed":
                batch = [seg]
                while (index + len(batch) < len(segments)
                       and segments[index + len(batch)].kind == "sealed"
                       and sum(s.rows for s in batch) < settings.batch_size):
                    batch.append(segments[index + len(batch)])
                index += len(batch)
                _check_sealed(ctx, settings, conn, walk, batch, trusted_seq, pass_end)
            elif seg.kind == "seal":
                index += 1
                _verify_and_seal(ctx, settings, conn, walk, seg)
            else:
                index += 1
                verify_rows(ctx, settings, conn, walk, seg.first, seg.last)
    return walk


def _check_sealed(ctx: JobContext, settings: AuditVerifySettings, conn: Conn, walk: Walk,
                  batch: list[Segment], trusted_seq: int, end: int) -> None:
    if ctx.should_stop():
        walk.stopped = True
        return
    rows = conn.execute(query(GROUP, "check_sealed"), {
        "firsts": [s.first for s in batch], "trusted_seq": trusted_seq}).fetchall()
    for seg, row in zip(batch, rows, strict=True):
        _first, _last, seq, status, first_prev, last_row_hash, _found, redacted = row
        if status == "unsealed":  # a redaction committed since the plan: verify, seal again
            _verify_and_seal(ctx, settings, conn, walk, seg)
            if walk.bad is not None:
                return
            continue
        if status == "match" and bytes(first_prev) == walk.last_hash:
            _count(ctx, walk, seg.rows)
            walk.rows += seg.rows
            walk.seal_checked_rows += seg.rows
            walk.redacted += int(redacted)
            walk.last_position, walk.last_hash = seg.last, bytes(last_row_hash)
            continue
        # The block's bytes changed since it was sealed, or it no longer links: row by row
        # from here names the first bad row; if there is none, the rows were rewritten. It
        # runs to the end of the pass (not of this connection's share), so that the verdict
        # does not depend on where the pass was split.
        verify_rows(ctx, settings, conn, walk, seg.first, end)
        if walk.bad is None and not walk.stopped:
            found = conn.execute(query(GROUP, "row_at"), {"position": seg.first}).fetchone()
            walk.bad = Break(seg.first, found[0] if found else None, "rewritten rows",
                             f"positions {seg.first}..{seg.last} no longer match their seal "
                             f"(seal log entry {seq}) although every row's own hashes are "
                             "consistent: rows were rewritten with recomputed hashes, or "
                             "deleted and appended again")
        return


def _verify_and_seal(ctx: JobContext, settings: AuditVerifySettings, conn: Conn, walk: Walk,
                     seg: Segment) -> None:
    if ctx.should_stop():
        walk.stopped = True
        return
    try:
        row = conn.execute(query(GROUP, "verify_and_seal"), {
            "first": seg.first, "last": seg.last, "prev_hash": walk.last_hash}).fetchone()
    except psycopg.errors.LockNotAvailable:
        # A GDPR redaction holds the seal lock past lock_timeout: verify the rows without
        # sealing them; the next full pass seals the block.
        ctx.log.info("seal lock busy; block verified without sealing", first=seg.first,
                     last=seg.last)
        verify_rows(ctx, settings, conn, walk, seg.first, seg.last)
        return
    assert row is not None
    *verdict, seal_seq = row
    _apply(ctx, conn, walk, seg.first, tuple(verdict))
    if seal_seq is not None:
        walk.sealed_seqs.append(int(seal_seq))
        walk.sealed_rows += seg.rows


def verify_rows(ctx: JobContext, settings: AuditVerifySettings, conn: Conn, walk: Walk,
                start: int, end: int) -> None:
    """Row-by-row verification of start..end in batches, continuing `walk`."""
    position = start
    while position <= end and walk.bad is None:
        if ctx.should_stop():
            walk.stopped = True
            return
        limit = min(settings.batch_size, end - position + 1)
        row = conn.execute(query(GROUP, "verify_range"), {
            "from_position": position, "prev_hash": walk.last_hash, "limit": limit,
        }).fetchone()
        assert row is not None
        _apply(ctx, conn, walk, position, tuple(row))
        position = walk.last_position + 1


def _apply(ctx: JobContext, conn: Conn, walk: Walk, position: int,
           verdict: tuple[Any, ...]) -> None:
    """Fold one audit_verify_range() result for a batch from `position` into the walk."""
    checked, redacted, last_position, last_hash, bad_position, bad_id, reason = verdict
    detail = ""
    if bad_position is not None and reason == "position gap":
        # rows_checked counts the missing positions too: count the rows that exist.
        before = conn.execute(query(GROUP, "last_row_before"), {
            "from_position": position, "before": bad_position}).fetchone()
        last_existing = int(before[0]) if before and before[0] is not None else position - 1
        checked = last_existing - position + 1
        detail = f"positions {last_existing + 1}..{int(bad_position) - 1} are missing"
    own = int(checked)
    if walk.share_last is not None:
        own = max(0, min(own, walk.share_last - position + 1))
    _count(ctx, walk, own)
    walk.rows += int(checked)
    walk.redacted += int(redacted)
    if bad_position is not None:
        walk.bad = Break(int(bad_position), bad_id, str(reason), detail)
        return
    if last_position is None or int(last_position) < position:
        walk.bad = _empty_range(conn, position)
        return
    walk.last_position, walk.last_hash = int(last_position), bytes(last_hash)


def _empty_range(conn: Conn, position: int) -> Break:
    """No row at all in a batch's positions: name the row after the hole."""
    row = conn.execute(query(GROUP, "next_row_from"), {"position": position}).fetchone()
    if row is not None:
        return Break(int(row[0]), int(row[1]), "position gap",
                     f"positions {position}..{int(row[0]) - 1} are missing")
    return Break(position, None, "truncated tail",
                 f"the chain ended before position {position} while it was being verified")


_rows_lock = threading.Lock()


def _count(ctx: JobContext, walk: Walk, rows: int) -> None:
    if rows <= 0:
        return
    walk.counted += rows
    metrics.AUDIT_VERIFIED_ROWS.inc(rows)
    with _rows_lock:
        ctx.add_rows(rows)

