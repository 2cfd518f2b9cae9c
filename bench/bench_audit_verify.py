"""Audit chain verification: the audit_verify job against a seed-style PL/pgSQL loop.

    python -m bench.bench_audit_verify [--rows 1000000] [--repeat 3] [--small] [--pg 15]

Builds a chain of `--rows` audit rows (hash_version 2, hashes computed independently in
Python, so the build also cross-checks the schema's hash definition; 1% of the payloads
redacted), then runs side by side, in rotating order, `--repeat` times each:

  * job full, 2 connections: `run-job audit_verify --full` (parallel ranges);
  * job full, 1 connection: the same, sequential;
  * schema SQL alone: SELECT verify_audit_log_integrity() (one statement, one backend);
  * seed loop: verify_audit_log_integrity_loop(), defined here and not in the schema: the
    row-by-row PL/pgSQL loop over the same rows that the seed would have written, hashing
    the fields rendered as text (one sha256 per row, on a copy of the rows carrying
    text-rendered hashes);
  * job incremental: the newest 100k rows (10% with --small) after a checkpoint.

Goals (issue 4): full verification at least 3x faster than the loop and at least 1M rows/s
on the 2-core machine. Prints medians, rows/s and ratios. Not a test: nothing asserts.
Starts its own throwaway cluster and removes it afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import statistics
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg import sql
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.db import set_timeouts
from daemon.jobs.audit_verify import CHECKPOINT_FILE
from daemon.jobs.audit_verify import JOB as AUDIT_VERIFY
from daemon.jobs.base import JobContext
from daemon.migrations import migrate
from daemon.settings import Settings
from tests.pgcluster import available_binaries, start_cluster

TABLES = ("bookings", "crypto_payments", "users", "booking_items", "oauth_accounts")
SECONDARY_INDEXES = {
    "audit_log_user_idx": "CREATE INDEX audit_log_user_idx ON audit_log (user_id, occurred_at)",
    "audit_log_row_idx": "CREATE INDEX audit_log_row_idx ON audit_log (table_name, row_id)",
    "audit_log_occurred_at_idx":
        "CREATE INDEX audit_log_occurred_at_idx ON audit_log (occurred_at)",
    "audit_log_payload_gin":
        "CREATE INDEX audit_log_payload_gin ON audit_log USING gin (payload jsonb_path_ops)",
}

# The seed's verifier, as it would have been written: one row at a time, every field
# rendered as text, hex digests stored as text.
SEED_LOOP = """
CREATE TABLE bench_seed_audit (
    chain_position bigint PRIMARY KEY,
    occurred_at    timestamptz NOT NULL,
    table_name     text NOT NULL,
    operation      text NOT NULL,
    row_id         uuid NOT NULL,
    user_id        uuid,
    actor          text NOT NULL,
    payload        jsonb,
    prev_hash      text NOT NULL,
    row_hash       text NOT NULL
);
CREATE FUNCTION verify_audit_log_integrity_loop() RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    rec    record;
    v_prev text := repeat('0', 64);
    v_hash text;
BEGIN
    FOR rec IN SELECT * FROM bench_seed_audit ORDER BY chain_position LOOP
        IF rec.prev_hash <> v_prev THEN
            RETURN false;
        END IF;
        v_hash := encode(sha256(convert_to(
            v_prev || rec.chain_position::text || rec.occurred_at::text || rec.table_name
            || rec.operation || rec.actor || rec.row_id::text || coalesce(rec.user_id::text, '')
            || coalesce(rec.payload::text, ''), 'UTF8')), 'hex');
        IF v_hash <> rec.row_hash THEN
            RETURN false;
        END IF;
        v_prev := rec.row_hash;
    END LOOP;
    RETURN true;
END
$$;
"""


def jsonb_text(value: Any) -> str:
    """PostgreSQL's jsonb output: keys by length then bytes, ', ' and ': ' separators."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        return "{" + ", ".join(json.dumps(k, ensure_ascii=False) + ": " + jsonb_text(value[k])
                               for k in keys) + "}"
    return json.dumps(value, ensure_ascii=False)


