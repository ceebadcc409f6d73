"""The Grafana dashboard's panels as one PNG, queried from a real Prometheus.

    python -m bench.dashboard --prometheus http://127.0.0.1:9090 [--minutes 10]
        [--out bench/results/dashboard.png] [--dashboard deploy/grafana/pulse.json] [--rate-interval 30s]

Reads deploy/grafana/pulse.json, runs every panel's queries through the Prometheus HTTP API (query_range
over the last `--minutes`) and draws a grid of small line charts, one per panel, titled like the panels.
Grafana's variables are replaced first: $__rate_interval by --rate-interval, $__interval by the step,
$__range by the window, and the dashboard's own variables (instance) by their "All" value. Needs
matplotlib (the dev install has it).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "pulse.json"
OUT = ROOT / "bench" / "results" / "dashboard.png"

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$([A-Za-z_]\w*)|\[\[(\w+)\]\]")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
# Grafana units to an axis label.
_UNITS = {"s": "seconds", "ms": "milliseconds", "bytes": "bytes", "ops": "per second", "opm": "per minute", "short": ""}


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    queries: list[Query]


@dataclass
class Line:
    label: str
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


def _walk(container: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for panel in container.get("panels", []):
        yield panel
        yield from _walk(panel)


def panel_queries(board: Mapping[str, Any]) -> list[Panel]:
    """Every panel that has queries (rows, collapsed ones' panels included), in the dashboard's order."""
    drawn = []
    for panel in _walk(board):
        if panel.get("type") == "row":
            continue
        queries = [
            Query(str(t["expr"]), str(t.get("legendFormat", "")))
            for t in panel.get("targets", [])
            if t.get("expr") and not t.get("hide")
        ]
        if queries:
            unit = str(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""))
            drawn.append(Panel(str(panel.get("title", "")), unit, queries))
    return drawn


def variables(board: Mapping[str, Any], *, rate_interval: str, step_seconds: int, minutes: int) -> dict[str, str]:
    """Values for Grafana's built-in variables and the dashboard's own: a query or custom variable takes
    its "All" value (allValue, else .*), a constant its query."""
    values = {
        "__rate_interval": rate_interval,
        "__interval": f"{step_seconds}s",
        "__interval_ms": str(step_seconds * 1000),
        "__range": f"{minutes}m",
        "__range_s": str(minutes * 60),
        "__range_ms": str(minutes * 60_000),
    }
    for variable in board.get("templating", {}).get("list", []):
        kind, name = variable.get("type"), variable.get("name")
        if kind in ("query", "custom", "interval") and name:
            values[name] = variable.get("allValue") or ".*"
        elif kind in ("constant", "textbox") and name:
            values[name] = str(variable.get("query", ""))
    return values


def rewrite(expr: str, values: Mapping[str, str]) -> str:
    """The expression with Grafana's $name, ${name} (${name:format} too) and [[name]] replaced; $1 and the
    like (label_replace's capture groups) stay. An unknown variable is an error, not an empty string."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group is not None)
        if name not in values:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(value, expr)


def _label(metric: Mapping[str, str], legend: str) -> str:
    if legend.strip() and legend != "__auto":
        return _LEGEND.sub(lambda m: metric.get(m.group(1), ""), legend).strip()
    name = metric.get("__name__", "")
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{labels}}}" if labels or not name else name


def lines(result: Sequence[Mapping[str, Any]], legend: str) -> list[Line]:
    """A query_range matrix as labelled lines (values as floats: NaN leaves a gap, ±Inf stays)."""
    return [
        Line(
            _label(series.get("metric", {}), legend),
            [float(t) for t, _ in series.get("values", [])],
            [float(v) for _, v in series.get("values", [])],
        )
        for series in result
    ]


def query_range(base: str, expr: str, start: float, end: float, step: int, timeout: float = 10.0) -> list[Any]:
    """One /api/v1/query_range call; the matrix, or ValueError with Prometheus's error."""
    params = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}s"})
    request = urllib.request.Request(
        f"{base.rstrip('/')}/api/v1/query_range",
        data=params.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as error:  # 400/422: a bad query; the body says why
        try:
            body = json.loads(error.read())
        except ValueError:
            raise ValueError(f"HTTP {error.code}") from error
    if body.get("status") != "success":
        raise ValueError(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
    result: list[Any] = body["data"]["result"]
    return result


def _fetch(
    base: str, panels: Sequence[Panel], values: Mapping[str, str], start: float, end: float, step: int
) -> list[tuple[Panel, list[Line], list[str]]]:
    fetched = []
    for panel in panels:
        drawn: list[Line] = []
        errors: list[str] = []
        for query in panel.queries:
            try:
                drawn += lines(query_range(base, rewrite(query.expr, values), start, end, step), query.legend)
            except (OSError, ValueError) as error:  # a timeout too: the other panels still get drawn
                errors.append(str(error))
                print(f"bench.dashboard: {panel.title}: {error}", file=sys.stderr)
        fetched.append((panel, drawn, errors))
    return fetched


def draw(
    fetched: Sequence[tuple[Panel, list[Line], list[str]]], end: float, minutes: int, out: Path, source: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    columns = 3
    rows = max(1, math.ceil(len(fetched) / columns))
    figure, grid = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.0 * rows), squeeze=False)
    for index, axes in enumerate(grid.flat):
        if index >= len(fetched):
            axes.set_visible(False)
            continue
        panel, drawn, errors = fetched[index]
        axes.set_title(panel.title, fontsize=10)
        for line in drawn:
            axes.plot([(t - end) / 60 for t in line.times], line.values, linewidth=1.2, label=line.label)
        axes.set_xlim(-minutes, 0)
        axes.grid(alpha=0.3)
        axes.tick_params(labelsize=7)
        unit = _UNITS.get(panel.unit, panel.unit)
        if unit:
            axes.set_ylabel(unit, fontsize=8)
        if drawn:
            handles, labels = axes.get_legend_handles_labels()
            axes.legend(handles[:8], labels[:8], fontsize=6, loc="upper left")
        else:
            message = "query failed:\n" + "\n".join(e[:60] for e in errors) if errors else "no data"
            axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes, fontsize=8, color="grey")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(end))
    figure.suptitle(f"Pulse: last {minutes} min to {stamp} (x: minutes before), from {source}", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (3.0 * rows)))  # room for the title
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus base URL")
    parser.add_argument("--minutes", type=int, default=10, help="the window to draw, ending now")
    parser.add_argument("--out", type=Path, default=OUT, help="the PNG to write")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD, help="the Grafana dashboard JSON")
    parser.add_argument("--rate-interval", default="30s", help="what $__rate_interval becomes")
    parser.add_argument("--step", type=int, help="seconds between points (default: the window / 120, >= 5)")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    board = json.loads(args.dashboard.read_text(encoding="utf-8"))
    step = args.step or max(5, args.minutes * 60 // 120)
    values = variables(board, rate_interval=args.rate_interval, step_seconds=step, minutes=args.minutes)
    end = time.time()
    start = end - args.minutes * 60
    try:
        query_range(args.prometheus, "vector(1)", start, end, step)
    except (OSError, ValueError) as error:  # URLError and timeouts are OSErrors
        print(f"bench.dashboard: cannot query {args.prometheus}: {error}", file=sys.stderr)
        return 1
    fetched = _fetch(args.prometheus, panel_queries(board), values, start, end, step)
    draw(fetched, end, args.minutes, args.out, args.prometheus)
    empty = sum(1 for _, drawn, _ in fetched if not drawn)
    print(f"bench.dashboard: wrote {args.out} ({len(fetched)} panels, {empty} without data)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
