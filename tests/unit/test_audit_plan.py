"""How audit_verify plans a pass over sealed blocks and splits it over connections."""

from __future__ import annotations

from itertools import pairwise

import pytest

from daemon.jobs._audit_chain import Block, Segment, plan, split

ZERO = bytes(32)


def _block(first: int, last: int, seq: int, kind: str = "seal") -> Block:
    return Block(first, last, seq, kind, ZERO if kind == "seal" else None)


def _kinds(segments: list[Segment]) -> list[tuple[int, int, str]]:
    return [(s.first, s.last, s.kind) for s in segments]


def test_no_seals_yet_blocks_are_sealed_and_the_partial_rest_is_rows() -> None:
    assert _kinds(plan(1, 10, [], 0, 4)) == [(1, 4, "seal"), (5, 8, "seal"), (9, 10, "rows")]


def test_sealing_off_or_incremental_is_one_rows_segment() -> None:
    blocks = [_block(1, 4, 1)]
    assert _kinds(plan(1, 10, blocks, 1, 0)) == [(1, 10, "rows")]
    assert _kinds(plan(11, 10, blocks, 1, 4)) == []


def test_only_anchored_seals_are_trusted() -> None:
    blocks = [_block(1, 4, 1), _block(5, 8, 2), _block(9, 12, 3, "unseal")]
    assert _kinds(plan(1, 14, blocks, 1, 4)) == [
        (1, 4, "sealed"),  # seq 1 <= trusted 1
        (5, 8, "seal"),    # seq 2 not anchored yet: verify the rows, seal again
        (9, 12, "seal"),   # unsealed by a redaction
        (13, 14, "rows"),
    ]


def test_a_gap_between_sealed_blocks_is_filled_with_its_own_bounds() -> None:
    # A pass that stopped half-way sealed 1-4 and 9-12 (two connections), not 5-8.
    blocks = [_block(1, 4, 1), _block(9, 12, 2)]
    assert _kinds(plan(1, 12, blocks, 2, 4)) == [(1, 4, "sealed"), (5, 8, "seal"),
                                                 (9, 12, "sealed")]
    # Blocks sealed with another size: the gap is still filled exactly.
    assert _kinds(plan(1, 12, [_block(1, 4, 1), _block(11, 12, 2)], 2, 4)) == [
        (1, 4, "sealed"), (5, 8, "seal"), (9, 10, "seal"), (11, 12, "sealed")]


def test_a_sealed_block_beyond_the_head_is_verified_row_by_row() -> None:
    """The chain now ends inside a sealed block (truncated): rows up to the head."""
    blocks = [_block(1, 4, 1), _block(5, 8, 2)]
    assert _kinds(plan(1, 6, blocks, 2, 4)) == [(1, 4, "sealed"), (5, 6, "rows")]


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_split_covers_every_position_once_in_order(workers: int) -> None:
    segments = plan(1, 103, [_block(f, f + 9, f) for f in range(1, 61, 10)], 1000, 10)
    groups = split(segments, workers)
    assert 1 <= len(groups) <= workers
    flat = [s for g in groups for s in g]
    assert flat[0].first == 1 and flat[-1].last == 103
    assert all(a.last + 1 == b.first for a, b in pairwise(flat))
    sealed = [s for s in flat if s.kind != "rows"]
    assert all(s.rows == 10 for s in sealed)  # blocks are never cut


def test_split_balances_by_cost_and_cuts_only_rows() -> None:
    # One long rows segment (an incremental pass) is cut in the middle.
    assert _kinds([g[0] for g in split([Segment(1, 100, "rows")], 2)]) == [
        (1, 50, "rows"), (51, 100, "rows")]
    # Sealed blocks (cheap) and blocks to seal (dear): the dear ones are spread out.
    segments = [Segment(1, 10, "sealed"), Segment(11, 20, "sealed"),
                Segment(21, 30, "seal"), Segment(31, 40, "seal")]
    groups = split(segments, 2)
    assert [[s.first for s in g] for g in groups] == [[1, 11, 21], [31]]
