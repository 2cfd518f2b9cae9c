"""Materialized view refresh (issue 6, item 4): what readers of `get_hotel_social_proof` feel
while `hotel_social_proof` is refreshed the way the matviews job does it (REFRESH ...
CONCURRENTLY), against the same readers with no refresh, and against a plain REFRESH.

Several reader threads (bench.common.latency_stream, one connection each) call
get_hotel_social_proof(hotel, persona) over random hotels and personas for the whole
section. Each round, in rotating order: a baseline window with no refresh (as long as the
latest concurrent refresh), the matviews job (bench.common.run_job) refreshing the view
CONCURRENTLY, and a plain REFRESH MATERIALIZED VIEW, which takes ACCESS EXCLUSIVE and so
blocks every reader until it commits. Before each refresh a batch of new guest ratings is
inserted, so the refresh has real differences to apply, as an hourly refresh would; the
section deletes them and refreshes again at the end, leaving the dataset as it found it.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from bench.common import (
    BenchEnv,
    Section,
    latency_stream,
    median,
    percentile,
    ratio,
    rotations,
    run_job,
)
from daemon.jobs.matviews import JOB as MATVIEWS_JOB

KEY = "matviews"
TITLE = "Materialized view refresh: CONCURRENTLY (matviews job) against plain, with readers"

VIEW = "hotel_social_proof"
READERS = 4  # reader connections, each its own thread
RATE = 100.0  # statements per second per reader (when not blocked)
NEW_RATINGS_SHARE = 0.005  # of hotel_ratings, inserted before each refresh
MARK = "gth-bench-matviews"  # review_text of the inserted ratings, for the clean-up
SEED = 4
PERSONAS = (None, "مسافر_اقتصادي", "مسافر_متوسط", "باحث_عن_فخامة")
READ = "SELECT * FROM get_hotel_social_proof(%s, %s)"
METHODS = ["no refresh", "CONCURRENTLY (matviews job)", "plain REFRESH"]


@dataclass
class Window:
    """One measured window: its length, the refresh inside it, what the readers saw."""

    seconds: float
    refresh_seconds: float  # NaN for the baseline
    changed_rows: int  # rows of the view that differ after the refresh
    latencies: list[float]


def run(env: BenchEnv) -> Section:
    section = Section(KEY, TITLE, ["method", "refresh", "view rows changed",
                                   "reader statements/s", "reader p50", "reader p99",
                                   "reader max", "p99 vs no refresh"])
    view = sql.Identifier(VIEW)
    rng = random.Random(SEED)
    windows: dict[str, list[Window]] = {m: [] for m in METHODS}
    with psycopg.connect(env.url, autocommit=True) as conn:
        keys = [(hotel, persona) for (hotel,) in conn.execute(
            sql.SQL("SELECT DISTINCT hotel_identifier FROM {} ORDER BY 1").format(view))
            for persona in PERSONAS]
        ratings = _count(conn, sql.SQL("SELECT count(*) FROM hotel_ratings"))
        batch = max(100, int(ratings * NEW_RATINGS_SHARE))
        stays = _stays(conn, batch, rng)
        view_rows = _count(conn, sql.SQL("SELECT count(*) FROM {}").format(view))
        try:
            with contextlib.ExitStack() as stack:
                streams = []
                for reader in range(READERS):
                    streams.append(stack.enter_context(latency_stream(
                        env.url, READ, params=_picker(keys, SEED * 100 + reader), rate=RATE)))
                time.sleep(1.0)  # readers connected, statements prepared, caches warm
                _add_ratings(conn, stays, batch, rng)
                window_seconds = _concurrent(env)  # warm-up, untimed: the refresh's caches
                for _, method in rotations(METHODS, env.repeat):
                    if method != "no refresh":
                        _add_ratings(conn, stays, batch, rng)
                        conn.execute(sql.SQL("DROP TABLE IF EXISTS bench_view_before"))
                        conn.execute(sql.SQL("CREATE TEMP TABLE bench_view_before AS TABLE {}")
                                     .format(view))
                    marks = [len(s) for s in streams]
                    began = time.perf_counter()
                    if method == "no refresh":
                        time.sleep(window_seconds)
                        refresh = math.nan
                    elif method == "plain REFRESH":
                        conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(view))
                        refresh = time.perf_counter() - began
                    else:
                        refresh = _concurrent(env)
                    elapsed = time.perf_counter() - began
                    if method.startswith("CONCURRENTLY"):
                        window_seconds = elapsed
                    latencies = _collect(streams, marks, [len(s) for s in streams])
                    changed = 0 if method == "no refresh" else _changed(conn, view)
                    windows[method].append(Window(elapsed, refresh, changed, latencies))
        finally:
            conn.execute("DELETE FROM hotel_ratings WHERE review_text = %s", (MARK,))
            _concurrent(env)

    base_p99 = median([percentile(w.latencies, 99) for w in windows["no refresh"]])
    for method in METHODS:
        runs = windows[method]
        p99 = median([percentile(w.latencies, 99) for w in runs])
        refresh = median([w.refresh_seconds for w in runs])
        section.rows.append([
            method,
            "-" if math.isnan(refresh) else f"{refresh:.2f} s",
            "-" if method == "no refresh" else f"{median([w.changed_rows for w in runs]):.0f}"
                                               f" of {view_rows}",
            f"{median([len(w.latencies) / w.seconds for w in runs]):.0f}",
            _fmt(median([percentile(w.latencies, 50) for w in runs])),
            _fmt(p99),
            _fmt(median([max(w.latencies, default=math.nan) for w in runs])),
            ratio(p99, base_p99),
        ])
    refreshes = {m: median([w.refresh_seconds for w in windows[m]]) for m in METHODS[1:]}
    worst = {m: max((max(w.latencies, default=0.0) for w in windows[m]), default=0.0)
             for m in METHODS}
    section.notes += [
        f"How: {READERS} reader connections (one thread each, about {RATE:.0f} statements/s "
        f"each when not blocked) call `{READ % ('hotel', 'persona')}` over the view's "
        f"{len(keys) // len(PERSONAS)} hotels x (NULL and the three personas), for the whole "
        f"section. Rounds: {env.repeat}, methods in rotating order. A window's reader "
        "statements are those that completed while the refresh ran, plus the one each "
        "reader had in flight when it ended (the blocked one, for the plain REFRESH). The "
        "baseline window is as long as the latest CONCURRENTLY window. Latency is "
        "client-side (Python, TCP on 127.0.0.1). Table: medians over rounds of each "
        "window's value; reader statements per window: "
        + ", ".join(f"{m} {median([len(w.latencies) for w in windows[m]]):.0f}"
                    for m in METHODS)
        + "; worst single reader statement: "
        + ", ".join(f"{m} {_fmt(worst[m])}" for m in METHODS) + ".",
        "CONCURRENTLY is what the matviews job runs (`run_job(daemon.jobs.matviews.JOB, ...,"
        f" views=['{VIEW}'])`, as superuser, so the statement itself rather than "
        "refresh_materialized_view()): it builds the new contents next to the old ones, "
        "diffs them and applies the difference under an EXCLUSIVE lock, which does not "
        "conflict with readers' ACCESS SHARE. The plain REFRESH rewrites the view under "
        "ACCESS EXCLUSIVE: every reader waits for the whole refresh, which its reader max "
        "shows. The price of not blocking: CONCURRENTLY took "
        f"{ratio(refreshes[METHODS[1]], refreshes[METHODS[2]])} the plain refresh's time "
        "(the diff against the old contents). What readers still feel during CONCURRENTLY "
        "is competition for the 2 cores with the refresh query (and its parallel workers); "
        "their latency also includes waking an idle backend on a busy machine (they are "
        "paced, unlike the tight loop of the query-claims section).",
        f"Before each refresh, {batch:,} new ratings ({batch / max(ratings, 1):.1%} of the "
        f"{ratings:,} in hotel_ratings; random stays of hotel_bookings, random stars) are "
        "inserted, so the refresh has differences to apply, as an hourly refresh would; "
        "'view rows changed' counts the view rows that differ afterwards. The section "
        "deletes these ratings and refreshes the view again at the end. The refresh cost is "
        "the aggregation over all bookings and ratings; the demo data's 96 hotels keep the "
        f"view itself small (at most 384 rows, {view_rows} here), so the apply step is short "
        "at any scale.",
    ]
    return section


def _picker(keys: list[tuple[str, str | None]], seed: int) -> Callable[[], tuple[str, str | None]]:
    """A reader's parameters: its own random sequence of (hotel, persona)."""
    rng = random.Random(seed)
    return lambda: rng.choice(keys)


