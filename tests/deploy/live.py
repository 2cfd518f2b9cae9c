"""Helpers for the live deploy tests: start a real `gth-maintd run` on a test database with
schedules kept far away, wait for its endpoints, and always stop it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def daemon_binary() -> str:
    beside_python = Path(sys.executable).with_name("gth-maintd")
    found = str(beside_python) if beside_python.exists() else shutil.which("gth-maintd")
    if not found:
        pytest.fail("the gth-maintd console script is not installed (pip install -e .)")
    return found


def far_away_config(path: Path, *, partitions_at_startup: bool) -> Path:
    """Every job weekly, at noon UTC on the weekday three days from now: nothing fires while
    the test runs, yet every enabled task has a real schedule and interval (7 days)."""
    from daemon.settings import JOB_NAMES

    weekday = DAY_NAMES[(datetime.now(UTC) + timedelta(days=3)).weekday()]
    lines = []
    for name in JOB_NAMES:
        lines += [f"[jobs.{name}]", f'schedule = "0 12 * * {weekday}"']
        if name == "partitions":
            lines.append(f"run_at_startup = {'true' if partitions_at_startup else 'false'}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    port: int
    state_dir: Path
    env: dict[str, str]
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            pytest.fail(f"gth-maintd exited with {code}:\n{self.log_tail()}")


def daemon_env(db_url: str, tmp: Path, port: int, config: Path,
               extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GTH_MAINT_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_"))}
    env.update({
        "GTH_MAINT_DATABASE_URL": db_url,
        "GTH_MAINT_METRICS_HOST": "127.0.0.1",
        "GTH_MAINT_METRICS_PORT": str(port),
        "GTH_MAINT_STATE_DIR": str(tmp / "state"),
        "GTH_MAINT_HEARTBEAT_SECONDS": "1",
        "GTH_MAINT_DB_PROBE_SECONDS": "1",
        "GTH_MAINT_CONFIG": str(config),
        "GTH_MAINT_LOG_FORMAT": "json",
        "GTH_MAINT_STARTUP_RETRY_SECONDS": "10",
    })
    env.update(extra or {})
    return env


@contextlib.contextmanager
def running_daemon(db_url: str, tmp: Path, *, partitions_at_startup: bool = False,
                   extra_env: dict[str, str] | None = None) -> Iterator[Daemon]:
    """`gth-maintd run` in the background; killed in any case on exit."""
    port = free_port()
    config = far_away_config(tmp / "gth-maintd.toml", partitions_at_startup=partitions_at_startup)
    env = daemon_env(db_url, tmp, port, config, extra_env)
    log = tmp / "gth-maintd.log"
    with log.open("wb") as out:
        process = subprocess.Popen([daemon_binary(), "run"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    daemon = Daemon(process, port, tmp / "state", env, log)
    try:
        yield daemon
    finally:
        stop(process)


def stop(process: subprocess.Popen[Any], grace: float = 30) -> int | None:
    """SIGTERM, wait, then SIGKILL: never leave a process behind."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout=10)
    return process.returncode


def wait_for(what: str, check: Callable[[], T | None], timeout: float,
             interval: float = 0.2, alive: Callable[[], None] | None = None) -> T:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if alive:
            alive()
        try:
            value = check()
            if value:
                return value
        except (OSError, ValueError) as exc:
            last_error = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}"
                + (f" (last error: {last_error})" if last_error else ""))


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_json(url: str, timeout: float = 10) -> dict[str, Any]:
    _status, body = http_get(url, timeout)
    data: dict[str, Any] = json.loads(body)
    return data
