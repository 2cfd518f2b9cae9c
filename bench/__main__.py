"""gth-maintd performance evidence: one command, side-by-side comparisons, bench/RESULTS.md.

    python -m bench                 # full scale: 1M users, 5M bookings, 20M behaviour rows
    python -m bench --small         # a quick look (20k users, 100k bookings, 400k behaviour)
    python -m bench --only audit --only queries --small

Starts a throwaway PostgreSQL cluster (Debian's PostgreSQL 15 by default: pg_partman comes
from its Debian package), builds the dataset with the demo-data generator, runs every
section (see SECTIONS) and writes the report. Each section compares the daemon's way with
the alternative on the same data in the same run and reports medians and ratios. Nothing
here asserts anything: benchmarks are evidence, not tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import psycopg
import structlog

from bench.common import BENCH_SETTINGS, BenchEnv, Section
from daemon import __version__, demo_data
from daemon.migrations import migrate
from tests.pgcluster import PgBinaries, PgCluster, available_binaries

# key -> module; the order is the run order: read-only sections first, then those that
# change the dataset (partitions, GDPR), then the daemon itself.
SECTIONS = {
    "audit": "bench.compare_audit",
    "queries": "bench.seed_queries",
    "matviews": "bench.compare_matviews",
    "cache_cleanup": "bench.compare_cache_cleanup",
    "partitions": "bench.compare_partitions",
    "gdpr": "bench.gdpr_throughput",
    "daemon": "bench.daemon_footprint",
}
FULL = {"users": 1_000_000, "bookings": 5_000_000, "behavior_rows": 20_000_000}
SMALL = {"users": 20_000, "bookings": 100_000, "behavior_rows": 400_000}
DATASET_DB = "gth_bench"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="a quick look: " + ", ".join(
        f"{v:,} {k}" for k, v in SMALL.items()))
    parser.add_argument("--users", type=int)
    parser.add_argument("--bookings", type=int)
    parser.add_argument("--behavior-rows", type=int)
    parser.add_argument("--only", action="append", choices=list(SECTIONS), metavar="SECTION",
                        help=f"run only these sections (repeatable): {', '.join(SECTIONS)}")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method (median)")
    parser.add_argument("--pg", type=int, default=15, help="PostgreSQL major version")
    parser.add_argument("--out", type=Path, default=RESULTS, help="report file")
    parser.add_argument("--keep", action="store_true",
                        help="leave the cluster and its dataset in place (for --reuse)")
    parser.add_argument("--update", action="store_true",
                        help="with --only: replace just these sections in the existing report "
                             "(e.g. after fixing one), keeping the others and saying so in it")
    parser.add_argument("--build-only", action="store_true",
                        help="build the dataset and stop (with --keep: for later --reuse)")
    parser.add_argument("--reuse", type=Path, metavar="DATADIR",
                        help="run on a cluster kept by --keep, building the dataset only if it "
                             "is not there yet (its size then comes from that build)")
    args = parser.parse_args(argv)
    sizes = dict(SMALL if args.small else FULL)
    for key in sizes:
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    if args.repeat < 1 or min(sizes.values()) < 1:
        parser.error("--repeat and the dataset sizes must be >= 1")
    if args.update and not (args.only and args.out.is_file()):
        parser.error("--update needs --only and an existing report (--out)")
    if args.reuse is not None and not (args.reuse / "postgresql.conf").is_file():
        parser.error(f"--reuse {args.reuse}: not a cluster data directory kept by --keep")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    binaries = next((b for b in available_binaries() if b.version == args.pg), None)
    if binaries is None:
        print(f"bench: PostgreSQL {args.pg} is not available on this machine", file=sys.stderr)
        return 2
    cluster = _cluster(binaries, args.reuse)
    workdir = Path(tempfile.mkdtemp(prefix="gth-bench-"))
    started = time.monotonic()
    sections: list[Section] = []
    try:
        scale = demo_data.plan("bench", **sizes)
        env = BenchEnv(cluster=cluster, dbname=DATASET_DB, scale=scale, small=args.small,
                       repeat=args.repeat, workdir=workdir, log=_log)
        build_note = cluster.datadir / "gth-bench-build.json"
        if _dataset_exists(env):
            built = json.loads(build_note.read_text()) if build_note.exists() else {}
            build = (f"dataset reused, built earlier in {built.get('seconds', 0) / 60:.0f} min "
                     f"by `{built.get('command', 'an earlier run')}`")
        else:
            seconds = build_dataset(env)
            build_note.write_text(json.dumps({"seconds": seconds, "command": _command(argv)}))
            build = f"dataset build {seconds / 60:.1f} min"
        for key in [] if args.build_only else args.only or list(SECTIONS):
            module = importlib.import_module(SECTIONS[key])
            _log(f"== {module.TITLE}")
            began = time.monotonic()
            try:
                section: Section = module.run(env)
            except Exception as exc:  # a broken section must not lose the others' numbers
                traceback.print_exc()
                section = Section(key, module.TITLE, ["error"], [[f"`{exc!r}`"]])
            section.seconds = time.monotonic() - began
            print(section.markdown(), flush=True)
            sections.append(section)
        if args.build_only:
            return 0
        if args.update:
            report = update(args.out.read_text(encoding="utf-8"), sections, _command(argv))
        else:
            report = render(argv, env, sections, build, time.monotonic() - started)
        args.out.write_text(report, encoding="utf-8")
        _log(f"wrote {args.out}")
    finally:
        if args.keep or args.reuse:
            _log(f"cluster kept: --reuse {cluster.datadir} ({cluster.url(DATASET_DB)})")
        else:
            cluster.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _cluster(binaries: PgBinaries, reuse: Path | None) -> PgCluster:
    if reuse is None:
        cluster = PgCluster(binaries).init()
        with (cluster.datadir / "postgresql.conf").open("a") as conf:
            conf.write("".join(f"{k} = {v}\n" for k, v in BENCH_SETTINGS.items()))
    else:
        conf = (reuse / "postgresql.conf").read_text()
        port = int([line for line in conf.splitlines() if line.startswith("port = ")][-1][7:])
        cluster = PgCluster(binaries, datadir=reuse, port=port)
    if not cluster.is_running():
        cluster.start()
    return cluster


def _dataset_exists(env: BenchEnv) -> bool:
    with env.admin() as admin:
        exists = admin.execute("SELECT EXISTS (SELECT FROM pg_database WHERE datname = %s)",
                               (DATASET_DB,)).fetchone()
    if exists != (True,):
        return False
    with psycopg.connect(env.url) as conn:
        migrate(conn)  # a newer checkout may bring migrations
        users = conn.execute("SELECT count(*) FROM users").fetchone()
    _log(f"reusing the dataset in {env.url} ({users[0] if users else 0:,} users)")
    return bool(users and users[0])


def build_dataset(env: BenchEnv) -> float:
    began = time.monotonic()
    url = env.new_database(DATASET_DB)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        _log(f"building the dataset: {env.scale.users:,} users, {env.scale.bookings:,} "
             f"bookings, {env.scale.behavior_rows:,} behaviour rows")
        totals = demo_data.generate(conn, "bench", users=env.scale.users,
                                    bookings=env.scale.bookings,
                                    behavior_rows=env.scale.behavior_rows)
        conn.execute("VACUUM ANALYZE")
    seconds = time.monotonic() - began
    _log(f"dataset built in {seconds:.0f} s: {totals}")
    return seconds


def _command(argv: list[str] | None) -> str:
    return "python -m bench " + " ".join(shlex.quote(a) for a in (
        argv if argv is not None else sys.argv[1:]))


def render(argv: list[str] | None, env: BenchEnv, sections: list[Section], build: str,
           total_seconds: float) -> str:
    with psycopg.connect(env.url) as conn:
        server = conn.execute("SHOW server_version").fetchone()
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM bookings),"
            " (SELECT count(*) FROM user_behavior_log), (SELECT count(*) FROM audit_log),"
            " pg_size_pretty(pg_database_size(current_database()))").fetchone()
    assert server is not None and counts is not None
    command = _command(argv)
    lines = [
        "# gth-maintd performance evidence",
        "",
        f"Written by `{command.strip()}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC "
        f"in {total_seconds / 60:.0f} min ({build}). "
        "Every comparison ran side by side in this one run, on the same data, in rotating "
        f"order, {env.repeat} times per method; tables show medians. The machine is shared "
        "and noisy: read the ratios, not the absolute times.",
        "",
        "| | |",
        "|---|---|",
        f"| machine | {_cpu_model()}, {os.cpu_count()} cores, {_memory_gib():.0f} GiB RAM, "
        f"load average at the end {os.getloadavg()[0]:.2f} |",
        f"| PostgreSQL | {server[0]} ({env.cluster.binaries.source}); test-cluster settings: "
        "fsync, synchronous_commit and full_page_writes off; "
        + ", ".join(f"{k} {v}" for k, v in BENCH_SETTINGS.items()) + " |",
        f"| software | gth-maintd {__version__} (git {_git_revision()}), Python "
        f"{platform.python_version()}, psycopg {psycopg.__version__} |",
        f"| dataset (at the end of the run, after the GDPR section's writes and erasures) | "
        f"{counts[0]:,} users, {counts[1]:,} bookings, {counts[2]:,} behaviour rows, "
        f"{counts[3]:,} audit rows; {counts[4]} on disk |",
        "",
        "Rerun: `python -m bench` (full scale, about 1.5 hours on 2 cores) or "
        "`python -m bench --small` (minutes); `--only SECTION` runs one comparison.",
        "",
    ]
    summary = [g for s in sections for g in s.goals]
    if summary:
        lines += ["## Goals at a glance", "", "| section | goal | measured | |",
                  "|---|---|---|---|"]
        lines += [f"| {s.title} | {g.text} | {g.measured} | "
                  f"{'met' if g.met else '**NOT met**'} |" for s in sections for g in s.goals]
        lines.append("")
    lines += [s.markdown() for s in sections]
    return "\n".join(lines)


def update(report: str, sections: list[Section], command: str) -> str:
    """The report with the given sections (and their goal rows) replaced by new runs."""
    lines = report.splitlines()
    for section in sections:
        heading = f"## {section.title}"
        if heading not in lines:
            raise SystemExit(f"bench: the report has no section {section.title!r} to update")
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        replacement = section.markdown().splitlines()
        if end < len(lines) and replacement and replacement[-1]:
            replacement.append("")  # keep the blank line before the next section
        lines[start:end] = replacement
        glance = [i for i, line in enumerate(lines) if line.startswith(f"| {section.title} |")]
        new_rows = [f"| {section.title} | {g.text} | {g.measured} | "
                    f"{'met' if g.met else '**NOT met**'} |" for g in section.goals]
        if glance:
            lines[glance[0]:glance[-1] + 1] = new_rows
    stamp = (f"Updated by `{command}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: "
             + ", ".join(s.title for s in sections) + " rerun later on the kept dataset "
             "(--reuse); every other section is from the run above.")
    blank = lines.index("", 2) if "" in lines[2:] else len(lines)
    lines[blank:blank] = ["", stamp]
    return "\n".join(lines) + "\n"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).resolve().parent, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True,
                               text=True, cwd=Path(__file__).resolve().parent).stdout
        return out.stdout.strip() + ("+changes" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