def _concurrent(env: BenchEnv) -> float:
    """Refresh the view with the matviews job; the refresh's own duration (s)."""
    result = run_job(MATVIEWS_JOB, env.url, "matviews", state_dir=env.workdir, views=[VIEW])
    done: dict[str, Any] = result.details["views"][VIEW]
    if done.get("mode") != "concurrent":
        raise RuntimeError(f"the matviews job did not refresh {VIEW} concurrently: {done}")
    return float(done["seconds"])


def _stays(conn: psycopg.Connection[Any], batch: int,
           rng: random.Random) -> list[tuple[Any, str]]:
    """Stays (user, hotel) to rate: a sample of hotel_bookings, a few times the batch."""
    row = conn.execute("SELECT greatest(reltuples, 1) FROM pg_class"
                       " WHERE oid = 'public.hotel_bookings'::regclass").fetchone()
    pct = min(100.0, max(0.01, 400.0 * batch / float(row[0] if row else 1)))
    stays = conn.execute(
        "SELECT user_id, hotel_identifier FROM hotel_bookings TABLESAMPLE SYSTEM (%s)"
        " REPEATABLE (%s)", (pct, rng.randrange(1 << 30))).fetchall()
    if not stays:
        raise RuntimeError("no hotel_bookings to rate: is the dataset empty?")
    return stays


