import os
import socket
from pathlib import Path

import pytest

from daemon import systemd
from daemon.errors import ConfigError, DaemonNotRunning
from daemon.signals import (
    PidFile,
    running_pid,
    take_trigger_requests,
    write_trigger_request,
)


def test_trigger_requests_round_trip_and_are_consumed(tmp_path: Path) -> None:
    write_trigger_request(tmp_path, ["payment_expiry"])
    write_trigger_request(tmp_path, ["all"])
    (tmp_path / "triggers" / "0-bad.json").write_text("{not json")
    requests, problems = take_trigger_requests(tmp_path)
    assert requests == [["payment_expiry"], ["all"]]
    assert len(problems) == 1 and "0-bad.json" in problems[0]
    assert take_trigger_requests(tmp_path) == ([], [])


def test_pidfile_is_exclusive_and_found(tmp_path: Path) -> None:
    first = PidFile(tmp_path)
    first.acquire()
    try:
        assert running_pid(tmp_path) == os.getpid()
        with pytest.raises(ConfigError, match="another gth-maintd"):
            PidFile(tmp_path).acquire()
    finally:
        first.release()
    with pytest.raises(DaemonNotRunning, match="does not exist"):
        running_pid(tmp_path)


def test_stale_pidfile_is_reported(tmp_path: Path) -> None:
    (tmp_path / "gth-maintd.pid").write_text("999999999\n")
    with pytest.raises(DaemonNotRunning, match="stale"):
        running_pid(tmp_path)


def test_sd_notify_datagrams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "1000000")
        systemd.ready()
        systemd.watchdog()
        systemd.reloading()
        assert server.recv(256).startswith(b"READY=1")
        assert server.recv(256) == b"WATCHDOG=1"
        assert server.recv(256).startswith(b"RELOADING=1\nMONOTONIC_USEC=")
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert systemd.notify("READY=1") is False
