"""Engagement lifecycle, lapse and churn-risk alerts: what follows an event, and what follows a timer."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from operators.alerts import alert, alert_id, erased_alert, stage_changed, user_erased
from operators.health import evaluate
from operators.lapse import LapseModel
from operators.scoring import Band, ScoreModel
from operators.state import DAY_MS, UserState
from schemas.events import Category, Event
from schemas.outputs import Record

NEW, ACTIVE, AT_RISK, LAPSED, REACTIVATED = "new", "active", "at_risk", "lapsed", "reactivated"
# A new user becomes active on their third active day; a reactivated one on the next active day.
ACTIVE_AFTER_DAYS = 3


NextStep = Callable[[UserState, int], "dict[str, Any] | None"]
Paused = Callable[[UserState, int], bool]
# Subscription events that pause or resume a whole account, for every member wherever they are sharded.
ACCOUNT_PAUSE = {"subscription_paused": True, "subscription_resumed": False}


@dataclass(frozen=True, slots=True)
class AccountNotice:
    """A copy of an account's pause/resume event sent to every user shard (members live in all of them)."""

    account_id: str
    ts: int
    paused: bool

    @staticmethod
    def of(event: Event) -> AccountNotice | None:
        """The notice an event sends every user shard, if it pauses or resumes its account."""
        paused = ACCOUNT_PAUSE.get(event.type)
        if paused is None or event.account_id is None:
            return None
        return AccountNotice(event.account_id, event.ts, paused)


@dataclass(frozen=True, slots=True)
class Context:
    model: ScoreModel
    version: str
    lapse: LapseModel
    # The re-engagement suggestion for a user at a time (the shard knows what healthy users use).
    next_step: NextStep = lambda user, now: None
    # Whether the user's account subscription was paused at a time (from AccountNotices).
    account_paused: Paused = lambda user, now: False
    # When the user's account subscription was last resumed (-1: never), from AccountNotices.
    account_resumed: Callable[[UserState], int] = lambda user: -1


def lapse_deadline(user: UserState, lapse: LapseModel, resumed: int = -1) -> int:
    """Day-granular, so it only moves on a new active day (one timer re-arm per day, not per event).

    After a resume of the account (`resumed`), the user gets one rhythm from it before a silence counts:
    computed here from the account's history, so it does not depend on when the notice arrived.
    """
    deadline = lapse.deadline(user)
    day_end = (user.last_active_day + 1) * DAY_MS
    deadline = day_end + math.ceil(max(deadline - user.last_active, 0) / DAY_MS) * DAY_MS
    after_resume = resumed + int(lapse.cadence_days(user) * DAY_MS) if resumed >= 0 else -1
    return max(deadline, user.cooldown_until, after_resume)


def next_timer(user: UserState, lapse: LapseModel, fired_at: int | None = None, resumed: int = -1) -> int:
    """The next time something may change without an event: a daily rescore, or the lapse deadline."""
    if user.last_active < 0:
        return -1
    day_end = (user.last_active_day + 1) * DAY_MS
    horizon = day_end + int(lapse.rescore_for_days * DAY_MS)
    step = int(lapse.rescore_days * DAY_MS)
    rescore = day_end if fired_at is None else max(day_end, fired_at + step)
    candidates = [rescore] if rescore <= horizon else []
    deadline = lapse_deadline(user, lapse, resumed)
    # A deadline at or before the timer that just fired was handled (or suppressed while paused).
    if not user.lapse_id and (fired_at is None or deadline > fired_at):
        candidates.append(deadline)
    return min(candidates) if candidates else -1


def _alert(
    kind: str, status: str, ident: str, user_id: str, user: UserState, ts: int, ctx: Context, **extra: Any
) -> Record:
    """Every alert carries p_alive (null unless the BG/NBD model is configured)."""
    p_alive = ctx.lapse.p_alive(user, ts)
    return alert(
        kind, status, ident, user_id, user, ts, {"p_alive": None if p_alive is None else round(p_alive, 4), **extra}
    )


def _move(user_id: str, user: UserState, to: str, ts: int, cause: str | None, out: list[Any]) -> None:
    if user.engagement != to:
        out.append(stage_changed(user_id, "engagement", user.engagement or None, to, ts, cause))
        user.engagement = to


def _score(user_id: str, user: UserState, as_of: int, cause: str | None, ctx: Context, out: list[Any]) -> bool:
    """Re-score; returns whether a record was emitted. Handles churn-risk alerts on band moves."""
    band_before = user.band
    record = evaluate(ctx.model, user_id, user, as_of, cause or "", ctx.version, ctx.lapse)
    if record is None:
        return False
    out.append(record)
    # Only a move *into* at_risk from a scored band alerts (a brand-new user's first score does not), and
    # not again within the cooldown after the last churn-risk alert resolved.
    if user.band != band_before and band_before:
        if user.band == Band.AT_RISK:
            if as_of >= user.churn_quiet_until:
                user.churn_id = alert_id("churn_risk", user_id, as_of)
                step = ctx.next_step(user, as_of)
                out.append(_alert("churn_risk", "firing", user.churn_id, user_id, user, as_of, ctx, next_step=step))
            if user.engagement != LAPSED:
                _move(user_id, user, AT_RISK, as_of, cause, out)
        elif band_before == Band.AT_RISK:
            if user.churn_id:
                out.append(_alert("churn_risk", "resolved", user.churn_id, user_id, user, as_of, ctx))
                user.churn_id = ""
                user.churn_quiet_until = as_of + int(ctx.lapse.cooldown_days * DAY_MS)
            if user.engagement == AT_RISK:
                _move(user_id, user, ACTIVE, as_of, cause, out)
    return True