def _add_ratings(conn: psycopg.Connection[Any], stays: list[tuple[Any, str]], batch: int,
                 rng: random.Random) -> None:
    chosen = [rng.choice(stays) for _ in range(batch)]
    conn.execute(
        "INSERT INTO hotel_ratings (user_id, hotel_identifier, rating, exceeded_expectations,"
        "                           would_rebook, review_text)"
        " SELECT t.u, t.h, t.r, t.r = 5, t.r >= 4, %s"
        "   FROM unnest(%s::uuid[], %s::text[], %s::smallint[]) AS t(u, h, r)",
        (MARK, [u for u, _ in chosen], [h for _, h in chosen],
         [rng.randint(1, 5) for _ in chosen]))


def _changed(conn: psycopg.Connection[Any], view: sql.Identifier) -> int:
    """Rows of the view that are new or changed since the snapshot taken before the refresh
    (each changed row counted once: its new version)."""
    return _count(conn, sql.SQL(
        "SELECT count(*) FROM (TABLE {v} EXCEPT ALL TABLE bench_view_before) d").format(v=view))


def _collect(streams: list[list[float]], starts: list[int], ends: list[int]) -> list[float]:
    """The readers' latencies from the marks on, including each reader's statement in flight
    at the end (waited for: after a plain REFRESH it is the blocked one)."""
    deadline = time.monotonic() + 30
    while any(len(s) <= e for s, e in zip(streams, ends, strict=True)) \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    return [x for s, a, e in zip(streams, starts, ends, strict=True) for x in s[a:e + 1]]


def _count(conn: psycopg.Connection[Any], statement: sql.SQL | sql.Composed) -> int:
    row = conn.execute(statement).fetchone()
    return int(row[0]) if row else 0


def _fmt(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    value = seconds * 1000
    return f"{value:.3f} ms" if value < 1 else f"{value:.2f} ms" if value < 100 else (
        f"{value:.0f} ms")
