"""Partition DDL under a long analytics query: the partitions job (LIKE + ATTACH, plain
DETACH, each under a 100 ms lock_timeout with jittered retries) against the naive statements
(CREATE TABLE ... PARTITION OF, ALTER TABLE ... DETACH PARTITION without lock_timeout).

An analytics transaction holds ACCESS SHARE on user_behavior_log (and its partitions) for
`--hold` seconds; a stream inserts rows into the current month meanwhile; 0.3 s into the
query the DDL starts. Reported per method: longest and p99 insert latency, inserts slower
than 200 ms, and how long the DDL took (it has to wait for the query either way).

    python -m bench.bench_partitions [--hold 4] [--repeat 3] [--small] [--pg 15]

Goal (issue 4): inserts wait under 200 ms with the job's DDL, where the naive DDL blocks
them for the whole analytics query. Starts its own throwaway cluster; medians over
`--repeat` runs in rotating order. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg import sql
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.db import set_timeouts
from daemon.jobs.base import JobContext
from daemon.jobs.partitions import JOB
from daemon.migrations import migrate
from daemon.partitioning import add_months, current_month, month_start
from daemon.settings import PartitionedTable, Settings
from tests.pgcluster import available_binaries, start_cluster

PARENT = "user_behavior_log"
NEW_MONTH = add_months(current_month(), 3)  # premade by the schema; removed before each run
OLD_MONTH = add_months(current_month(), -20)  # past the 12-month retention
NEW_NAME = f"{PARENT}_p{NEW_MONTH:%Y_%m}"
OLD_NAME = f"{PARENT}_p{OLD_MONTH:%Y_%m}"


def prepare(url: str, rows: int) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        user = conn.execute("INSERT INTO users (email) VALUES ('bench@example.com')"
                            " RETURNING id").fetchone()
        assert user is not None
        conn.execute(
            "INSERT INTO user_behavior_log (user_id, action_type, \"timestamp\")"
            " SELECT %s, 'search', now() - random() * interval '1 day'"
            " FROM generate_series(1, %s)", (user[0], rows))
        conn.execute("ANALYZE user_behavior_log")
        return str(user[0])


def reset(url: str, method: str) -> None:
    """Before a creation run the month is missing; before a retention run the old one exists."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT detach_month_partition(%s, %s, true)", (PARENT, NEW_MONTH))
        if "retention" in method or "DETACH" in method:
            conn.execute("SELECT create_month_partition(%s, %s)", (PARENT, NEW_MONTH))
            conn.execute("SELECT create_month_partition(%s, %s)", (PARENT, OLD_MONTH))
        else:
            conn.execute("SELECT detach_month_partition(%s, %s, true)", (PARENT, OLD_MONTH))


def naive_create(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})")
                     .format(sql.Identifier(NEW_NAME), sql.Identifier(PARENT),
                             sql.Literal(month_start(NEW_MONTH)),
                             sql.Literal(month_start(add_months(NEW_MONTH, 1)))))


def naive_detach(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}")
                     .format(sql.Identifier(PARENT), sql.Identifier(OLD_NAME)))
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(OLD_NAME)))


def job(url: str) -> None:
    app = Settings(database_url=SecretStr(url),
                   state_dir=Path(tempfile.mkdtemp(prefix="gth-bench-")))
    settings = app.jobs.partitions.model_copy(update={
        "tables": {PARENT: PartitionedTable(retention_months=12)},
        "retention_action": "drop", "ddl_retries": 10})

    @contextlib.contextmanager
    def factory() -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(url, autocommit=True) as conn:
            set_timeouts(conn, settings.statement_timeout_ms, settings.lock_timeout_ms)
            yield conn

    ctx = JobContext(task="partitions", settings=settings, app_settings=app,
                     connection_factory=factory, log=structlog.get_logger(),
                     stop_event=threading.Event())
    JOB().run(ctx)


