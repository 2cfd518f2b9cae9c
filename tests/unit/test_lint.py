"""ruff and mypy are part of the suite, so CI catches style and type regressions."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "ruff", "check", "daemon", "tests", "bench"],
    [sys.executable, "-m", "mypy"],
])
def test_clean(command: list[str]) -> None:
    if shutil.which(command[2]) is None and subprocess.run(
            [sys.executable, "-m", command[2], "--version"], capture_output=True).returncode:
        pytest.fail(f"{command[2]} is not installed (pip install -e '.[test]')")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
