"""Just enough PromQL lexing for the deploy tests: which metric names an expression reads,
with which label matchers, and the two sides of a top-level comparison.

Not a parser: Prometheus itself (promtool, a real server) checks the syntax. This only has
to be right for the expressions this repository ships, and fails loudly when it is unsure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "gth-maintd.json"
RULE_FILES = (DEPLOY / "prometheus" / "rules.yml", DEPLOY / "prometheus" / "alerts.yml")

KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "atan2", "inf", "nan", "start", "end",
}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
MODIFIERS = {"bool", "on", "ignoring", "group_left", "group_right"}
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
SET_OPERATORS = {"and", "or", "unless"}

# Grafana's variables, replaced the way Grafana would before the query reaches Prometheus.
GRAFANA_SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "${task}": ".*",
    "$task": ".*",
    "${job}": ".*",
    "$job": ".*",
}

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![A-Za-z0-9_:]))
  | (?P<number>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![A-Za-z_:]))
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(),{}\[\]@])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: str  # raw text between the braces, "" if none


def tokens(expr: str) -> list[Token]:
    """Tokens with positions; `{...}` and `[...]` come back whole as kinds braces/range."""
    out: list[Token] = []
    pos = 0
    while pos < len(expr):
        char = expr[pos]
        if char in "{[":
            close = "}" if char == "{" else "]"
            end = pos + 1
            while end < len(expr) and expr[end] != close:
                if expr[end] in "\"'`":
                    match = _TOKEN.match(expr, end)
                    if not match or match.lastgroup != "string":
                        raise ValueError(f"unterminated string in {expr!r}")
                    end = match.end()
                    continue
                end += 1
            if end >= len(expr):
                raise ValueError(f"unbalanced {char!r} in {expr!r}")
            kind = "braces" if char == "{" else "range"
            out.append(Token(kind, expr[pos:end + 1], pos, end + 1))
            pos = end + 1
            continue
        match = _TOKEN.match(expr, pos)
        if not match:
            raise ValueError(f"cannot lex {expr[pos:pos + 20]!r} in {expr!r}")
        if match.lastgroup != "space":
            out.append(Token(match.lastgroup or "?", match.group(), pos, match.end()))
        pos = match.end()
    return out


def _grouping_spans(toks: list[Token]) -> set[int]:
    """Indexes of tokens inside the label lists of by/without/on/ignoring/group_x (...)."""
    inside: set[int] = set()
    i = 0
    while i < len(toks):
        if toks[i].kind == "ident" and toks[i].text in GROUPING and i + 1 < len(toks) \
                and toks[i + 1].text == "(":
            j = i + 2
            while j < len(toks) and toks[j].text != ")":
                inside.add(j)
                j += 1
            i = j
        i += 1
    return inside


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of the expression: metric name and raw label matchers."""
    toks = tokens(expr)
    labels = _grouping_spans(toks)
    found: list[Selector] = []
    for i, tok in enumerate(toks):
        if tok.kind != "ident" or i in labels or tok.text in KEYWORDS:
            continue
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if nxt is not None and (nxt.text == "(" or nxt.text in ("by", "without")):
            continue  # a function or an aggregation: sum(...), sum by (task) (...)
        matchers = nxt.text[1:-1] if nxt is not None and nxt.kind == "braces" else ""
        found.append(Selector(tok.text, matchers))
    for i, tok in enumerate(toks):
        if tok.kind == "braces" and (i == 0 or toks[i - 1].kind != "ident"):
            raise ValueError(f"selector without a metric name in {expr!r}: not supported")
    return found


def metric_names(expr: str) -> set[str]:
    return {s.metric for s in selectors(expr)}


def _depths(toks: list[Token]) -> list[int]:
    depth, out = 0, []
    for tok in toks:
        if tok.text == ")":
            depth -= 1
        out.append(depth)
        if tok.text == "(":
            depth += 1
    return out


