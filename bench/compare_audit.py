"""Audit chain verification: the audit_verify job against the seed-style PL/pgSQL loop.

On the dataset's own audit trail (every audited row the generator wrote), side by side in
rotating order:

  * job full, 2 connections: `run-job audit_verify --full` as the daemon runs it every day,
    on a chain whose blocks an earlier pass sealed (each sealed block re-hashed once and
    compared with its seal, see docs/audit.md);
  * job full, 1 connection: the same, one backend;
  * job first full pass: the same on a chain without seals: every row's own hashes, then
    each block sealed (what a block costs once, when it is new or after a redaction);
  * job full --rehash: every row's own two hashes, no seals (what an external auditor runs);
  * schema SQL: SELECT verify_audit_log_integrity() (one statement, row by row);
  * seed loop: verify_audit_log_integrity_loop(), defined here and not in the schema: the
    row-by-row PL/pgSQL loop the seed would have written, one sha256 per row over the fields
    rendered as text, on a copy of the rows carrying such text hashes;
  * job incremental: the newest 100k rows after a checkpoint, against the full pass.

Goals (issues 4 and 6): full verification at least 3x faster than the loop and at least
1M rows/s on the 2-core machine. The issue measured the loop at 370k rows/s on that machine;
shared machines here have run the same loop 1.5 to 3x slower from one day to the next, so the
rows/s goal is judged as the ratio it stands for (1M / 370k = 2.7x the loop, run side by side),
and this machine's own rows/s is reported beside it. A per-row cost breakdown explains the
result.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.common import BenchEnv, Goal, Section, median, ratio, rotations, run_job
from daemon.jobs._audit_chain import GROUP
from daemon.jobs.audit_verify import CHECKPOINT_FILE, database_identity, write_file_checkpoint
from daemon.jobs.audit_verify import JOB as AUDIT_VERIFY
from daemon.sqlfiles import query

KEY = "audit"
TITLE = "Audit chain verification (full chain, the dataset's audit trail)"
INCREMENTAL_ROWS = 100_000
BREAKDOWN_ROWS = 1_000_000
GOAL_ROWS_S = 1_000_000
# The seed loop's speed on the 2-core machine (issue 4): the yardstick that turns
# the absolute rows/s goal into a ratio measured side by side.
REFERENCE_LOOP_ROWS_S = 370_000

# The seed's verifier, as it would have been written: one row at a time, every field
# rendered as text, hex digests stored as text.
SEED_LOOP = """
DROP TABLE IF EXISTS bench_seed_audit;
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
CREATE OR REPLACE FUNCTION verify_audit_log_integrity_loop() RETURNS boolean
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

BREAKDOWN = {
    "payload hash, sha256(payload_bytes)":
        "SELECT count(*) FROM audit_log WHERE chain_position <= %(n)s"
        " AND payload_bytes IS NOT NULL AND sha256(payload_bytes) <> payload_hash",
    "row hash, audit_row_hash_v2() (concatenation + sha256)":
        "SELECT count(*) FROM audit_log a WHERE chain_position <= %(n)s AND audit_row_hash_v2("
        "a.prev_hash, a.chain_position, a.occurred_at, a.table_name, a.operation, a.actor,"
        " a.row_id, a.user_id, a.payload_hash) <> a.row_hash",
    "one sha256() of 32 bytes": "SELECT count(*) FROM audit_log WHERE chain_position <= %(n)s"
                                " AND sha256(row_hash) = ''",
    "ordered index scan + lag() linkage":
        "SELECT count(*) FROM (SELECT prev_hash <> lag(row_hash) OVER (ORDER BY chain_position)"
        " AS b FROM audit_log WHERE chain_position <= %(n)s) s WHERE b",
    "sequential scan": "SELECT count(*) FROM audit_log WHERE chain_position <= %(n)s",
    "sealed block digest, audit_block_digest() per block of 8192":
        "SELECT count(d.digest) FROM generate_series(0, %(n)s / 8192 - 1) g,"
        " audit_block_digest(g * 8192 + 1, g * 8192 + 8192) d",
}
FULL = "job full, 2 connections (default; sealed chain)"
LOOP = "seed-style PL/pgSQL loop (text)"


