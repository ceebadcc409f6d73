"""`pulse demo`'s printing of the funnel (funnel.json) and the retention drivers (drivers.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from demo.runner import driver_lines, funnel_lines, insights, journey_order, summarize
from engine.config import load_settings

STAGES = journey_order(load_settings(None, env={}))


def _figures(entered: int, converted: int, median_s: float | None) -> dict[str, Any]:
    rate = round(converted / entered, 4) if entered else None
    return {"entered": entered, "converted": converted, "conversion_rate": rate, "median_seconds_to_convert": median_s}


# The shape operators/insights.py writes (funnel_report, drivers_report), cut down by hand.
FUNNEL: dict[str, Any] = {
    "cohorts": [
        {"kind": "funnel", "cohort_day": "2026-01-05", "stages": {}, "variants": {}},
        {"kind": "funnel", "cohort_day": "2026-01-06", "stages": {}, "variants": {}},
    ],
    "totals": {
        "stages": {  # alphabetical, as written: the printer puts them in journey order
            "churned": _figures(2, 0, None),
            "newsletter": _figures(10, 7, 302_400.0),
            "paying": _figures(12, 1, 1_209_600.0),
            "signed_up": _figures(20, 20, 90.0),
            "trial": _figures(20, 9, 1_209_600.0),
            "visitor": _figures(100, 25, 4_500.0),
        },
        "variants": {
            "onboarding_checklist": {
                "checklist": {"trial": _figures(10, 6, 1_209_600.0)},
                "control": {"trial": _figures(10, 3, 1_296_000.0)},
            }
        },
    },
}


def _group(retained: int, users: int) -> dict[str, Any]:
    return {"users": users, "retained": retained, "retention": round(retained / users, 4), "ci95": [0.0, 1.0]}


def _row(name: str, with_: tuple[int, int], without: tuple[int, int]) -> dict[str, Any]:
    lift = round((with_[0] / with_[1]) / (without[0] / without[1]), 4)
    return {"name": name, "with": _group(*with_), "without": _group(*without), "lift": lift}


DRIVERS: dict[str, Any] = {
    "kind": "drivers",
    "report_day": "2026-03-05",
    "retention": {"window_days": [23, 30], "early_window_days": [0, 22], "min_group": 30},
    "eligible_users": 200,
    "retained_users": 140,
    "retention_rate": 0.7,
    "features": [_row("dashboards", (45, 60), (95, 140)), _row("integrations", (54, 60), (86, 140))],
    "signals": [_row("frequency", (120, 150), (20, 50))],
    "nps": [_row("detractor", (20, 40), (120, 160))],
}


def _write(out: Path, name: str, doc: object) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_bytes(orjson.dumps(doc) + b"\n")


def test_journey_order_is_the_configured_one() -> None:
    assert STAGES == [
        "visitor", "demo_requested", "newsletter", "signed_up", "trial", "paying", "paused", "cancel_requested",
        "churned",
    ]  # fmt: skip


def test_funnel_table_in_journey_order_with_the_experiment_split() -> None:
    assert funnel_lines(FUNNEL, STAGES) == [
        "",
        "Funnel (funnel.json, 2 cohort days; converted: moved on from the stage):",
        "  stage                    entered  converted    rate   median to convert",
        "  visitor                      100         25   25.0%              75 min",
        "  newsletter                    10          7   70.0%               3.5 d",
        "  signed_up                     20         20  100.0%                90 s",
        "  trial                         20          9   45.0%              14.0 d",
        "  paying                        12          1    8.3%              14.0 d",
        "  churned                        2          0    0.0%                   —",
        "",
        "Experiment onboarding_checklist (variant on entering the stage):",
        "  trial · checklist             10          6   60.0%              14.0 d",
        "  trial · control               10          3   30.0%              15.0 d",
    ]


def test_drivers_sorted_by_lift_with_both_groups() -> None:
    assert driver_lines(DRIVERS) == [
        "",
        "Retention drivers (drivers.json, report of 2026-03-05: 200 users, 70.0% active on days 23-30 of their life):",
        "  driver          kind       lift   with it: retained    without it",
        "  frequency       signal     2.00   80.0% of 150         40.0% of 50",
        "  integrations    feature    1.47   90.0% of 60          61.4% of 140",
        "  dashboards      feature    1.11   75.0% of 60          67.9% of 140",
        "  detractor       nps        0.67   50.0% of 40          75.0% of 160",
    ]
    assert len(driver_lines(DRIVERS, top=2)) == 3 + 2


def test_no_report_yet_and_odd_shapes_do_not_break_the_demo() -> None:
    assert driver_lines(None)[-1] == "Retention drivers: no report yet (no user has 31 days of history)"
    empty = dict(DRIVERS, features=[], signals=[], nps=[])
    assert driver_lines(empty)[-1] == "  no feature or signal with 30 users on both sides yet"
    assert funnel_lines({"cohorts": [], "totals": {"stages": {}, "variants": {}}}) == [
        "",
        "Funnel: nobody entered a stage yet",
    ]
    assert funnel_lines([]) == ["", "Funnel: nobody entered a stage yet"]
    odd = {"totals": {"stages": {"trial": {"entered": 3}, "x": None}, "variants": {"exp": {"a": None}}}}
    lines = funnel_lines(odd, STAGES)
    assert lines[3] == "  trial                          3          —       —                   —"
    assert lines[4].startswith("  x ")
    # A lift of null (nobody retained without it) is left out; a row without a group prints a dash.
    rows = dict(DRIVERS, features=[{"name": "sso", "lift": None}, {"name": "api", "lift": 1.5}], signals=[], nps=[])
    assert driver_lines(rows)[3:] == ["  api             feature    1.50   —                    —"]


def test_insights_only_for_the_files_the_replay_wrote(tmp_path: Path) -> None:
    assert insights(tmp_path, STAGES) == []
    _write(tmp_path, "drivers.json", None)  # what replay writes before the first report
    assert insights(tmp_path, STAGES) == driver_lines(None)
    _write(tmp_path, "funnel.json", FUNNEL)
    (tmp_path / "drivers.json").write_bytes(b"{not json")
    assert insights(tmp_path, STAGES) == funnel_lines(FUNNEL, STAGES)


def _summary_dir(out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    profile = {"user_id": "u0001-daily", "score": 80.0, "band": "healthy", "active_days_7": 5, "active_days_28": 20}
    (out / "profiles.jsonl").write_bytes(orjson.dumps(profile) + b"\n")
    (out / "alerts.jsonl").write_bytes(orjson.dumps({"kind": "lapse", "status": "firing"}) + b"\n")
    return {
        "events_in": 10, "applied": 9, "duplicates": 1, "rejected": 0, "rejected_by_code": {}, "users": 1,
        "as_of": "2026-03-05T00:00:00.000Z", "outputs": {"profiles": 1, "alerts": 1},
    }  # fmt: skip


def test_summary_prints_funnel_and_drivers_after_it(tmp_path: Path) -> None:
    summary = _summary_dir(tmp_path)
    plain = summarize(tmp_path, summary, STAGES)
    assert "Funnel" not in plain
    assert "Retention drivers" not in plain
    assert "funnel.json" not in plain
    _write(tmp_path, "funnel.json", FUNNEL)
    _write(tmp_path, "drivers.json", DRIVERS)
    text = summarize(tmp_path, summary, STAGES)
    assert text.startswith(plain.removesuffix("  summary.json"))
    assert "  funnel.json\n  drivers.json\n  summary.json\n" in text
    assert text.index("summary.json") < text.index("Funnel (") < text.index("Retention drivers (")
    assert text.endswith("\n".join(driver_lines(DRIVERS)))
