"""The daemon's own footprint: startup-to-ready on a migrated database, idle RSS and CPU,
and /metrics scrape time. Goals (issue 3): idle RSS <= 80 MB, startup-to-ready <= 2 s.

    python -m bench.bench_daemon [--starts 5] [--idle-seconds 20]

Starts its own throwaway cluster; prints a table of medians. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.migrations import migrate
from tests.acceptance.conftest import free_port, write_config
from tests.pgcluster import start_cluster


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except OSError:
        return 0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=20)
    args = parser.parse_args()
    cluster = start_cluster()
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        url = cluster.url("bench")
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        work = Path(tempfile.mkdtemp(prefix="gth-bench-"))
        env = {**os.environ, "GTH_MAINT_DATABASE_URL": url, "GTH_MAINT_LOG_LEVEL": "warning",
               "GTH_MAINT_CONFIG": str(write_config(work / "quiet.toml")),
               "GTH_MAINT_STATE_DIR": str(work / "state")}
        startups, rss, cpu, scrapes = [], [], [], []
        for attempt in range(args.starts):
            port = free_port()
            env["GTH_MAINT_METRICS_PORT"] = str(port)
            began = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "daemon", "run"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                while _status(f"http://127.0.0.1:{port}/readyz") != 200:
                    if time.monotonic() - began > 60:
                        raise SystemExit("daemon did not become ready in 60 s")
                    time.sleep(0.01)
                startups.append(time.monotonic() - began)
                if attempt == 0:
                    time.sleep(2)
                    cpu0 = _cpu_seconds(proc.pid)
                    time.sleep(args.idle_seconds)
                    cpu.append((_cpu_seconds(proc.pid) - cpu0) / args.idle_seconds * 100)
                    rss.append(_rss_kib(proc.pid) / 1024)
                    for _ in range(50):
                        t0 = time.monotonic()
                        _status(f"http://127.0.0.1:{port}/metrics")
                        scrapes.append((time.monotonic() - t0) * 1000)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        print(f"PostgreSQL {cluster.binaries.version}, Python {sys.version.split()[0]}, "
              f"{os.cpu_count()} CPUs")
        print("| measure | median | goal |")
        print("|---|---|---|")
        print(f"| startup to ready (migrated db, {len(startups)} starts) | "
              f"{statistics.median(startups):.2f} s | <= 2 s |")
        print(f"| idle RSS after {args.idle_seconds:.0f} s | {statistics.median(rss):.1f} MB "
              "| <= 80 MB |")
        print(f"| idle CPU | {statistics.median(cpu):.2f} % of one core | - |")
        print(f"| /metrics scrape (50 scrapes) | {statistics.median(scrapes):.2f} ms "
              f"(p99 {sorted(scrapes)[int(len(scrapes) * 0.99) - 1]:.2f} ms) | - |")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
