"""A real `gth-maintd run` talks sd_notify to a socket we listen on, as systemd would:
READY=1 after start-up, WATCHDOG=1 from the heartbeat (WATCHDOG_USEC set), RELOADING=1
with MONOTONIC_USEC then READY=1 around SIGHUP, STOPPING=1 on SIGTERM, exit code 0."""

from __future__ import annotations

import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.deploy.live import Daemon, running_daemon

pytestmark = pytest.mark.slow

Message = dict[str, str]


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, Path]]:
    # Unix socket paths are limited to 107 bytes: a short directory, not pytest's tmp_path.
    with tempfile.TemporaryDirectory(prefix="gth-notify-") as folder:
        path = Path(folder) / "notify.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(path))
            yield sock, path
        finally:
            sock.close()


def _parse(datagram: bytes) -> Message:
    fields = {}
    for line in datagram.decode().splitlines():
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r} in {datagram!r}"
        fields[key] = value
    return fields


class Listener:
    def __init__(self, sock: socket.socket, daemon: Daemon) -> None:
        self.sock = sock
        self.daemon = daemon
        self.seen: list[Message] = []

    def expect(self, what: str, match: Callable[[Message], bool], timeout: float) -> Message:
        """The next message matching, reading (and keeping) everything that comes first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, min(0.5, deadline - time.monotonic())))
            try:
                message = _parse(self.sock.recv(4096))
            except TimeoutError:
                if self.daemon.process.poll() is not None and what != "exit":
                    pytest.fail(f"gth-maintd exited ({self.daemon.process.returncode}) before "
                                f"{what}; got {self.seen}\n{self.daemon.log_tail()}")
                continue
            self.seen.append(message)
            if match(message):
                return message
        pytest.fail(f"no {what} within {timeout:.0f} s; got {self.seen}\n{self.daemon.log_tail()}")


def test_sd_notify_lifecycle(db_url: str, tmp_path: Path,
                             notify_socket: tuple[socket.socket, Path]) -> None:
    sock, path = notify_socket
    extra = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"}
    with running_daemon(db_url, tmp_path, extra_env=extra) as daemon:
        listen = Listener(sock, daemon)
        listen.expect("READY=1", lambda m: m.get("READY") == "1", timeout=60)
        listen.expect("WATCHDOG=1", lambda m: m.get("WATCHDOG") == "1", timeout=10)

        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        daemon.process.send_signal(signal.SIGHUP)
        reloading = listen.expect("RELOADING=1", lambda m: m.get("RELOADING") == "1",
                                  timeout=15)
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert "MONOTONIC_USEC" in reloading, reloading
        # systemd compares it with its own CLOCK_MONOTONIC: same clock, taken at the reload
        assert before <= int(reloading["MONOTONIC_USEC"]) <= after, (before, reloading, after)
        listen.expect("READY=1 after the reload", lambda m: m.get("READY") == "1", timeout=15)

        # the watchdog keeps coming after a reload
        listen.expect("WATCHDOG=1 after the reload", lambda m: m.get("WATCHDOG") == "1",
                      timeout=10)

        daemon.process.send_signal(signal.SIGTERM)
        listen.expect("STOPPING=1", lambda m: m.get("STOPPING") == "1", timeout=15)
        try:
            code = daemon.process.wait(timeout=30)
        except Exception:
            pytest.fail(f"gth-maintd did not exit within 30 s of SIGTERM\n{daemon.log_tail()}")
        assert code == 0, daemon.log_tail()

    order = [k for m in listen.seen for k in ("READY", "RELOADING", "STOPPING") if k in m]
    assert order[:4] == ["READY", "RELOADING", "READY", "STOPPING"], listen.seen