def _strip_outer_parens(expr: str) -> str:
    text = expr.strip()
    while text.startswith("(") and text.endswith(")"):
        toks = tokens(text)
        depths = _depths(toks)
        # the first "(" must close at the very end
        if any(d == 0 for d in depths[1:-1]):
            break
        text = text[1:-1].strip()
    return text


def comparison_sides(expr: str) -> tuple[str, str, str] | None:
    """(left, operator, right) of a top-level comparison, modifiers removed from the right;
    None if there is none. Refuses expressions with top-level and/or/unless."""
    text = _strip_outer_parens(expr)
    toks = tokens(text)
    depths = _depths(toks)
    top = [i for i, t in enumerate(toks) if depths[i] == 0]
    if any(toks[i].kind == "ident" and toks[i].text in SET_OPERATORS for i in top):
        raise ValueError(f"top-level set operator in {expr!r}: split it by hand")
    ops = [i for i in top if toks[i].kind == "op" and toks[i].text in COMPARISONS]
    if not ops:
        return None
    if len(ops) > 1:
        raise ValueError(f"several top-level comparisons in {expr!r}")
    i = ops[0]
    j = i + 1
    while j < len(toks) and toks[j].kind == "ident" and toks[j].text in MODIFIERS:
        j += 1
        if j < len(toks) and toks[j].text == "(":
            while toks[j].text != ")":
                j += 1
            j += 1
    left = text[:toks[i].start].strip()
    right = text[toks[j].start:].strip()
    return left, toks[i].text, right


def absent_argument(expr: str) -> str | None:
    """X for an expression that is exactly absent(X), else None."""
    text = _strip_outer_parens(expr)
    match = re.fullmatch(r"absent\s*\((.*)\)", text, re.DOTALL)
    return match.group(1).strip() if match else None


def is_scalar_literal(expr: str) -> bool:
    return all(t.kind == "number" or t.text in "()+-*/" for t in tokens(expr))


def substitute_grafana(expr: str) -> str:
    for variable, value in sorted(GRAFANA_SUBSTITUTIONS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    if "$" in expr:
        raise ValueError(f"unknown Grafana variable left in {expr!r}")
    return expr


# -- the repository's expressions ------------------------------------------------------------
def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_panels(dashboard: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    dashboard = dashboard or load_dashboard()
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title/refId, expression) for every query of every panel and variable."""
    dashboard = load_dashboard()
    found = []
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            found.append((f"{panel['title']}/{target['refId']}", target["expr"]))
    return found


def load_rules() -> list[dict[str, Any]]:
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                rules.append({**rule, "file": path.name, "group": group["name"]})
    return rules


def recorded_names() -> set[str]:
    return {r["record"] for r in load_rules() if "record" in r}


def declared_metrics() -> dict[str, set[str]]:
    """Sample names the daemon's registry exposes (with _total/_bucket/... suffixes), each
    with its label names. Imports daemon.metrics, which registers into prometheus_client's
    default REGISTRY (together with the process/platform/gc collectors the daemon serves)."""
    from prometheus_client import REGISTRY
    from prometheus_client.metrics import MetricWrapperBase

    import daemon.metrics as daemon_metrics

    labels_by_family: dict[str, set[str]] = {}
    for value in vars(daemon_metrics).values():
        if isinstance(value, MetricWrapperBase):
            # prometheus_client has no public accessor for a wrapper's name and labels
            family = value._name
            labels_by_family[family] = set(value._labelnames)

    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
        "info": ("_info",),
        "stateset": ("",),
        "gauge": ("",),
        "untyped": ("",),
        "unknown": ("",),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    }
    names: dict[str, set[str]] = {}
    for family in REGISTRY.collect():
        extra = {"le"} if family.type in ("histogram", "gaugehistogram") else set()
        for suffix in suffixes[family.type]:
            sample_labels = labels_by_family.get(family.name, set())
            if suffix in ("_bucket",):
                sample_labels = sample_labels | extra
            names[family.name + suffix] = set(sample_labels)
        for sample in family.samples:  # whatever the collector really emits, too
            names.setdefault(sample.name, set(sample.labels))
    return names


# Series Prometheus creates itself for every target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
