"""Hostile but real streams through Shard and AccountShard: bad clocks, per-device event ids, users who
move accounts, erasure that reaches the account and downstream, profiles that agree with the records."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from operators.accounts import AccountShard
from operators.health import MemberUpdate, render_user
from operators.shard import HOLD_ALL, Output, Shard, ShardConfig
from schemas.codec import format_ts, loads
from schemas.events import Event
from schemas.outputs import Entity, OutputKind, ProfileWrite, Record, record_id
from tests.factories import DAY_MS, day_ts, make_event

HOUR_MS = 3_600_000
REPLAY = ShardConfig(reorder_ms=HOUR_MS, account_reorder_ms=HOLD_ALL)
LIVE = ShardConfig(live_profiles=True, timer_lag_ms=HOUR_MS)


def _daily(user: str, days: range, account: str | None = "acct-a", prefix: str = "") -> list[Event]:
    return [make_event(event_id=f"{prefix}{user}-{d}", user_id=user, account_id=account, ts=day_ts(d)) for d in days]


def _run(events: Sequence[Event], config: ShardConfig = REPLAY) -> tuple[Shard, list[Output]]:
    shard = Shard()
    outputs = shard.process(events, config)
    outputs += shard.drain(config)
    return shard, outputs


def _records(outputs: Sequence[Output], kind: OutputKind) -> list[dict[str, Any]]:
    return [loads(o.value) for o in outputs if isinstance(o, Record) and o.kind is kind]


def _accounts(outputs: Sequence[Output], config: ShardConfig = REPLAY) -> tuple[AccountShard, list[Output]]:
    accounts = AccountShard()
    updates = [o for o in outputs if isinstance(o, MemberUpdate)]
    out = accounts.process(updates, config)
    out += accounts.drain(config)
    return accounts, out


def _for_user(outputs: Sequence[Output], user: str) -> list[bytes]:
    return sorted(o.value for o in outputs if isinstance(o, Record) and o.key == user)


# ---- de-duplication is per user ---------------------------------------------------------------------------------


def test_the_same_event_id_from_two_users_is_two_events() -> None:
    # SDKs number events per device: e1, e2, ... for everybody.
    a = [make_event(event_id=f"e{d}", user_id="ann", ts=day_ts(d)) for d in range(3)]
    b = [make_event(event_id=f"e{d}", user_id="bob", ts=day_ts(d, hour=13)) for d in range(3)]
    shard, _ = _run([x for pair in zip(a, b, strict=True) for x in pair] + [a[1], b[2]])
    assert (shard.counters.applied, shard.counters.duplicates) == (6, 2)
    assert {u: s.active_day_count for u, s in shard.users.items()} == {"ann": 3, "bob": 3}


# ---- bad client clocks ----------------------------------------------------------------------------------------


def test_one_event_far_ahead_moves_nobody_else() -> None:
    others = _daily("ann", range(0, 6)) + _daily("bob", range(0, 3), account="acct-b")
    ahead = make_event(event_id="x", user_id="cid", ts=day_ts(200))
    dup = make_event(event_id="ann-5", user_id="ann", ts=day_ts(5))  # a duplicate sent after it
    clean_shard, clean = _run(others)
    noisy_shard, noisy = _run([*others[:4], ahead, *others[4:], dup])
    assert noisy_shard.counters.duplicates == 1
    for user in ("ann", "bob"):
        assert _for_user(noisy, user) == _for_user(clean, user), user
        assert noisy_shard.users[user].clock == clean_shard.users[user].clock
    assert noisy_shard.event_time == clean_shard.event_time
    # The far-away user got their own outputs, and only those.
    assert _records(noisy, OutputKind.SCORES)[-1]["ts"] >= format_ts(day_ts(200))


def test_a_jump_confirmed_by_a_second_user_moves_the_shard() -> None:
    events = [*_daily("ann", range(0, 3)), *_daily("bob", range(60, 62)), *_daily("cid", range(61, 62))]
    shard = Shard()
    shard.process(events[:5], REPLAY)
    assert shard.event_time == day_ts(2)  # bob alone is a jump of 58 days: held
    shard.process(events[5:], REPLAY)
    assert shard.event_time == day_ts(61)  # cid confirms it


def test_a_lone_user_back_after_a_long_silence_still_lapses_first() -> None:
    events = _daily("ann", range(0, 10)) + _daily("ann", range(80, 81), prefix="back-")
    _, outputs = _run(events)
    alerts = [
        (a["kind"], a["status"], a["ts"]) for a in _records(outputs, OutputKind.ALERTS) if a["kind"] != "churn_risk"
    ]
    assert [a[:2] for a in alerts] == [("lapse", "firing"), ("lapse", "resolved"), ("reactivated", "firing")]
    assert alerts[0][2] < format_ts(day_ts(30)) < alerts[1][2] == format_ts(day_ts(80))


@pytest.mark.parametrize(
    ("late_day", "applied_to_state"),
    [pytest.param(-366, True, id="within-a-year"), pytest.param(-367, False, id="beyond-a-year")],
)
def test_late_events_far_before_a_users_first_day_only_count(late_day: int, applied_to_state: bool) -> None:
    late = make_event(event_id="old", user_id="ann", ts=day_ts(0) + late_day * DAY_MS, type="feature_used")
    shard, _ = _run([*_daily("ann", range(0, 3)), late])
    user = shard.users["ann"]
    assert sum(user.counts) == 4
    assert shard.counters.beyond_backfill == (0 if applied_to_state else 1)
    assert (user.first_seen == late.ts) is applied_to_state
    assert user.day_bits.bit_length() <= (370 if applied_to_state else 3)


# ---- users who move accounts -----------------------------------------------------------------------------------


def _members(accounts: AccountShard) -> dict[str, set[str]]:
    return {aid: set(state.members) for aid, state in accounts.accounts.items()}


def test_a_user_who_moves_counts_only_in_the_new_account() -> None:
    events = [
        *_daily("ann", range(0, 5)),
        *_daily("bob", range(0, 9)),
        *_daily("ann", range(5, 9), account="acct-b", prefix="moved-"),
    ]
    _, outputs = _run(sorted(events, key=lambda e: e.ts))
    accounts, records = _accounts(outputs)
    assert _members(accounts) == {"acct-a": {"bob"}, "acct-b": {"ann"}}
    docs = _records(records, OutputKind.ACCOUNTS)
    left = next(d for d in docs if d["account_id"] == "acct-a" and d["cause_event_id"] == "moved-ann-5")
    members = next(r for r in left["reasons"] if r["component"] == "members")
    assert (members["change"], members["users"], left["users"]) == ("moved_out", 1, 1)
    joined = next(d for d in docs if d["account_id"] == "acct-b")
    assert joined["cause_event_id"] == "moved-ann-5"
    assert any(r.get("change") == "moved_in" for r in joined["reasons"])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_moves_are_order_independent_within_the_lateness(seed: int) -> None:
    events = sorted(
        [
            *_daily("ann", range(0, 5)),
            *_daily("bob", range(0, 9)),
            *_daily("ann", range(5, 7), account="acct-b", prefix="m-"),
            *_daily("ann", range(7, 9), account="acct-a", prefix="back-"),
        ],
        key=lambda e: e.ts,
    )
    rng = random.Random(seed)
    # Shuffle within 40 minutes: every event moves by less than the allowed lateness.
    shuffled = sorted(events, key=lambda e: e.ts + rng.randrange(0, 40 * 60_000))
    _, straight = _run(events)
    _, mixed = _run(shuffled)
    a1, r1 = _accounts(straight)
    a2, r2 = _accounts(mixed)
    assert _members(a1) == _members(a2) == {"acct-a": {"ann", "bob"}, "acct-b": set()}
    assert sorted(o.value for o in r1 if isinstance(o, Record)) == sorted(o.value for o in r2 if isinstance(o, Record))


def test_an_old_update_after_a_departure_does_not_bring_the_member_back() -> None:
    events = [*_daily("ann", range(0, 3)), *_daily("ann", range(3, 4), account="acct-b", prefix="m-")]
    _, outputs = _run(events)
    updates = [o for o in outputs if isinstance(o, MemberUpdate)]
    departure = next(u for u in updates if u.change == "moved_out")
    older = [u for u in updates if u.account_id == "acct-a" and u.change == ""]
    accounts = AccountShard()
    accounts.process([departure, *older], ShardConfig())  # the departure arrives first
    assert _members(accounts) == {"acct-a": set()}


# ---- erasure reaches the account and downstream -----------------------------------------------------------------


def _lapsed_then_erased() -> list[Event]:
    erase = make_event(event_id="bye", user_id="ann", type="erasure_requested", ts=day_ts(20))
    return sorted([*_daily("ann", range(0, 10)), *_daily("bob", range(0, 21)), erase], key=lambda e: e.ts)


def test_erasure_closes_open_alerts_and_tells_downstream() -> None:
    shard, outputs = _run(_lapsed_then_erased())
    alerts = [a for a in _records(outputs, OutputKind.ALERTS) if a["user_id"] == "ann"]
    firing = {a["alert_id"] for a in alerts if a["status"] == "firing" and a["kind"] in ("lapse", "churn_risk")}
    closed = [a for a in alerts if a.get("resolution") == "erased"]
    assert firing
    assert {a["alert_id"] for a in closed} == firing
    for alert in closed:
        assert alert["status"] == "resolved"
        assert alert["ts"] == format_ts(day_ts(20))
        assert (alert["account_id"], alert["last_seen"], alert["score"], alert["band"]) == (None, None, None, None)
    erased = [r for r in _records(outputs, OutputKind.LIFECYCLE) if r["kind"] == "user_erased"]
    assert [{k: v for k, v in r.items() if k != "record_id"} for r in erased] == [
        {"kind": "user_erased", "user_id": "ann", "ts": format_ts(day_ts(20))}
    ]
    assert erased[0]["record_id"] == record_id("erased", "ann", day_ts(20))
    assert "ann" not in shard.users
    assert ProfileWrite(Entity.USER, "ann", None) in outputs


def test_erasure_drops_the_member_from_the_account_at_once() -> None:
    _, outputs = _run(_lapsed_then_erased())
    accounts, records = _accounts(outputs)
    assert _members(accounts) == {"acct-a": {"bob"}}
    doc = next(d for d in _records(records, OutputKind.ACCOUNTS) if d["cause_event_id"] == "bye")
    assert doc["users"] == 1
    assert {"component": "members", "change": "erased", "users": 1}.items() <= next(
        r for r in doc["reasons"] if r["component"] == "members"
    ).items()
    deltas = [abs(r["delta"]) for r in doc["reasons"]]
    assert deltas == sorted(deltas, reverse=True)


def test_erased_ids_are_forgotten_after_the_lateness_horizon() -> None:
    config = ShardConfig(timer_lag_ms=HOUR_MS, dedup_horizon_ms=2 * DAY_MS)
    shard = Shard(prune_at=1)
    erase = make_event(event_id="bye", user_id="ann", type="erasure_requested", ts=day_ts(1))
    shard.process([*_daily("ann", range(0, 1)), erase], config)
    assert shard.erased == {"ann": day_ts(1)}
    shard.prune_at = 1
    shard.process(_daily("bob", range(2, 4)), config)
    assert shard.erased == {"ann": day_ts(1)}  # 2 days + 1 hour not yet passed
    shard.prune_at = 1  # pruning is amortised (when the id map doubles): force one now
    shard.process(_daily("bob", range(4, 5)), config)
    assert shard.erased == {}


# ---- profiles agree with the records ---------------------------------------------------------------------------


def test_live_profile_agrees_with_the_last_score_and_lifecycle_records() -> None:
    shard = Shard()
    # ann stops on day 9; bob goes on, so ann's timers re-score and lapse her as of her own deadline.
    events = sorted([*_daily("ann", range(0, 10)), *_daily("bob", range(0, 30))], key=lambda e: e.ts)
    outputs = shard.process(events, LIVE)
    outputs += shard.flush_profiles(LIVE)
    profile = next(o.fields for o in reversed(outputs) if isinstance(o, ProfileWrite) and o.key == "ann")
    assert profile is not None
    score = [r for r in _records(outputs, OutputKind.SCORES) if r["user_id"] == "ann"][-1]
    stage = [r for r in _records(outputs, OutputKind.LIFECYCLE) if r["user_id"] == "ann"][-1]
    assert stage["to"] == "lapsed"
    assert (profile["score"], profile["band"], profile["components"]) == (
        score["score"],
        score["band"],
        score["components"],
    )
    assert profile["engagement"] == stage["to"]
    assert profile["as_of"] >= score["ts"]
    assert profile["as_of"] < format_ts(day_ts(29))  # her own clock, not bob's
    assert profile == render_user("ann", shard.users["ann"], LIVE.model, LIVE.lapse)
