"""Score-over-time charts as plain numbers for an inline SVG (the template draws them): no JavaScript, no
image files, nothing to build. Scores are 0-100; time runs left to right over the history's own span, with
its first and last dates under the axis. The SVG has a viewBox and stretches to the page's width, so the
coordinates below are those of the viewBox, drawn about 1:1 on a 1280 px page."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

WIDTH = 1200
HEIGHT = 200
PAD_X = 36  # room for the score axis labels
PAD_RIGHT = 12
PAD_Y = 10
PAD_BOTTOM = 26  # room for the date labels
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Point:
    x: float
    y: float
    score: float
    band: str
    ts: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    points: tuple[Point, ...]
    polyline: str  # "x,y x,y ..." for <polyline points=...>
    at_risk_y: float  # horizontal guides at the band thresholds
    healthy_y: float
    y_ticks: tuple[tuple[float, int], ...]  # (y, score) axis labels and gridlines
    first_ts: str
    last_ts: str
    x_labels: tuple[tuple[float, str, str], ...]  # (x, text-anchor, text): the first and last dates
    left: int  # the plot area, between the axes
    right: int
    bottom: float


def y_of(score: float) -> float:
    clamped = min(100.0, max(0.0, score))
    return round(PAD_Y + (100.0 - clamped) / 100.0 * (HEIGHT - PAD_Y - PAD_BOTTOM), 1)


def date_label(ts: Any, span_ms: int) -> str:
    """2026-03-05T22:21:20.975Z -> 2026-03-05, with the time (22:21) when the chart spans under two days."""
    text = str(ts)
    if len(text) < 16:
        return text
    return text[:10] if span_ms >= 2 * DAY_MS else f"{text[:10]} {text[11:16]}"


def score_chart(history: Sequence[dict[str, Any]], at_risk_below: float, healthy_above: float) -> Chart | None:
    """The chart of a history (oldest first, each with `ts_ms`, `score`, `band`, `ts`); None when empty."""
    entries = [e for e in history if isinstance(e.get("score"), int | float) and isinstance(e.get("ts_ms"), int)]
    if not entries:
        return None
    first, last = entries[0]["ts_ms"], entries[-1]["ts_ms"]
    span = last - first
    inner = WIDTH - PAD_X - PAD_RIGHT
    points = []
    for entry in entries:
        x = PAD_X + (inner * (entry["ts_ms"] - first) / span if span else inner / 2)
        points.append(
            Point(round(x, 1), y_of(entry["score"]), entry["score"], str(entry.get("band")), str(entry.get("ts")))
        )
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        points=tuple(points),
        polyline=" ".join(f"{p.x},{p.y}" for p in points),
        at_risk_y=y_of(at_risk_below),
        healthy_y=y_of(healthy_above),
        y_ticks=tuple((y_of(s), s) for s in (0, 50, 100)),
        first_ts=str(entries[0].get("ts")),
        last_ts=str(entries[-1].get("ts")),
        x_labels=(
            (
                (PAD_X, "start", date_label(entries[0].get("ts"), span)),
                (WIDTH - PAD_RIGHT, "end", date_label(entries[-1].get("ts"), span)),
            )
            if span
            else ((points[0].x, "middle", date_label(entries[0].get("ts"), span)),)
        ),
        left=PAD_X,
        right=WIDTH - PAD_RIGHT,
        bottom=y_of(0),
    )
