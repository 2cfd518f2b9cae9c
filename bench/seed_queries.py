"""The seeds' query claims (issue 6, item 5): the three lookups the platform's documents
promise to be fast, timed on the benchmark dataset the way an application server runs them.

One connection, server-side prepared statements, a short warm-up, then a few thousand
executions per query over random keys drawn from the data, the queries in rotating order
`env.repeat` times. The seed's figures (production-schema-summary.md, "Performance
Improvements") are what the seed claims after its materialized views and partitioning; the
goals are issue 6's. The plans (EXPLAIN ANALYZE of one execution of the same prepared
statement, with the plan type the timed loop used) go into the notes: they are the reason
for the numbers, and a plan problem at full scale must show there, not be tuned away.
"""

from __future__ import annotations

import gc
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from bench.common import BenchEnv, Goal, Section, median, percentile, rotations

KEY = "queries"
TITLE = "Seed query claims: persona, social proof, one user's month of behaviour"

TOTAL_EXECUTIONS = 3000  # per query, over all rounds
WARMUP = 200  # per query, before the first round
SAMPLE_KEYS = 5000  # distinct keys drawn per query
SEED = 6
PERSONAS = (None, "مسافر_اقتصادي", "مسافر_متوسط", "باحث_عن_فخامة")

Keys = list[tuple[Any, ...]]


@dataclass(frozen=True)
class Query:
    """One claim: what the application runs, how its keys are drawn, what to EXPLAIN."""

    name: str
    statement: str  # %s placeholders, executed prepared
    types: tuple[str, ...]  # parameter types, for the SQL-level PREPARE of the EXPLAIN
    claim: str
    goal_ms: float | None
    keys: Callable[[psycopg.Connection[Any]], Keys]
    explained: str = ""  # the statement to EXPLAIN, when it is not `statement` itself
    marker: str = ""  # substring that finds the statement in pg_prepared_statements


def _sample_pct(conn: psycopg.Connection[Any], relation: str, want: int) -> float:
    """TABLESAMPLE SYSTEM percentage that yields about 4 * want rows (planner estimate)."""
    row = conn.execute(
        "SELECT greatest(sum(c.reltuples), 1) FROM pg_class c"
        " WHERE c.relkind <> 'p' AND (c.oid = %s::regclass OR c.oid IN"
        " (SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = %s::regclass))",
        (relation, relation)).fetchone()
    estimate = float(row[0]) if row else 1.0
    return min(100.0, max(0.01, 400.0 * want / estimate))


def _persona_keys(conn: psycopg.Connection[Any]) -> Keys:
    pct = _sample_pct(conn, "public.user_booking_stats", SAMPLE_KEYS)
    return conn.execute(
        "SELECT user_id FROM user_booking_stats TABLESAMPLE SYSTEM (%s) REPEATABLE (%s)"
        " WHERE total_bookings > 0", (pct, SEED)).fetchall()


def _hotel_keys(conn: psycopg.Connection[Any]) -> Keys:
    hotels = [r[0] for r in conn.execute(
        "SELECT DISTINCT hotel_identifier FROM hotel_social_proof ORDER BY 1").fetchall()]
    return [(hotel, persona) for hotel in hotels for persona in PERSONAS]


def _behaviour_keys(conn: psycopg.Connection[Any]) -> Keys:
    """(user, month start, next month start) of sampled rows: active users weigh more, as in
    production; months in UTC, the partitions' bounds."""
    pct = _sample_pct(conn, "public.user_behavior_log", SAMPLE_KEYS)
    return conn.execute(
        "SELECT DISTINCT l.user_id, m.start, m.start + interval '1 month'"
        "  FROM user_behavior_log l TABLESAMPLE SYSTEM (%s) REPEATABLE (%s)"
        " CROSS JOIN LATERAL (SELECT date_trunc('month', l.\"timestamp\" AT TIME ZONE 'UTC')"
        "                            AT TIME ZONE 'UTC' AS start) m"
        " ORDER BY 1, 2", (pct, SEED)).fetchall()


