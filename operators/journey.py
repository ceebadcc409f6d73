"""The journey: an ordered path of stages a user moves along (visitor → … → paying) with exits (paused,
cancel_requested, churned); experiment exposures; NPS segments, for users and accounts. Pure functions
over UserState; the shard calls `after_event` for the events that can matter (see Shard._apply)."""

from __future__ import annotations

import re
from bisect import insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from operators.alerts import stage_changed
from operators.insights import JourneyStep
from operators.insights import nps_segment as segment_of
from operators.state import DAY_MS, UserState
from schemas.codec import format_ts
from schemas.events import EXPERIMENT_EXPOSED, NAME_PATTERN, OTHER, Category, Event

# Event type -> the journey stage it enters (the `[journey] events` defaults).
DEFAULT_EVENTS: dict[str, str] = {
    "demo_requested": "demo_requested",
    "newsletter_subscribed": "newsletter",
    "signed_up": "signed_up",
    "trial_started": "trial",
    "subscribed": "paying",
    "subscription_resumed": "paying",
    "subscription_paused": "paused",
    "cancellation_requested": "cancel_requested",
    "subscription_cancelled": "churned",
}
# Account NPS counts the members' latest answers given at most this long before the account's clock.
NPS_WINDOW_DAYS = 180
_STAGE_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class Journey:
    """The `[journey]` section: funnel stages in order (`a|b`: alternatives at the same rank), exits, the
    event types that enter each stage, and the first funnel stage that brings a user back from an exit."""

    stages: tuple[str, ...] = ("visitor", "demo_requested|newsletter", "signed_up", "trial", "paying")
    exits: tuple[str, ...] = ("paused", "cancel_requested", "churned")
    events: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_EVENTS))
    rejoin: str = "trial"
    # Derived: funnel stage -> rank (exits have none), the entry stage, the exits as a set.
    rank: dict[str, int] = field(init=False, compare=False, repr=False, default_factory=dict)
    entry: str = field(init=False, compare=False, repr=False, default="")
    exit_set: frozenset[str] = field(init=False, compare=False, repr=False, default=frozenset())

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("stages must name at least one stage")
        rank: dict[str, int] = {}
        for position, entry in enumerate(self.stages):
            names = [name.strip() for name in entry.split("|")]
            if position == 0 and len(names) > 1:
                raise ValueError(f"the first stage is where every user starts: one stage, got {entry!r}")
            for name in names:
                _check_name(name, rank)
                rank[name] = position
        exits: set[str] = set()
        for name in self.exits:
            _check_name(name, rank)
            if name in exits:
                raise ValueError(f"stage {name!r} is named twice")
            exits.add(name)
        for event_type, stage in self.events.items():
            if stage not in rank and stage not in exits:
                raise ValueError(f"events: {event_type} enters {stage!r}, which is neither a stage nor an exit")
        if self.rejoin not in rank:
            raise ValueError(f"rejoin must be one of the stages (not an exit), got {self.rejoin!r}")
        object.__setattr__(self, "rank", rank)
        object.__setattr__(self, "entry", self.stages[0].strip())
        object.__setattr__(self, "exit_set", frozenset(exits))

    def unknown_types(self, known: Iterable[str]) -> list[str]:
        """The configured event types outside `known` (the vocabulary): they would read "other" at decode."""
        return sorted(set(self.events) - set(known))

    def next_stage(self, current: str, since: int, stage: str, ts: int) -> str | None:
        """The stage a user at `current` (entered at `since`) moves to when an event entering `stage` at
        `ts` is applied, or None. Never backwards: a funnel stage moves the user only to a higher rank (an
        alternative at the same rank does not replace the current one); an exit is entered from anywhere
        by an event not older than the current stage; from an exit, only an event not older than the exit
        and entering `rejoin` or a later stage brings the user back (to that stage)."""
        if stage == current:
            return None
        exits = self.exit_set
        if stage in exits:
            return stage if ts >= since else None
        target = self.rank[stage]
        if current in exits:
            return stage if ts >= since and target >= self.rank[self.rejoin] else None
        # A stage no longer configured (a changed [journey] after a restart) ranks below all.
        return stage if target > self.rank.get(current, -1) else None


def _check_name(name: str, taken: Mapping[str, int]) -> None:
    if not _STAGE_NAME.fullmatch(name):
        raise ValueError(f"stage name {name!r} does not match {NAME_PATTERN}")
    if name in taken:
        raise ValueError(f"stage {name!r} is named twice")


DEFAULT_JOURNEY = Journey()


def nps_segment(score: int) -> str | None:
    """promoter 9-10, passive 7-8, detractor 0-6 (operators.insights); None without an answer (-1)."""
    return segment_of(score) or None


def record_exposure(user: UserState, event: Event) -> None:
    """experiment -> variant; the first exposure by event time wins (ties: the smaller variant), so the
    result does not depend on arrival order. An experiment name outside the tracking plan (read "other"
    at decode) or a missing variant is not kept."""
    props = event.properties
    if not props:
        return
    experiment, variant = props.get("experiment"), props.get("variant")
    if not isinstance(experiment, str) or not isinstance(variant, str) or experiment == OTHER:
        return
    seen = user.experiments
    if seen is None:
        seen = user.experiments = {}
    known = seen.get(experiment)
    if known is None or (event.ts, variant) < known:
        seen[experiment] = (event.ts, variant)


def variants_at(user: UserState, ts: int) -> tuple[tuple[str, str], ...]:
    """The (experiment, variant) pairs the user had been exposed to by `ts`, sorted."""
    seen = user.experiments
    if not seen:
        return ()
    return tuple(sorted((experiment, variant) for experiment, (at, variant) in seen.items() if at <= ts))


