"""The daemon itself (issue 6, item 7): startup to ready, idle RSS and CPU, /metrics scrape
time, on `python -m daemon run` as its own process, the way it is deployed.

Goals (issue 3): startup to ready <= 2 s on a migrated database, idle RSS <= 80 MB. Startup
is timed from process start (interpreter and imports included) to the first 200 from
/readyz (schema checked, connection pool answering). The main numbers come from a fresh
migrated database, so no startup job competes; the dataset database is the second row: the
migration check, the run-history queries and the startup partitions run (on by default)
all touch it. Every other job has a schedule that does not fire during the measurement.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench.common import BenchEnv, Goal, Section, median, percentile, rotations
from daemon.migrations import migrate
from tests.acceptance.conftest import free_port, write_config

KEY = "daemon"
TITLE = "The daemon itself: startup to ready, idle RSS and CPU, /metrics scrape"

FRESH_DB = "gth_bench_daemon"
TARGETS = ("fresh", "dataset")
SCRAPES = 50
READY_TIMEOUT = 60.0
STARTUP_RUN_TIMEOUT = 600.0
STARTUP_GOAL = 2.0  # seconds
RSS_GOAL = 80.0  # MB
STARTUP_RUN = """
SELECT extract(epoch FROM r.finished_at - r.started_at), r.outcome,
       (SELECT coalesce(sum(jsonb_array_length(t.value -> 'created')), 0)
          FROM jsonb_each(r.details -> 'tables') t),
       (SELECT count(*) FROM jsonb_each(r.details -> 'tables') t,
               jsonb_object_keys(t.value -> 'retired') k)
  FROM maintenance.job_runs r
 WHERE r.task = 'partitions' AND r.trigger = 'startup' AND r.pid = %s
   AND r.finished_at IS NOT NULL"""


@dataclass
class Measured:
    ready: dict[str, list[float]] = field(default_factory=lambda: {t: [] for t in TARGETS})
    startup_run: list[float] = field(default_factory=list)
    outcomes: set[str] = field(default_factory=set)
    stop: list[float] = field(default_factory=list)
    exit_codes: set[int] = field(default_factory=set)
    rss_mb: float = float("nan")
    cpu_pct: float = float("nan")
    scrapes: list[float] = field(default_factory=list)
    metrics_bytes: int = 0


def run(env: BenchEnv) -> Section:
    section = Section(KEY, TITLE, ["measure", "median", "spread", "goal"])
    starts = max(3, env.repeat)
    idle = 10.0 if env.small else 30.0
    fresh = env.new_database(FRESH_DB)
    with psycopg.connect(fresh, autocommit=True) as conn:
        migrate(conn)
    work = env.workdir / "daemon"
    work.mkdir(parents=True, exist_ok=True)
    configs = {"fresh": write_config(work / "fresh.toml", metrics_host="127.0.0.1"),
               "dataset": write_config(work / "dataset.toml", metrics_host="127.0.0.1",
                                       jobs={"partitions": {"run_at_startup": True}})}
    urls = {"fresh": fresh, "dataset": env.url}
    load = os.getloadavg()[0]
    got = Measured()
    for attempt, target in rotations(TARGETS, starts):
        log = work / f"{target}-{attempt}.log"
        proc, port, seconds = _start(urls[target], configs[target], work / target, log)
        try:
            got.ready[target].append(seconds)
            if target == "fresh" and attempt == 0:
                _idle(proc.pid, port, idle, got)
            if target == "dataset":
                _wait_startup_run(env.url, proc, log, got)
        finally:
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                got.exit_codes.add(proc.wait(timeout=60))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                got.exit_codes.add(-9)
            got.stop.append(time.monotonic() - began)
    env.drop_database(FRESH_DB)

    with psycopg.connect(env.url) as conn:
        row = conn.execute("SELECT count(*), pg_size_pretty(pg_database_size(current_database()))"
                           " FROM users").fetchone()
    users, size = row if row else (0, "?")
    fresh_s, dataset_s = median(got.ready["fresh"]), median(got.ready["dataset"])
    section.rows += [
        [f"startup to ready, fresh migrated database ({starts} starts)", f"{fresh_s:.2f} s",
         _spread(got.ready["fresh"]), f"<= {STARTUP_GOAL:g} s"],
        [f"startup to ready, dataset database ({users:,} users, {size}; {starts} starts)",
         f"{dataset_s:.2f} s", _spread(got.ready["dataset"]), f"<= {STARTUP_GOAL:g} s"],
        ["startup partitions run on the dataset (in the background, after ready)",
         f"{median(got.startup_run):.2f} s", _spread(got.startup_run)
         + f"; {'; '.join(sorted(got.outcomes))}", "-"],
        [f"idle RSS after {idle:.0f} s (fresh database)", f"{got.rss_mb:.1f} MB", "one start",
         f"<= {RSS_GOAL:g} MB"],
        [f"idle CPU over {idle:.0f} s", f"{got.cpu_pct:.2f} % of one core", "one start", "-"],
        [f"/metrics scrape ({SCRAPES} scrapes, {got.metrics_bytes:,} bytes)",
         f"{median(got.scrapes) * 1000:.2f} ms",
         f"p99 {percentile(got.scrapes, 99) * 1000:.2f} ms", "-"],
        [f"SIGTERM to exit ({2 * starts} stops)", f"{median(got.stop):.2f} s",
         _spread(got.stop) + f"; exit codes {sorted(got.exit_codes)}", "-"],
    ]
    section.goals += [
        Goal(f"startup to ready <= {STARTUP_GOAL:g} s (fresh migrated database)",
             f"{fresh_s:.2f} s", fresh_s <= STARTUP_GOAL),
        Goal(f"startup to ready <= {STARTUP_GOAL:g} s (dataset database)", f"{dataset_s:.2f} s",
             dataset_s <= STARTUP_GOAL),
        Goal(f"idle RSS <= {RSS_GOAL:g} MB", f"{got.rss_mb:.1f} MB", got.rss_mb <= RSS_GOAL),
    ]
    section.notes += [
        f"How: `{Path(sys.executable).name} -m daemon run` as a subprocess (Python "
        f"{sys.version.split()[0]}), log level warning, metrics on 127.0.0.1, a config where "
        "every job's schedule is once a year; the startup partitions run is off on the fresh "
        "database and on (the default) on the dataset. Starts alternate between the two "
        "databases; startup polls /readyz every 10 ms from the moment the process is "
        "spawned. Idle: after the first fresh start, 2 s to settle, then CPU time (user + "
        f"system, /proc/PID/stat) over {idle:.0f} s and VmRSS at the end; the scheduler "
        "heartbeat and the database probe run every 5 s meanwhile. Scrapes: sequential GETs "
        f"of /metrics after the idle window. Load average at the start: {load:.2f} on "
        f"{os.cpu_count()} cores (the dataset's cluster runs on the same machine).",
        "The startup partitions run is timed from maintenance.job_runs (its own start and "
        "finish); /readyz does not wait for it, which is why startup to ready on the dataset "
        "stays close to the fresh database's. Stops: SIGTERM with nothing running, the "
        "graceful path; exit code 0 is a clean stop.",
    ]
    return section


def _start(url: str, config: Path, state: Path, log: Path
           ) -> tuple[subprocess.Popen[bytes], int, float]:
    """Spawn the daemon; returns it, its metrics port and the seconds until /readyz is 200."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GTH_MAINT_")}
    environ.update(GTH_MAINT_DATABASE_URL=url, GTH_MAINT_CONFIG=str(config),
                   GTH_MAINT_STATE_DIR=str(state), GTH_MAINT_METRICS_PORT=str(port),
                   GTH_MAINT_LOG_LEVEL="warning", GTH_MAINT_LOG_FORMAT="json")
    with log.open("wb") as out:
        began = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "daemon", "run"], env=environ,
                                stdout=out, stderr=subprocess.STDOUT)
    while _get(f"http://127.0.0.1:{port}/readyz")[0] != 200:
        if proc.poll() is not None or time.monotonic() - began > READY_TIMEOUT:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"daemon not ready (exit {proc.returncode}): "
                               f"{log.read_text(errors='replace')[-800:]}")
        time.sleep(0.01)
    return proc, port, time.monotonic() - began


