"""Signals, the pidfile and trigger requests: how the outside world talks to a running daemon.

`gth-maintd trigger NAME` writes a request file into <state_dir>/triggers and sends
SIGUSR1 to the pid in <state_dir>/gth-maintd.pid (the pattern `pg_ctl promote` uses).
Handlers only enqueue; the main thread acts. A second SIGTERM/SIGINT exits at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import signal
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import IO, Any

from daemon.errors import EXIT_FORCED, ConfigError, DaemonNotRunning

PIDFILE = "gth-maintd.pid"
TRIGGER_DIR = "triggers"
HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


class SignalInbox:
    """Collects signals for the main loop; the second stop signal exits immediately."""

    def __init__(self) -> None:
        self.events: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.stopping = False

    def install(self) -> None:
        for signum in HANDLED:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            if self.stopping:
                os.write(2, b"gth-maintd: second stop signal, exiting immediately\n")
                os._exit(EXIT_FORCED)
            self.stopping = True
        self.events.put(signum)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None


class PidFile:
    """An flock-ed pidfile: one daemon per state directory, found by `trigger`."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / PIDFILE
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ConfigError(
                f"another gth-maintd is running with state directory {self.path.parent}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self._handle.close()
            self._handle = None


def running_pid(state_dir: Path) -> int:
    """The live daemon's pid, or DaemonNotRunning with what was found instead."""
    path = state_dir / PIDFILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise DaemonNotRunning(f"no running gth-maintd: {path} does not exist") from None
    try:
        pid = int(text)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        raise DaemonNotRunning(f"no running gth-maintd: {path} is stale ({text!r})") from None
    except PermissionError:
        raise DaemonNotRunning(f"pid {text} in {path} belongs to another user") from None
    return pid


def write_trigger_request(state_dir: Path, tasks: list[str]) -> Path:
    folder = state_dir / TRIGGER_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.json"
    tmp = folder / f".{name}.tmp"
    tmp.write_text(json.dumps({"tasks": tasks, "requested_at": time.time(),
                               "requested_by_pid": os.getpid()}))
    final = folder / name
    tmp.rename(final)  # atomic: the daemon never reads half a request
    return final


def take_trigger_requests(state_dir: Path) -> tuple[list[list[str]], list[str]]:
    """Read and delete pending requests; returns (task lists, problems with bad files)."""
    folder = state_dir / TRIGGER_DIR
    requests: list[list[str]] = []
    problems: list[str] = []
    if not folder.is_dir():
        return requests, problems
    for path in sorted(folder.glob("*.json")):
        try:
            data: Any = json.loads(path.read_text())
            tasks = data["tasks"]
            if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
                raise ValueError("'tasks' must be a list of job names")
            requests.append(tasks)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{path.name}: {exc}")
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
    return requests, problems


def send_trigger(state_dir: Path, tasks: list[str]) -> int:
    pid = running_pid(state_dir)
    request = write_trigger_request(state_dir, tasks)
    try:
        os.kill(pid, signal.SIGUSR1)
    except OSError as exc:
        with contextlib.suppress(OSError):
            request.unlink()
        raise DaemonNotRunning(f"could not signal gth-maintd pid {pid}: {exc}") from None
    return pid
