"""deploy/systemd: the unit passes `systemd-analyze verify` and `systemd-analyze security`,
and has the settings the daemon's contract needs."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.promql import DEPLOY
from tests.tools import require_tool

UNIT = DEPLOY / "systemd" / "gth-maintd.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "gth-maintd.env.example"
INSTALLED_EXEC = "/opt/gth-maintd/bin/gth-maintd"


def _daemon_binary() -> str:
    beside_python = Path(sys.executable).with_name("gth-maintd")
    found = str(beside_python) if beside_python.exists() else shutil.which("gth-maintd")
    if not found:
        pytest.fail("the gth-maintd console script is not installed (pip install -e .)")
    return found


def _unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's gth-maintd (verify checks
    that the executable exists; production installs it under /opt/gth-maintd)."""
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_EXEC} run" in text
    copy = tmp_path / "gth-maintd.service"
    copy.write_text(text.replace(f"ExecStart={INSTALLED_EXEC}", f"ExecStart={_daemon_binary()}"))
    return copy


def _service_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


@pytest.mark.tools
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    tool = require_tool("systemd-analyze", "systemd")
    unit = _unit_copy(tmp_path)
    result = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60, check=False)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    assert output == "", f"systemd-analyze verify complained:\n{output}"


@pytest.mark.tools
def test_systemd_analyze_verify_catches_mistakes(tmp_path: Path) -> None:
    """Guard against a verify that silently checks nothing."""
    tool = require_tool("systemd-analyze", "systemd")
    unit = _unit_copy(tmp_path)
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHomee=yes"))
    result = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert "ProtectHomee" in result.stdout + result.stderr


@pytest.mark.tools
def test_systemd_analyze_security_rates_the_unit_ok(tmp_path: Path) -> None:
    tool = require_tool("systemd-analyze", "systemd")
    unit = _unit_copy(tmp_path)
    result = subprocess.run([tool, "security", "--offline=true", "--no-pager", str(unit)],
                            capture_output=True, text=True, timeout=60, check=False)
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", output)
    if match is None and "offline" in output.lower() and result.returncode != 0:
        pytest.skip(f"this systemd-analyze has no offline security mode: {output[-200:]}")
    assert match, output
    exposure = float(match.group(1))
    assert exposure <= 2.0, f"exposure {exposure} {match.group(2)}:\n{output}"


def test_unit_has_the_settings_the_daemon_contract_needs() -> None:
    s = _service_settings()

    def one(key: str) -> str:
        values = s.get(f"Service.{key}")
        assert values, f"{key} missing"
        return values[-1]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("Restart") == "on-failure"
    assert one("EnvironmentFile") == "/etc/gth-maintd/gth-maintd.env"
    assert one("StateDirectory") == "gth-maintd"
    assert "GTH_MAINT_STATE_DIR=%S/gth-maintd" in s["Service.Environment"]
    watchdog = int(one("WatchdogSec").removesuffix("s"))
    from daemon.settings import Settings

    defaults = Settings(database_url="postgresql://x@localhost/x")
    # the heartbeat (which sends WATCHDOG=1) must ping well within the watchdog period
    assert defaults.heartbeat_seconds * 3 <= watchdog
    stop = int(one("TimeoutStopSec").removesuffix("s"))
    assert stop > defaults.shutdown_grace_seconds + 5
    assert one("User") != "root" or one("DynamicUser") == "yes"
    for key, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet": "",
    }.items():
        assert one(key) == value, key
    assert "@system-service" in s["Service.SystemCallFilter"]


def test_env_example_holds_only_a_placeholder_url() -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string("[env]\n" + ENV_EXAMPLE.read_text())
    url = parser["env"]["GTH_MAINT_DATABASE_URL"].strip('"')
    assert "CHANGE-ME" in url and ".invalid" in url
    from daemon.settings import Settings

    # it is a URL the daemon accepts, and the password never shows in its output
    settings = Settings(database_url=url)
    assert "CHANGE-ME" not in (settings.redacted_database_url() or "")
