"""The insights stage (operators.insights): funnel figures, Wilson intervals, drivers and next_step, with values
worked out by hand."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from engine.flow import FlowConfig, InsightsLogic
from operators.insights import (
    MIN_GROUP,
    AlertDraft,
    Cohort,
    InsightsShard,
    JourneyStep,
    UserFacts,
    choose_next_step,
    compare,
    draft,
    drivers_report,
    funnel_report,
    nps_segment,
    wilson,
)
from operators.shard import HOLD_ALL, Shard, ShardConfig
from schemas.codec import dumps, loads
from schemas.events import Vocabulary
from schemas.outputs import OutputKind, Record
from tests.factories import DAY_MS, T0_DAY, make_event

HOUR_MS = 3_600_000
REPLAY = ShardConfig(account_reorder_ms=HOLD_ALL)
DAY0 = T0_DAY * DAY_MS  # midnight UTC of T0's day
A, B = (("exp", "A"),), (("exp", "B"),)


def _step(
    user: str, stage: str, ts: int, previous: str | None = None, previous_ts: int = -1, v: Any = A
) -> JourneyStep:
    return JourneyStep(user, stage, ts, previous, previous_ts, v, 0, f"{user}-{stage}")


# --- funnel ---------------------------------------------------------------------------------------------------

# u1 and u2 sign up on day 0 (10:00, 12:00), u3 on day 1. u1 activates 1 h later (3600 s), u2 two days later
# (172800 s): day 0's signup cohort converted 2 of 2, median (3600 + 172800) / 2 = 88200 s.
FUNNEL_STEPS = [
    _step("u1", "signup", DAY0 + 10 * HOUR_MS),
    _step("u2", "signup", DAY0 + 12 * HOUR_MS, v=B),
    _step("u3", "signup", DAY0 + DAY_MS + 9 * HOUR_MS),
    _step("u1", "activated", DAY0 + 11 * HOUR_MS, "signup", DAY0 + 10 * HOUR_MS),
    _step("u2", "activated", DAY0 + 2 * DAY_MS + 12 * HOUR_MS, "signup", DAY0 + 12 * HOUR_MS, v=B),
    _step("u1", "signup", DAY0 + 10 * HOUR_MS),  # a repeat: counted once
]


def _figures(entered: int, converted: int, rate: float | None, median: float | None) -> dict[str, Any]:
    return {"entered": entered, "converted": converted, "conversion_rate": rate, "median_seconds_to_convert": median}


def _funnel(steps: Sequence[JourneyStep | UserFacts]) -> InsightsShard:
    shard = InsightsShard()
    shard.process(steps, REPLAY)
    shard.drain(REPLAY)
    return shard


@pytest.mark.parametrize(
    ("day", "stages"),
    [
        pytest.param(
            0,
            {"activated": _figures(1, 0, 0.0, None), "signup": _figures(2, 2, 1.0, 88200.0)},
            id="day0-both-converted",
        ),
        pytest.param(1, {"signup": _figures(1, 0, 0.0, None)}, id="day1-none-converted"),
        pytest.param(2, {"activated": _figures(1, 0, 0.0, None)}, id="day2-u2-activated"),
    ],
)
def test_funnel_cohorts_count_entries_conversions_and_median(day: int, stages: dict[str, Any]) -> None:
    report = funnel_report(_funnel(FUNNEL_STEPS).cohorts.values())
    cohort = next(c for c in report["cohorts"] if c["cohort_day"] == f"2026-03-0{2 + day}")
    assert cohort["stages"] == stages


def test_funnel_totals_and_variants() -> None:
    report = funnel_report(_funnel(FUNNEL_STEPS).cohorts.values())
    assert report["totals"]["stages"] == {
        "activated": _figures(2, 0, 0.0, None),
        "signup": _figures(3, 2, 0.6667, 88200.0),
    }
    assert report["totals"]["variants"] == {
        "exp": {
            "A": {"activated": _figures(1, 0, 0.0, None), "signup": _figures(2, 1, 0.5, 3600.0)},
            "B": {"activated": _figures(1, 0, 0.0, None), "signup": _figures(1, 1, 1.0, 172800.0)},
        }
    }


def test_funnel_records_once_per_cohort_per_flush_and_metrics() -> None:
    shard = InsightsShard()
    live = ShardConfig()  # account_reorder_ms 0: applied on arrival
    shard.process(FUNNEL_STEPS, live)
    records = shard.flush_profiles(live)
    assert [(r.kind, r.key) for r in records] == [
        (OutputKind.FUNNEL, "2026-03-02"),
        (OutputKind.FUNNEL, "2026-03-03"),
        (OutputKind.FUNNEL, "2026-03-04"),
    ]
    assert shard.flush_profiles(live) == []  # nothing changed since
    assert dict(shard.take_moved()) == {
        ("entered", "signup"): 3,
        ("entered", "activated"): 2,
        ("converted", "signup"): 2,
    }
    shard.process([_step("u9", "signup", DAY0 + 13 * HOUR_MS)], live)
    (again,) = shard.flush_profiles(live)
    assert again.key == "2026-03-02"
    assert loads(again.value)["stages"]["signup"] == _figures(3, 2, 0.6667, 88200.0)


def test_a_conversion_without_its_entry_counts_the_entry() -> None:
    shard = _funnel([_step("u1", "activated", DAY0 + 5 * HOUR_MS, "signup", DAY0 + 2 * HOUR_MS)])
    assert funnel_report(shard.cohorts.values())["totals"]["stages"]["signup"] == _figures(1, 1, 1.0, 10800.0)


def test_erasure_forgets_the_id_and_keeps_the_counts() -> None:
    shard = _funnel([*FUNNEL_STEPS, UserFacts("u1", None, DAY0 + 3 * DAY_MS, 9, -1, 0, (), (), "", erased=True)])
    cohort: Cohort = shard.cohorts[T0_DAY]
    assert all("u1" not in users for users in cohort.entered.values())
    assert all("u1" not in users for users in cohort.converted.values())
    assert funnel_report(shard.cohorts.values())["totals"]["stages"]["signup"]["entered"] == 3


# --- statistics ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        pytest.param(50, 100, 0.4038, 0.5962, id="half"),  # centre 0.5, half-width 0.0962
        pytest.param(0, 30, 0.0, 0.1135, id="none"),  # upper = 2 z²/60 / (1 + z²/30)
        pytest.param(10, 10, 0.7225, 1.0, id="all"),  # the mirror of 0/10's 0.2775
        pytest.param(15, 30, 0.3315, 0.6685, id="half-of-30"),
    ],
)
def test_wilson_interval(k: int, n: int, low: float, high: float) -> None:
    assert wilson(k, n) == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize(
    ("score", "segment"),
    [(-1, ""), (0, "detractor"), (6, "detractor"), (7, "passive"), (8, "passive"), (9, "promoter"), (10, "promoter")],
)
def test_nps_segments(score: int, segment: str) -> None:
    assert nps_segment(score) == segment


def _user(
    n: int, retained: bool, features: tuple[str, ...] = (), account: str | None = "acct-1", first: int = 900, **kw: Any
) -> UserFacts:
    bits = 1 | (1 << 25 if retained else 0)
    return UserFacts(
        f"u{n:04d}", account, first * DAY_MS, 1, first, bits, features, kw.get("signals", ()), kw.get("nps", "")
    )


def _population(
    with_n: int, with_kept: int, without_n: int, without_kept: int, account: str = "acct-1"
) -> list[UserFacts]:
    users = [_user(i, i < with_kept, ("dashboards",), account) for i in range(with_n)]
    users += [_user(1000 + i, i < without_kept, (), account) for i in range(without_n)]
    return users


@pytest.mark.parametrize(
    ("with_n", "without_n", "shown"),
    [(30, 30, True), (29, 40, False), (40, 29, False), (MIN_GROUP, 100, True)],
)
def test_a_comparison_needs_thirty_users_on_each_side(with_n: int, without_n: int, shown: bool) -> None:
    users = _population(with_n, 0, without_n, 1)
    assert (compare("dashboards", users, lambda u: "dashboards" in u.features) is not None) is shown


@pytest.mark.parametrize(
    ("population", "lift"),
    [
        pytest.param((30, 15, 40, 10), 2.0, id="0.5-vs-0.25"),
        pytest.param((35, 21, 35, 7), 3.0, id="0.6-vs-0.2"),
        pytest.param((30, 6, 30, 12), 0.5, id="worse"),
        pytest.param((30, 6, 30, 0), None, id="nobody-without-retained"),
    ],
)
def test_lift_is_the_ratio_of_retention(population: tuple[int, int, int, int], lift: float | None) -> None:
    result = compare("dashboards", _population(*population), lambda u: "dashboards" in u.features)
    assert result is not None
    row, _raw = result
    assert row["lift"] == lift
    assert row["with"]["users"] == population[0]
    assert row["with"]["retained"] == population[1]
    assert row["without"]["users"] == population[2]
    assert row["without"]["retained"] == population[3]


def test_drivers_report_counts_only_users_whose_retention_window_is_over() -> None:
    day = 900 + 31  # users first active on day 900 are eligible from day 931
    users = _population(35, 21, 35, 7)
    users += [_user(5000 + i, True, ("reports",), first=901) for i in range(40)]  # day 901: not yet
    users.append(dataclasses.replace(_user(6000, True, ("reports",)), erased=True))
    doc, lifts, accounts = drivers_report(day, users, ("dashboards", "reports"))
    assert (doc["eligible_users"], doc["retained_users"], doc["retention_rate"]) == (70, 28, 0.4)
    (row,) = doc["features"]
    assert row["name"] == "dashboards"
    assert row["with"] == {"users": 35, "retained": 21, "retention": 0.6, "ci95": [0.4357, 0.7445]}
    assert row["without"]["retention"] == 0.2
    assert row["lift"] == 3.0
    assert lifts == {"dashboards": pytest.approx(3.0)}
    assert accounts == {"acct-1": {"dashboards": pytest.approx(3.0)}}  # 70 eligible >= 60
    assert doc["report_day"] == "1972-07-20"


def test_an_account_below_sixty_eligible_users_has_no_figures_of_its_own() -> None:
    users = _population(30, 15, 29, 5, account="small") + _population(31, 10, 31, 10, account="other")
    _, lifts, accounts = drivers_report(931, users, ("dashboards",))
    assert accounts == {"other": {"dashboards": pytest.approx(1.0)}}  # 59 in `small`
    assert "dashboards" in lifts


GLOBAL = {"reports": 1.5, "alerts": 2.0, "exports": 0.8}
ACCOUNTS = {"big": {"reports": 1.2}, "empty": {}}


@pytest.mark.parametrize(
    ("used", "account", "expected"),
    [
        pytest.param((), None, ("alerts", 2.0, "global"), id="best-global"),
        pytest.param(("alerts",), "small", ("reports", 1.5, "global"), id="small-account-uses-global"),
        pytest.param((), "big", ("reports", 1.2, "account"), id="account-own-figures"),
        pytest.param(("reports",), "big", None, id="account-scope-nothing-left"),
        pytest.param((), "empty", None, id="enough-users-no-qualifying-feature"),
        pytest.param(("alerts", "reports"), None, None, id="lift-below-one-is-no-suggestion"),
    ],
)
def test_next_step_choice(used: tuple[str, ...], account: str | None, expected: tuple[str, float, str] | None) -> None:
    keys = ("dashboards", "reports", "alerts", "integrations", "workflows", "exports")
    step = choose_next_step(used, account, keys, GLOBAL, ACCOUNTS)
    if expected is None:
        assert step is None
    else:
        feature, lift, scope = expected
        assert step == {"action": "adopt_feature", "feature": feature, "lift": lift, "scope": scope}


def test_next_step_ties_go_to_the_feature_name() -> None:
    step = choose_next_step((), None, ("reports", "dashboards"), {"reports": 1.5, "dashboards": 1.5}, {})
    assert step is not None
    assert step["feature"] == "dashboards"


# --- the stage end to end -----------------------------------------------------------------------------------


def _alert(user: str, ts: int, account: str = "acct-1", used: tuple[str, ...] = ()) -> Record:
    doc = {
        "alert_id": f"lapse-{user}",
        "kind": "lapse",
        "status": "firing",
        "user_id": user,
        "account_id": account,
        "ts": "x",
        "next_step": {"action": "__insights__", "used": list(used), "seq": 3},
    }
    return Record(OutputKind.ALERTS, user, dumps(doc), ts)


def test_alerts_get_next_step_from_the_report_before_them_whatever_the_arrival_order() -> None:
    users = [dataclasses.replace(u, ts=(900 + 30) * DAY_MS) for u in _population(35, 21, 35, 7)]
    report_day = 900 + 31
    before = draft(_alert("u-early", (report_day - 1) * DAY_MS + 5))  # before the first report: no figures
    after = draft(_alert("u-late", report_day * DAY_MS + HOUR_MS))
    other = draft(_alert("u-other", report_day * DAY_MS + HOUR_MS, account="acct-9", used=("dashboards",)))
    items: list[Any] = [*users, before, after, other]
    outputs: list[list[bytes]] = []
    for seed in range(3):
        random.Random(seed).shuffle(items)
        shard = InsightsShard()
        out = shard.process(items, REPLAY) + shard.drain(REPLAY)
        outputs.append([r.value for r in out])
        alerts = {loads(r.value)["user_id"]: loads(r.value) for r in out if r.kind is OutputKind.ALERTS}
        assert alerts["u-early"]["next_step"] is None
        assert alerts["u-late"]["next_step"] == {
            "action": "adopt_feature",
            "feature": "dashboards",
            "lift": 3.0,
            "scope": "account",
        }
        assert alerts["u-other"]["next_step"] is None  # global scope, its only lift-qualifying feature used
        assert [r.kind for r in out].count(OutputKind.INSIGHTS) == 1
    assert outputs[0] == outputs[1] == outputs[2]


def test_draft_keeps_every_other_field_and_a_plain_alert_passes_unchanged() -> None:
    record = _alert("u", 5)
    made = draft(record)
    assert isinstance(made, AlertDraft)
    assert made.used == ()
    assert made.seq == 3
    assert loads(made.value) == {**loads(record.value), "next_step": None}
    plain = Record(OutputKind.ALERTS, "u", dumps({"alert_id": "x", "kind": "lapse", "status": "resolved"}), 7)
    assert draft(plain).used is None
    (out,) = InsightsShard().process([draft(plain)], ShardConfig())
    assert out == plain


# --- the user shard's hook ----------------------------------------------------------------------------------


def _facts(outputs: list[Any]) -> list[UserFacts]:
    return [o for o in outputs if isinstance(o, UserFacts)]


def test_user_facts_only_in_the_first_31_days_or_on_nps_and_erasure() -> None:
    config = dataclasses.replace(ShardConfig(), insights=True)
    events = [make_event(event_id=f"d{d}", type="page_view", ts=DAY0 + d * DAY_MS + HOUR_MS) for d in range(40)]
    events.append(make_event(event_id="f", type="feature_used", feature="dashboards", ts=DAY0 + 2 * HOUR_MS))
    events.append(make_event(event_id="g", type="feature_used", feature="reports", ts=DAY0 + 3 * HOUR_MS))
    events.append(
        make_event(event_id="t", type="support_ticket_opened", ts=DAY0 + 4 * HOUR_MS, properties={"ticket_id": "1"})
    )
    events.append(make_event(event_id="n", type="nps_response", ts=DAY0 + 45 * DAY_MS, properties={"score": 9}))
    events.append(make_event(event_id="e", type="erasure_requested", ts=DAY0 + 50 * DAY_MS))
    shard = Shard()
    in_order = sorted(events, key=lambda e: e.ts)
    facts = _facts(shard.process(in_order, config) + shard.drain(config))
    days = [f.ts // DAY_MS - T0_DAY for f in facts]
    assert days == [0, 0, 0, 0, *range(1, 31), 45, 50]
    day30 = facts[-3]
    assert day30.first_active_day == T0_DAY
    assert day30.active_bits == (1 << 31) - 1
    assert day30.retained
    assert day30.features == ("dashboards", "reports")
    assert day30.signals == ("frequency", "adoption", "support")
    assert facts[-2].nps == "promoter"
    assert facts[-1].erased


def test_without_the_insights_stage_a_user_shard_sends_no_facts() -> None:
    shard = Shard()
    outputs = shard.process([make_event(event_id="a", ts=DAY0 + HOUR_MS)], ShardConfig())
    assert _facts(outputs) == []


def test_the_insights_stage_snapshots_incrementally_and_resumes_exactly(tmp_path: Path) -> None:
    config = FlowConfig(Vocabulary(), 1, ShardConfig(live_profiles=True, track_changes=True), state_dir=tmp_path)
    logic = InsightsLogic(config, None)
    facts = [dataclasses.replace(u, ts=DAY0 + HOUR_MS) for u in _population(3, 1, 2, 1)]
    logic.on_batch([[*FUNNEL_STEPS, *facts]])
    header = logic.snapshot()
    assert header is not None
    resumed = InsightsLogic(config, header)
    assert isinstance(resumed._state, InsightsShard)
    assert isinstance(logic._state, InsightsShard)
    assert resumed._state.facts == logic._state.facts
    assert funnel_report(resumed._state.cohorts.values()) == funnel_report(logic._state.cohorts.values())
    assert resumed._state.header() == logic._state.header()
    # An erasure deletes the person's entry from the store.
    logic.on_batch([[UserFacts("u0000", None, DAY0 + 2 * HOUR_MS, 5, -1, 0, (), (), "", erased=True)]])
    again = InsightsLogic(config, logic.snapshot())
    assert isinstance(again._state, InsightsShard)
    assert "u0000" not in again._state.facts
    assert set(again._state.facts) == {"u0001", "u0002", "u1000", "u1001"}


def test_live_items_wait_for_the_slowest_user_shard_and_resolutions_pass_at_once() -> None:
    from operators.insights import ShardFrontier

    live = ShardConfig(live_profiles=True, insights=True)
    shard = InsightsShard()
    day1, day5 = DAY0 + DAY_MS, DAY0 + 5 * DAY_MS
    early, late = _step("u1", "signup", day1), _step("u2", "signup", day5)  # from a slow and a fast partition
    lapse = draft(_alert("u3", day5 + HOUR_MS, used=("reports",)))
    resolved = Record(
        OutputKind.ALERTS, "u4", dumps({"alert_id": "r", "kind": "lapse", "status": "resolved"}), day5 + 2 * HOUR_MS
    )
    assert shard.process([late, lapse, early, draft(resolved)], live) == [resolved]  # nothing waits for it
    assert (len(shard.pending), shard.day) == (3, -1)  # held, and the resolution did not move the day
    assert shard.process([ShardFrontier("s001", day1 - HOUR_MS)], live) == []  # before every held item
    shard.process([ShardFrontier("s000", day5 + DAY_MS), ShardFrontier("s001", day1 + HOUR_MS)], live)
    assert (len(shard.pending), shard.day) == (2, day1 // DAY_MS)  # only what the slowest shard passed
    out = shard.process([ShardFrontier("s001", day5 + DAY_MS)], live)
    assert shard.pending == []
    assert [r.kind for r in out] == [OutputKind.INSIGHTS, OutputKind.ALERTS]  # day 5's report, then the alert
