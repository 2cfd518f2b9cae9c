"""A real Prometheus (Debian's package) scrapes a real gth-maintd and loads the shipped rule
files; after a couple of triggered jobs, every expression of the Grafana dashboard and of
the recording and alert rules is evaluated through Prometheus' HTTP API.

- Every expression must parse (status "success").
- Dashboard queries and recording rules must return data.
- Alert conditions legitimately return nothing while healthy, so for each alert the parts
  that carry the data are evaluated and must return data: both sides of its top-level
  comparison (a plain number is skipped), or X for absent(X). The full condition itself
  only has to parse.
"""

from __future__ import annotations

import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import promql
from tests.deploy.live import (
    Daemon,
    daemon_binary,
    free_port,
    http_get,
    http_json,
    running_daemon,
    stop,
    wait_for,
)
from tests.tools import require_tool

pytestmark = [pytest.mark.slow, pytest.mark.tools]

TRIGGERED = ("payment_expiry", "history_prune", "matviews", "audit_verify")
DATA_TIMEOUT = 45


def _query(base: str, expr: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    return http_json(url)


def _has_data(answer: dict[str, Any]) -> bool:
    data = answer.get("data", {})
    if data.get("resultType") in ("scalar", "string"):
        return True
    return bool(data.get("result"))


def _checks() -> list[tuple[str, str, bool]]:
    """(where, expression, must return data) for everything the repository ships."""
    checks: list[tuple[str, str, bool]] = []
    for where, expr in promql.dashboard_expressions():
        checks.append((f"dashboard {where}", promql.substitute_grafana(expr), True))
    for rule in promql.load_rules():
        expr = rule["expr"].strip()
        if "record" in rule:
            checks.append((f"record {rule['record']}", expr, True))
            continue
        name = f"alert {rule['alert']}"
        checks.append((name, expr, False))  # the condition: parses; empty while healthy
        inner = promql.absent_argument(expr)
        if inner is not None:
            checks.append((f"{name} absent() argument", inner, True))
            continue
        sides = promql.comparison_sides(expr)
        if sides is None:
            checks[-1] = (name, expr, True)
            continue
        left, _op, right = sides
        for label, side in (("left", left), ("right", right)):
            if not promql.is_scalar_literal(side):
                checks.append((f"{name} {label} side", side, True))
    return checks


def _start_prometheus(tmp: Path, daemon: Daemon) -> tuple[subprocess.Popen[bytes], str, Path]:
    binary = require_tool("prometheus", "prometheus")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                   "scrape_timeout": "1s"},
        "rule_files": [str(p) for p in promql.RULE_FILES],
        "scrape_configs": [{
            "job_name": "gth-maintd",
            "static_configs": [{"targets": [f"127.0.0.1:{daemon.port}"]}],
        }],
    }
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, f"--config.file={path}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
             "--storage.tsdb.retention.time=1h"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}", log


def test_prometheus_evaluates_every_dashboard_and_rule_expression(db_url: str,
                                                                  tmp_path: Path) -> None:
    checks = _checks()
    with running_daemon(db_url, tmp_path, partitions_at_startup=True) as daemon:
        wait_for("gth-maintd /readyz", lambda: http_get(daemon.url("/readyz"))[0] == 200,
                 timeout=60, alive=daemon.check_alive)
        prometheus, base, prom_log = _start_prometheus(tmp_path, daemon)
        try:
            def prometheus_alive() -> None:
                daemon.check_alive()
                if prometheus.poll() is not None:
                    pytest.fail(f"prometheus exited: {prom_log.read_text()[-2000:]}")

            wait_for("Prometheus ready", lambda: http_get(f"{base}/-/ready")[0] == 200,
                     timeout=60, alive=prometheus_alive)
            wait_for("the first scrape", lambda: _has_data(
                _query(base, 'up{job="gth-maintd"} == 1')), timeout=30, alive=prometheus_alive)

            trigger = subprocess.run([daemon_binary(), "trigger", *TRIGGERED], env=daemon.env,
                                     capture_output=True, text=True, timeout=30, check=False)
            assert trigger.returncode == 0, trigger.stdout + trigger.stderr

            def finished(task: str) -> bool:
                expr = (f'sum(gth_maint_task_runs_total{{task="{task}",'
                        f'outcome=~"success|failure"}}) > 0')
                return _has_data(_query(base, expr))

            for task in TRIGGERED:
                wait_for(f"a finished run of {task} in Prometheus", lambda t=task: finished(t),
                         timeout=DATA_TIMEOUT, interval=0.5, alive=prometheus_alive)
            # a couple more scrapes and rule evaluations after the runs, for rate() windows
            time.sleep(3)

            failures = _evaluate(base, checks, prometheus_alive)
            failures += _rule_health(base)
            outcomes = _query(base, "sum by (task, outcome) (gth_maint_task_runs_total) > 0")
        finally:
            stop(prometheus, grace=10)
    ran = {(r["metric"]["task"], r["metric"]["outcome"]) for r in outcomes["data"]["result"]}
    assert not failures, (
        f"{len(failures)} of {len(checks)} expressions failed (runs seen: {sorted(ran)}):\n"
        + "\n".join(failures) + f"\n--- gth-maintd log ---\n{daemon.log_tail(40)}")


def _rule_health(base: str) -> list[str]:
    """Prometheus' own evaluation of the loaded rule files: every rule healthy (a vector
    matching error, for example many-to-many, shows up here and nowhere else)."""
    groups = http_json(f"{base}/api/v1/rules")["data"]["groups"]
    loaded = {r["name"] for g in groups for r in g["rules"]}
    shipped = {r.get("alert") or r["record"] for r in promql.load_rules()}
    problems = [f"rule {name}: not loaded by Prometheus" for name in sorted(shipped - loaded)]
    for group in groups:
        for rule in group["rules"]:
            if rule.get("health") != "ok":
                problems.append(f"rule {rule['name']}: health {rule.get('health')}: "
                                f"{rule.get('lastError')}")
    return problems


def _evaluate(base: str, checks: list[tuple[str, str, bool]],
              alive: Any) -> list[str]:
    """Evaluate each expression; data-bearing ones get a bounded retry (rule evaluation
    and rate() windows need a few seconds)."""
    failures: list[str] = []
    deadline = time.monotonic() + DATA_TIMEOUT
    for where, expr, needs_data in checks:
        while True:
            alive()
            answer = _query(base, expr)
            if answer.get("status") != "success":
                failures.append(f"{where}: does not parse: {answer.get('error')} :: {expr}")
                break
            if not needs_data or _has_data(answer):
                break
            if time.monotonic() > deadline:
                failures.append(f"{where}: no data :: {expr}")
                break
            time.sleep(1)
    return failures
