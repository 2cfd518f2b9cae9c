"""Cache cleanup (issue 6 item 2): the cache_cleanup job against one big DELETE and naive
`id IN (SELECT id ... LIMIT n)` batches, while a stream updates hit_count of random cache rows.

The section builds its own template database (1M flight_search_cache rows, half expired; 100k
with --small) rather than using the dataset's caches, so its numbers compare with the ones
issue 4 quotes (one DELETE 0.33 s, naive batches 12.8 s, keyset batches 0.67 s on 1M rows).
Every method runs on a fresh clone of that template, in rotating order. Half the rows
expired makes the job sweep page ranges; "job, keyset forced" (sweep_threshold=0) shows the
mode ordinary hourly runs use.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.common import (
    BenchEnv,
    Goal,
    Section,
    latency_stream,
    median,
    ms,
    percentile,
    ratio,
    rotations,
    run_job,
)
from daemon.jobs.cache_cleanup import JOB
from daemon.migrations import migrate

KEY = "cache_cleanup"
TITLE = "Cache cleanup: the job against one big DELETE and naive LIMIT batches"

TABLE = "flight_search_cache"
TEMPLATE = "bench_cache_template"
RUN_DB = "bench_cache_run"
BATCH = 2000  # the job's default batch_size; the naive batches use the same
STREAM_RATE = 200.0  # hit_count updates per second
GIN_INDEXES = ("flight_search_cache_search_params_gin", "flight_search_cache_results_gin")

BIG_DELETE = "one big DELETE"
NAIVE = "naive id IN (... LIMIT n)"
JOB_DEFAULT = "cache_cleanup job"
JOB_KEYSET = "job, keyset forced"

# Random physical order: expiry uncorrelated with where a row sits, as in a long-lived cache
# whose freed space is reused (the harder case for a page sweep).
FILL = sql.SQL("""
    INSERT INTO flight_search_cache (cache_key, origin, destination, departure_date,
            return_date, search_params, results, hit_count, created_at, expires_at)
    SELECT * FROM (
        SELECT 'k' || g, 'CAI', 'DXB', date '2030-01-01' + (g % 300),
               date '2030-01-01' + (g % 300) + 7,
               jsonb_build_object('adults', 1 + g % 3),
               jsonb_build_object('price', g % 997, 'carrier', 'MS', 'stops', g % 2),
               g % 50, now() - interval '2 days',
               now() + CASE WHEN g % 2 = 0 THEN -1 ELSE 1 END
                           * (1 + random() * 86400) * interval '1 second'
          FROM generate_series(1, {rows}) g) AS r
     ORDER BY random()
""")
UPDATE_HIT = sql.SQL("UPDATE {} SET hit_count = hit_count + 1, last_hit_at = now()"
                     " WHERE id = %s").format(sql.Identifier(TABLE))


def build_template(env: BenchEnv, rows: int) -> float:
    """The template database: schema, `rows` cache rows (every other one expired), GIN
    indexes built after the load (much faster, same result). Returns seconds taken."""
    began = time.perf_counter()
    url = env.new_database(TEMPLATE)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        conn.execute(sql.SQL("DROP INDEX {}").format(
            sql.SQL(", ").join(sql.Identifier(name) for name in GIN_INDEXES)))
        conn.execute(FILL.format(rows=sql.Literal(rows)))
        conn.execute(sql.SQL("CREATE INDEX {} ON {} USING gin (search_params)").format(
            sql.Identifier(GIN_INDEXES[0]), sql.Identifier(TABLE)))
        conn.execute(sql.SQL("CREATE INDEX {} ON {} USING gin (results)").format(
            sql.Identifier(GIN_INDEXES[1]), sql.Identifier(TABLE)))
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(TABLE)))
    return time.perf_counter() - began


# -- the methods: each returns (rows deleted, longest transaction in seconds, details) --------

Outcome = tuple[int, float, dict[str, Any]]


def big_delete(url: str, _workdir: Path) -> Outcome:
    with psycopg.connect(url, autocommit=True) as conn:
        began = time.perf_counter()
        cur = conn.execute(sql.SQL("DELETE FROM {} WHERE expires_at < now()").format(
            sql.Identifier(TABLE)))
        return cur.rowcount, time.perf_counter() - began, {}


def naive_batches(url: str, _workdir: Path) -> Outcome:
    """What one writes first: every batch rescans the dead index entries of the last ones."""
    statement = sql.SQL("DELETE FROM {t} WHERE id IN (SELECT id FROM {t}"
                        " WHERE expires_at < now() LIMIT %s)").format(t=sql.Identifier(TABLE))
    deleted = batches = 0
    longest = 0.0
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            began = time.perf_counter()
            cur = conn.execute(statement, (BATCH,))
            longest = max(longest, time.perf_counter() - began)
            deleted += cur.rowcount
            batches += 1
            if cur.rowcount < BATCH:
                return deleted, longest, {"batches": batches}


def job(url: str, workdir: Path, sweep_threshold: float | None = None) -> Outcome:
    """The job in-process with the daemon's settings, this one table, no VACUUM after."""
    overrides: dict[str, Any] = {"tables": [TABLE], "batch_size": BATCH,
                                 "vacuum_after_rows": 0}
    if sweep_threshold is not None:
        overrides["sweep_threshold"] = sweep_threshold
    result = run_job(JOB, url, "cache_cleanup", state_dir=workdir, **overrides)
    table = result.details["tables"][TABLE]
    return (int(table["deleted"]), float(table["longest_batch_ms"]) / 1000,
            {"mode": table["mode"], "batches": table["batches"]})