def build_chain(conn: psycopg.Connection[Any], rows: int) -> None:
    """COPY `rows` chained audit rows (hash_version 2) computed in Python."""
    for name in SECONDARY_INDEXES:
        # rebuilt after the load (faster, same result)
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    prev = bytes(32)
    base = int(dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)
    pg_epoch = int(dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)
    started = time.monotonic()
    copy_sql = ("COPY audit_log (chain_position, occurred_at, table_name, operation, row_id,"
                " user_id, actor, payload_bytes, payload_hash, prev_hash, row_hash) FROM STDIN")
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for pos in range(1, rows + 1):
            micros = base + pos * 997
            table = TABLES[pos % len(TABLES)]
            operation = ("INSERT", "UPDATE", "UPDATE", "DELETE")[pos % 4]
            row_id = uuid.UUID(int=pos * 7919)
            user_id = uuid.UUID(int=pos % 50_000 + 1) if pos % 9 else None
            actor = "gth_app/support-7" if pos % 5 == 0 else "gth_app"
            new = {"id": str(row_id), "status": "confirmed", "total_amount": pos % 5000 + 1,
                   "destination": "دبي" if pos % 2 else "القاهرة"}
            payload = jsonb_text({"new": new} if operation == "INSERT" else
                                 {"old": {**new, "status": "pending"}, "new": new})
            payload_bytes = payload.encode()
            payload_hash = hashlib.sha256(payload_bytes).digest()
            row_hash = hashlib.sha256(
                prev + struct.pack(">qq", pos, micros - pg_epoch) + row_id.bytes + payload_hash
                + (b"\x01" + user_id.bytes if user_id else b"\x00")
                + f"{table} {operation} {actor}".encode()).digest()
            occurred = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)
            copy.write_row((pos, occurred, table, operation, row_id, user_id, actor,
                            payload_bytes, payload_hash, prev, row_hash))
            prev = row_hash
    print(f"  built {rows:,} audit rows in {time.monotonic() - started:.1f} s", flush=True)
    for statement in SECONDARY_INDEXES.values():
        conn.execute(statement)
    # 1% of the payloads redacted the GDPR way: the chain must still verify.
    conn.execute("UPDATE audit_log SET payload_bytes = NULL, redacted_at = now()"
                 " WHERE chain_position % 100 = 0")


def build_seed_copy(conn: psycopg.Connection[Any], url: str) -> None:
    """The same rows with seed-style text hashes (fields rendered by PostgreSQL itself)."""
    conn.execute(SEED_LOOP)
    started = time.monotonic()
    prev = "0" * 64
    with psycopg.connect(url, autocommit=True) as reader, psycopg.connect(
            url, autocommit=True) as writer:
        out_sql = ("COPY (SELECT chain_position, occurred_at, table_name, operation, row_id,"
                   " user_id, actor, payload, chain_position::text AS p, occurred_at::text AS t,"
                   " row_id::text AS r, coalesce(user_id::text, '') AS u,"
                   " coalesce(payload::text, '') AS j FROM audit_log ORDER BY 1) TO STDOUT")
        in_sql = ("COPY bench_seed_audit (chain_position, occurred_at, table_name, operation,"
                  " row_id, user_id, actor, payload, prev_hash, row_hash) FROM STDIN")
        with reader.cursor() as rcur, rcur.copy(out_sql) as source, \
                writer.cursor() as wcur, wcur.copy(in_sql) as sink:
            for line in source.rows():
                fields = list(line)
                text = (prev + fields[8] + fields[9] + fields[2] + fields[3] + fields[6]
                        + fields[10] + fields[11] + fields[12])
                row_hash = hashlib.sha256(text.encode()).hexdigest()
                sink.write_row((*fields[:8], prev, row_hash))
                prev = row_hash
    conn.execute("VACUUM ANALYZE bench_seed_audit")
    print(f"  built the seed-style copy in {time.monotonic() - started:.1f} s", flush=True)