def _idle(pid: int, port: int, seconds: float, got: Measured) -> None:
    time.sleep(2)
    cpu = _cpu_seconds(pid)
    time.sleep(seconds)
    got.cpu_pct = (_cpu_seconds(pid) - cpu) / seconds * 100
    got.rss_mb = _rss_kib(pid) / 1024
    for _ in range(SCRAPES):
        began = time.perf_counter()
        status, size = _get(f"http://127.0.0.1:{port}/metrics")
        got.scrapes.append(time.perf_counter() - began)
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        got.metrics_bytes = size


def _wait_startup_run(url: str, proc: subprocess.Popen[bytes], log: Path,
                      got: Measured) -> None:
    """Until the daemon's startup partitions run is recorded as finished."""
    deadline = time.monotonic() + STARTUP_RUN_TIMEOUT
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline and proc.poll() is None:
            row = conn.execute(STARTUP_RUN, (proc.pid,)).fetchone()
            if row is not None:
                got.startup_run.append(float(row[0]))
                got.outcomes.add(f"{row[1]}, {row[2]} partitions created, {row[3]} retired")
                return
            time.sleep(0.1)
    raise RuntimeError("the startup partitions run did not finish: "
                       f"{log.read_text(errors='replace')[-800:]}")


def _get(url: str) -> tuple[int, int]:
    """(HTTP status, body bytes); (0, 0) while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), len(response.read())
    except OSError:
        return 0, 0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f} s" if values else "-"