METHODS: dict[str, Callable[[str, Path], Outcome]] = {
    BIG_DELETE: big_delete,
    NAIVE: naive_batches,
    JOB_DEFAULT: job,
    JOB_KEYSET: partial(job, sweep_threshold=0),
}


def run(env: BenchEnv) -> Section:
    rows = 100_000 if env.small else 1_000_000
    section = Section(KEY, TITLE, [
        "method", "total", "rows/s", "vs big DELETE", "longest transaction",
        "hit_count update p99", "update max", "rows deleted"])
    env.log(f"cache_cleanup: building {TEMPLATE} ({rows:,} rows, half expired)")
    build_seconds = build_template(env, rows)
    with psycopg.connect(env.cluster.url(TEMPLATE)) as conn:
        ids = [r[0] for r in conn.execute(sql.SQL(
            "SELECT id FROM {} TABLESAMPLE SYSTEM (5) LIMIT 20000").format(
                sql.Identifier(TABLE)))]

    results: dict[str, list[dict[str, Any]]] = {name: [] for name in METHODS}
    try:
        for round_no, name in rotations(list(METHODS), env.repeat):
            url = env.new_database(RUN_DB, template=TEMPLATE)
            with latency_stream(url, UPDATE_HIT, lambda: (random.choice(ids),),
                                rate=STREAM_RATE) as latencies:
                first = len(latencies)  # the stream's warm-up is not part of the run
                began = time.perf_counter()
                deleted, longest, details = METHODS[name](url, env.workdir)
                total = time.perf_counter() - began
            updates = latencies[first:]
            results[name].append({
                "seconds": total, "rows_per_s": deleted / total, "longest": longest,
                "p99": percentile(updates, 99), "max": max(updates, default=float("nan")),
                "deleted": deleted, "updates": len(updates), **details})
            env.log(f"  round {round_no + 1}: {name:<26} {total:7.2f} s, deleted {deleted:,}, "
                    f"longest transaction {ms(longest)}")
    finally:
        env.drop_database(RUN_DB)
        env.drop_database(TEMPLATE)

    def med(name: str, key: str) -> float:
        return median([r[key] for r in results[name]])

    base = med(BIG_DELETE, "rows_per_s")
    for name in METHODS:
        section.rows.append([
            name, f"{med(name, 'seconds'):.2f} s", f"{med(name, 'rows_per_s'):,.0f}",
            ratio(med(name, "rows_per_s"), base), ms(med(name, "longest")),
            ms(med(name, "p99")), ms(med(name, "max")), f"{med(name, 'deleted'):,.0f}"])

    job_share = med(JOB_DEFAULT, "rows_per_s") / base
    job_longest = max(r["longest"] for r in results[JOB_DEFAULT])  # "no" means no run
    section.goals = [
        Goal("cache_cleanup job >= 1/3 of the big DELETE's throughput (median)",
             f"{job_share:.2f}x", job_share >= 1 / 3),
        Goal("no job transaction above 100 ms",
             f"{ms(job_longest)} (longest of {env.repeat} runs)", job_longest <= 0.1),
    ]
    modes = {name: sorted({str(r.get("mode")) for r in results[name]})
             for name in (JOB_DEFAULT, JOB_KEYSET)}
    batches = {name: med(name, "batches") for name in (NAIVE, JOB_DEFAULT, JOB_KEYSET)}
    counts = ", ".join(f"{name} {med(name, 'updates'):.0f}" for name in METHODS)
    section.notes = [
        f"Data: {rows:,} {TABLE} rows, every other one expired (up to a day ago) and the rest "
        "live, in random physical order, with the schema's indexes (expires_at, cache key, "
        f"two GIN); template built in {build_seconds:.0f} s. Each run starts on a fresh "
        "clone of it (CREATE DATABASE ... TEMPLATE), so no method inherits another's dead "
        "tuples.",
        f"Throughout each run a separate connection updates hit_count of a random row about "
        f"{STREAM_RATE:.0f} times a second (a 20k-row sample, half of them expired: rows the "
        "methods delete); the p99 and max of the updates made while the method ran (median "
        f"count: {counts}) "
        "show what the cleanup costs cache hits; a short run has few, so its p99 is "
        "close to its max. The big DELETE holds every expired row's lock until it commits.",
        f"Batches of {BATCH:,} rows for the naive loop and the job "
        f"(median batches: naive {batches[NAIVE]:.0f}, job {batches[JOB_DEFAULT]:.0f}, "
        f"keyset forced {batches[JOB_KEYSET]:.0f}). The job ran in-process with the daemon's "
        "settings, only this table, VACUUM after the run off; its mode: "
        f"{', '.join(modes[JOB_DEFAULT])} (half the rows expired is above sweep_threshold "
        f"0.2); keyset forced: {', '.join(modes[JOB_KEYSET])}.",
        "Longest transaction: the big DELETE's whole statement; the naive loop's slowest "
        "batch (client-side); the job's slowest batch transaction as it reports it "
        "(longest_batch_ms, also client-side).",
        f"Job vs naive batches: {ratio(med(JOB_DEFAULT, 'rows_per_s'), med(NAIVE, 'rows_per_s'))}"
        f" the throughput; keyset batches alone: "
        f"{ratio(med(JOB_KEYSET, 'rows_per_s'), base)} the big DELETE's.",
    ]
    return section