def after_event(
    user_id: str, user: UserState, event: Event, new_day: bool, commercial_before: str, ctx: Context, out: list[Any]
) -> bool:
    """Lifecycle and alerts caused by one applied event; returns whether a score record was emitted."""
    ts, cause = event.ts, event.event_id
    if not user.engagement:
        _move(user_id, user, NEW, ts, cause, out)
    if event.category is Category.ACTIVITY and user.lapse_id and ts > user.lapse_anchor:
        # The user is back: resolve the lapse (same id), say so, and hold off re-alerting for a while. An
        # activity stamped during the silence that arrives after the alert fired (later than the allowed
        # lateness) resolves it at once too: the silence was not real.
        silent = round((ts - user.lapse_anchor) / DAY_MS, 2)
        out.append(_alert("lapse", "resolved", user.lapse_id, user_id, user, ts, ctx, silent_days=silent))
        # Anchored like the lapse it follows, so the id does not depend on which activity ended the silence.
        back = alert_id("reactivated", user_id, user.lapse_anchor)
        out.append(_alert("reactivated", "firing", back, user_id, user, ts, ctx, silent_days=silent))
        user.lapse_id = ""
        user.cooldown_until = ts + int(ctx.lapse.cooldown_days * DAY_MS)
        _move(user_id, user, REACTIVATED, ts, cause, out)
    elif (new_day and user.engagement == REACTIVATED) or (
        new_day and user.engagement == NEW and user.active_day_count >= ACTIVE_AFTER_DAYS
    ):
        _move(user_id, user, ACTIVE, ts, cause, out)
    if user.commercial != commercial_before:
        if commercial_before == "paused":
            # Back from a pause: the silence during it does not count; the user gets one rhythm from now.
            user.cooldown_until = max(user.cooldown_until, ts + int(ctx.lapse.cadence_days(user) * DAY_MS))
        props = event.properties or {}
        extra = {k: props[k] for k in ("reason", "regrettable", "plan") if k in props}
        out.append(stage_changed(user_id, "commercial", commercial_before, user.commercial, ts, cause, **extra))
    skip = (
        event.category is Category.ACTIVITY
        and not new_day
        and user.score >= 0
        and ts // DAY_MS == user.scored_day
        and (event.feature is None or _adoption_unchanged(user, event.feature, ctx.model.depth_target))
    )
    if skip:
        # Plain activity, or a repeat use of a feature by a deep user, on a day already counted cannot move
        # any component: the commonest events are cheap.
        return False
    user.scored_day = user.clock // DAY_MS
    return _score(user_id, user, user.clock, cause, ctx, out)


def _adoption_unchanged(user: UserState, feature: str, depth_target: int) -> bool:
    """A use (already applied) of a feature the user had used before, once their uses had reached the
    depth target: breadth and depth, the only signals a feature use feeds, are what they were."""
    features = user.features
    return features.get(feature, 0) > 1 and sum(features.values()) > depth_target


def on_timer(user_id: str, user: UserState, now: int, ctx: Context, out: list[Any]) -> None:
    """A due timer: the passage of time re-scores the user, and a silence past the deadline is a lapse."""
    _score(user_id, user, now, None, ctx, out)
    if user.lapse_id or user.last_active < 0 or now < lapse_deadline(user, ctx.lapse, ctx.account_resumed(user)):
        return
    if user.commercial == "paused" or ctx.account_paused(user, now):
        return  # no lapse alerts while the subscription is paused; resuming re-arms the timer
    user.lapse_anchor = user.last_active
    user.lapse_at = now
    user.lapse_id = alert_id("lapse", user_id, user.last_active)
    out.append(
        _alert(
            "lapse",
            "firing",
            user.lapse_id,
            user_id,
            user,
            now,
            ctx,
            silent_days=round((now - user.last_active) / DAY_MS, 2),
            expected_gap_days=round(ctx.lapse.expected_gap_days(user), 2),
            lapse_model=ctx.lapse.model,
            next_step=ctx.next_step(user, now),
        )
    )
    _move(user_id, user, LAPSED, now, None, out)


def on_erasure(user_id: str, user: UserState | None, ts: int, out: list[Any], resolution: str = "erased") -> None:
    """An erased person's open alerts are closed and downstream systems are told to forget them (for a visitor
    merged into a user, `resolution` "merged": the caller says where they went)."""
    if user is not None:
        for kind, ident in (("lapse", user.lapse_id), ("churn_risk", user.churn_id)):
            if ident:
                out.append(erased_alert(kind, ident, user_id, ts, resolution))
    if resolution == "erased":
        out.append(user_erased(user_id, ts))
