"""Alert and lifecycle records: deterministic ids, firing/resolved pairs, stage transitions."""

from __future__ import annotations

import hashlib
from typing import Any

from operators.state import UserState
from schemas.codec import dumps, format_ts
from schemas.outputs import OutputKind, Record, record_id


def alert_id(kind: str, user_id: str, anchor_ms: int) -> str:
    """Same input, same id: derived from what the alert is about, never from when or where it fired."""
    digest = hashlib.sha256(f"{kind}|{user_id}|{anchor_ms}".encode()).hexdigest()[:20]
    return f"{kind}-{digest}"


def alert(
    kind: str,
    status: str,
    ident: str,
    user_id: str,
    user: UserState,
    ts: int,
    extra: dict[str, Any],
) -> Record:
    doc = {
        "alert_id": ident,
        "kind": kind,
        "status": status,
        "user_id": user_id,
        "account_id": user.account_id,
        "ts": format_ts(ts),
        "last_seen": format_ts(user.last_active if user.last_active >= 0 else user.last_seen),
        "score": user.score if user.score >= 0 else None,
        "band": user.band or None,
        **extra,
    }
    # Keyed by user so one consumer partition sees a user's firing before its resolution.
    return Record(OutputKind.ALERTS, user_id, dumps(doc), ts)


def stage_changed(
    user_id: str, field: str, before: str | None, after: str, ts: int, cause: str | None, **extra: Any
) -> Record:
    doc = {
        "kind": "stage_changed",
        "record_id": record_id("stage", user_id, field, after, ts),
        "user_id": user_id,
        "field": field,
        "from": before,
        "to": after,
        "ts": format_ts(ts),
        "cause_event_id": cause,
        **extra,
    }
    return Record(OutputKind.LIFECYCLE, user_id, dumps(doc), ts)


def erased_alert(kind: str, ident: str, user_id: str, ts: int, resolution: str = "erased") -> Record:
    """Closes an open alert of an erased person (or of a visitor merged into a user, `resolution`
    "merged"): the same id, and nothing about them but the id."""
    doc = {
        "alert_id": ident,
        "kind": kind,
        "status": "resolved",
        "resolution": resolution,
        "user_id": user_id,
        "account_id": None,
        "ts": format_ts(ts),
        "last_seen": None,
        "score": None,
        "band": None,
        "p_alive": None,
    }
    return Record(OutputKind.ALERTS, user_id, dumps(doc), ts)


def user_erased(user_id: str, ts: int) -> Record:
    """Tells downstream systems (messaging, CS tools) to delete what they hold about the person."""
    return Record(
        OutputKind.LIFECYCLE,
        user_id,
        dumps(
            {
                "kind": "user_erased",
                "record_id": record_id("erased", user_id, ts),
                "user_id": user_id,
                "ts": format_ts(ts),
            }
        ),
        ts,
    )


def user_merged(user_id: str, into: str, ts: int, cause: str) -> Record:
    """A visitor (anonymous id) signed up as `into` (operators.identity): their profile is gone, their activity
    is the user's now. Downstream systems re-key what they hold."""
    return Record(
        OutputKind.LIFECYCLE,
        user_id,
        dumps(
            {
                "kind": "user_merged",
                "record_id": record_id("merged", user_id, into, ts),
                "user_id": user_id,
                "into": into,
                "ts": format_ts(ts),
                "cause_event_id": cause,
            }
        ),
        ts,
    )
