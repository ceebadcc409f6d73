"""The Grafana dashboard (deploy/grafana/pulse.json) queries only metrics that Pulse exports: every metric
name in every panel's PromQL must be one the real registry exposes once engine.metrics is imported. Also
the pure parts of its PNG renderer (bench/dashboard.py): Grafana variables rewritten, series to lines."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest

import engine.metrics  # noqa: F401  (registers every Pulse metric, the custom collector included)
from bench import dashboard as render

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "pulse.json"

# PromQL's functions and aggregation operators (prometheus/promql/parser/functions.go, lex.go).
FUNCTIONS = frozenset(
    [
        "abs",
        "absent",
        "absent_over_time",
        "acos",
        "acosh",
        "asin",
        "asinh",
        "atan",
        "atanh",
        "avg_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "cos",
        "cosh",
        "count_over_time",
        "days_in_month",
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "deg",
        "delta",
        "deriv",
        "exp",
        "floor",
        "histogram_avg",
        "histogram_count",
        "histogram_fraction",
        "histogram_quantile",
        "histogram_stddev",
        "histogram_stdvar",
        "histogram_sum",
        "holt_winters",
        "double_exponential_smoothing",
        "hour",
        "idelta",
        "increase",
        "info",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log10",
        "log2",
        "mad_over_time",
        "max_over_time",
        "min_over_time",
        "minute",
        "month",
        "pi",
        "predict_linear",
        "present_over_time",
        "quantile_over_time",
        "rad",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sin",
        "sinh",
        "sort",
        "sort_by_label",
        "sort_by_label_desc",
        "sort_desc",
        "sqrt",
        "stddev_over_time",
        "stdvar_over_time",
        "sum_over_time",
        "tan",
        "tanh",
        "time",
        "timestamp",
        "vector",
        "year",
        "start",
        "end",
    ]
)
AGGREGATIONS = frozenset(
    [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ]
)
# Binary operators written as words, modifiers and the float literals PromQL spells as words.
KEYWORDS = frozenset(["and", "or", "unless", "atan2", "bool", "offset", "inf", "nan"])
# Followed by a parenthesised list of label names, not of expressions.
GROUPING = frozenset(["by", "without", "on", "ignoring", "group_left", "group_right"])

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<braces>\{[^}]*\})                           # label matchers
    |(?P<brackets>\[[^\]]*\])                        # range or subquery: durations
    |(?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w:]))  # offset 5m, @ and the like
    |(?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<other>.)""",
    re.X | re.S,
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads. An identifier called like a function that PromQL does
    not know is returned too, so a misspelled function fails the check rather than passing unseen."""
    text = _VARIABLE.sub(" ", _STRING.sub('""', expr))
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(text) if m.lastgroup != "space"]
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, value = tokens[i]
        i += 1
        if kind != "name":
            continue
        word = value.lower()
        called = i < len(tokens) and tokens[i] == ("other", "(")
        if word in GROUPING:
            if called:  # skip the label list up to its closing parenthesis (no nesting in a label list)
                while i < len(tokens) and tokens[i] != ("other", ")"):
                    i += 1
                i += 1
            continue
        if word in KEYWORDS or word in AGGREGATIONS:
            continue
        if called and value in FUNCTIONS:
            continue
        names.add(value)
    return names


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, the ones inside collapsed rows (and any nesting) included."""
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)


