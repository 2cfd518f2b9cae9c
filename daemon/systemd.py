"""sd_notify without a dependency: one datagram to the Unix socket in $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import time


def notify(message: str) -> bool:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError:
        return False


def watchdog_enabled() -> bool:
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    return bool(usec) and (not pid or pid == str(os.getpid()))


def ready() -> None:
    notify("READY=1\nSTATUS=running")


def watchdog() -> None:
    if watchdog_enabled():
        notify("WATCHDOG=1")


def reloading() -> None:
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def stopping() -> None:
    notify("STOPPING=1")


def status(text: str) -> None:
    notify(f"STATUS={text}")
