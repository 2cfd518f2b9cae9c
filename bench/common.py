"""What every benchmark section shares: the environment, latency streams, statistics, the
in-process job runner and the result types that bench/RESULTS.md is written from.

A section is a module under bench/ with `KEY`, `TITLE` and `run(env) -> Section`; it
measures the daemon's way and the alternatives side by side, in rotating order, on the same
data, and reports medians and ratios (never absolute goals alone: the machines are shared).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from daemon.demo_data import Scale
from daemon.jobs.base import Job, JobResult
from tests.jobcontext import job_context
from tests.pgcluster import PgCluster

# Appended to the throwaway cluster's postgresql.conf (on top of the test cluster's fsync=off
# settings, which RESULTS.md states): enough memory that 20M-row builds do not thrash.
BENCH_SETTINGS = {
    "shared_buffers": "2GB",
    "maintenance_work_mem": "512MB",
    "work_mem": "32MB",
    "max_wal_size": "2GB",  # the full dataset already takes tens of GB of disk
    "checkpoint_timeout": "30min",
    "autovacuum": "on",
}


@dataclass
class BenchEnv:
    """The cluster and the dataset database every section works on."""

    cluster: PgCluster
    dbname: str  # migrated, filled by the demo-data generator at `scale`
    scale: Scale
    small: bool
    repeat: int
    workdir: Path
    log: Callable[[str], None] = print

    @property
    def url(self) -> str:
        return self.cluster.url(self.dbname)

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.cluster.url(), autocommit=True)

    def new_database(self, name: str, template: str | None = None) -> str:
        """An empty (or template-cloned) database; dropped first if it exists."""
        with self.admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
            if template is None:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            else:
                admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY")
                              .format(sql.Identifier(name), sql.Identifier(template)))
        return self.cluster.url(name)

    def drop_database(self, name: str) -> None:
        with self.admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


@dataclass
class Goal:
    text: str  # "job >= 3x the seed loop"
    measured: str  # "3.4x"
    met: bool


@dataclass
class Section:
    """One comparison: a table of medians and ratios, the goals, and notes."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # how long the section took (filled in by the runner)

    def markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.goals:
            lines += ["", "| goal | measured | |", "|---|---|---|"]
            lines += [f"| {g.text} | {g.measured} | {'met' if g.met else '**NOT met**'} |"
                      for g in self.goals]
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        lines += ["", f"_Section time: {self.seconds:.0f} s._", ""]
        return "\n".join(lines)


# -- statistics ------------------------------------------------------------------------------

def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds == seconds else "-"


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator else "-"


def rotations(names: Sequence[str], repeat: int) -> Iterator[tuple[int, str]]:
    """(round, name) in rotating order, so no method always runs first or on a warm cache."""
    for round_no in range(repeat):
        shift = round_no % len(names)
        for name in [*names[shift:], *names[:shift]]:
            yield round_no, name


# -- concurrent load -------------------------------------------------------------------------

@contextlib.contextmanager
def latency_stream(url: str, statement: str | sql.Composed,
                   params: Callable[[], Sequence[Any] | dict[str, Any]] | None = None,
                   rate: float = 200.0, timeout_ms: int = 0) -> Iterator[list[float]]:
    """Run `statement` about `rate` times per second on its own connection while the body runs;
    yields the list of latencies in seconds (filled as it goes). Errors are counted as
    latencies of the failed attempt and re-raised at exit only if every attempt failed."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    ready = threading.Event()

    def loop() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            if timeout_ms:
                conn.execute(sql.SQL("SET statement_timeout = {}").format(
                    sql.Literal(timeout_ms)))
            ready.set()
            while not stop.is_set():
                began = time.perf_counter()
                try:
                    conn.execute(statement, params() if params else None)
                except psycopg.Error as exc:
                    errors.append(exc)
                elapsed = time.perf_counter() - began
                latencies.append(elapsed)
                stop.wait(max(0.0, 1 / rate - elapsed))

    thread = threading.Thread(target=loop, daemon=True, name="bench-stream")
    thread.start()
    ready.wait(30)
    try:
        time.sleep(0.2)
        yield latencies
    finally:
        stop.set()
        thread.join()
    if errors and len(errors) == len(latencies):
        raise RuntimeError(f"every statement of the stream failed: {errors[0]}")


# -- running a job in-process ----------------------------------------------------------------

def run_job(job: type[Job], url: str, task: str, *, options: dict[str, Any] | None = None,
            state_dir: Path | None = None, **settings_update: Any) -> JobResult:
    """Run one job the way the daemon does (its settings' timeouts on every connection),
    with some of its settings overridden."""
    state = state_dir or Path(tempfile.gettempdir()) / "gth-bench-state"
    return job().run(job_context(url, state, task, options=options, **settings_update))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = fn()
    return time.perf_counter() - began, result
