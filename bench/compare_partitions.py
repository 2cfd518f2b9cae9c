"""Partition maintenance under a long analytics query (issue 6 item 3): the partitions job
(LIKE + ATTACH, DETACH, each under a 100 ms lock_timeout with jittered retries) against plain
`CREATE TABLE ... PARTITION OF` / `ALTER TABLE ... DETACH PARTITION` and against pg_partman's
`run_maintenance()`, on the dataset's user_behavior_log.

An analytics transaction reads the parent and then holds its locks for HOLD seconds; a
stream inserts into the current month and a second stream runs short reads on the parent;
0.3 s into the hold the DDL starts. Creation runs start with the month 3 ahead missing,
retention runs with a month 20 back present (past the 12-month retention). Everything runs
on a copy of the dataset's user_behavior_log in its own database: pg_partman must own the
default partition (below).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from datetime import date
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
    rotations,
    run_job,
)
from daemon.jobs.partitions import JOB
from daemon.migrations import migrate
from daemon.partitioning import add_months, current_month, month_start
from daemon.settings import PartitionedTable

KEY = "partitions"
TITLE = "Partition maintenance under a long analytics query: the job, PARTITION OF, pg_partman"

PARENT = "user_behavior_log"
QUALIFIED = f"public.{PARENT}"
CLONE = "bench_partitions"
NEW_MONTH = add_months(current_month(), 3)  # the month ahead a daily run has to create
OLD_MONTH = add_months(current_month(), -20)  # past the 12-month retention
RETENTION_MONTHS = 12
HOLD = 4.0  # seconds the analytics transaction keeps its locks after its first read
DDL_AFTER = 0.3  # seconds into the hold the DDL starts
INSERT_RATE, READ_RATE = 100.0, 20.0
SLOW = 0.2  # an insert slower than this counts as blocked
DDL_RETRIES = 10  # the daemon's default is 5 (about 6 s of backoff in all)
PARTMAN_PACKAGE = "postgresql-15-partman"

JOB_CREATE = "job: LIKE + ATTACH, lock_timeout 100 ms"
PARTITION_OF = "CREATE TABLE ... PARTITION OF"
PARTMAN_CREATE = "pg_partman run_maintenance()"
JOB_RETIRE = "job: DETACH, lock_timeout 100 ms"
PLAIN_DETACH = "ALTER TABLE ... DETACH PARTITION"
PARTMAN_RETIRE = "pg_partman run_maintenance() "  # trailing space: a distinct key, same label
CREATION = (JOB_CREATE, PARTITION_OF, PARTMAN_CREATE)
SHORT = {PARTITION_OF: "PARTITION OF", PLAIN_DETACH: "plain DETACH",
         PARTMAN_CREATE: "pg_partman", PARTMAN_RETIRE: "pg_partman"}
RETENTION = (JOB_RETIRE, PLAIN_DETACH, PARTMAN_RETIRE)

INSERT = sql.SQL("INSERT INTO {} (user_id, action_type) VALUES (%s, 'click')").format(
    sql.Identifier(PARENT))
READ = sql.SQL("SELECT count(*) FROM {} WHERE {} > now() - interval '1 minute'").format(
    sql.Identifier(PARENT), sql.Identifier("timestamp"))
ANALYTICS = sql.SQL("SELECT action_type, count(*) FROM {} GROUP BY 1").format(
    sql.Identifier(PARENT))


# -- pg_partman: install, register -----------------------------------------------------------

def partman_version(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute("SELECT default_version FROM pg_available_extensions"
                       " WHERE name = 'pg_partman'").fetchone()
    return str(row[0]) if row else None


def install_partman(env: BenchEnv) -> tuple[str | None, str]:
    """(version, how it got here); version None with the reason when it cannot be had."""
    with psycopg.connect(env.url) as conn:
        version = partman_version(conn)
    if version:
        return version, "already available on the cluster"
    if env.cluster.binaries.source != "debian":
        return None, f"the cluster runs {env.cluster.binaries.source} binaries, not Debian's"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return None, f"not installed, and installing {PARTMAN_PACKAGE} needs root and apt-get"
    try:
        from tests.tools import _apt, _tail  # the test suite's apt-get runner (imports pytest)
    except ImportError as exc:
        return None, f"cannot install {PARTMAN_PACKAGE}: {exc}"
    env.log(f"partitions: installing {PARTMAN_PACKAGE} with apt-get")
    for args in (("update",), ("install", "-y", "--no-install-recommends", PARTMAN_PACKAGE)):
        result = _apt(*args)
        if result.returncode != 0:
            return None, f"apt-get {args[0]} failed: {_tail(result.stderr or result.stdout)}"
    with psycopg.connect(env.url) as conn:
        version = partman_version(conn)
    if not version:
        return None, f"{PARTMAN_PACKAGE} installed but the cluster does not see pg_partman"
    return version, f"installed by this run from Debian's {PARTMAN_PACKAGE}"


def register_partman(url: str, version: str) -> str:
    """Register the parent with pg_partman (premake 3 months, retention 12 months) in one
    transaction; returns its suffix format. create_parent() creates <parent>_default itself
    (4.x has no option not to) and returns early without it when it has no month to create,
    so our empty default goes first and the month 3 ahead is made missing for it."""
    with psycopg.connect(url) as conn:
        conn.execute("CREATE SCHEMA partman")
        conn.execute("CREATE EXTENSION pg_partman SCHEMA partman")
        default = sql.Identifier(f"{PARENT}_default")
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(default)).fetchone()
        if row != (0,):
            raise RuntimeError(f"{PARENT}_default is not empty: {row}")
        conn.execute(sql.SQL("DROP TABLE {}").format(default))
        conn.execute("SELECT detach_month_partition(%s, %s, true)", (PARENT, NEW_MONTH))
        start = month_start(NEW_MONTH).isoformat()
        if int(version.split(".")[0]) >= 5:  # 5.x: p_type 'range' and a plain interval
            conn.execute("SELECT partman.create_parent(p_parent_table := %s, p_control := %s,"
                         " p_interval := '1 month', p_type := 'range', p_premake := 3,"
                         " p_start_partition := %s, p_jobmon := false)",
                         (QUALIFIED, "timestamp", start))
        else:
            conn.execute("SELECT partman.create_parent(p_parent_table := %s, p_control := %s,"
                         " p_type := 'native', p_interval := 'monthly', p_premake := 3,"
                         " p_start_partition := %s, p_jobmon := false)",
                         (QUALIFIED, "timestamp", start))
        conn.execute("UPDATE partman.part_config SET retention = %s,"
                     " retention_keep_table = false WHERE parent_table = %s",
                     (f"{RETENTION_MONTHS} months", QUALIFIED))
        row = conn.execute("SELECT datetime_string FROM partman.part_config"
                           " WHERE parent_table = %s", (QUALIFIED,)).fetchone()
        assert row is not None
        return str(row[0])


def name_like_partman(conn: psycopg.Connection[Any], suffix_format: str) -> None:
    """Rename month partitions to pg_partman's <parent>_p<suffix>, which it parses to order
    them (4.x: _pYYYY_MM, ours too: a no-op; 5.x: _pYYYYMMDD)."""
    rows = conn.execute(
        "SELECT c.relname, to_char(b.range_from AT TIME ZONE 'UTC', %s)"
        "  FROM partition_bounds(%s::regclass) b JOIN pg_class c ON c.oid = b.partition"
        " WHERE NOT b.is_default AND b.range_from IS NOT NULL",
        (suffix_format, PARENT)).fetchall()
    for relname, suffix in rows:
        if relname != f"{PARENT}_p{suffix}":
            conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier(relname), sql.Identifier(f"{PARENT}_p{suffix}")))


# -- state and methods -----------------------------------------------------------------------

def month_partition(conn: psycopg.Connection[Any], month: date) -> sql.Identifier | None:
    """The partition of `month`, whatever its name."""
    row = conn.execute("SELECT n.nspname, c.relname FROM partition_bounds(%s::regclass) b"
                       "  JOIN pg_class c ON c.oid = b.partition"
                       "  JOIN pg_namespace n ON n.oid = c.relnamespace"
                       " WHERE NOT b.is_default AND b.range_from = %s",
                       (PARENT, month_start(month))).fetchone()
    return sql.Identifier(row[0], row[1]) if row else None


def reset(url: str, retention: bool, suffix_format: str | None) -> None:
    """Creation runs: both months missing; retention runs: both present."""
    with psycopg.connect(url, autocommit=True) as conn:
        for month in (NEW_MONTH, OLD_MONTH):
            if retention:
                conn.execute("SELECT create_month_partition(%s, %s)", (PARENT, month))
            else:
                conn.execute("SELECT detach_month_partition(%s, %s, true)", (PARENT, month))
        if suffix_format:
            name_like_partman(conn, suffix_format)


def done(url: str, retention: bool) -> bool:
    with psycopg.connect(url) as conn:
        if retention:
            return month_partition(conn, OLD_MONTH) is None
        return month_partition(conn, NEW_MONTH) is not None


def job(url: str, workdir: Path) -> None:
    run_job(JOB, url, "partitions", tables={PARENT: PartitionedTable(
        retention_months=RETENTION_MONTHS)}, retention_action="drop", ddl_retries=DDL_RETRIES,
            state_dir=workdir)


def partition_of(url: str, _workdir: Path) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})")
                     .format(sql.Identifier(f"{PARENT}_p{NEW_MONTH:%Y_%m}"),
                             sql.Identifier(PARENT), sql.Literal(month_start(NEW_MONTH)),
                             sql.Literal(month_start(add_months(NEW_MONTH, 1)))))


def plain_detach(url: str, _workdir: Path) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        old = month_partition(conn, OLD_MONTH)
        assert old is not None
        conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(
            sql.Identifier(PARENT), old))
        conn.execute(sql.SQL("DROP TABLE {}").format(old))


def partman(url: str, _workdir: Path) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT partman.run_maintenance(p_parent_table := %s, p_jobmon := false)",
                     (QUALIFIED,))


# Every method gets the clone's URL and a state directory (the job's exports would go there).
METHODS: dict[str, Callable[[str, Path], None]] = {
    JOB_CREATE: job, PARTITION_OF: partition_of, PARTMAN_CREATE: partman,
    JOB_RETIRE: job, PLAIN_DETACH: plain_detach, PARTMAN_RETIRE: partman,
}


def clone_table(env: BenchEnv) -> str:
    """A migrated database holding a copy of the dataset's user_behavior_log (same rows, same
    month partitions and indexes) and one user: pg_partman needs to own the default partition,
    so it must not touch the dataset, and a whole-database clone would double tens of GB."""
    url = env.new_database(CLONE)
    with psycopg.connect(env.url) as source, psycopg.connect(url, autocommit=True) as sink:
        migrate(sink)
        columns = sql.SQL(", ").join(sql.Identifier(name) for (name,) in source.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'public.user_behavior_log'::regclass"
            " AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum"))
        user = source.execute("SELECT id FROM users ORDER BY id LIMIT 1").fetchone()
        bounds = source.execute(
            'SELECT min("timestamp"), max("timestamp") FROM user_behavior_log').fetchone()
        assert user is not None and bounds is not None
        sink.execute("INSERT INTO users (id, email) VALUES (%s, 'bench-partitions@example.com')",
                     (user[0],))
        if bounds[0] is not None:
            sink.execute(
                "SELECT create_month_partition('public.user_behavior_log', m::date)"
                "  FROM generate_series(date_trunc('month', %s::timestamptz AT TIME ZONE 'UTC'),"
                "                       %s::timestamptz AT TIME ZONE 'UTC', interval '1 month') m",
                (bounds[0], bounds[1])).fetchall()
        # Rows of users the clone does not have: skip the foreign-key triggers, as pg_restore.
        sink.execute("SET session_replication_role = replica")
        copy_out = sql.SQL("COPY (SELECT {} FROM public.user_behavior_log) TO STDOUT"
                           " (FORMAT binary)").format(columns)
        copy_in = sql.SQL("COPY public.user_behavior_log ({}) FROM STDIN (FORMAT binary)"
                          ).format(columns)
        with source.cursor().copy(copy_out) as reader, sink.cursor().copy(copy_in) as writer:
            for chunk in reader:
                writer.write(chunk)
        sink.execute("RESET session_replication_role")
        sink.execute("VACUUM ANALYZE public.user_behavior_log")
    return url


def scenario(url: str, user_id: Any, ddl: Callable[[], None]) -> dict[str, Any]:
    """The analytics transaction, the insert and read streams, and the DDL 0.3 s into it."""
    holding, failure = threading.Event(), []
    error = ""

    def analytics() -> None:
        try:
            with psycopg.connect(url) as conn:  # one transaction: its locks last to commit
                conn.execute(ANALYTICS).fetchall()
                holding.set()
                conn.execute("SELECT pg_sleep(%s)", (HOLD,))
                conn.commit()
        except psycopg.Error as exc:
            failure.append(exc)
            holding.set()

    reader = threading.Thread(target=analytics, name="bench-analytics")
    with latency_stream(url, INSERT, lambda: (user_id,), rate=INSERT_RATE) as inserts, \
            latency_stream(url, READ, rate=READ_RATE) as reads:
        reader.start()
        holding.wait(600)
        time.sleep(DDL_AFTER)
        began = time.perf_counter()
        try:
            ddl()
        except Exception as exc:  # a failed DDL is a result too (e.g. the job out of retries)
            error = str(exc).splitlines()[0] if str(exc) else repr(exc)
        ddl_seconds = time.perf_counter() - began
        reader.join()
        time.sleep(0.3)
    if failure:
        raise RuntimeError(f"the analytics query failed: {failure[0]}")
    return {"ddl": ddl_seconds, "max": max(inserts), "p99": percentile(inserts, 99),
            "slow": sum(1 for x in inserts if x > SLOW), "inserts": len(inserts),
            "read_max": max(reads), "error": error}


def run(env: BenchEnv) -> Section:
    section = Section(KEY, TITLE, [
        "work", "method", "DDL took", "longest insert", "insert p99",
        f"inserts > {SLOW * 1000:.0f} ms", "longest parent read"])
    version, how = install_partman(env)
    began = time.perf_counter()
    url = clone_table(env)
    clone_seconds = time.perf_counter() - began
    with psycopg.connect(url) as conn:
        counted = conn.execute("SELECT count(*) FROM user_behavior_log").fetchone()
    rows = int(counted[0]) if counted else 0
    suffix_format: str | None = None
    partman_error = ""
    try:
        if version:
            try:
                suffix_format = register_partman(url, version)
            except (psycopg.Error, RuntimeError) as exc:
                partman_error = f"registering the table failed: {exc}".splitlines()[0]
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT id FROM users LIMIT 1").fetchone()
            assert row is not None
            user_id = row[0]
        names = [n for n in METHODS if suffix_format or n not in (PARTMAN_CREATE, PARTMAN_RETIRE)]
        results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        missed: list[str] = []
        for round_no, name in rotations(names, env.repeat):
            retention = name in RETENTION
            reset(url, retention, suffix_format)
            got = scenario(url, user_id, partial(METHODS[name], url, env.workdir))
            if got["error"] or not done(url, retention):
                missed.append(f"{name.strip()} (round {round_no + 1}"
                              f"{': ' + got['error'] if got['error'] else ''})")
            results[name].append(got)
            env.log(f"  round {round_no + 1}: {name.strip():<40} DDL {got['ddl']:5.2f} s, "
                    f"longest insert {ms(got['max'])}, longest read {ms(got['read_max'])}")
    finally:
        env.drop_database(CLONE)

    def med(name: str, key: str) -> float:
        return median([r[key] for r in results[name]])

    unavailable = f"not available: {partman_error or how}"
    for work, group in (("create the month 3 ahead", CREATION), ("retire a month 20 back",
                                                                 RETENTION)):
        for name in group:
            if name not in results:
                section.rows.append([work, name.strip(), unavailable, "-", "-", "-", "-"])
                continue
            section.rows.append([work, name.strip(), f"{med(name, 'ddl'):.2f} s",
                                 ms(med(name, "max")), ms(med(name, "p99")),
                                 f"{med(name, 'slow'):.0f} of {med(name, 'inserts'):.0f}",
                                 ms(med(name, "read_max"))])
    for work, ours, group in (("creation", JOB_CREATE, CREATION),
                              ("retention", JOB_RETIRE, RETENTION)):
        others = []
        for name in group[1:]:
            if name not in results:
                others.append(f"{SHORT[name]} not available")
                continue
            blocked = f"{SHORT[name]} {ms(med(name, 'max'))}"
            if med(name, "max") < SLOW <= med(name, "read_max"):
                blocked += f" (its parent reads: {ms(med(name, 'read_max'))})"
            others.append(blocked)
        worst = max(r["max"] for r in results[ours])
        section.goals.append(Goal(
            f"job {work}: longest insert wait under 200 ms while a {HOLD:g} s query holds "
            "the parent (in brackets: the alternatives' longest insert wait, median)",
            f"{ms(worst)}, longest of {env.repeat} runs ({'; '.join(others)})", worst < SLOW))
    section.notes = [
        f"Each run: a transaction reads {PARENT} (all its partitions: ACCESS SHARE on each) "
        f"and keeps its locks {HOLD:g} s more; inserts into the current month ~"
        f"{INSERT_RATE:.0f}/s and reads of the last minute on the parent (planned over every "
        f"partition, the default one included) ~{READ_RATE:.0f}/s run throughout; the DDL "
        f"starts {DDL_AFTER} s into the hold, so anything that waits for the query waits about "
        f"{HOLD - DDL_AFTER:.1f} s. Medians of {env.repeat} runs per method, rotating order.",
        f"Creation runs start with {NEW_MONTH:%Y-%m} (3 months ahead) missing, retention runs "
        f"with {OLD_MONTH:%Y-%m} present (older than the {RETENTION_MONTHS}-month retention "
        "of every method); 'DDL took' is until the call returned, including the job's "
        "retries (ddl_retries 10 here; the daemon's default of 5 gives about 6 s of "
        "backoff). The job ran in-process with the daemon's settings for this one table, "
        "retention_action drop, like the plain DETACH + DROP and pg_partman's "
        "retention_keep_table false.",
        "Why: PARTITION OF and DETACH need ACCESS EXCLUSIVE on the parent; waiting for the "
        "query, they queue every insert and read of the parent behind them. ATTACH needs only "
        "SHARE UPDATE EXCLUSIVE on the parent (inserts pass) but ACCESS EXCLUSIVE on the "
        "default partition, which every read of the parent not pruned to one month locks "
        "too: pg_partman's ATTACH, waiting without lock_timeout, holds those reads for the "
        "whole query. The job's statements give up after lock_timeout (100 ms) and retry, so "
        "what queues behind them waits at most about that long per attempt.",
        "Each stream is one connection, so a block shows as one long insert ('inserts > 200 "
        "ms' stays at 1 while the stream stalls; the total shows how many it missed); with "
        "many writers every insert arriving in that window would wait.",
        f"All on {CLONE}: a freshly migrated database into which the dataset's "
        f"user_behavior_log ({rows:,} rows, same month partitions and indexes) was copied in "
        f"{clone_seconds:.0f} s, dropped afterwards, so the dataset keeps its own default "
        "partition and no whole-database copy is needed.",
    ]
    if suffix_format and version:
        registered = ("p_type 'range', p_interval '1 month'" if int(version.split(".")[0]) >= 5
                      else "p_type 'native', p_interval 'monthly'")
        naming = (f"Its month names ({PARENT}_p{suffix_format}) are the job's, so both "
                  "see the same partitions." if suffix_format == "YYYY_MM" else
                  f"Its month names ({PARENT}_p{suffix_format}) differ from the job's: the "
                  "clone's month partitions were renamed to them after each reset (the job "
                  "finds months by their bounds, pg_partman by their names).")
        section.notes.append(
            f"pg_partman {version} ({how}): create_parent({registered}, premake 3) with "
            "part_config.retention 12 months; run_maintenance() called with p_parent_table "
            "and p_jobmon false. Precondition handled on the clone: create_parent makes "
            f"{PARENT}_default itself (CREATE TABLE LIKE + ATTACH ... DEFAULT) and fails if "
            "it exists, so our empty default partition was dropped first; it creates no "
            "default at all when every month it would premake exists, so it was registered "
            f"with p_start_partition {NEW_MONTH:%Y-%m}, that month missing. {naming} "
            "Every run starts from the same catalog state, whichever method made or "
            "retired the month before. run_maintenance() works out the premade months "
            "from the newest partition holding rows (the current month here) and, like "
            "the job, creates "
            "with CREATE TABLE LIKE + ATTACH PARTITION, but in one transaction without "
            "lock_timeout; its retention is DETACH + DROP, also without lock_timeout.")
    else:
        section.notes.append(f"pg_partman rows: {unavailable}.")
    if missed:
        section.notes.append("Runs that did not get their work done (month not created or "
                             "not retired by the end): " + ", ".join(missed) + ".")
    return section
