"""`pulse demo`: a generated SaaS event stream replayed through the real dataflow, then a short summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from demo.generator import GeneratorConfig, persona_of, write_jsonl
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


def summarize(out_dir: Path, summary: dict[str, Any]) -> str:
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
    lines.append("  summary.json")
    return "\n".join(lines)


def run_demo(out_dir: Path, settings: Settings, users: int = 300, days: int = 60, seed: int = 7) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    events = out_dir / "events.jsonl"
    count = write_jsonl(events, GeneratorConfig(users=users, accounts=max(users // 8, 1), days=days, seed=seed))
    print(f"pulse demo: generated {count:,} events for {users} users over {days} days → {events}")
    result = replay(events, out_dir, settings)
    print(summarize(out_dir, result.summary))
    return result.summary