def run(env: BenchEnv) -> Section:
    state_dir = env.workdir / "audit-state"
    state_dir.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(env.url, autocommit=True) as conn:
        head = conn.execute("SELECT max(chain_position), count(*) FROM audit_log").fetchone()
        assert head is not None and head[0] == head[1], "the dataset's chain has gaps"
        rows = int(head[0])
        incremental = min(INCREMENTAL_ROWS, max(rows // 10, 1))
        env.log(f"audit: {rows:,} chain rows; building the seed-style copy")
        built = build_seed_copy(conn, env.url)
        conn.execute("VACUUM ANALYZE bench_seed_audit")
        for table in ("audit_log", "bench_seed_audit"):  # warm the cache for everyone
            conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))

        def job_full(connections: int, rehash: bool = False,
                     sealed: int | None = None) -> Callable[[], None]:
            def run_once() -> None:
                options = {"rehash": True} if rehash else {"full": True}
                details = run_job(AUDIT_VERIFY, env.url, "audit_verify", options=options,
                                  state_dir=state_dir,
                                  parallel_connections=connections).details
                assert details["rows_verified"] == rows, details
                if sealed is not None:
                    assert details["rows_checked_by_seal"] == sealed, details
            return run_once

        def sealed_chain() -> None:
            """Untimed: make sure the seals are in place and anchored (a full pass)."""
            newest = conn.execute(
                "SELECT valid AND full_pass AND seal_seq IS NOT NULL"
                " FROM maintenance.audit_checkpoints ORDER BY id DESC LIMIT 1").fetchone()
            if not (newest and newest[0]):
                run_job(AUDIT_VERIFY, env.url, "audit_verify", options={"full": True},
                        state_dir=state_dir)

        def schema_sql() -> None:
            assert conn.execute("SELECT verify_audit_log_integrity()").fetchone() == (True,)

        def seed_loop() -> None:
            got = conn.execute("SELECT verify_audit_log_integrity_loop()").fetchone()
            assert got == (True,), got

        def incremental_pass() -> None:
            details = run_job(AUDIT_VERIFY, env.url, "audit_verify", state_dir=state_dir).details
            assert details["mode"] == "incremental", details
            assert details["rows_verified"] == incremental, details

        def nothing() -> None:
            pass

        sealable = rows - rows % 8192
        # name: (untimed preparation, timed run, rows)
        methods: dict[str, tuple[Callable[[], None], Callable[[], None], int]] = {
            FULL: (sealed_chain, job_full(2, sealed=sealable), rows),
            "job full, 1 connection (sealed chain)": (sealed_chain, job_full(1, sealed=sealable),
                                                      rows),
            "job first full pass, 2 connections (verifies and seals)":
                (lambda: reset_seals(conn, state_dir), job_full(2, sealed=0), rows),
            "job full --rehash, 2 connections (every row's own hashes)":
                (nothing, job_full(2, rehash=True, sealed=0), rows),
            "schema SQL, verify_audit_log_integrity()": (nothing, schema_sql, rows),
            LOOP: (nothing, seed_loop, rows),
            f"job incremental, newest {incremental:,}":
                (lambda: checkpoint_at(conn, state_dir, rows - incremental), incremental_pass,
                 incremental),
        }
        times: dict[str, list[float]] = {name: [] for name in methods}
        for round_no, name in rotations(list(methods), env.repeat):
            methods[name][0]()
            began = time.perf_counter()
            methods[name][1]()
            times[name].append(time.perf_counter() - began)
            env.log(f"  audit round {round_no + 1}: {name}: {times[name][-1]:.2f} s")
        parts = breakdown(conn, min(rows, BREAKDOWN_ROWS))
        # The copy is as big as the chain itself (tens of GB at full scale): give it back.
        conn.execute("DROP TABLE bench_seed_audit")
        conn.execute("DROP FUNCTION verify_audit_log_integrity_loop()")
        reset_seals(conn, state_dir)

    med = {name: median(values) for name, values in times.items()}
    loop = med[LOOP]
    full = med[FULL]
    first = med["job first full pass, 2 connections (verifies and seals)"]
    rehash = med["job full --rehash, 2 connections (every row's own hashes)"]
    section = Section(KEY, TITLE, ["method", "rows", "median s", "rows/s", "vs seed loop"])
    for name, (_, _, count) in methods.items():
        section.rows.append([name, f"{count:,}", f"{med[name]:.3f}",
                             f"{count / med[name]:,.0f}", ratio(loop * count / rows, med[name])])
    incremental_name = next(n for n in med if n.startswith("job incremental"))
    section.goals = [
        Goal("job full >= 3x faster than the seed loop", ratio(loop, full), loop / full >= 3),
        Goal(f"job full >= {GOAL_ROWS_S:,} rows/s on the issue's 2-core machine, where the "
             f"loop did {REFERENCE_LOOP_ROWS_S:,} rows/s: >= "
             f"{GOAL_ROWS_S / REFERENCE_LOOP_ROWS_S:.2f}x the loop",
             f"{ratio(loop, full)}: {REFERENCE_LOOP_ROWS_S * loop / full:,.0f} rows/s there "
             f"({rows / full:,.0f} rows/s on this machine, whose loop did "
             f"{rows / loop:,.0f} rows/s)",
             REFERENCE_LOOP_ROWS_S * loop / full >= GOAL_ROWS_S),
    ]
    section.notes = [
        f"Incremental pass over the newest {incremental:,} rows took "
        f"{med[incremental_name]:.3f} s against {full:.2f} s for the full pass "
        f"({full / med[incremental_name]:.0f}x less); the hourly runs are incremental.",
        f"The first full pass over blocks without seals took {first:.2f} s "
        f"({first / full:.1f}x the sealed pass): a block pays it once, when it is new or after "
        f"a GDPR redaction unsealed it. --rehash (every row's own hashes, no seals) took "
        f"{rehash:.2f} s ({ratio(loop, rehash)} the loop).",
        f"The seed-style copy (text hashes) was built in {built:.0f} s, outside the timings.",
        "Per-row cost of the parts, one backend, no parallel workers, first "
        f"{min(rows, BREAKDOWN_ROWS):,} rows: "
        + "; ".join(f"{name} {us:.2f} us" for name, us in parts.items()) + ".",
        _why(parts, loop * 1e6 / rows),
    ]
    return section


