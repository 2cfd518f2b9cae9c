"""The demo data generator without a database: scales, chunking, statement shapes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from daemon import demo_data
from daemon.demo_data_sql import BOOKING_STEPS, CONSENT_STEP, OTHER_STEPS, USER_STEPS, Step


def test_named_scales() -> None:
    assert demo_data.plan("tiny").users < demo_data.plan("small").users
    assert demo_data.plan().users == 200  # "small" is the default
    assert demo_data.plan("small").bulk is False
    assert demo_data.plan("medium").bulk is True
    bench = demo_data.plan("bench")
    assert (bench.users, bench.bookings, bench.behavior_rows) == (
        1_000_000, 5_000_000, 20_000_000)


def test_bench_is_parameterised() -> None:
    got = demo_data.plan("bench", users=5_000, bookings=20_000, behavior_rows=7, bulk=False,
                         chunk=123)
    assert (got.users, got.bookings, got.behavior_rows, got.bulk, got.chunk) == (
        5_000, 20_000, 7, False, 123)


@pytest.mark.parametrize("kwargs", [{"users": 0}, {"bookings": -1}, {"behavior_rows": -5},
                                    {"chunk": 0}])
def test_invalid_numbers(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        demo_data.plan("tiny", **kwargs)


def test_unknown_scale() -> None:
    with pytest.raises(ValueError, match="unknown scale"):
        demo_data.plan("huge")


@pytest.mark.parametrize(("total", "size", "expected"), [
    (0, 10, []),
    (5, 10, [(1, 5)]),
    (10, 5, [(1, 5), (6, 10)]),
    (11, 5, [(1, 5), (6, 10), (11, 11)]),
])
def test_chunks(total: int, size: int, expected: list[tuple[int, int]]) -> None:
    assert list(demo_data.chunks(total, size)) == expected


def test_counts_scale_with_users() -> None:
    small = demo_data.counts(demo_data.plan("small"))
    assert small["users"] == 200 and small["bookings"] == 600
    assert small["messages"] == small["sessions"] * 6
    tiny = demo_data.counts(demo_data.plan("tiny", users=1))
    assert all(v >= 1 for k, v in tiny.items() if k not in ("bookings", "behavior_rows"))


def test_every_table_has_one_step_and_audited_tables_are_known() -> None:
    tables = [s.table for s in [*USER_STEPS, CONSENT_STEP, *BOOKING_STEPS, *OTHER_STEPS]]
    assert len(tables) == len(set(tables))
    assert set(demo_data.AUDITED) <= set(tables)
    assert set(demo_data.PARTITIONED) <= set(tables)


def test_steps_in_bulk_mode_add_the_consent_history() -> None:
    assert CONSENT_STEP not in demo_data.steps(False)
    assert CONSENT_STEP in demo_data.steps(True)
    order = [s.table for s in demo_data.steps(True)]
    # Parents before children (foreign keys are not checked in bulk mode).
    for parent, child in (("users", "bookings"), ("trips", "bookings"),
                          ("bookings", "booking_items"), ("booking_items", "hotel_bookings"),
                          ("chat_sessions", "chat_messages")):
        assert order.index(parent) < order.index(child)


@pytest.mark.parametrize("step", [*USER_STEPS, *BOOKING_STEPS, *OTHER_STEPS],
                         ids=lambda s: s.table)
def test_statement_shapes(step: Step) -> None:
    body = step.body
    assert "RETURNING" not in body
    assert body.lstrip().startswith("INSERT INTO " + step.table)
    placeholders = set(re.findall(r"%\((\w+)\)s", body))
    assert placeholders <= {"seed", "users", "lo", "hi"}
    assert re.search(r"(?<!%)%(?![%(])", body) is None  # every modulo is escaped
    plain = demo_data.statement(step, bulk=False).as_string(None)
    wrapped = demo_data.statement(step, bulk=True).as_string(None)
    if step.table in demo_data.AUDITED:
        assert wrapped.startswith("WITH ins AS (") and "RETURNING *" in wrapped
        assert "demo_audit_stage" in wrapped and "%(secrets)s" in wrapped
        assert f"ins.\"{demo_data.AUDITED[step.table]}\"" in wrapped
    else:
        assert wrapped == plain
    assert plain == body