QUERIES = [
    Query("persona lookup (user_booking_stats)",
          "SELECT persona FROM user_booking_stats WHERE user_id = %s", ("uuid",),
          "5-10 ms", 1.0, _persona_keys, marker="FROM user_booking_stats"),
    Query("persona computed: calculate_traveler_persona() (contrast, no goal)",
          "SELECT calculate_traveler_persona(%s)", ("uuid",),
          "500-1000 ms (the seed's 'before')", None, _persona_keys,
          explained="SELECT traveler_persona_for(avg(b.total_amount)) FROM bookings b"
                    " WHERE b.user_id = %s AND b.status IN ('confirmed', 'completed')",
          marker="calculate_traveler_persona"),
    Query("get_hotel_social_proof(hotel, persona)",
          "SELECT * FROM get_hotel_social_proof(%s, %s)", ("text", "text"),
          "10-20 ms", 2.0, _hotel_keys,
          explained="SELECT coalesce(h.avg_rating, 0), coalesce(h.total_bookings, 0),"
                    " coalesce(h.rebook_rate, 0), coalesce(h.exceeded_rate, 0),"
                    " coalesce(h.trust_score, 0) FROM (SELECT 1) one"
                    " LEFT JOIN hotel_social_proof h ON h.hotel_identifier = %s"
                    " AND h.persona_type = coalesce(%s, 'all')",
          marker="get_hotel_social_proof"),
    Query("one user's month of user_behavior_log",
          "SELECT * FROM user_behavior_log WHERE user_id = %s AND \"timestamp\" >= %s"
          " AND \"timestamp\" < %s ORDER BY \"timestamp\" DESC",
          ("uuid", "timestamptz", "timestamptz"), "50-200 ms", 10.0, _behaviour_keys,
          marker="FROM user_behavior_log"),
]


