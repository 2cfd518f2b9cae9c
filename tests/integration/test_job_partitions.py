"""partitions: missing months created (catching up after downtime), a far-future row does not
explode the count, retention detaches only expired months, default-partition rows are
reported, exported and drained, and the job's DDL never makes inserts wait behind a long
analytics query."""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from daemon import metrics
from daemon.errors import JobFailed
from daemon.jobs.partitions import JOB
from daemon.partitioning import (
    Partition,
    TableState,
    add_months,
    current_month,
    month_start,
    plan_creation,
    plan_retention,
)
from daemon.settings import PartitionedTable

NOW = current_month()
ALL = ("chat_messages", "analytics_events", "user_behavior_log")


def _months(conn: psycopg.Connection[Any], table: str) -> list[date]:
    rows = conn.execute("SELECT range_from FROM partition_bounds(%s) WHERE NOT is_default"
                        " ORDER BY range_from", (table,)).fetchall()
    return [date(r[0].astimezone(UTC).year, r[0].astimezone(UTC).month, 1) for r in rows]


def _drop_month(conn: psycopg.Connection[Any], table: str, month: date) -> None:
    conn.execute("SELECT detach_month_partition(%s, %s, true)", (table, month))


def _add_month(conn: psycopg.Connection[Any], table: str, month: date) -> None:
    conn.execute("SELECT create_month_partition(%s, %s)", (table, month))


def _count(conn: psycopg.Connection[Any], schema: str, table: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))
    return int(row.fetchone()[0])  # type: ignore[index]


def _gauge(metric: Any, table: str) -> float:
    return float(metric.labels(table=table)._value.get())


def _tables(**retention: int | None) -> dict[str, PartitionedTable]:
    return {name: PartitionedTable(retention_months=months) for name, months in retention.items()}


def _event(conn: psycopg.Connection[Any], at: datetime | str, n: int = 1) -> None:
    conn.execute("INSERT INTO analytics_events (occurred_at, event_type, platform)"
                 " SELECT %s, 'page.view', 'web' FROM generate_series(1, %s)", (at, n))


# -- creation ---------------------------------------------------------------------------


def test_missing_months_are_created_after_downtime(
    conn: psycopg.Connection[Any], job_ctx: Callable[..., Any]
) -> None:
    # As if the daemon had been down for months: only old partitions are left.
    for offset in range(4):
        _drop_month(conn, "chat_messages", add_months(NOW, offset))
    _add_month(conn, "chat_messages", add_months(NOW, -5))
    assert _months(conn, "chat_messages") == [add_months(NOW, -5)]

    ctx = job_ctx("partitions", months_ahead=5)
    result = JOB().run(ctx)

    window = [add_months(NOW, i) for i in range(6)]
    assert _months(conn, "chat_messages") == [add_months(NOW, -5), *window]
    for table in ALL:
        assert window[-1] in _months(conn, table)
        assert _gauge(metrics.PARTITION_MONTHS_AHEAD, table) == 5
    created = result.details["tables"]["chat_messages"]["created"]
    assert created == [f"chat_messages_p{m:%Y_%m}" for m in window]
    assert ctx.rows == 6 + 2 + 2  # chat_messages: 6; the others had 4 premade, need 2 more

    again = JOB().run(job_ctx("partitions", months_ahead=5))
    assert all(t["created"] == [] for t in again.details["tables"].values())


def test_creation_is_capped_per_table_and_run(
    conn: psycopg.Connection[Any], job_ctx: Callable[..., Any]
) -> None:
    for offset in range(4):
        _drop_month(conn, "user_behavior_log", add_months(NOW, offset))
    ctx = job_ctx("partitions", months_ahead=6, max_new_partitions_per_table=2,
                  tables=_tables(user_behavior_log=12))
    result = JOB().run(ctx)
    entry = result.details["tables"]["user_behavior_log"]
    assert _months(conn, "user_behavior_log") == [NOW, add_months(NOW, 1)]  # oldest first
    assert entry["capped"] == [f"{add_months(NOW, i):%Y-%m}" for i in range(2, 7)]
    assert entry["months_ahead"] == 1


def test_a_far_future_row_does_not_explode_the_count(
    conn: psycopg.Connection[Any], job_ctx: Callable[..., Any]
) -> None:
    _event(conn, "2999-01-15 12:00:00+00")
    before = _months(conn, "analytics_events")
    result = JOB().run(job_ctx("partitions", tables=_tables(analytics_events=24)))
    entry = result.details["tables"]["analytics_events"]
    assert entry["created"] == []
    assert _months(conn, "analytics_events") == before  # the window is anchored at today
    assert entry["months_ahead"] == 3
    assert entry["default_rows"] == 1
    assert _gauge(metrics.PARTITION_DEFAULT_ROWS, "analytics_events") == 1

    # Draining creates one partition per distinct month, within the same cap.
    for year in range(2990, 2999):
        _event(conn, f"{year}-06-01 00:00:00+00")
    drained = JOB().run(job_ctx("partitions", tables=_tables(analytics_events=24),
                                max_new_partitions_per_table=4,
                                options={"drain_default": True}))
    entry = drained.details["tables"]["analytics_events"]
    assert len(_months(conn, "analytics_events")) == len(before) + 4
    assert len(entry["capped"]) == 6
    assert entry["default_rows"] == 6


