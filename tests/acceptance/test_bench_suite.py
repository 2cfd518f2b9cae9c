"""`python -m bench` end to end on a tiny dataset: every section runs and reports, so the
benchmark code cannot rot between full-scale runs. Nothing here looks at a time: the
benchmarks' numbers are evidence in bench/RESULTS.md, never test thresholds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import SECTIONS
from tests.pgcluster import available_binaries

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, timeout: int = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_every_section_runs_and_reports(tmp_path: Path) -> None:
    # PostgreSQL 15 when Debian's is there (pg_partman comes from its package), else the newest.
    version = 15 if any(b.version == 15 for b in available_binaries()) else max(
        b.version for b in available_binaries())
    out = tmp_path / "RESULTS.md"
    result = bench("--small", "--users", "1000", "--bookings", "3000", "--behavior-rows",
                   "10000", "--repeat", "1", "--pg", str(version), "--out", str(out),
                   timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text(encoding="utf-8")
    assert "| error |" not in report, report
    titles = re.findall(r"^## (.+)$", report, flags=re.MULTILINE)
    assert titles[0] == "Goals at a glance"
    assert len(titles) == 1 + len(SECTIONS), titles
    assert "| dataset " in report and f"PostgreSQL | {version}." in report
    goals = [line for line in report.splitlines() if line.endswith(("| met |", "NOT met** |"))]
    assert len(goals) >= 2 * 12  # each goal in its section and in the summary table
    # Updating one section keeps the others and says so.
    before = report.split("## ")[2]
    result = bench("--small", "--users", "1000", "--bookings", "3000", "--behavior-rows",
                   "10000", "--repeat", "1", "--pg", str(version), "--out", str(out),
                   "--only", "daemon", "--update", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    updated = out.read_text(encoding="utf-8")
    assert "Updated by `python -m bench" in updated and updated.split("## ")[2] == before


@pytest.mark.parametrize(("args", "expected"), [
    (["--reuse", "/nonexistent"], "not a cluster data directory"),
    (["--update"], "--update needs --only"),
    (["--repeat", "0"], "must be >= 1"),
    (["--only", "nothing"], "invalid choice: 'nothing'"),
    (["--pg", "9"], "PostgreSQL 9 is not available"),
])
def test_bad_arguments_exit_2_with_one_line(args: list[str], expected: str) -> None:
    result = bench(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert expected in result.stderr.strip().splitlines()[-1]