def run(env: BenchEnv) -> Section:
    section = Section(KEY, TITLE, ["query", "seed claims", "executions", "rows each", "p50",
                                   "p99", "max", "seed's low end / our p99"])
    load_before = os.getloadavg()[0]
    rng = random.Random(SEED)
    per_round = max(1, TOTAL_EXECUTIONS // env.repeat)
    with psycopg.connect(env.url, autocommit=True) as conn:
        keys: dict[str, Keys] = {}
        for query in QUERIES:  # candidates from a TABLESAMPLE, then a random subset
            found = query.keys(conn)
            keys[query.name] = rng.sample(found, min(SAMPLE_KEYS, len(found)))
        for query in QUERIES:
            if not keys[query.name]:
                raise RuntimeError(f"no keys for {query.name}: is the dataset empty?")
            _execute(conn, query.statement, keys[query.name], WARMUP, rng)
        rounds: dict[str, list[list[float]]] = {q.name: [] for q in QUERIES}
        rows: dict[str, int] = dict.fromkeys(rounds, 0)
        by_name = {q.name: q for q in QUERIES}
        for _, name in rotations(list(by_name), env.repeat):
            latencies, returned = _execute(conn, by_name[name].statement, keys[name],
                                           per_round, rng)
            rounds[name].append(latencies)
            rows[name] += returned
        plan_types = _plan_types(conn)
        plans = {q.name: _explain(conn, q, keys[q.name][0], plan_types.get(q.marker))
                 for q in QUERIES}
        partitions = _partition_count(conn, "public.user_behavior_log")

    checked = {q.name: _check_plan(q, plans[q.name], plan_types.get(q.marker), partitions)
               for q in QUERIES}
    missed: list[str] = []
    for query in QUERIES:
        runs = rounds[query.name]
        count = sum(len(r) for r in runs)
        p50 = median([percentile(r, 50) for r in runs])
        p99 = median([percentile(r, 99) for r in runs])
        worst = max(max(r) for r in runs)
        low = float(query.claim.split("-")[0]) / 1000
        section.rows.append([query.name, query.claim, f"{count:,} ({len(keys[query.name]):,} "
                             "keys)", f"{rows[query.name] / count:.1f}", _fmt(p50), _fmt(p99),
                             _fmt(worst), f"{low / p99:.0f}x"])
        if query.goal_ms is not None:
            met = p99 * 1000 < query.goal_ms
            section.goals.append(Goal(f"{query.name}: p99 < {query.goal_ms:g} ms", _fmt(p99),
                                      met))
            if not met:
                problems = checked[query.name].problems
                missed.append(
                    f"**Goal missed: {query.name}**, p99 {_fmt(p99)} (p50 {_fmt(p50)}); "
                    + (f"the plan has a problem: {'; '.join(problems)}." if problems else
                       "the plan is the expected index probe (see below) and one execution "
                       f"took {checked[query.name].execution} on the server, so the tail is "
                       "outside the plan (machine load, scheduling, cold pages)."))
    section.notes += [
        "Seed figures: the seed's production-schema-summary.md, table \"Performance "
        "Improvements\" (Before / After): persona lookup 500-1000 ms before / 5-10 ms after "
        "(\"user_booking_stats (instant persona lookup)\"), social proof query 300-800 ms / "
        "10-20 ms, behavior analytics 2-5 s / 50-200 ms; \"Materialized Views: Sub-10ms "
        "queries at scale\". The queries are the seed's own examples: `SELECT persona FROM "
        "user_booking_stats WHERE user_id = ...`, `get_hotel_social_proof(hotel, persona)` "
        "(persona NULL or one of the three, drawn at random), and `SELECT * FROM "
        "user_behavior_log WHERE user_id = ... AND timestamp >= month AND timestamp < next "
        "month ORDER BY timestamp DESC`.",
        f"How: one autocommit connection as superuser (row-level security bypassed; gth_app "
        "adds one `user_id = app_current_user_id()` filter), psycopg server-side prepared "
        f"statements, {WARMUP} warm-up executions per query, then {per_round:,} per query "
        f"and round in rotating order, {env.repeat} round(s); keys drawn with replacement "
        "from a TABLESAMPLE of the data (users with bookings; every hotel of the view with "
        "each persona; (user, UTC month) pairs of sampled behaviour rows, so active users "
        "weigh more). Latency is client-side: bind, execute, fetch all rows, over TCP on "
        "127.0.0.1, Python's garbage collector paused. p50/p99: median over rounds of "
        f"each round's percentile; max: worst single execution. Load average at the start: "
        f"{load_before:.2f} on {os.cpu_count()} cores.",
        "Application access: `user_booking_stats` is readable by gth_admin only (per-user "
        "statistics are personal); the application role gth_app calls "
        "`calculate_traveler_persona(user)` (invoker rights, row-level security), measured "
        "here as the contrast row. The demo data has 96 hotels (12 destinations x 8), so "
        "`hotel_social_proof` has at most 384 rows at any scale: the lookup is one probe of "
        "its unique index either way.",
    ]
    section.notes += missed + [checked[q.name].note for q in QUERIES]
    return section


def _execute(conn: psycopg.Connection[Any], statement: str, keys: Keys, count: int,
             rng: random.Random) -> tuple[list[float], int]:
    """`count` prepared executions over random keys: latencies (s) and rows returned."""
    latencies: list[float] = []
    returned = 0
    gc.collect()
    gc.disable()
    try:
        with conn.cursor() as cur:
            for _ in range(count):
                params = rng.choice(keys)
                began = time.perf_counter()
                cur.execute(statement, params, prepare=True)
                returned += len(cur.fetchall())
                latencies.append(time.perf_counter() - began)
    finally:
        gc.enable()
    return latencies, returned


def _plan_types(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, int]]:
    """marker -> (generic plans, custom plans) the timed statements got (PostgreSQL 14+)."""
    found: dict[str, tuple[int, int]] = {}
    for statement, generic, custom in conn.execute(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE NOT from_sql").fetchall():
        for query in QUERIES:
            if query.marker in statement and query.marker not in found:
                found[query.marker] = (generic, custom)
    return found


def _explain(conn: psycopg.Connection[Any], query: Query, params: Sequence[Any],
             plan_type: tuple[int, int] | None) -> str:
    """EXPLAIN ANALYZE of one execution of the statement, prepared at SQL level with the plan
    type (generic or custom) that the timed loop mostly used."""
    text = query.explained or query.statement
    parts = text.split("%s")
    numbered = "".join(part + (f"${i + 1}" if i < len(parts) - 1 else "")
                       for i, part in enumerate(parts))
    name = sql.Identifier("bench_explain")
    generic = plan_type is None or plan_type[0] >= plan_type[1]
    conn.execute(sql.SQL("SET plan_cache_mode = {}").format(
        sql.Literal("force_generic_plan" if generic else "force_custom_plan")))
    conn.execute(sql.SQL("PREPARE {} ({}) AS {}").format(
        name, sql.SQL(", ").join(sql.SQL(t) for t in query.types), sql.SQL(numbered)))
    try:
        lines = conn.execute(sql.SQL(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY ON) EXECUTE {} ({})"
        ).format(name, sql.SQL(", ").join(sql.Literal(p) for p in params))).fetchall()
    finally:
        conn.execute(sql.SQL("DEALLOCATE {}").format(name))
        conn.execute("RESET plan_cache_mode")
    return "\n".join(line[0] for line in lines)