# -- default partition: report, export, drain ------------------------------------------


def test_default_rows_are_reported_exported_and_drained(
    conn: psycopg.Connection[Any], job_ctx: Callable[..., Any]
) -> None:
    past, future = add_months(NOW, -2), add_months(NOW, 6)
    _event(conn, month_start(past).replace(day=3), 7)
    _event(conn, month_start(future).replace(day=9), 3)
    tables = _tables(analytics_events=24)

    ctx = job_ctx("partitions", tables=tables)
    report = JOB().run(ctx).details["tables"]["analytics_events"]
    assert report["default_rows"] == 10
    assert report["default_rows_by_month"] == {f"{past:%Y-%m}": 7, f"{future:%Y-%m}": 3}
    assert _gauge(metrics.PARTITION_DEFAULT_ROWS, "analytics_events") == 10
    export = ctx.state_dir / "default-partition-exports" / "public.analytics_events.default.csv"
    assert report["export"] == str(export)
    assert export.stat().st_mode & 0o777 == 0o600
    with export.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10 and rows[0]["event_type"] == "page.view"
    assert conn.execute("SELECT count(*) FROM analytics_events_default").fetchone() == (10,)

    drain = job_ctx("partitions", tables=tables, drain_batch_size=3,
                    options={"drain_default": True})
    entry = JOB().run(drain).details["tables"]["analytics_events"]
    assert entry["drained_rows"] == {f"{past:%Y-%m}": 7, f"{future:%Y-%m}": 3}
    assert entry["default_rows"] == 0
    assert drain.rows == 10 + 2  # rows moved + partitions created
    where = dict(conn.execute(
        "SELECT tableoid::regclass::text, count(*) FROM analytics_events GROUP BY 1").fetchall())
    assert where == {f"analytics_events_p{past:%Y_%m}": 7,
                     f"analytics_events_p{future:%Y_%m}": 3}
    assert not export.exists()  # the export always mirrors the default partition
    assert _gauge(metrics.PARTITION_DEFAULT_ROWS, "analytics_events") == 0
    # the drained month is an ordinary partition now (bounds constraint dropped, attached)
    assert add_months(NOW, -2) in _months(conn, "analytics_events")


def test_rows_in_default_block_their_window_month_until_drained(
    conn: psycopg.Connection[Any], job_ctx: Callable[..., Any]
) -> None:
    month = add_months(NOW, 3)
    _drop_month(conn, "analytics_events", month)
    _event(conn, month_start(month).replace(day=2), 2)
    tables = _tables(analytics_events=24, user_behavior_log=12)
    with pytest.raises(JobFailed, match="drain-default"):
        JOB().run(job_ctx("partitions", tables=tables, months_ahead=4))
    # the blocked month did not stop the later month nor the other table
    assert add_months(NOW, 4) in _months(conn, "analytics_events")
    assert add_months(NOW, 4) in _months(conn, "user_behavior_log")
    assert month not in _months(conn, "analytics_events")

    result = JOB().run(job_ctx("partitions", tables=tables, months_ahead=4,
                               options={"drain_default": True}))
    assert result.details["tables"]["analytics_events"]["months_ahead"] == 4
    assert _count(conn, "public", f"analytics_events_p{month:%Y_%m}") == 2


# -- retention --------------------------------------------------------------------------