METHODS: dict[str, Callable[[str], None]] = {
    "CREATE TABLE ... PARTITION OF": naive_create,
    "job: creation (LIKE + ATTACH)": job,
    "ALTER TABLE ... DETACH (no timeout)": naive_detach,
    "job: retention (DETACH, 100 ms)": job,
}


def scenario(url: str, user_id: str, hold: float, ddl: Callable[[str], None]) -> dict[str, float]:
    holding = threading.Event()
    stop = threading.Event()
    latencies: list[float] = []

    def analytics() -> None:
        with psycopg.connect(url) as conn:
            conn.execute("SELECT count(*) FROM user_behavior_log").fetchone()
            holding.set()
            conn.execute("SELECT pg_sleep(%s)", (hold,))
            conn.commit()

    def inserts() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                t0 = time.perf_counter()
                conn.execute("INSERT INTO user_behavior_log (user_id, action_type)"
                             " VALUES (%s, 'click')", (user_id,))
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.01)

    reader = threading.Thread(target=analytics)
    writer = threading.Thread(target=inserts)
    reader.start()
    holding.wait(30)
    writer.start()
    try:
        time.sleep(0.3)
        t0 = time.perf_counter()
        ddl(url)
        ddl_seconds = time.perf_counter() - t0
        reader.join()
        time.sleep(0.3)
    finally:
        stop.set()
        writer.join()
        reader.join()
    lat = sorted(latencies)
    return {"ddl": ddl_seconds, "max": lat[-1], "p99": lat[max(0, int(len(lat) * 0.99) - 1)],
            "slow": float(sum(1 for x in lat if x > 0.2)), "inserts": float(len(lat))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hold", type=float, default=4.0, help="analytics query seconds")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the parent")
    parser.add_argument("--small", action="store_true", help="2 s query, one repeat")
    parser.add_argument("--pg", type=int, help="PostgreSQL major version (default: newest)")
    args = parser.parse_args()
    if args.small:
        args.hold, args.repeat, args.rows = 2.0, 1, 10_000
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    binaries = next((b for b in available_binaries() if b.version == args.pg), None) \
        if args.pg else None
    cluster = start_cluster(binaries)
    print(f"PostgreSQL {cluster.binaries.version}, analytics query holding {PARENT} for "
          f"{args.hold:g} s, {args.rows:,} rows, {args.repeat} repeat(s)", flush=True)
    results: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        url = cluster.url("bench")
        user_id = prepare(url, args.rows)
        names = list(METHODS)
        for rep in range(args.repeat):
            for method in names[rep % len(names):] + names[:rep % len(names)]:
                reset(url, method)
                got = scenario(url, user_id, args.hold, METHODS[method])
                results[method].append(got)
                print(f"  repeat {rep + 1}: {method:<36} longest insert "
                      f"{got['max'] * 1000:8.1f} ms", flush=True)
    finally:
        cluster.destroy()

    def med(method: str, key: str) -> float:
        return statistics.median(r[key] for r in results[method])

    print()
    print(f"{'method':<36} {'DDL done s':>10} {'longest insert ms':>18} {'p99 ms':>8} "
          f"{'inserts > 200 ms':>17}")
    for method in METHODS:
        print(f"{method:<36} {med(method, 'ddl'):10.2f} {med(method, 'max') * 1000:18.1f} "
              f"{med(method, 'p99') * 1000:8.1f} {med(method, 'slow'):17.0f}")
    print()
    for naive, ours in ((names[0], names[1]), (names[2], names[3])):
        worst = med(ours, "max") * 1000
        print(f"{ours}: longest insert {worst:.0f} ms (goal < 200 ms: "
              f"{'met' if worst < 200 else 'NOT met'}); {naive}: "
              f"{med(naive, 'max') * 1000:.0f} ms, "
              f"{med(naive, 'max') / med(ours, 'max'):.0f} x longer")


if __name__ == "__main__":
    main()
