"""The CLI and the daemon as real subprocesses against the session's throwaway cluster."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.settings import JOB_NAMES

QUIET_SCHEDULE = "0 0 1 1 *"  # once a year: nothing fires during a test by itself


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, jobs: dict[str, dict[str, Any]] | None = None,
                 **top: Any) -> Path:
    """A TOML file where every job is quiet unless `jobs` says otherwise."""
    lines = [f"{key} = {_toml(value)}" for key, value in top.items()]
    for name in JOB_NAMES:
        values: dict[str, Any] = {"schedule": QUIET_SCHEDULE}
        if name == "partitions":
            values["run_at_startup"] = False
        values.update((jobs or {}).get(name, {}))
        lines.append(f"[jobs.{name}]")
        lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    return str(value)


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


class DaemonProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.port = int(env["GTH_MAINT_METRICS_PORT"])
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        handle = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "daemon", "run"], env=self.env,
                                     stdout=handle, stderr=subprocess.STDOUT)
        return self

    def get(self, path: str, timeout: float = 3) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}",
                                        timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def wait_until(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) waiting for "
                                     f"{what}; log:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                             f"log:\n{self.log()[-3000:]}")

    def wait_ready(self, timeout: float = 60) -> DaemonProcess:
        self.wait_until(lambda: self.get("/readyz")[0] == 200, timeout, "/readyz")
        return self

    def metric(self, name: str, **labels: str) -> float | None:
        status, body = self.get("/metrics")
        if status != 200:
            return None
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    return float(sample.value)
        return None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def daemon_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GTH_MAINT_")}
    env.update({
        "GTH_MAINT_DATABASE_URL": db_url,
        "GTH_MAINT_METRICS_HOST": "127.0.0.1",
        "GTH_MAINT_METRICS_PORT": str(free_port()),
        "GTH_MAINT_STATE_DIR": str(tmp_path / "state"),
        "GTH_MAINT_CONFIG": str(write_config(tmp_path / "gth.toml")),
        "GTH_MAINT_LOG_FORMAT": "json",
        "GTH_MAINT_HEARTBEAT_SECONDS": "1",
        "GTH_MAINT_DB_PROBE_SECONDS": "1",
        "GTH_MAINT_STARTUP_RETRY_SECONDS": "5",
    })
    return env


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Any]:
    """Factory of daemon processes, all killed at the end of the test."""
    started: list[DaemonProcess] = []

    def make(env: dict[str, str], name: str = "daemon") -> DaemonProcess:
        process = DaemonProcess(env, tmp_path / f"{name}.log").start()
        started.append(process)
        return process

    yield make
    for process in started:
        process.kill()
