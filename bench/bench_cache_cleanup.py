"""Cache cleanup: the cache_cleanup job against one big DELETE and naive `id IN (SELECT id
... LIMIT n)` batches, on a flight_search_cache of 1M rows with 500k expired, while a
concurrent stream updates hit_count of random rows (half of them expired, i.e. the rows
being deleted). With half the rows expired the job sweeps page ranges; "keyset forced"
shows its other mode (sweep_threshold=0), the one ordinary hourly runs use.

    python -m bench.bench_cache_cleanup [--rows 1000000] [--repeat 3] [--small] [--pg 15]
                                        [--layout random|ordered]

Goals (issue 4): at least 1/3 of the big DELETE's throughput, no transaction above 100 ms.
Starts its own throwaway cluster; every method runs on an identical copy of the data (a
database cloned from one template), in rotating order, `--repeat` times; the table shows
medians. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
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
from daemon.jobs.cache_cleanup import JOB
from daemon.migrations import migrate
from daemon.settings import Settings
from tests.pgcluster import available_binaries, start_cluster

TABLE = "flight_search_cache"
BATCH = 2000
GIN = [
    "CREATE INDEX flight_search_cache_search_params_gin ON flight_search_cache "
    "USING gin (search_params)",
    "CREATE INDEX flight_search_cache_results_gin ON flight_search_cache USING gin (results)",
]


def build_template(url: str, rows: int, layout: str = "random") -> None:
    """1M cache rows, half expired. Layout "random": expiry uncorrelated with the physical
    order (a long-lived cache whose freed space is reused); "ordered": rows stored in
    expiry order with a little jitter (a cache filled over time with one TTL)."""
    order = "random()" if layout == "random" else "expires_at + random() * interval '10 min'"
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        # Load without the GIN indexes and build them afterwards (much faster, same result).
        conn.execute("DROP INDEX flight_search_cache_search_params_gin, "
                     "flight_search_cache_results_gin")
        conn.execute(
            sql.SQL("""
            INSERT INTO flight_search_cache (cache_key, origin, destination, departure_date,
                    return_date, search_params, results, hit_count, created_at, expires_at)
            SELECT * FROM (
                SELECT 'k' || g, 'CAI', 'DXB', date '2030-01-01' + (g %% 300),
                       date '2030-01-01' + (g %% 300) + 7,
                       jsonb_build_object('adults', 1 + g %% 3),
                       jsonb_build_object('price', g %% 997, 'carrier', 'MS', 'stops', g %% 2),
                       g %% 50, now() - interval '2 days',
                       now() + CASE WHEN g %% 2 = 0 THEN -1 ELSE 1 END
                                   * (1 + random() * 86400) * interval '1 second' AS expires_at
                  FROM generate_series(1, %s) g) AS r
             ORDER BY {}
            """).format(sql.SQL(order)),  # one of two fixed expressions
            (rows,),
        )
        for statement in GIN:
            conn.execute(statement)
        conn.execute("VACUUM (ANALYZE) flight_search_cache")


@contextlib.contextmanager
def update_stream(url: str, ids: list[Any], rate: float) -> Iterator[list[float]]:
    """hit_count updates of random rows at about `rate` per second; yields the latencies."""
    latencies: list[float] = []
    stop = threading.Event()

    def loop() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                t0 = time.perf_counter()
                conn.execute("UPDATE flight_search_cache SET hit_count = hit_count + 1,"
                             " last_hit_at = now() WHERE id = %s", (random.choice(ids),))
                elapsed = time.perf_counter() - t0
                latencies.append(elapsed)
                stop.wait(max(0.0, 1 / rate - elapsed))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        time.sleep(0.2)
        yield latencies
    finally:
        stop.set()
        thread.join()


def run_big_delete(url: str) -> tuple[int, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        cur = conn.execute("DELETE FROM flight_search_cache WHERE expires_at < now()")
        return cur.rowcount, time.perf_counter() - t0


def run_naive_batches(url: str) -> tuple[int, float]:
    deleted, longest = 0, 0.0
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            t0 = time.perf_counter()
            cur = conn.execute(
                "DELETE FROM flight_search_cache WHERE id IN (SELECT id FROM flight_search_cache"
                " WHERE expires_at < now() LIMIT %s)", (BATCH,))
            longest = max(longest, time.perf_counter() - t0)
            deleted += cur.rowcount
            if cur.rowcount < BATCH:
                return deleted, longest


def run_job(url: str, sweep_threshold: float = 0.2) -> tuple[int, float]:
    app = Settings(database_url=SecretStr(url),
                   state_dir=Path(tempfile.mkdtemp(prefix="gth-bench-")))
    settings = app.jobs.cache_cleanup.model_copy(update={
        "tables": [TABLE], "batch_size": BATCH, "vacuum_after_rows": 0,
        "sweep_threshold": sweep_threshold})

    @contextlib.contextmanager
    def factory() -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(url, autocommit=True) as conn:
            set_timeouts(conn, settings.statement_timeout_ms, settings.lock_timeout_ms)
            yield conn

    ctx = JobContext(task="cache_cleanup", settings=settings, app_settings=app,
                     connection_factory=factory, log=structlog.get_logger(),
                     stop_event=threading.Event())
    result = JOB().run(ctx)
    table = result.details["tables"][TABLE]
    return int(table["deleted"]), float(table["longest_batch_ms"]) / 1000


def run_job_keyset(url: str) -> tuple[int, float]:
    return run_job(url, sweep_threshold=0)


METHODS: dict[str, Callable[[str], tuple[int, float]]] = {
    "one big DELETE": run_big_delete,
    "naive id IN (... LIMIT n)": run_naive_batches,
    "cache_cleanup job": run_job,
    "job, keyset forced": run_job_keyset,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200, help="hit_count updates per second")
    parser.add_argument("--small", action="store_true", help="100k rows, one repeat")
    parser.add_argument("--pg", type=int, help="PostgreSQL major version (default: newest)")
    parser.add_argument("--layout", choices=("random", "ordered"), default="random",
                        help="physical order of the rows vs their expiry (see build_template)")
    args = parser.parse_args()
    if args.small:
        args.rows, args.repeat = 100_000, 1
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    binaries = next((b for b in available_binaries() if b.version == args.pg), None) \
        if args.pg else None
    cluster = start_cluster(binaries)
    print(f"PostgreSQL {cluster.binaries.version}, {args.rows:,} rows, "
          f"{args.rows // 2:,} expired, {args.layout} layout, batches of {BATCH}, "
          f"{args.repeat} repeat(s), hit_count stream {args.rate:g}/s", flush=True)
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE cache_template")
            t0 = time.perf_counter()
            build_template(cluster.url("cache_template"), args.rows, args.layout)
            print(f"data built in {time.perf_counter() - t0:.1f} s", flush=True)
            with psycopg.connect(cluster.url("cache_template")) as conn:
                ids = [r[0] for r in conn.execute(
                    "SELECT id FROM flight_search_cache TABLESAMPLE SYSTEM (5) LIMIT 20000")]
            results: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
            names = list(METHODS)
            for rep in range(args.repeat):
                order = names[rep % len(names):] + names[:rep % len(names)]
                for method in order:
                    db = f"run_{rep}_{names.index(method)}"
                    strategy = " STRATEGY = FILE_COPY" if cluster.binaries.version >= 15 else ""
                    admin.execute(f"CREATE DATABASE {db} TEMPLATE cache_template{strategy}")
                    url = cluster.url(db)
                    with update_stream(url, ids, args.rate) as latencies:
                        t0 = time.perf_counter()
                        deleted, longest = METHODS[method](url)
                        total = time.perf_counter() - t0
                    lat = sorted(latencies)
                    results[method].append({
                        "seconds": total, "rows_per_s": deleted / total, "longest": longest,
                        "p99": lat[max(0, int(len(lat) * 0.99) - 1)] if lat else 0.0,
                        "max": lat[-1] if lat else 0.0, "deleted": deleted})
                    print(f"  repeat {rep + 1}: {method:<28} {total:7.2f} s  "
                          f"deleted {deleted:,}", flush=True)
                    admin.execute(f"DROP DATABASE {db}")
    finally:
        cluster.destroy()

    def med(method: str, key: str) -> float:
        return statistics.median(r[key] for r in results[method])

    base = med("one big DELETE", "rows_per_s")
    print()
    print(f"{'method':<28} {'total s':>8} {'rows/s':>10} {'vs DELETE':>10} "
          f"{'longest txn ms':>15} {'update p99 ms':>14} {'update max ms':>14}")
    for method in METHODS:
        print(f"{method:<28} {med(method, 'seconds'):8.2f} {med(method, 'rows_per_s'):10,.0f} "
              f"{med(method, 'rows_per_s') / base:10.2f} {med(method, 'longest') * 1000:15.1f} "
              f"{med(method, 'p99') * 1000:14.1f} {med(method, 'max') * 1000:14.1f}")
    ratio = med("cache_cleanup job", "rows_per_s") / base
    longest_ms = med("cache_cleanup job", "longest") * 1000
    naive = med("cache_cleanup job", "rows_per_s") / med("naive id IN (... LIMIT n)", "rows_per_s")
    keyset = med("job, keyset forced", "rows_per_s") / base
    print()
    print(f"job throughput = {ratio:.2f} x one big DELETE (goal >= 0.33): "
          f"{'met' if ratio >= 1 / 3 else 'NOT met'}")
    print(f"job longest transaction = {longest_ms:.1f} ms (goal <= 100 ms): "
          f"{'met' if longest_ms <= 100 else 'NOT met'}")
    print(f"job vs naive batches = {naive:.1f} x faster")
    print(f"keyset batches alone (the mode of ordinary hourly runs) = {keyset:.2f} x one big "
          "DELETE on this data")


if __name__ == "__main__":
    main()
