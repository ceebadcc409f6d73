"""The answer to a person's access request: everything a user shard holds about them, as one record."""

from __future__ import annotations

from typing import Any

from operators.health import render_user
from operators.journey import held_experiments
from operators.lapse import LapseModel
from operators.scoring import COMPONENTS, ScoreModel
from operators.sessions import sessions
from operators.state import CATEGORY_NAMES, DAY_MS, UserState
from schemas.codec import dumps, format_ts
from schemas.outputs import OutputKind, Record, record_id


def _ts(ms: int) -> str | None:
    return format_ts(ms) if ms >= 0 else None


def active_dates(user: UserState) -> list[str]:
    """Every UTC day with activity, oldest first: the day bitmap the state keeps, spelled out."""
    dates: list[str] = []
    bits = user.day_bits
    while bits:
        lowest = bits & -bits
        day = user.day_base + lowest.bit_length() - 1
        dates.append(format_ts(day * DAY_MS)[:10])
        bits ^= lowest
    return dates


def open_alerts(user: UserState) -> list[dict[str, Any]]:
    """The alerts still open for the user (a lapse or churn-risk alert that has fired and not resolved)."""
    found: list[dict[str, Any]] = []
    if user.lapse_id:
        found.append({"alert_id": user.lapse_id, "kind": "lapse", "since": _ts(user.lapse_at)})
    if user.churn_id:
        found.append({"alert_id": user.churn_id, "kind": "churn_risk", "since": None})
    return found


def held_signals(user: UserState, lapse: LapseModel) -> dict[str, Any]:
    """The state itself, field by field, where the profile shows only a summary (windows, a last score):
    an access request is owed what is held, not only what is displayed."""
    tickets = user.tickets or {}
    return {
        "account_id": user.account_id,
        "account_since": _ts(user.account_ts),
        "first_seen": format_ts(user.first_seen),
        "last_seen": format_ts(user.last_seen),
        "last_active": _ts(user.last_active),
        "score": user.score if user.score >= 0 else None,
        "band": user.band or None,
        "components": dict(zip(COMPONENTS, user.components, strict=True)) if user.components else None,
        "engagement": user.engagement or None,
        "commercial": user.commercial,
        "commercial_since": _ts(user.commercial_ts),
        "active_days_total": user.active_day_count,
        "active_dates": active_dates(user),
        "sessions": [[format_ts(first), format_ts(last)] for first, last in sessions(user.sessions)],
        "counts": dict(zip(CATEGORY_NAMES, user.counts, strict=True)),
        "features": dict(sorted(user.features.items())),
        "nps": user.nps_score if user.nps_score >= 0 else None,
        "nps_answered_at": _ts(user.nps_ts),
        "journey_stage": user.journey or None,
        "journey_stage_since": _ts(user.journey_ts),
        "experiments": held_experiments(user),
        "open_tickets": user.open_tickets(),
        "resolved_tickets": sum(1 for weight in tickets.values() if weight == 0),
        "expected_gap_days": round(lapse.expected_gap_days(user), 2) if user.last_active >= 0 else None,
        "open_alerts": open_alerts(user),
    }


def access_export(
    user_id: str,
    user: UserState | None,
    ts: int,
    request_event_id: str,
    model: ScoreModel,
    lapse: LapseModel,
) -> Record:
    """An `access_export` record for the person who sent `access_requested` at `ts`.

    Built from this user's state alone (never another user's: no re-engagement suggestion, which is drawn
    from other users), and read-only: the request changes nothing that is held. `found` is false for a
    person Pulse holds nothing about, whether never seen or erased.
    """
    doc = {
        "kind": "access_export",
        "record_id": record_id("access", user_id, ts, request_event_id),
        "user_id": user_id,
        "ts": format_ts(ts),
        "request_event_id": request_event_id,
        "found": user is not None,
        "profile": None if user is None else render_user(user_id, user, model, lapse),
        "signals": None if user is None else held_signals(user, lapse),
    }
    return Record(OutputKind.ACCESS, user_id, dumps(doc), ts)