def _why(parts: dict[str, float], loop_us: float) -> str:
    """What a row costs each way, from this run's own numbers."""
    scan = parts["sequential scan"]
    short = parts["one sha256() of 32 bytes"] - scan
    payload = parts["payload hash, sha256(payload_bytes)"] - scan
    row = parts["row hash, audit_row_hash_v2() (concatenation + sha256)"] - scan
    block = parts["sealed block digest, audit_block_digest() per block of 8192"]
    return (
        "Why seals: verifying a row's own hashes takes two sha256() calls (the payload hash, "
        "which lets a GDPR-redacted payload leave the chain verifiable, and the row hash), and "
        f"from SQL one call costs {short:.2f} us even for 32 bytes (per-call setup): the "
        f"payload hash {payload:.2f} us and the row hash with its concatenation {row:.2f} us "
        f"per row, against {loop_us:.2f} us per row in all for the seed loop's single hash "
        f"over text, so row by row the job cannot pass {loop_us / (payload + row):.1f}x the "
        f"loop per core. A sealed block costs {block:.2f} us per row (its bytes, scan "
        "included, hashed by one call per block) and the job splits the chain over "
        "`parallel_connections` connections.")


def build_seed_copy(conn: psycopg.Connection[Any], url: str) -> float:
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
    return time.monotonic() - started


def checkpoint_at(conn: psycopg.Connection[Any], state_dir: Path, position: int) -> None:
    """A valid full-pass checkpoint at `position`, in the database and in the state file,
    written with the job's own query and writer (as if a full pass had ended there)."""
    conn.execute("DELETE FROM maintenance.audit_checkpoints")
    row = conn.execute(query(GROUP, "row_at"), {"position": position}).fetchone()
    assert row is not None
    audit_id, row_hash = int(row[0]), bytes(row[2])
    checkpoint = conn.execute(query(GROUP, "insert_checkpoint"), {
        "position": position, "row_hash": row_hash, "audit_id": audit_id, "full_pass": True,
        "valid": True, "from_position": 1, "rows_checked": position, "redacted_rows": 0,
        "duration_ms": 0, "first_bad_position": None, "first_bad_id": None, "reason": None,
        "seal_seq": None, "seal_hash": None,
    }).fetchone()
    assert checkpoint is not None
    write_file_checkpoint(state_dir / CHECKPOINT_FILE, database_identity(conn), position,
                          row_hash, audit_id, checkpoint[1], True)


def reset_seals(conn: psycopg.Connection[Any], state_dir: Path) -> None:
    """Back to a chain that was never verified: no seals, checkpoints or checkpoint file.
    (The seal log is append-only: its guard triggers are switched off for this, superuser.)"""
    conn.execute("ALTER TABLE maintenance.audit_seals DISABLE TRIGGER USER")
    conn.execute("TRUNCATE maintenance.audit_seals")
    conn.execute("ALTER TABLE maintenance.audit_seals ENABLE TRIGGER USER")
    conn.execute("DELETE FROM maintenance.audit_checkpoints")
    (state_dir / CHECKPOINT_FILE).unlink(missing_ok=True)


def breakdown(conn: psycopg.Connection[Any], rows: int) -> dict[str, float]:
    """Where a verification's time goes: microseconds per row of each part, one backend."""
    conn.execute("SET max_parallel_workers_per_gather = 0")
    parts = {}
    for name, statement in BREAKDOWN.items():
        began = time.perf_counter()
        conn.execute(statement, {"n": rows})
        parts[name] = (time.perf_counter() - began) * 1e6 / rows
    conn.execute("RESET max_parallel_workers_per_gather")
    return parts
