"""External tools for tests: find them, or install them from Debian's packages.

CI runs in a clean clone on a machine where only Python is guaranteed. A test that needs
a binary calls ``require_tool("promtool", "prometheus")``: the binary's path comes back;
if it is missing and the test runs as root on a machine with apt-get, the package is
installed first (``apt-get update`` once per session, then
``apt-get install -y --no-install-recommends PACKAGE``); otherwise the test is skipped
with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import pytest

_lock = threading.Lock()
_apt_updated = False
_failed: dict[str, str] = {}

APT_TIMEOUT_SECONDS = 600


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "-o", "DPkg::Lock::Timeout=300", *args]
    # Parallel test workers may install at the same time: wait for dpkg's lock.
    try:
        return subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=APT_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(
            command, 124, "", f"timed out after {APT_TIMEOUT_SECONDS} s")


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def require_tool(binary: str, debian_package: str) -> str:
    """Path of ``binary``, installing ``debian_package`` with apt-get if it is missing."""
    global _apt_updated
    found = shutil.which(binary)
    if found:
        return found
    with _lock:
        found = shutil.which(binary)
        if found:
            return found
        if debian_package in _failed:
            pytest.skip(_failed[debian_package])
        if shutil.which("apt-get") is None:
            pytest.skip(f"{binary} not found and apt-get is not available "
                        f"(install the Debian package {debian_package!r})")
        if os.geteuid() != 0:
            pytest.skip(f"{binary} not found; installing {debian_package!r} needs root")
        if not _apt_updated:
            update = _apt("update")
            if update.returncode != 0:
                _failed[debian_package] = f"apt-get update failed: {_tail(update.stderr)}"
                pytest.skip(_failed[debian_package])
            _apt_updated = True
        install = _apt("install", "-y", "--no-install-recommends", debian_package)
        if install.returncode != 0:
            _failed[debian_package] = (f"apt-get install {debian_package} failed: "
                                       f"{_tail(install.stderr or install.stdout)}")
            pytest.skip(_failed[debian_package])
        found = shutil.which(binary)
        if not found:
            _failed[debian_package] = (f"installed {debian_package!r} but {binary!r} is still "
                                       "not on PATH")
            pytest.skip(_failed[debian_package])
        return found