def job_context(url: str, state_dir: Path, options: dict[str, Any],
                **overrides: Any) -> JobContext:
    app = Settings(database_url=SecretStr(url), state_dir=state_dir)
    settings = app.jobs.audit_verify.model_copy(update=overrides)

    @contextlib.contextmanager
    def factory() -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(url, autocommit=True) as conn:
            set_timeouts(conn, settings.statement_timeout_ms, settings.lock_timeout_ms)
            yield conn

    return JobContext(task="audit_verify", settings=settings, app_settings=app,
                      connection_factory=factory, log=structlog.get_logger(),
                      stop_event=threading.Event(), options=options)


def checkpoint_at(conn: psycopg.Connection[Any], state_dir: Path, position: int) -> None:
    """A valid full-pass checkpoint at `position`, in the database and in the state file."""
    conn.execute("DELETE FROM maintenance.audit_checkpoints")
    row = conn.execute("SELECT row_hash, id FROM audit_log WHERE chain_position = %s",
                       (position,)).fetchone()
    assert row is not None
    conn.execute(
        "INSERT INTO maintenance.audit_checkpoints (verified_through_position, row_hash,"
        " audit_id, full_pass, valid, from_position) VALUES (%s, %s, %s, true, true, 1)",
        (position, row[0], row[1]))
    ident = conn.execute("SELECT current_database(),"
                         " (SELECT system_identifier FROM pg_control_system())::text").fetchone()
    assert ident is not None
    (state_dir / CHECKPOINT_FILE).write_text(json.dumps({
        "database": ident[0], "system_identifier": ident[1], "position": position,
        "row_hash": bytes(row[0]).hex(), "audit_id": row[1],
        "verified_at": dt.datetime.now(dt.UTC).isoformat(), "full_pass": True}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="20k rows, for a quick look")
    parser.add_argument("--pg", type=int, help="PostgreSQL major version (default: newest)")
    args = parser.parse_args(argv)
    rows = 20_000 if args.small else args.rows
    incremental_rows = min(100_000, max(rows // 10, 1))
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))

    binaries = [b for b in available_binaries() if args.pg is None or b.version == args.pg]
    if not binaries:
        print(f"PostgreSQL {args.pg} is not available", file=sys.stderr)
        return 2
    cluster = start_cluster(binaries[-1])
    state_dir = Path(tempfile.mkdtemp(prefix="gth-bench-audit-"))
    try:
        url = cluster.url()
        print(f"PostgreSQL {binaries[-1].version} ({binaries[-1].source}), {os.cpu_count()} "
              f"CPUs, load average {os.getloadavg()[0]:.2f}; {rows:,} audit rows", flush=True)
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            build_chain(conn, rows)
            build_seed_copy(conn, url)
            conn.execute("VACUUM ANALYZE audit_log")
            for table in ("audit_log", "bench_seed_audit"):  # warm the cache for everyone
                conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))

            def job_full(connections: int) -> Callable[[], int]:
                def run() -> int:
                    ctx = job_context(url, state_dir, {"full": True},
                                      parallel_connections=connections)
                    details = AUDIT_VERIFY().run(ctx).details
                    assert details["rows_verified"] == rows, details
                    return int(details["rows_verified"])
                return run

            def schema_sql() -> int:
                got = conn.execute("SELECT verify_audit_log_integrity()").fetchone()
                assert got == (True,), got
                return rows

            def seed_loop() -> int:
                got = conn.execute("SELECT verify_audit_log_integrity_loop()").fetchone()
                assert got == (True,), got
                return rows

            def incremental() -> int:
                ctx = job_context(url, state_dir, {})
                details = AUDIT_VERIFY().run(ctx).details
                assert details["mode"] == "incremental", details
                assert details["rows_verified"] == incremental_rows, details
                return incremental_rows

            methods: dict[str, Callable[[], int]] = {
                "job full, 2 connections": job_full(2),
                "job full, 1 connection": job_full(1),
                "schema SQL, verify_audit_log_integrity()": schema_sql,
                "seed-style PL/pgSQL loop (text)": seed_loop,
                f"job incremental, newest {incremental_rows:,}": incremental,
            }
            times: dict[str, list[float]] = {name: [] for name in methods}
            names = list(methods)
            for round_no in range(args.repeat):
                for name in names[round_no % len(names):] + names[:round_no % len(names)]:
                    if name.startswith("job incremental"):
                        checkpoint_at(conn, state_dir, rows - incremental_rows)
                    started = time.perf_counter()
                    methods[name]()
                    times[name].append(time.perf_counter() - started)
                    print(f"  round {round_no + 1}: {name}: {times[name][-1]:.3f} s", flush=True)
            report(times, rows, incremental_rows)
            breakdown(conn, rows)
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        cluster.destroy()
        for leftover in state_dir.glob("*"):
            leftover.unlink()
        state_dir.rmdir()
    return 0


