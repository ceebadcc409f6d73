"""`pulse demo`: a generated SaaS event stream replayed through the real dataflow, then a short summary,
the journey funnel (`funnel.json`) and the retention drivers (`drivers.json`) when the replay wrote them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from demo.generator import GeneratorConfig, persona_of, write_jsonl
from demo.segment import write_segment_jsonl
from engine.config import Settings
from engine.replay import replay
from schemas.codec import loads


def _personas(profiles_path: Path) -> dict[str, list[dict[str, Any]]]:
    by_persona: dict[str, list[dict[str, Any]]] = {}
    with profiles_path.open("rb") as f:
        for line in f:
            profile = loads(line)
            by_persona.setdefault(persona_of(profile["user_id"]), []).append(profile)
    return by_persona


def summarize(out_dir: Path, summary: dict[str, Any], stages: Sequence[str] = ()) -> str:
    lines = [
        "",
        "Pulse demo",
        "==========",
        f"events in      {summary['events_in']:>8,}",
        f"  applied      {summary['applied']:>8,}",
        f"  duplicates   {summary['duplicates']:>8,}   (same event_id seen before: no effect)",
        f"  rejected     {summary['rejected']:>8,}   → dlq.jsonl, verbatim, with a code",
    ]
    lines += [f"      {code:<18}{n:>6,}" for code, n in summary["rejected_by_code"].items()]
    lines += [f"users          {summary['users']:>8,}   as of {summary['as_of']}", "", "By persona:"]
    header = f"  {'persona':<11}{'users':>6}{'days (7)':>10}{'days (28)':>11}{'score':>7}   healthy/watch/at_risk"
    lines.append(header)
    personas = _personas(out_dir / "profiles.jsonl")
    for persona, profiles in sorted(personas.items(), key=lambda kv: -sum(p["score"] for p in kv[1]) / len(kv[1])):
        n = len(profiles)
        d7 = sum(p["active_days_7"] for p in profiles) / n
        d28 = sum(p["active_days_28"] for p in profiles) / n
        score = sum(p["score"] for p in profiles) / n
        bands = "/".join(str(sum(1 for p in profiles if p["band"] == b)) for b in ("healthy", "watch", "at_risk"))
        lines.append(f"  {persona:<11}{n:>6}{d7:>10.1f}{d28:>11.1f}{score:>7.1f}   {bands}")
    alerts: dict[str, int] = {}
    with (out_dir / "alerts.jsonl").open("rb") as f:
        for line in f:
            doc = loads(line)
            key = f"{doc['kind']} {doc['status']}"
            alerts[key] = alerts.get(key, 0) + 1
    lines += ["", "Alerts:"] + [f"  {key:<22}{n:>6,}" for key, n in sorted(alerts.items())]
    lines += ["", "Outputs in " + str(out_dir) + ":"]
    lines += [f"  {kind + '.jsonl':<18}{n:>8,}" for kind, n in summary["outputs"].items()]
    lines += [f"  {name}" for name in ("funnel.json", "drivers.json") if (out_dir / name).exists()]
    lines.append("  summary.json")
    lines += insights(out_dir, stages)
    return "\n".join(lines)


# ---------------------------------------------------------------- funnel and drivers

TOP_DRIVERS = 8


def _duration(seconds: object) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 120 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def _rate(value: object) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) and not isinstance(value, bool) else "—"


def _count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "—"


def _ordered(names: Sequence[str], stages: Sequence[str]) -> list[str]:
    """Stages in journey order (`stages`), then any others by name."""
    rank = {name: i for i, name in enumerate(stages)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


def _stage_row(label: str, figures: Any) -> str:
    if not isinstance(figures, dict):
        figures = {}
    return (
        f"  {label:<24}{_count(figures.get('entered')):>8}{_count(figures.get('converted')):>11}"
        f"{_rate(figures.get('conversion_rate')):>8}{_duration(figures.get('median_seconds_to_convert')):>20}"
    )


def funnel_lines(funnel: Any, stages: Sequence[str] = ()) -> list[str]:
    """The totals of funnel.json: each stage's entered, converted (moved on to a later stage), rate and
    median time to convert, then the same per experiment variant (the variant the user had on entering)."""
    totals = funnel.get("totals") if isinstance(funnel, dict) else None
    by_stage = totals.get("stages") if isinstance(totals, dict) else None
    if not isinstance(by_stage, dict) or not by_stage:
        return ["", "Funnel: nobody entered a stage yet"]
    cohorts = funnel.get("cohorts")
    days = f", {len(cohorts)} cohort days" if isinstance(cohorts, list) else ""
    header = f"  {'stage':<24}{'entered':>8}{'converted':>11}{'rate':>8}{'median to convert':>20}"
    lines = [
        "",
        f"Funnel (funnel.json{days}; converted: moved on from the stage):",
        header,
    ]
    lines += [_stage_row(stage, by_stage[stage]) for stage in _ordered(list(by_stage), stages)]
    variants = totals.get("variants") if isinstance(totals, dict) else None
    for experiment, arms in sorted(variants.items()) if isinstance(variants, dict) else ():
        if not isinstance(arms, dict):
            continue
        lines += ["", f"Experiment {experiment} (variant on entering the stage):"]
        rows = [(stage, variant, f[stage]) for variant, f in arms.items() if isinstance(f, dict) for stage in f]
        order = {stage: i for i, stage in enumerate(_ordered([r[0] for r in rows], stages))}
        rows.sort(key=lambda r: (order[r[0]], r[1]))
        lines += [_stage_row(f"{stage} · {variant}", figures) for stage, variant, figures in rows]
    return lines


def _driver_rows(drivers: dict[str, Any]) -> list[tuple[float, str, str, dict[str, Any]]]:
    rows = []
    for section, kind in (("features", "feature"), ("signals", "signal"), ("nps", "nps")):
        for row in drivers.get(section) or ():
            if isinstance(row, dict) and isinstance(row.get("lift"), int | float):
                rows.append((float(row["lift"]), kind, str(row.get("name")), row))
    rows.sort(key=lambda r: (-r[0], r[1], r[2]))
    return rows


def _group(group: Any) -> str:
    if not isinstance(group, dict):
        return "—"
    return f"{_rate(group.get('retention'))} of {_count(group.get('users'))}"


def driver_lines(drivers: Any, top: int = TOP_DRIVERS) -> list[str]:
    """The latest drivers.json: the features, early signals and NPS segments with the highest retention lift
    (retention of the users with it / without it), each group's retention and size."""
    if not isinstance(drivers, dict):
        return ["", "Retention drivers: no report yet (no user has 31 days of history)"]
    eligible, rate = drivers.get("eligible_users"), drivers.get("retention_rate")
    retention = drivers.get("retention")
    window = retention.get("window_days") if isinstance(retention, dict) else None
    days = f"days {window[0]}-{window[1]}" if isinstance(window, list) and len(window) == 2 else "the retention window"
    lines = [
        "",
        f"Retention drivers (drivers.json, report of {drivers.get('report_day', '?')}: {_count(eligible)} users,"
        f" {_rate(rate)} active on {days} of their life):",
    ]
    rows = _driver_rows(drivers)
    if not rows:
        return [*lines, "  no feature or signal with 30 users on both sides yet"]
    lines.append(f"  {'driver':<16}{'kind':<9}{'lift':>6}   {'with it: retained':<21}without it")
    for lift, kind, name, row in rows[:top]:
        lines.append(f"  {name:<16}{kind:<9}{lift:>6.2f}   {_group(row.get('with')):<21}{_group(row.get('without'))}")
    return lines