def test_retention_detaches_only_expired_months_dry_run_first(
    conn: psycopg.Connection[Any], job_ctx: Callable[..., Any]
) -> None:
    old = [add_months(NOW, -i) for i in (14, 13, 12, 11)]
    for month in old:
        _add_month(conn, "user_behavior_log", month)
    _add_month(conn, "analytics_events", add_months(NOW, -25))
    _event(conn, month_start(add_months(NOW, -25)))
    user = conn.execute("INSERT INTO users (email) VALUES ('r@example.com') RETURNING id")
    user_id = user.fetchone()[0]  # type: ignore[index]
    for month in old:
        conn.execute("INSERT INTO user_behavior_log (\"timestamp\", user_id, action_type)"
                     " VALUES (%s, %s, 'search')", (month_start(month), user_id))

    expired = [f"user_behavior_log_p{m:%Y_%m}" for m in old[:2]]
    _drop_month(conn, "user_behavior_log", add_months(NOW, 3))
    dry = JOB().run(job_ctx("partitions", dry_run=True, tables=_tables(user_behavior_log=12)))
    assert dry.details["tables"]["user_behavior_log"]["would_create"] == [
        f"{add_months(NOW, 3):%Y-%m}"]
    assert dry.details["tables"]["user_behavior_log"]["would_retire"] == expired
    assert _months(conn, "user_behavior_log") == [*old, *(add_months(NOW, i) for i in (0, 1, 2))]

    ctx = job_ctx("partitions", retention_action="archive",
                  tables=_tables(user_behavior_log=12, analytics_events=None))
    result = JOB().run(ctx)
    assert result.details["tables"]["user_behavior_log"]["retired"] == {
        name: f"archive.{name}" for name in expired}
    assert _months(conn, "user_behavior_log")[:2] == old[2:]
    for name in expired:  # moved with their rows, no longer attached
        assert _count(conn, "archive", name) == 1
    assert conn.execute("SELECT count(*) FROM user_behavior_log").fetchone() == (2,)
    # retention None keeps everything
    assert add_months(NOW, -25) in _months(conn, "analytics_events")

    dropped = JOB().run(job_ctx("partitions", retention_action="drop",
                                tables=_tables(analytics_events=24)))
    name = f"analytics_events_p{add_months(NOW, -25):%Y_%m}"
    assert dropped.details["tables"]["analytics_events"]["retired"] == {name: "dropped"}
    assert conn.execute("SELECT to_regclass(%s)", (name,)).fetchone() == (None,)


def test_one_bad_table_does_not_stop_the_others(
    conn: psycopg.Connection[Any], job_ctx: Callable[..., Any]
) -> None:
    _drop_month(conn, "chat_messages", add_months(NOW, 3))
    conn.execute("CREATE TABLE not_partitioned (id int)")
    tables = _tables(no_such_table=None, not_partitioned=None, chat_messages=None)
    with pytest.raises(JobFailed, match=r"no_such_table.*not_partitioned") as failed:
        JOB().run(job_ctx("partitions", tables=tables))
    assert add_months(NOW, 3) in _months(conn, "chat_messages")
    # What did and did not work travels with the failure, into the run history.
    assert {k.split()[0] for k in failed.value.details["failed"]} == {"no_such_table",
                                                                      "not_partitioned"}
    assert "chat_messages" in failed.value.details["tables"]


def test_sql_guards_refuse_current_default_and_last_partitions(
    conn: psycopg.Connection[Any],
) -> None:
    refuse = psycopg.errors.InvalidParameterValue
    with pytest.raises(refuse, match="current month"):
        conn.execute("SELECT retire_partition('chat_messages', %s, 'drop')",
                     (f"chat_messages_p{NOW:%Y_%m}",))
    with pytest.raises(refuse, match="default"):
        conn.execute("SELECT retire_partition('chat_messages', 'chat_messages_default', 'drop')")
    conn.execute("""
        CREATE TABLE one_part (ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
        CREATE TABLE one_part_old PARTITION OF one_part
            FOR VALUES FROM ('2001-01-01 00:00+00') TO ('2001-02-01 00:00+00');
    """)
    with pytest.raises(refuse, match="last partition"):
        conn.execute("SELECT retire_partition('one_part', 'one_part_old', 'drop')")


# -- locking: inserts never wait behind the job's DDL -----------------------------------