def report(times: dict[str, list[float]], rows: int, incremental_rows: int) -> None:
    median = {name: statistics.median(values) for name, values in times.items()}
    loop = median["seed-style PL/pgSQL loop (text)"]
    print(f"\n{'method':<44} {'median s':>9} {'rows/s':>12} {'vs loop':>8}")
    for name, seconds in median.items():
        count = incremental_rows if name.startswith("job incremental") else rows
        print(f"{name:<44} {seconds:>9.3f} {count / seconds:>12,.0f} {loop / seconds:>7.2f}x")
    full = median["job full, 2 connections"]
    incremental = next(v for k, v in median.items() if k.startswith("job incremental"))
    print(f"\njob full (2 connections) vs seed loop: {loop / full:.2f}x faster (goal >= 3x); "
          f"{rows / full:,.0f} rows/s (goal >= 1,000,000)")
    print(f"incremental ({incremental_rows:,} newest rows) vs full pass: "
          f"{full / incremental:.1f}x faster")


BREAKDOWN = {
    "payload hash (sha256(payload_bytes))":
        "SELECT count(*) FROM audit_log WHERE payload_bytes IS NOT NULL"
        " AND sha256(payload_bytes) <> payload_hash",
    "(hash_version 1 rendered payload::text)":
        "SELECT count(*) FROM audit_log WHERE length(payload::text) < 0",
    "row hash (audit_row_hash_v2)":
        "SELECT count(*) FROM audit_log a WHERE audit_row_hash_v2(a.prev_hash, a.chain_position,"
        " a.occurred_at, a.table_name, a.operation, a.actor, a.row_id, a.user_id,"
        " a.payload_hash) <> a.row_hash",
    "one sha256() call per row": "SELECT count(*) FROM audit_log WHERE sha256(row_hash) = ''",
    "ordered index scan + lag()":
        "SELECT count(*) FROM (SELECT prev_hash <> lag(row_hash) OVER (ORDER BY chain_position)"
        " AS b FROM audit_log WHERE chain_position >= 1) s WHERE b",
    "sequential scan": "SELECT count(*) FROM audit_log",
}


def breakdown(conn: psycopg.Connection[Any], rows: int) -> None:
    """Where a verification's time goes: one backend, no parallel workers, one pass each."""
    conn.execute("SET max_parallel_workers_per_gather = 0")
    print("\nper-row cost of the parts (one backend, one pass each):")
    for name, statement in BREAKDOWN.items():
        started = time.perf_counter()
        conn.execute(statement)
        print(f"  {name:<42} {(time.perf_counter() - started) * 1e6 / rows:6.2f} us/row")
    conn.execute("RESET max_parallel_workers_per_gather")


if __name__ == "__main__":
    raise SystemExit(main())
