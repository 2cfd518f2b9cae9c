"""deploy/prometheus: promtool checks the rules and the example configuration, runs the
rule unit tests (a firing and a quiet case per alert), and every rule reads only metrics
the daemon declares, with labels, annotations and runbook links complete."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import promql
from tests.deploy.promql import DEPLOY, ROOT
from tests.tools import require_tool

PROM = DEPLOY / "prometheus"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_BASE = "https://git.example.invalid/gth/gth-maintd/-/blob/main/docs/runbook.md#"
SEVERITIES = {"page", "ticket"}


def _promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    tool = require_tool("promtool", "prometheus")
    return subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)


def _alerts() -> list[dict[str, Any]]:
    return [r for r in promql.load_rules() if "alert" in r]


@pytest.mark.tools
def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", "rules.yml", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2


@pytest.mark.tools
def test_promtool_check_config() -> None:
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.tools
def test_promtool_test_rules() -> None:
    tests = sorted(p.name for p in (PROM / "tests").glob("*.yml"))
    assert tests
    result = _promtool("test", "rules", *tests, cwd=PROM / "tests")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(tests), result.stdout


@pytest.mark.tools
def test_promtool_test_rules_catches_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests really evaluate the rules: a wrong expectation fails."""
    source = PROM / "tests" / "alerts_test.yml"
    broken = yaml.safe_load(source.read_text())
    broken["rule_files"] = [str(PROM / "rules.yml"), str(PROM / "alerts.yml")]
    for case in broken["tests"]:
        for check in case.get("alert_rule_test", []):
            if check["alertname"] == "GthMaintAuditChainBroken" and check["exp_alerts"]:
                check["exp_alerts"] = []
    path = tmp_path / "broken_test.yml"
    path.write_text(yaml.safe_dump(broken))
    result = _promtool("test", "rules", str(path), cwd=tmp_path)
    assert result.returncode != 0
    assert "GthMaintAuditChainBroken" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = yaml.safe_load((PROM / "tests" / "alerts_test.yml").read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - firing == set(), "alerts without a firing case"
    assert names - quiet == set(), "alerts without a quiet case"
    assert (firing | quiet) - names == set(), "tests for alerts that do not exist"


def test_the_alerts_issue_5_asks_for_exist() -> None:
    exprs = {a["alert"]: re.sub(r"\s+", " ", a["expr"]).strip() for a in _alerts()}
    assert set(exprs) >= {
        "GthMaintTaskStale", "GthMaintTaskFailing", "GthMaintTargetDown",
        "GthMaintTargetAbsent", "GthMaintDatabaseUnreachable", "GthMaintAuditChainBroken",
        "GthMaintPartitionRunwayLow", "GthMaintDefaultPartitionRows", "GthMaintMatviewStale",
    }
    assert "absent(up{job=\"gth-maintd\"})" in exprs["GthMaintTargetAbsent"]
    assert exprs["GthMaintAuditChainBroken"] == "gth_maint_audit_chain_valid == 0"
    audit = next(a for a in _alerts() if a["alert"] == "GthMaintAuditChainBroken")
    assert audit.get("for", "0m") in ("0m", "0s") and audit["labels"]["severity"] == "page"
    assert exprs["GthMaintPartitionRunwayLow"] == "gth_maint_partition_months_ahead < 2"
    assert exprs["GthMaintDefaultPartitionRows"] == "gth_maint_partition_default_rows > 0"


def test_staleness_is_one_rule_for_every_task() -> None:
    """Never copy-pasted per task: one rule, no task named, threshold from the daemon."""
    stale = [a for a in _alerts() if a["alert"] == "GthMaintTaskStale"]
    assert len(stale) == 1
    from daemon.settings import JOB_NAMES

    everything = "\n".join(r["expr"] for r in promql.load_rules())
    for task in JOB_NAMES:
        if task == "matviews":  # the matview freshness threshold uses the matviews period
            continue
        assert task not in everything, f"a rule names the task {task}"
    uses = promql.metric_names(stale[0]["expr"])
    recorded = {r["record"]: r["expr"] for r in promql.load_rules() if "record" in r}
    inputs = set().union(*(promql.metric_names(recorded[m]) for m in uses if m in recorded))
    assert {"gth_maint_task_last_success_timestamp_seconds", "gth_maint_task_interval_seconds",
            "gth_maint_task_enabled"} <= inputs


def test_rules_read_only_declared_metrics() -> None:
    declared = promql.declared_metrics()
    recorded = promql.recorded_names()
    for rule in promql.load_rules():
        for selector in promql.selectors(rule["expr"]):
            name = selector.metric
            assert name in declared or name in recorded or name in promql.PROMETHEUS_SERIES, \
                f"{rule.get('alert') or rule.get('record')}: unknown metric {name}"
            labels = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", selector.matchers))
            if name in declared:
                allowed = declared[name] | {"job", "instance"}
                assert labels <= allowed, f"{name}: labels {labels - allowed} do not exist"
            assert "exported_job" not in selector.matchers


def test_rules_never_use_a_job_label_for_tasks() -> None:
    for name, labels in promql.declared_metrics().items():
        if name.startswith("gth_maint_"):
            assert not labels & {"job", "instance"}, f"{name} would be renamed exported_*"


@pytest.mark.parametrize("alert", _alerts(), ids=lambda a: a["alert"])
def test_alert_has_severity_annotations_and_a_runbook_anchor(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in SEVERITIES
    annotations = alert["annotations"]
    assert set(annotations) >= {"summary", "description", "runbook_url"}
    assert annotations["summary"].strip() and annotations["description"].strip()
    url = annotations["runbook_url"]
    assert url.startswith(RUNBOOK_BASE), url
    anchor = url.removeprefix(RUNBOOK_BASE)
    assert anchor == alert["alert"].lower()
    assert anchor in _runbook_anchors(), f"docs/runbook.md has no section #{anchor}"


def _runbook_anchors() -> set[str]:
    """GitHub/GitLab-style heading anchors of the runbook."""
    anchors = set()
    for line in RUNBOOK.read_text().splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            text = match.group(1).strip().lower()
            text = re.sub(r"[^\w\- ]", "", text)
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_runbook_sections_explain_each_alert() -> None:
    text = RUNBOOK.read_text()
    sections = re.split(r"^## ", text, flags=re.M)
    by_title = {s.splitlines()[0].strip(): s for s in sections[1:]}
    for alert in _alerts():
        body = by_title.get(alert["alert"])
        assert body, f"no runbook section for {alert['alert']}"
        for part in ("**Meaning.**", "**Confirm", "**Act"):
            assert part in body or part.replace("**", "") in body, (alert["alert"], part)
    for must in ("systemctl kill -s USR1 gth-maintd", "GTH_MAINT_STATE_DIR=/var/lib/gth-maintd",
                 "gth-maintd trigger", "kubectl -n gth exec deploy/gth-maintd -- gth-maintd",
                 "run-job partitions --drain-default", "run-job audit_verify --full",
                 "pg_dump"):
        assert must in text, must


def test_runbook_links_resolve() -> None:
    anchors = _runbook_anchors()
    for target in re.findall(r"\]\(#([^)]+)\)", RUNBOOK.read_text()):
        assert target in anchors, f"broken link #{target}"
    deploy_anchors = set()
    for line in (ROOT / "docs" / "deploy.md").read_text().splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            deploy_anchors.add(re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-"))
    for target in re.findall(r"\]\(deploy\.md#([^)]+)\)", RUNBOOK.read_text()):
        assert target in deploy_anchors, f"broken link deploy.md#{target}"


def test_docs_use_only_the_fixed_cli() -> None:
    """`gthctl X` and `gth-maintd run-job X` in the docs name real subcommands and jobs."""
    from daemon.settings import JOB_NAMES

    fixed = {"run", "migrate", "run-job", "trigger", "status", "check-config"}
    for doc in ("runbook.md", "deploy.md"):
        text = (ROOT / "docs" / doc).read_text()
        for job in re.findall(r"run-job (\w+)", text):
            assert job in (*JOB_NAMES, "NAME"), f"{doc}: run-job {job}"
        for sub in re.findall(r"gthctl ([\w-]+)", text):
            assert sub in fixed, f"{doc}: gthctl {sub}"
        for jobs in re.findall(r"gth-maintd trigger ((?:[a-z_]+ ?)+)", text):
            for job in jobs.split():
                assert job in (*JOB_NAMES, "all"), f"{doc}: trigger {job}"