def _load(path: Path) -> tuple[bool, Any]:
    if not path.exists():
        return False, None
    try:
        return True, loads(path.read_bytes())
    except ValueError:
        return False, None


def insights(out_dir: Path, stages: Sequence[str] = ()) -> list[str]:
    """The funnel and drivers sections, each only when the replay wrote its file."""
    lines: list[str] = []
    found, funnel = _load(out_dir / "funnel.json")
    if found:
        lines += funnel_lines(funnel, stages)
    found, drivers = _load(out_dir / "drivers.json")
    if found:
        lines += driver_lines(drivers)
    return lines


def journey_order(settings: Settings) -> list[str]:
    """The configured journey's stages in order (alternatives side by side), then its exits."""
    journey = getattr(settings, "journey", None)
    names = [name.strip() for entry in getattr(journey, "stages", ()) for name in str(entry).split("|")]
    return names + [str(name) for name in getattr(journey, "exits", ())]


def run_demo(
    out_dir: Path, settings: Settings, users: int = 300, days: int = 60, seed: int = 7, input_format: str = "pulse"
) -> dict[str, Any]:
    """`input_format` "segment": the same stream as Segment spec messages, replayed in segment mode."""
    out_dir.mkdir(parents=True, exist_ok=True)
    events = out_dir / "events.jsonl"
    config = GeneratorConfig(users=users, accounts=max(users // 8, 1), days=days, seed=seed)
    # The replay reads the format the stream was written in, whatever the config's [input] format says.
    settings = dataclasses.replace(settings, input=dataclasses.replace(settings.input, format=input_format))
    if input_format == "segment":
        count = write_segment_jsonl(events, config)
        print(f"pulse demo: generated {count:,} Segment messages for {users} users over {days} days → {events}")
    else:
        count = write_jsonl(events, config)
        print(f"pulse demo: generated {count:,} events for {users} users over {days} days → {events}")
    result = replay(events, out_dir, settings)
    print(summarize(out_dir, result.summary, journey_order(settings)))
    return result.summary
