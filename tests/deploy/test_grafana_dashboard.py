"""deploy/grafana/gth-maintd.json: datasource and task variables, every query reads only
metric names the daemon's registry declares (with their real labels), task panels filter on
$task, the panels issue 5 asks for exist, and promtool parses every query."""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import promql
from tests.tools import require_tool

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TASK_MATCHER = 'task=~"$task"'


def _variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in promql.load_dashboard()["templating"]["list"]}


def _query_panels() -> list[dict[str, Any]]:
    return [p for p in promql.dashboard_panels() if p["type"] != "row"]


def test_dashboard_basics() -> None:
    dashboard = promql.load_dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] == "gth-maintd" and dashboard["title"]
    ids = [p["id"] for p in promql.dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    boxes = [(p["title"], p["gridPos"]) for p in promql.dashboard_panels()]
    for (a, ga), (b, gb) in itertools.combinations(boxes, 2):
        overlap = (ga["x"] < gb["x"] + gb["w"] and gb["x"] < ga["x"] + ga["w"]
                   and ga["y"] < gb["y"] + gb["h"] and gb["y"] < ga["y"] + ga["h"])
        assert not overlap, f"panels {a!r} and {b!r} overlap"
        assert ga["x"] + ga["w"] <= 24


def test_variables() -> None:
    variables = _variables()
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    task = variables["task"]
    assert task["type"] == "query"
    assert task["datasource"] == DATASOURCE
    query = task["query"]["query"] if isinstance(task["query"], dict) else task["query"]
    assert query == "label_values(gth_maint_task_runs_total, task)"
    assert task["definition"] == query
    assert task["multi"] is True and task["includeAll"] is True
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE
            inner = variable["query"]["query"] if isinstance(variable["query"], dict) \
                else variable["query"]
            match = re.fullmatch(r"label_values\((\w+), (\w+)\)", inner)
            assert match, inner
            declared = promql.declared_metrics()
            assert match.group(1) in declared
            assert match.group(2) in declared[match.group(1)] | {"job", "instance"}


def test_every_panel_uses_the_datasource_variable() -> None:
    for panel in _query_panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_queries_read_only_declared_metrics_with_real_labels() -> None:
    declared = promql.declared_metrics()
    for where, expr in promql.dashboard_expressions():
        for selector in promql.selectors(expr):
            name = selector.metric
            assert name in declared or name in promql.PROMETHEUS_SERIES, \
                f"{where}: {name} is not a metric of daemon/metrics.py"
            labels = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", selector.matchers))
            allowed = declared.get(name, set()) | {"job", "instance"}
            assert labels <= allowed, f"{where}: {name} has no label(s) {labels - allowed}"
        for grouping in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            for label in (g.strip() for g in grouping.split(",") if g.strip()):
                metrics = promql.metric_names(expr)
                assert any(label in declared.get(m, set()) | {"job", "instance"}
                           for m in metrics), f"{where}: grouping by unknown label {label}"


def test_task_variable_is_used_properly() -> None:
    declared = promql.declared_metrics()
    task_metrics = {name for name, labels in declared.items() if "task" in labels}
    used = 0
    for where, expr in promql.dashboard_expressions():
        for selector in promql.selectors(expr):
            if selector.metric in task_metrics:
                assert TASK_MATCHER in selector.matchers.replace(" ", ""), \
                    f"{where}: {selector.metric} must filter with {TASK_MATCHER}"
                used += 1
            else:
                assert "$task" not in selector.matchers, \
                    f"{where}: {selector.metric} has no task label"
        # a multi-value variable needs a regex matcher, never task="$task"
        assert 'task="$task"' not in expr.replace(" ", ""), where
    assert used >= 6


def test_panels_issue_5_asks_for() -> None:
    names = set().union(*(promql.metric_names(e) for _, e in promql.dashboard_expressions()))
    assert names >= {
        "gth_maint_task_runs_total", "gth_maint_task_duration_seconds_bucket",
        "gth_maint_task_last_success_timestamp_seconds", "gth_maint_task_rows_total",
        "gth_maint_audit_chain_valid", "gth_maint_audit_chain_head_id",
        "gth_maint_partition_months_ahead", "gth_maint_partition_default_rows",
        "gth_maint_matview_last_refresh_timestamp_seconds", "gth_maint_db_up",
        "gth_maint_build_info", "gth_maint_schema_version",
    }
    exprs = " ".join(e for _, e in promql.dashboard_expressions())
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.95," in exprs
    assert re.search(r"rate\(gth_maint_task_runs_total\{[^}]*\}\[\$__rate_interval\]\)", exprs)
    assert "sum by (task, outcome)" in exprs


@pytest.mark.tools
def test_promtool_parses_every_query(tmp_path: Path) -> None:
    """Each query, with Grafana's variables substituted, as a recording rule for promtool."""
    tool = require_tool("promtool", "prometheus")
    rules = [{"record": f"dashboard:query_{i}", "expr": promql.substitute_grafana(expr)}
             for i, (_, expr) in enumerate(promql.dashboard_expressions())]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
