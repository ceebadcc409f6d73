"""User 360 and Customer 360: scoring a user's state, and account health from its users and team signals."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from operators.journey import account_nps, journey_profile
from operators.lapse import LapseModel
from operators.scoring import (
    COMMERCIAL_VALUE,
    COMPONENTS,
    Band,
    ScoreModel,
    Signals,
    components,
    contributions,
    next_band,
    reasons,
    renormalisation_shift,
    score_of,
)
from operators.sessions import complete_day_minutes, had_time_before
from operators.state import DAY_MS, UserState, render_profile
from schemas.codec import dumps, format_ts
from schemas.outputs import OutputKind, Record, record_id

_DEFAULT_LAPSE = LapseModel()
ACCOUNT_COMPONENTS = ("user_health", "active_share", "not_at_risk", "team", "commercial")
ACCOUNT_SHARES = (30.0, 35.0, 15.0, 10.0, 10.0)  # of 100


def signals(model: ScoreModel, user: UserState, as_of: int, lapse: LapseModel = _DEFAULT_LAPSE) -> Signals:
    features = user.features
    # The frequency window: the last frequency_window_days, or since the first active day if later.
    today = as_of // DAY_MS
    window = min(model.frequency_window_days, max(0, today - user.first_active_day)) if user.last_active >= 0 else 0
    return Signals(
        days_since_active=None if user.last_active < 0 else max(0, as_of - user.last_active) / DAY_MS,
        expected_gap_days=lapse.expected_gap_days(user),
        rhythm_evidence=max(user.active_day_count - 1, 0) + lapse.prior_weight,
        active_days_window=user.active_days(as_of, window + 1),
        window_days=window,
        key_features_used=sum(1 for f in model.key_features if f in features),
        feature_uses=sum(features.values()),
        nps_score=user.nps_score if user.nps_score >= 0 else None,
        nps_age_days=max(0, as_of - user.nps_ts) / DAY_MS,
        support_load=user.support_load(),
        commercial=user.commercial,
        has_tickets=user.tickets is not None,
        has_commercial=user.commercial_ts >= 0,
        minutes_28=complete_day_minutes(user.sessions, as_of, 28),
        has_time=had_time_before(user.sessions, as_of),
    )


class Scored(Protocol):
    """A user or an account: what was last emitted, for deltas and hysteresis."""

    score: float
    band: str
    contributions: tuple[float, ...]
    components: tuple[float, ...]


def _change(
    model: ScoreModel,
    holder: Scored,
    names: tuple[str, ...],
    values: tuple[float, ...],
    contribs: tuple[float, ...],
    members: dict[str, Any] | None = None,
    shift: tuple[float, ...] | None = None,
) -> dict[str, Any] | None:
    """The common part of a score change, or None when it moved less than min_delta within its band.

    `members` (accounts only) describes a membership change: the record is then emitted whatever the
    delta, with a `members` reason carrying the points the change moved. Updates `holder` to what is
    emitted, so the next deltas are measured from it and profiles show exactly the last emitted score.
    """
    score = score_of(contribs)
    previous_band = Band(holder.band) if holder.band else None
    band = next_band(model, previous_band, score)
    first = holder.score < 0
    if members is None and not first and band is previous_band and abs(score - holder.score) < model.min_delta:
        return None
    rounded = tuple(round(v, 4) for v in values)
    why = reasons(holder.contributions or None, contribs, names, shift)
    if members is not None:
        moved = round(score - max(holder.score, 0.0), 2)
        why.append({"component": "members", "delta": moved, **members})
        why.sort(key=lambda r: (-abs(r["delta"]), r["component"]))  # type: ignore[arg-type]
    change = {
        "score": score,
        "previous_score": None if first else holder.score,
        "band": band.value,
        "previous_band": None if previous_band is None else previous_band.value,
        "components": dict(zip(names, rounded, strict=True)),
        "reasons": why,
    }
    holder.score, holder.band, holder.contributions, holder.components = score, band.value, contribs, rounded
    return change


def evaluate(
    model: ScoreModel,
    user_id: str,
    user: UserState,
    as_of: int,
    cause: str,
    version: str,
    lapse: LapseModel = _DEFAULT_LAPSE,
) -> Record | None:
    """A `score_changed` record when the score moved by at least `min_delta` or the band changed."""
    s = signals(model, user, as_of, lapse)
    values = components(model, s)
    present = s.present
    shift = renormalisation_shift(model, user.present, present, user.components)
    change = _change(model, user, COMPONENTS, values, contributions(model, values, present), shift=shift)
    if change is not None:
        user.present = present
    if change is None:
        return None
    doc = {
        "kind": "score_changed",
        "record_id": record_id("score", user_id, as_of, cause),
        "user_id": user_id,
        "account_id": user.account_id,
        "ts": format_ts(as_of),
        **change,
        # None when the passage of time moved the score (a timer), not an event.
        "cause_event_id": cause or None,
        "model": version,
    }
    return Record(OutputKind.SCORES, user_id, dumps(doc), as_of)


def score_at(
    model: ScoreModel, user: UserState, as_of: int, lapse: LapseModel = _DEFAULT_LAPSE
) -> tuple[float, str, tuple[float, ...]]:
    """The score, band and component values as of `as_of`, computed afresh (not the last emitted ones);
    the band keeps the hysteresis of the last emitted band. For backtests."""
    s = signals(model, user, as_of, lapse)
    values = components(model, s)
    score = score_of(contributions(model, values, s.present))
    return score, next_band(model, Band(user.band) if user.band else None, score).value, values


def render_user(user_id: str, user: UserState, model: ScoreModel, lapse: LapseModel | None = None) -> dict[str, Any]:
    """The full User 360 profile as of the user's own clock (their latest event or timer).

    `score`, `band` and `components` are those of the last emitted score record, and `engagement` the
    last lifecycle stage emitted, so the profile store always agrees with the streams.
    """
    as_of = user.clock
    if user.score < 0:  # never evaluated (cannot happen after an applied event; kept total)
        score, _, values = score_at(model, user, as_of, lapse or _DEFAULT_LAPSE)
        band, shown = "", tuple(round(v, 4) for v in values)
    else:
        score, band, shown = user.score, user.band, user.components
    profile = render_profile(user_id, user, as_of)
    present = signals(model, user, as_of, lapse or _DEFAULT_LAPSE).present
    profile.update(
        last_active=format_ts(user.last_active) if user.last_active >= 0 else None,
        signals=[name for i, name in enumerate(COMPONENTS) if present >> i & 1],
        score=score,
        band=band or next_band(model, None, score).value,
        components=dict(zip(COMPONENTS, shown, strict=True)),
        engagement=user.engagement or "new",
        commercial=user.commercial,
        nps=user.nps_score if user.nps_score >= 0 else None,
        open_tickets=user.open_tickets(),
        **journey_profile(user),
    )
    if lapse is not None:
        profile["expected_gap_days"] = round(lapse.expected_gap_days(user), 2) if user.last_active >= 0 else None
        if lapse.bgnbd is not None:
            p_alive = lapse.p_alive(user, as_of)
            profile["p_alive"] = None if p_alive is None else round(p_alive, 4)
            expected = lapse.expected_active_days(user, as_of)
            profile["expected_active_days"] = None if expected is None else round(expected, 2)
    return profile


@dataclass(frozen=True, slots=True)
class MemberUpdate:
    """What an account needs to know of one member after a change; flows from user shards to accounts."""

    account_id: str
    user_id: str
    ts: int
    score: float  # -1: no score yet
    band: str
    last_active: int
    commercial: str
    commercial_ts: int
    team_event: str | None  # seat_added | seat_removed | admin_changed
    cause: str
    seq: int = 0  # events applied to the user so far: orders two updates with the same ts
    # "" for an ordinary update; MOVED_IN when the user joined this account from another one; MOVED_OUT
    # when they left it for another (as of `ts`); ERASED when the person was erased. Only the user id,
    # the time and the cause matter for the last two.
    change: str = ""
    minutes_28: float = 0.0  # the member's session minutes in the 28 days ending with the day of `ts`
    nps_score: int = -1  # the member's latest NPS answer (by event time), -1 for none
    nps_ts: int = -1


MOVED_IN, MOVED_OUT, ERASED = "moved_in", "moved_out", "erased"
DEPARTURES = frozenset({MOVED_OUT, ERASED})


@dataclass(slots=True)
class AccountState:
    # user_id -> (ts, seq, score, band, last_active)
    members: dict[str, tuple[int, int, float, str, int]] = field(default_factory=dict)
    # event_id -> (ts, team event type): keyed by cause so a re-sent update counts once
    team: dict[str, tuple[int, str]] = field(default_factory=dict)
    commercial: str = "visitor"
    commercial_ts: int = -1
    clock: int = -1
    score: float = -1.0
    band: str = ""
    contributions: tuple[float, ...] = ()
    components: tuple[float, ...] = ()
    # user_id -> (ts, seq) of their departure (moved out or erased): an older update arriving later is
    # from before it and must not bring them back. Ids only; pruned after the lateness horizon.
    departed: dict[str, tuple[int, int]] = field(default_factory=dict)
    # user_id -> (ts, seq, session minutes in 28 days) of the member's newest update: time in product.
    minutes: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    # user_id -> (ts, score) of the member's latest NPS answer: the account's NPS (operators.journey).
    nps: dict[str, tuple[int, int]] = field(default_factory=dict)

    def apply(self, u: MemberUpdate) -> str:
        """Order-independent: each member's newest update wins; team events are a set.

        Returns the membership change this update made ("" when none): MOVED_IN/MOVED_OUT/ERASED.
        """
        if u.ts > self.clock:
            self.clock = u.ts
        order = (u.ts, u.seq)
        gone = self.departed.get(u.user_id)
        if u.change in DEPARTURES:
            known = self.members.get(u.user_id)
            if (gone is not None and gone >= order) or (known is not None and known[:2] > order):
                return ""  # a newer departure is known, or the member came back after this one
            self.departed[u.user_id] = order
            self.minutes.pop(u.user_id, None)
            self.nps.pop(u.user_id, None)
            return u.change if self.members.pop(u.user_id, None) is not None else ""
        if gone is not None:
            if gone >= order:
                return ""  # from before the member left
            del self.departed[u.user_id]
        self._update(u)
        if order > self.minutes.get(u.user_id, (-1, -1, 0.0))[:2]:
            self.minutes[u.user_id] = (u.ts, u.seq, u.minutes_28)
        if u.nps_ts >= 0 and (u.nps_ts, u.nps_score) > self.nps.get(u.user_id, (-1, -1)):
            self.nps[u.user_id] = (u.nps_ts, u.nps_score)
        if u.team_event is not None:
            self.team[u.cause] = (u.ts, u.team_event)
        if (u.commercial_ts, u.commercial) > (self.commercial_ts, self.commercial) and u.commercial_ts >= 0:
            self.commercial_ts, self.commercial = u.commercial_ts, u.commercial
        return MOVED_IN if u.change == MOVED_IN else ""

    def prune_departed(self, before: int) -> None:
        self.departed = {k: v for k, v in self.departed.items() if v[0] >= before}

    def _update(self, u: MemberUpdate) -> None:
        known = self.members.get(u.user_id)
        if known is None:
            self.members[u.user_id] = (u.ts, u.seq, u.score, u.band, u.last_active)
        elif (u.ts, u.seq) >= known[:2]:
            scored = u.score >= 0
            self.members[u.user_id] = (
                u.ts,
                u.seq,
                u.score if scored else known[2],
                u.band if scored else known[3],
                max(u.last_active, known[4]),
            )
        else:
            # An older update: it can still tell us a score (if none is known) and an activity time.
            scored = known[2] < 0 <= u.score
            self.members[u.user_id] = (
                known[0],
                known[1],
                u.score if scored else known[2],
                u.band if scored else known[3],
                max(u.last_active, known[4]),
            )

    def minutes_per_active_member(self, as_of: int) -> float | None:
        """Session minutes in 28 days (as each member last reported them) per member active in the 28 days
        before `as_of`; None when no member was."""
        active = [u for u, m in self.members.items() if m[4] >= 0 and as_of - m[4] < 28 * DAY_MS]
        if not active:
            return None
        return round(math.fsum(self.minutes[u][2] for u in active if u in self.minutes) / len(active), 2)

    def component_values(self, as_of: int) -> tuple[tuple[float, ...], dict[str, Any]]:
        members = self.members.values()
        n = len(members) or 1
        scored = [m[2] for m in members if m[2] >= 0]
        # fsum is exact, so the mean does not depend on the order members arrived in.
        user_health = (math.fsum(scored) / len(scored) / 100.0) if scored else 0.5
        active = sum(1 for m in members if m[4] >= 0 and as_of - m[4] < 7 * DAY_MS)
        at_risk = sum(1 for m in members if m[3] == Band.AT_RISK)
        window = as_of - 28 * DAY_MS
        recent = [kind for ts, kind in self.team.values() if ts >= window]
        removed, admin = recent.count("seat_removed"), recent.count("admin_changed")
        team = 1.0 / (1.0 + (removed + 0.5 * admin) / n)
        values = (user_health, active / n, 1.0 - at_risk / n, team, COMMERCIAL_VALUE.get(self.commercial, 0.5))
        facts = {
            "users": len(self.members),
            "active_users_7d": active,
            "at_risk_users": at_risk,
            "seats_added_28d": recent.count("seat_added"),
            "seats_removed_28d": removed,
            "admin_changes_28d": admin,
            "commercial": self.commercial,
        }
        return values, facts


def evaluate_account(
    model: ScoreModel, account_id: str, account: AccountState, cause: str, version: str, membership: str = ""
) -> Record | None:
    """An `account_health_changed` record when the score moved enough, the band changed, or a member
    joined from another account, left for one or was erased (`membership`, always emitted)."""
    as_of = account.clock
    values, facts = account.component_values(as_of)
    contribs = tuple(share * v for share, v in zip(ACCOUNT_SHARES, values, strict=True))
    members = {"change": membership, "users": facts["users"]} if membership else None
    change = _change(model, account, ACCOUNT_COMPONENTS, values, contribs, members)
    if change is None:
        return None
    doc = {
        "kind": "account_health_changed",
        "record_id": record_id("account", account_id, as_of, cause),
        "account_id": account_id,
        "ts": format_ts(as_of),
        **change,
        "cause_event_id": cause or None,
        "model": version,
        **facts,
    }
    return Record(OutputKind.ACCOUNTS, account_id, dumps(doc), as_of)


def render_account(account_id: str, account: AccountState, model: ScoreModel) -> dict[str, Any]:
    """The Customer 360 profile as of the account's own clock (its newest member update), with the score,
    band and components of the last emitted account record."""
    as_of = account.clock
    values, facts = account.component_values(as_of)
    if account.score < 0:
        score = score_of(tuple(share * v for share, v in zip(ACCOUNT_SHARES, values, strict=True)))
        band, shown = next_band(model, None, score).value, tuple(round(v, 4) for v in values)
    else:
        score, band, shown = account.score, account.band, account.components
    return {
        "account_id": account_id,
        "as_of": format_ts(as_of),
        "score": score,
        "band": band,
        "components": dict(zip(ACCOUNT_COMPONENTS, shown, strict=True)),
        **facts,
        "minutes_per_active_member_28d": account.minutes_per_active_member(as_of),
        **account_nps(account.nps, as_of),
    }
