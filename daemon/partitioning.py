"""Monthly partition bookkeeping for the partitions job: what exists, what to create, what
retention removes. Pure planning on top of one catalog snapshot (TableState); the job
(daemon/jobs/partitions.py) does the DDL.

Months are UTC calendar months, represented by their first day (a date). A month is covered
when any non-default partition overlaps it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import psycopg

from daemon.sqlfiles import query


def month_of(moment: datetime | date) -> date:
    if isinstance(moment, datetime):
        moment = moment.astimezone(UTC) if moment.tzinfo else moment
    return date(moment.year, moment.month, 1)


def add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def month_start(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=UTC)


def current_month(now: datetime | None = None) -> date:
    return month_of(now or datetime.now(UTC))


@dataclass(frozen=True)
class Partition:
    regclass: str
    schema: str
    relname: str
    is_default: bool
    range_from: datetime | None
    range_to: datetime | None

    def overlaps(self, month: date) -> bool:
        if self.is_default:
            return False
        lo, hi = month_start(month), month_start(add_months(month, 1))
        return (self.range_from is None or self.range_from < hi) and (
            self.range_to is None or self.range_to > lo
        )


@dataclass
class TableState:
    name: str  # as configured
    regclass: str  # as the server prints it (quoted when needed)
    schema: str
    relname: str
    key_column: str
    partitions: list[Partition]
    default_months: dict[date | None, int] = field(default_factory=dict)
    staged: list[date] = field(default_factory=list)  # unattached drain staging tables

    @property
    def default(self) -> Partition | None:
        return next((p for p in self.partitions if p.is_default), None)

    @property
    def regular(self) -> list[Partition]:
        return [p for p in self.partitions if not p.is_default]

    @property
    def default_rows(self) -> int:
        return sum(self.default_months.values())

    def covered(self, month: date) -> bool:
        return any(p.overlaps(month) for p in self.regular)

    def months_ahead(self, now_month: date) -> int:
        """Whole months after `now_month` covered contiguously from it; -1 if it is not."""
        if not self.covered(now_month):
            return -1
        ahead = 0
        while ahead < 1200 and self.covered(add_months(now_month, ahead + 1)):
            ahead += 1
        return ahead


class NotPartitioned(Exception):
    """The configured table is missing or not range-partitioned on one timestamptz column."""


def inspect(conn: psycopg.Connection[Any], name: str) -> TableState:
    row = conn.execute(query("partitions", "describe_parent"), {"name": name}).fetchone()
    if row is None:
        raise NotPartitioned(f"table {name!r} does not exist")
    regclass, schema, relname, relkind, key = row
    if relkind != "p" or key is None:
        raise NotPartitioned(
            f"{regclass} is not range-partitioned on one timestamptz column (relkind {relkind})"
        )
    parts = [
        Partition(r[0], r[1], r[2], bool(r[3]), r[4], r[5])
        for r in conn.execute(query("partitions", "partitions"), {"parent": regclass})
    ]
    state = TableState(name, regclass, schema, relname, key, parts)
    for month, count in conn.execute(query("partitions", "default_months"), {"parent": regclass}):
        state.default_months[month] = int(count)
    staged = conn.execute(query("partitions", "staged"),
                          {"schema": schema, "prefix": relname + "_p%"}).fetchall()
    for (staged_name,) in staged:
        suffix = staged_name[len(relname) + 2:]
        try:
            year, mon = suffix.split("_")
            state.staged.append(date(int(year), int(mon), 1))
        except ValueError:
            continue
    return state


@dataclass
class CreationPlan:
    create: list[date] = field(default_factory=list)  # via create_month_partition
    drain: list[date] = field(default_factory=list)  # via partition_drain_step (default rows)
    capped: list[date] = field(default_factory=list)  # wanted, over the per-run cap
    blocked: list[date] = field(default_factory=list)  # window months with rows in default
    expired_in_default: list[date] = field(default_factory=list)  # left in default (retention)
    undrainable_rows: int = 0  # non-finite keys: no month can take them

    @property
    def new_partitions(self) -> list[date]:
        return sorted([*self.create, *self.drain])


def plan_creation(
    state: TableState, now_month: date, months_ahead: int, cap: int, drain: bool,
    retention_months: int | None,
) -> CreationPlan:
    """What this run creates for one table, in priority order, at most `cap` partitions.

    The window is anchored at the current UTC month (current .. current + months_ahead),
    never at the data: a row dated 2999 lands in the default partition and is only counted
    and exported; it never makes the window grow. With --drain-default each month that has
    rows in the default partition also needs its partition (one per distinct month). The
    cap bounds the partitions one run creates for one table, window months first (oldest
    first: the current month is the most urgent), then drained months oldest first; the
    rest is logged as capped and left for the next run. A drain interrupted earlier
    (staging table left) resumes first and is not counted against the cap (the table
    exists already).
    """
    plan = CreationPlan()
    window = [add_months(now_month, i) for i in range(months_ahead + 1)]
    expiry = add_months(now_month, -retention_months) if retention_months else None
    wanted: list[tuple[date, bool]] = []  # (month, has rows in default)
    for month in window:
        if state.covered(month) or month in state.staged:
            continue
        in_default = state.default_months.get(month, 0) > 0
        if in_default and not drain:
            plan.blocked.append(month)
            continue
        wanted.append((month, in_default))
    plan.undrainable_rows = state.default_months.get(None, 0)
    if drain:
        for month in sorted(m for m in state.default_months if m is not None):
            if month in window or state.covered(month) or month in state.staged:
                continue
            if expiry is not None and add_months(month, 1) <= expiry:
                plan.expired_in_default.append(month)
                continue
            wanted.append((month, True))
    plan.drain.extend(sorted(state.staged))
    for month, in_default in wanted:
        if len(plan.create) + len([m for m in plan.drain if m not in state.staged]) >= cap:
            plan.capped.append(month)
        elif in_default:
            plan.drain.append(month)
        else:
            plan.create.append(month)
    return plan


def plan_retention(
    state: TableState, now_month: date, retention_months: int | None
) -> list[Partition]:
    """Partitions wholly older than the retention, oldest first.

    A partition expires when its upper bound is at or before the first day of
    (current month - retention_months): with 12 months kept and June 2025 current, May 2024
    and older go and June 2024 .. June 2025 stay. Never the default partition, never one
    without an upper bound or reaching into the current month (the cutoff is before it), and
    never the last remaining non-default partition (the newest expired one is kept then).
    """
    if not retention_months:
        return []
    cutoff = month_start(add_months(now_month, -retention_months))
    regular = state.regular
    expired = sorted(
        (p for p in regular if p.range_to is not None and p.range_to <= cutoff),
        key=lambda p: p.range_to or cutoff,
    )
    if expired and len(expired) >= len(regular):
        expired = expired[:-1]
    return expired


def month_label(month: date | None) -> str:
    return month.strftime("%Y-%m") if month else "non-finite"