def held_experiments(user: UserState) -> dict[str, dict[str, str]]:
    """experiment -> the variant first shown and when: what an access request is owed of the exposures."""
    seen = user.experiments or {}
    return {e: {"variant": v, "first_exposed": format_ts(t)} for e, (t, v) in sorted(seen.items())}


def after_event(
    user_id: str,
    user: UserState,
    event: Event,
    nps_before: int,
    journey: Journey,
    out: list[Any],
    steps: bool = True,
    lateness_ms: int = 0,
) -> None:
    """What one applied event does to the journey (a `journey` lifecycle record, and a JourneyStep for the
    insights stage when `steps`), the experiment exposures and the NPS segment (an `nps_segment` record).

    The journey is the user's journey events folded in event-time order, (ts, event id) as the ordering
    buffer releases them: the user's recent ones (within `lateness_ms` of their newest event) are kept, so
    one that arrives out of order within the lateness takes its place among them and the result does not
    depend on the arrival order (as in a replay). One later than that meets the stage the user is at, by
    `Journey.next_stage`: it can move the user on, never back."""
    ts, cause, kind = event.ts, event.event_id, event.type
    if kind == EXPERIMENT_EXPOSED and event.category is Category.OTHER:
        record_exposure(user, event)
    stage = journey.events.get(kind)
    if stage is not None or not user.journey or ts < user.journey_ts:
        _fold_in(user, journey, stage, ts, cause, user.last_seen - lateness_ms)
        stage_now, since = _folded(user, journey)
        if stage_now != user.journey:
            _enter(user_id, user, stage_now, since, cause, out, steps)
        else:
            user.journey_ts = since  # an earlier first event, within the lateness: the same stage, since then
    if user.nps_score != nps_before:
        before, after = nps_segment(nps_before), nps_segment(user.nps_score)
        if after is not None and before != after:
            out.append(stage_changed(user_id, "nps_segment", before, after, ts, cause))


def _fold_in(user: UserState, journey: Journey, stage: str | None, ts: int, cause: str, horizon: int) -> None:
    """The user's recent journey events (`journey_log`) on top of the fold of the older ones (`journey_base`):
    entries older than `horizon` go into the base; a new event within it takes its place in the log."""
    log = user.journey_log
    while log and log[0][0] < horizon:
        entry_ts, _, entry_stage = log.pop(0)
        user.journey_base = _step(journey, _start(user, journey), entry_stage, entry_ts)
    if stage is None:
        return
    if ts >= horizon:
        if log is None:
            log = user.journey_log = []
        insort(log, (ts, cause, stage))
        return
    # Later than the lateness: it meets the stage the user is at now.
    current, since = _folded(user, journey)
    to = journey.next_stage(current, since, stage, ts)
    if to is None:
        return
    at = max(ts, since, log[-1][0] if log else -1)
    if at < horizon:
        user.journey_base = (to, at)  # the log is empty: everything in it was at or after the horizon
        return
    if log is None:
        log = user.journey_log = []
    log.append((at, cause, to))  # at or after every entry: applied last, as it arrived


def _start(user: UserState, journey: Journey) -> tuple[str, int]:
    return user.journey_base if user.journey_base is not None else (journey.entry, user.first_seen)


def _step(journey: Journey, state: tuple[str, int], stage: str, ts: int) -> tuple[str, int]:
    current, since = state
    to = journey.next_stage(current, since, stage, ts)
    # Entered no earlier than the stage it leaves: a late event moving the user on does so as of then.
    return state if to is None else (to, max(ts, since))


def _folded(user: UserState, journey: Journey) -> tuple[str, int]:
    state = _start(user, journey)
    for ts, _, stage in user.journey_log or ():
        state = _step(journey, state, stage, ts)
    return state


def _enter(user_id: str, user: UserState, stage: str, ts: int, cause: str, out: list[Any], steps: bool) -> None:
    previous = user.journey or None
    since = user.journey_ts if previous is not None else -1
    spent = round(max(ts - since, 0) / 1000, 3) if previous is not None else None
    out.append(stage_changed(user_id, "journey", previous, stage, ts, cause, time_in_previous_stage_s=spent))
    if steps:
        out.append(JourneyStep(user_id, stage, ts, previous, since, variants_at(user, ts), sum(user.counts), cause))
    user.journey, user.journey_ts = stage, ts


def journey_profile(user: UserState) -> dict[str, Any]:
    """The profile fields of this module: journey stage and since when, NPS segment."""
    return {
        "journey_stage": user.journey or None,
        "journey_stage_since": format_ts(user.journey_ts) if user.journey_ts >= 0 else None,
        "nps_segment": nps_segment(user.nps_score),
    }


def account_nps(answers: Mapping[str, tuple[int, int]], as_of: int) -> dict[str, Any]:
    """NPS of an account's members (user -> (ts, score) of their latest answer) who answered in the
    `NPS_WINDOW_DAYS` before `as_of`: % promoters - % detractors (rounded to 0.1), None without answers."""
    floor = as_of - NPS_WINDOW_DAYS * DAY_MS
    scores = [score for at, score in answers.values() if at >= floor]
    if not scores:
        return {"nps": None, "nps_responses": 0}
    promoters = sum(1 for s in scores if s >= 9)
    detractors = sum(1 for s in scores if s <= 6)
    return {"nps": round(100 * (promoters - detractors) / len(scores), 1), "nps_responses": len(scores)}