def test_inserts_do_not_wait_for_ddl_behind_a_long_analytics_query(
    conn: psycopg.Connection[Any], db_url: str, job_ctx: Callable[..., Any]
) -> None:
    """A 3 s analytics query holds ACCESS SHARE on two parents and all their partitions.
    Meanwhile the job must create two months of user_behavior_log (ATTACH needs the default
    partition exclusively) and retire an expired month of analytics_events (DETACH needs the
    parent exclusively; two runs in parallel so both kinds of DDL meet the query). With
    lock_timeout + jittered retries the DDL waits for the query; a stream of inserts into
    both tables must not. A blocking check, not a speed threshold: a blocked insert would
    wait about 3 s (the benchmark shows CREATE TABLE ... PARTITION OF doing exactly that)."""
    for offset in (2, 3):
        _drop_month(conn, "user_behavior_log", add_months(NOW, offset))
    _add_month(conn, "analytics_events", add_months(NOW, -30))
    user_id = conn.execute("INSERT INTO users (email) VALUES ('l@example.com') RETURNING id") \
        .fetchone()[0]  # type: ignore[index]
    conn.execute("INSERT INTO user_behavior_log (user_id, action_type) VALUES (%s, 'seed')",
                 (user_id,))
    _event(conn, datetime.now(UTC))

    holding = threading.Event()
    analytics_pid: list[int] = []

    def analytics() -> None:
        with psycopg.connect(db_url) as aconn:  # one transaction until commit
            analytics_pid.append(aconn.info.backend_pid)
            aconn.execute("SELECT (SELECT count(*) FROM user_behavior_log),"
                          " (SELECT count(*) FROM analytics_events)").fetchone()
            holding.set()
            aconn.execute("SELECT pg_sleep(3)")
            aconn.commit()

    latencies: list[float] = []
    stop = threading.Event()

    def inserts() -> None:
        with psycopg.connect(db_url, autocommit=True) as iconn:
            while not stop.is_set():
                for statement in (
                    "INSERT INTO user_behavior_log (user_id, action_type) VALUES (%s, 'click')",
                    "INSERT INTO analytics_events (user_id, event_type) VALUES (%s, 'click')",
                ):
                    t0 = time.monotonic()
                    iconn.execute(statement, (user_id,))
                    latencies.append(time.monotonic() - t0)
                time.sleep(0.01)

    results: dict[str, Any] = {}

    def job(key: str, **overrides: Any) -> None:
        t0 = time.monotonic()
        results[key] = JOB().run(job_ctx("partitions", ddl_retries=8, **overrides))
        results[key + " seconds"] = time.monotonic() - t0

    reader = threading.Thread(target=analytics)
    writer = threading.Thread(target=inserts)
    jobs = [threading.Thread(target=job, args=("create",),
                             kwargs={"tables": _tables(user_behavior_log=12)}),
            threading.Thread(target=job, args=("retire",),
                             kwargs={"tables": _tables(analytics_events=24)})]
    reader.start()
    assert holding.wait(10)
    held = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE pid = %s AND mode = 'AccessShareLock' AND granted"
        " AND relation IN ('user_behavior_log'::regclass, 'analytics_events'::regclass)",
        (analytics_pid[0],)).fetchone()
    assert held == (2,), "the analytics query must hold both parents"
    writer.start()
    try:
        time.sleep(0.2)
        for thread in jobs:
            thread.start()
        for thread in jobs:
            thread.join()
        time.sleep(0.2)
    finally:
        stop.set()
        writer.join()
        reader.join()

    assert len(results["create"].details["tables"]["user_behavior_log"]["created"]) == 2
    assert len(results["retire"].details["tables"]["analytics_events"]["retired"]) == 1
    # the DDL really had to wait for the analytics query
    assert results["create seconds"] > 2 and results["retire seconds"] > 2
    worst = max(latencies)
    print(f"DDL waited {results['create seconds']:.2f} s (create) and "
          f"{results['retire seconds']:.2f} s (retire) for the 3 s analytics query; "
          f"{len(latencies)} inserts, longest {worst * 1000:.1f} ms")
    assert worst < 0.2, f"an insert waited {worst * 1000:.0f} ms behind the job's DDL"


# -- planning (no database) -------------------------------------------------------------


def _state(months: list[date], default: dict[date | None, int] | None = None) -> TableState:
    parts = [Partition(f"t_p{m:%Y_%m}", "public", f"t_p{m:%Y_%m}", False, month_start(m),
                       month_start(add_months(m, 1))) for m in months]
    parts.append(Partition("t_default", "public", "t_default", True, None, None))
    return TableState("t", "t", "public", "t", "ts", parts, dict(default or {}))


def test_plan_retention_boundaries() -> None:
    june = date(2025, 6, 1)
    state = _state([date(2024, 5, 1), date(2024, 6, 1), june])
    assert [p.relname for p in plan_retention(state, june, 12)] == ["t_p2024_05"]
    assert plan_retention(state, june, None) == []
    # only expired partitions left: the newest one stays
    lonely = _state([date(2020, 1, 1), date(2020, 2, 1)])
    assert [p.relname for p in plan_retention(lonely, june, 12)] == ["t_p2020_01"]


def test_plan_creation_window_cap_and_drain() -> None:
    june = date(2025, 6, 1)
    far = date(2999, 1, 1)
    state = _state([june], {far: 1, date(2025, 8, 1): 2, date(2020, 1, 1): 5, None: 1})
    plan = plan_creation(state, june, 3, cap=12, drain=False, retention_months=12)
    assert plan.create == [date(2025, 7, 1), date(2025, 9, 1)]
    assert plan.blocked == [date(2025, 8, 1)]
    drained = plan_creation(state, june, 3, cap=3, drain=True, retention_months=12)
    assert drained.create == [date(2025, 7, 1), date(2025, 9, 1)]
    assert drained.drain == [date(2025, 8, 1)]
    assert drained.capped == [far]
    assert drained.expired_in_default == [date(2020, 1, 1)]
    assert drained.undrainable_rows == 1
