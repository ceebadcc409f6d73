"""The bench figures as pictures, drawn from bench/results/latest.json.

    python -m bench.plots [--report PATH] [--out DIR]

- throughput.png: events/s of every phase, grouped by workload (the medians of the report);
- latency.png: p50 and p99 latency against the input rate (10/50/80% of phase (c)), both workloads,
  with the p99 target.
`make bench` draws them at the end of its run; they need matplotlib (the dev install has it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.table import REPORT, THROUGHPUT_ROWS, WORKLOADS, blocks

PHASE_LABELS = {
    "ceiling_eps": "(a) ceiling",
    "pulse_eps": "(b) Pulse",
    "pulse_live_eps": "(c) Pulse, live sink",
    "pulse_2proc_eps": "(d) (c), 2 processes",
    "quix_eps": "(e) Quix Streams",
    "replay_eps": "(f) pulse replay",
}


def _title(report: dict[str, Any]) -> str:
    repeat = report.get("config", {}).get("repeat", 1)
    runs = f"median of {repeat} runs" if repeat > 1 else "1 run"
    machine = report.get("machine", {})
    return (
        f"{report.get('N', 0):,} events, {report.get('users', 0):,} users, {runs}; "
        f"{machine.get('nproc', '?')} CPUs, {report.get('timestamp', '')[:10]}"
    )


def write_plots(report: dict[str, Any], directory: Path) -> list[Path]:
    """Writes throughput.png and latency.png (when the report has latency figures); returns the paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    directory.mkdir(parents=True, exist_ok=True)
    by_workload = {w: b for w, b in blocks(report).items() if b is not None}
    written: list[Path] = []

    keys = [key for key, _ in THROUGHPUT_ROWS if any(b.get(key) is not None for b in by_workload.values())]
    figure, axes = plt.subplots(figsize=(10, 5))
    width = 0.8 / max(len(keys), 1)
    groups = [w for w in WORKLOADS if w in by_workload]
    for i, key in enumerate(keys):
        values = [by_workload[w].get(key) or 0.0 for w in groups]
        positions = [g + (i - (len(keys) - 1) / 2) * width for g in range(len(groups))]
        bars = axes.bar(positions, values, width, label=PHASE_LABELS[key])
        axes.bar_label(bars, labels=[f"{v / 1000:,.0f}k" if v else "n/a" for v in values], fontsize=8)
    axes.set_xticks(range(len(groups)), groups)
    axes.set_ylabel("events/s")
    axes.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    axes.set_title(f"Throughput by phase\n{_title(report)}", fontsize=10)
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    path = directory / "throughput.png"
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    written.append(path)

    series = {w: b.get("latency_vs_load", {}) for w, b in by_workload.items() if b.get("latency_vs_load")}
    if series:
        figure, axes = plt.subplots(figsize=(8, 5))
        every: list[float] = []
        for color, (workload, points) in zip(("tab:blue", "tab:orange"), series.items(), strict=False):
            pcts = sorted(int(p) for p in points if points[p].get("p99_ms") is not None)
            for stat, style, label in (
                ("p99_ms", "-o", "p99"),
                ("p50_ms", "--s", "p50"),
                ("floor_p99_ms", ":", "p99, Kafka alone"),
            ):
                values = [points[str(p)].get(stat) for p in pcts]
                if all(v is not None for v in values):
                    axes.plot(pcts, values, style, color=color, label=f"{workload} {label}")
                    every += values
        target = next((b["targets"]["latency_p99_ms"]["target"] for b in by_workload.values() if "targets" in b), None)
        if target is not None:
            limit = float(str(target).split()[-1])
            axes.axhline(limit, color="grey", linestyle="-.", label=f"p99 target ({limit:g} ms)")
            every.append(limit)
        positive = [v for v in every if v > 0]
        if positive and max(positive) / min(positive) > 20:
            axes.set_yscale("log")  # milliseconds to seconds: the target line stays readable
        axes.set_xticks([10, 50, 80], ["10%", "50%", "80%"])
        axes.set_xlabel("input rate, as a share of (c) Pulse with the live sink")
        axes.set_ylabel("ms from produce to the score record read downstream")
        axes.set_title(f"Latency vs load\n{_title(report)}", fontsize=10)
        axes.legend(fontsize=8)
        axes.grid(alpha=0.3, which="both")
        path = directory / "latency.png"
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plots", description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=REPORT, help="the bench report to draw")
    parser.add_argument("--out", type=Path, help="directory for the PNG files (default: the report's)")
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.report.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(f"bench.plots: {args.report} not found: run `make bench` first", file=sys.stderr)
        return 1
    for path in write_plots(report, args.out or args.report.parent):
        print(f"bench.plots: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