def _partition_count(conn: psycopg.Connection[Any], parent: str) -> int:
    row = conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass",
                       (parent,)).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class PlanCheck:
    note: str  # the plan in one line, with what it uses
    problems: list[str]  # empty when it is the expected index probe
    execution: str  # the server's execution time of the explained execution


def _check_plan(query: Query, plan: str, plan_type: tuple[int, int] | None,
                partitions: int) -> PlanCheck:
    """What the plan uses, in one line, and a problem when it is not an index probe (of one
    partition, for the behaviour log)."""
    executed = re.search(r"Execution Time: ([\d.]+) ms", plan)
    execution = f"{float(executed.group(1)):.3f} ms" if executed else "-"
    plan = plan.split("\nPlanning")[0]  # planning buffers and times: not the execution
    indexes = [f"{index} on {table}" for index, table in re.findall(
        r"Index (?:Only )?Scan(?: Backward)? using (\S+) on (\S+)", plan)]
    indexes += [f"{index} (bitmap)" for index in re.findall(r"Bitmap Index Scan on (\S+)", plan)]
    tables = set(re.findall(r"(?:Seq|Index|Index Only|Bitmap Heap) Scan(?: Backward)?"
                            r"(?: using \S+)? on (\S+)", plan))
    removed = re.search(r"Subplans Removed: (\d+)", plan)
    kind = "no prepared statement seen" if plan_type is None else (
        f"{plan_type[0]} generic / {plan_type[1]} custom plans in the timed loop")
    facts = [kind, "index: " + (", ".join(indexes) or "none")]
    problems: list[str] = []
    if query.marker == "FROM user_behavior_log":
        facts.append(f"partitions scanned: {len(tables)} of {partitions}"
                     + (f" (pruned at executor start-up: {removed.group(1)} subplans removed)"
                        if removed else " (pruned at planning)"))
        if len(tables) != 1:
            problems.append(f"{len(tables)} partitions scanned")
    if "Seq Scan" in plan or not indexes:
        problems.append("not an index probe")
    facts.append(f"execution on the server: {execution}")
    facts += [f"**plan problem: {p}**" for p in problems]
    what = "the function's inner query" if query.marker == "get_hotel_social_proof" else (
        "the function's query" if query.explained else "the statement")
    one_line = " · ".join(" ".join(line.split()) for line in plan.splitlines())
    return PlanCheck(f"Plan, {query.name} ({what}; {'; '.join(facts)}): `{one_line}`",
                     problems, execution)


def _fmt(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.3f} ms" if value < 1 else f"{value:.2f} ms" if value < 100 else (
        f"{value:.0f} ms")