def exported_names() -> set[str]:
    """What a scrape of the real registry can show, from each family's type: prometheus_client exposes a
    counter family `x` as x_total and x_created, a histogram as x_bucket/_count/_sum/_created, and so on.
    Families are read rather than samples, so a labelled metric that no code path touched yet counts too."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
        "gauge": ("",),
        "stateset": ("",),
        "unknown": ("",),
    }
    names = {"up"}  # Prometheus's own, per scrape target
    for family in prometheus_client.REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def exprs(board: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel.get("title", ""), target["expr"])
        for panel in panels(board)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def test_the_extractor_finds_metric_names_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, instance) (rate(pulse_x_bucket{instance=~"$instance", le!="+Inf"}'
        "[$__rate_interval]))) > bool 1e3 or on (shard) group_left (version) max without (job) "
        '(time() - pulse_y offset 5m) unless topk(3, count_values("v", pulse_z[1h30m:1m] @ start())) and NaN'
    )
    assert metric_names(expr) == {"pulse_x_bucket", "pulse_y", "pulse_z"}
    assert metric_names("sum(rate(pulse_events_in_total[${__rate_interval}]))") == {"pulse_events_in_total"}
    assert metric_names('label_replace(up, "a", "$1", "instance", "(.*)")') == {"up"}
    assert metric_names("60 * sum by (kind, status) (rate(pulse_alerts_total[5m]))") == {"pulse_alerts_total"}


def test_the_check_catches_an_unknown_metric_or_function() -> None:
    known = exported_names()
    assert metric_names("sum(rate(pulse_events_in[5m]))") - known == {"pulse_events_in"}  # the _total forgotten
    assert metric_names("rate(pulse_no_such_thing_total[1m])") - known == {"pulse_no_such_thing_total"}
    assert metric_names("hstogram_quantile(0.5, pulse_snapshot_seconds_bucket)") - known == {"hstogram_quantile"}


def test_the_registry_names_follow_the_exposition_suffixes() -> None:
    known = exported_names()
    assert {"pulse_events_rejected_total", "pulse_events_rejected_created", "pulse_alerts_total"} <= known
    assert {"pulse_snapshot_seconds_bucket", "pulse_snapshot_seconds_count", "pulse_snapshot_seconds_sum"} <= known
    assert {"pulse_consumer_lag", "pulse_build_info", "pulse_event_time_lag_seconds", "up"} <= known
    assert "pulse_events_rejected" not in known
    assert "pulse_snapshot_seconds" not in known


def test_every_dashboard_query_reads_only_metrics_pulse_exports() -> None:
    known = exported_names()
    found = exprs(dashboard())
    assert len(found) >= 10
    unknown = {(title, name) for title, expr in found for name in metric_names(expr) - known}
    assert not unknown, f"metrics the dashboard queries but Pulse does not export: {sorted(unknown)}"
    assert all(metric_names(expr) for _, expr in found), "a query that reads no metric"


def test_every_panel_has_a_title_and_a_query() -> None:
    board = dashboard()
    every = list(panels(board))
    assert {p["type"] for p in every} >= {"row", "timeseries"}
    for panel in every:
        assert panel.get("title"), panel
        if panel["type"] == "row":
            continue
        targets = [t for t in panel.get("targets", []) if t.get("expr")]
        assert targets, f"panel {panel['title']!r} has no query"
        assert all(t.get("refId") for t in targets), panel["title"]
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids)), "panel ids repeat"


def test_the_dashboard_uses_the_provisioned_datasource() -> None:
    board = dashboard()
    assert board["uid"] == "pulse"
    assert 36 <= board["schemaVersion"] <= 41
    (variable,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["current"]["value"] == "prometheus"  # the uid deploy/grafana/provisioning gives it
    provisioned = (DASHBOARD.parent / "provisioning" / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    assert re.search(r"^\s+uid: prometheus$", provisioned, re.M)
    assert "url: http://prometheus:9090" in provisioned
    for panel in panels(board):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${" + variable["name"] + "}", panel["title"]


def test_every_titled_panel_is_covered() -> None:
    titles = {p["title"] for p in panels(dashboard()) if p["type"] != "row"}
    for wanted in (
        "Throughput in / out",
        "Consumer lag per partition",
        "Event-time lag per partition",
        "End-to-end latency",
        "Alerts by kind / status",
        "Dead letters by code",
        "Users in state",
        "State bytes",
        "Snapshot time",
        "Kafka write latency",
        "Redis write latency",
        "Kafka / Redis errors",
        "Build info",
    ):
        assert wanted in titles


# The renderer's pure parts.


def test_the_renderer_reads_the_same_panels() -> None:
    board = dashboard()
    drawn = render.panel_queries(board)
    assert [(p.title, [q.expr for q in p.queries]) for p in drawn] == [
        (p["title"], [t["expr"] for t in p["targets"]]) for p in panels(board) if p["type"] != "row"
    ]


@pytest.mark.parametrize(
    ("expr", "rewritten"),
    [
        (
            'sum(rate(pulse_events_in_total{instance=~"$instance"}[$__rate_interval]))',
            'sum(rate(pulse_events_in_total{instance=~".*"}[30s]))',
        ),
        ("rate(x[${__rate_interval}]) + rate(y[$__interval]) + z[$__range]", "rate(x[30s]) + rate(y[15s]) + z[10m]"),
        ('up{instance=~"${instance:regex}"}', 'up{instance=~".*"}'),
        ("histogram_quantile(0.5, x)", "histogram_quantile(0.5, x)"),
        ('label_replace(up, "a", "$1", "b", "(.*)")', 'label_replace(up, "a", "$1", "b", "(.*)")'),
    ],
)
def test_grafana_variables_are_rewritten(expr: str, rewritten: str) -> None:
    variables = render.variables(dashboard(), rate_interval="30s", step_seconds=15, minutes=10)
    assert render.rewrite(expr, variables) == rewritten


def test_an_unknown_variable_is_refused() -> None:
    with pytest.raises(ValueError, match="datacenter"):
        render.rewrite("up{dc=~'$datacenter'}", render.variables({}, rate_interval="30s", step_seconds=15, minutes=10))


def test_series_become_labelled_lines() -> None:
    result = [
        {"metric": {"kind": "scores", "instance": "a:1"}, "values": [[100, "1.5"], [115, "2"], [130, "NaN"]]},
        {"metric": {"kind": "alerts"}, "values": [[100, "+Inf"]]},
        {"metric": {"__name__": "pulse_users", "shard": "0"}, "values": [[100, "3"]]},
    ]
    lines = render.lines(result, "out {{kind}}")
    assert [line.label for line in lines] == ["out scores", "out alerts", "out"]
    assert lines[0].times == [100.0, 115.0, 130.0]
    assert lines[0].values[:2] == [1.5, 2.0]
    assert lines[0].values[2] != lines[0].values[2]  # NaN: a gap in the line
    assert lines[1].values == [float("inf")]
    assert render.lines(result[2:], "")[0].label == 'pulse_users{shard="0"}'
    assert render.lines(result[:1], "{{ kind }}/{{missing}}")[0].label == "scores/"
