"""Segment / RudderStack spec messages as native event documents (`[input] format = "segment"`).

One message is one call: `track`, `page`, `screen`, `identify`, `group` or `alias`. `translate` turns it into
the document the native decoder (schemas.codec) validates, so limits, type checks, property scrubbing and
rejection codes are the native ones; it raises SegmentError only for what the spec itself requires (a call
type, `messageId`, a user id, a timestamp). Traits (`identify`, `group`, `context.traits`) are never read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from schemas.events import EXPERIMENT_EXPOSED, OTHER, RejectCode, Vocabulary

# Track event name -> Pulse type; "feature_used:NAME" is the feature type with the feature NAME, "other"
# means no Pulse meaning (the same as an unmapped name). `[input] segment_events` is merged over these.
DEFAULT_EVENTS: tuple[tuple[str, str], ...] = (
    # The B2B SaaS spec.
    ("Signed Up", "signed_up"),
    ("Signed In", "session_start"),
    ("Signed Out", "session_end"),
    ("Trial Started", "trial_started"),
    ("Trial Ended", OTHER),  # the trial's end is no act of the user: converting or not shows in what follows
    ("Account Created", "signed_up"),
    ("Account Deleted", "subscription_cancelled"),
    ("Account Added User", "seat_added"),
    ("Account Removed User", "seat_removed"),
    ("Invite Sent", "feature_used:invites"),
    # Pulse's own vocabulary.
    ("Feature Used", "feature_used"),
    ("Order Completed", "purchase"),
    ("Experiment Viewed", EXPERIMENT_EXPOSED),
    ("Session Started", "session_start"),
    ("Session Ended", "session_end"),
    ("API Called", "api_call"),
    ("NPS Submitted", "nps_response"),
    ("NPS Survey Answered", "nps_response"),
    ("Ticket Opened", "support_ticket_opened"),
    ("Support Ticket Opened", "support_ticket_opened"),
    ("Ticket Resolved", "support_ticket_resolved"),
    ("Support Ticket Resolved", "support_ticket_resolved"),
    ("Subscription Started", "subscribed"),
    ("Plan Changed", "plan_changed"),
    ("Plan Upgraded", "plan_changed"),
    ("Plan Downgraded", "plan_changed"),
    ("Subscription Paused", "subscription_paused"),
    ("Subscription Resumed", "subscription_resumed"),
    ("Cancellation Requested", "cancellation_requested"),
    ("Subscription Cancelled", "subscription_cancelled"),
    ("Demo Requested", "demo_requested"),
    ("Newsletter Subscribed", "newsletter_subscribed"),
    ("Admin Changed", "admin_changed"),
    ("Erasure Requested", "erasure_requested"),
    ("Access Requested", "access_requested"),
)
CALLS = ("track", "page", "screen", "identify", "group", "alias")
PAGE_VIEW = "page_view"
# The event name says the direction of a plan change.
_DIRECTIONS = {"Plan Upgraded": "up", "Plan Downgraded": "down"}
# ISO 8601 date and time: `T` or a space, any fraction digits, `Z`, `±HH:MM`, `±HHMM`, `±HH` or no offset (UTC).
_ISO = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}(?::?\d{2})?)?")


class SegmentError(Exception):
    """A message that is not a valid Segment call; schemas.codec turns it into a dead letter with `code`."""

    def __init__(self, code: RejectCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def merged_events(custom: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The default map with `custom` over it (a custom "other" unmaps a default)."""
    return tuple({**dict(DEFAULT_EVENTS), **custom}.items())


def mapping_problem(name: str, target: str, vocab: Vocabulary) -> str | None:
    """Why a configured `segment_events` entry cannot work, or None (defaults are not checked: a type the
    vocabulary lacks reads other, as it does natively)."""
    kind, colon, feature = target.partition(":")
    if not name:
        return "an event name must not be empty"
    if kind != OTHER and kind not in vocab.categories:
        return f"{name!r} = {target!r}: {kind} is not in the vocabulary (use other for no meaning)"
    if colon and kind != vocab.feature:
        return f"{name!r} = {target!r}: only {vocab.feature} takes a :feature name"
    if colon and not vocab.tracked_feature(feature):
        return f"{name!r} = {target!r}: {feature!r} is not a tracked feature name"
    return None


def _timestamp(value: str) -> str:
    """An ISO 8601 date-time as the RFC 3339 form schemas.codec.parse_ts reads (no offset: UTC)."""
    match = _ISO.fullmatch(value)
    if match is None:
        raise SegmentError(RejectCode.INVALID_TIMESTAMP, "timestamp is not an ISO 8601 date-time")
    date, time, fraction, offset = match.groups()
    if value[10] == "T" and offset is not None and (len(offset) == 1 or len(offset) == 6):
        return value  # already RFC 3339: parse_ts's cache knows the common form
    if offset is None:
        offset = "Z"
    elif len(offset) == 3:
        offset += ":00"
    elif len(offset) == 5:
        offset = f"{offset[:3]}:{offset[3:]}"
    return f"{date}T{time}{fraction or ''}{offset}"


def translate(doc: dict[str, Any], vocab: Vocabulary) -> dict[str, Any]:
    """One Segment message (a JSON object) as a native event document; SegmentError when it is not one."""
    get = doc.get
    call = get("type")
    if call is None:
        raise SegmentError(RejectCode.MISSING_FIELD, "type (track, page, screen, identify, group or alias) is required")
    if call not in CALLS:
        raise SegmentError(RejectCode.WRONG_TYPE, "type must be track, page, screen, identify, group or alias")
    message_id = get("messageId")
    if message_id is None:
        raise SegmentError(RejectCode.MISSING_FIELD, "messageId is required")
    user_id = get("userId")
    anonymous_id = None  # a visitor's event, or the visitor a link joins to the user (operators.identity)
    if user_id is None or user_id == "":  # RudderStack sends "" for an anonymous visitor
        user_id = anonymous_id = get("anonymousId")
        if user_id is None:
            raise SegmentError(RejectCode.MISSING_FIELD, "userId or anonymousId is required")
    ts = get("timestamp")
    if ts is None:
        ts = get("originalTimestamp")
        if ts is None:
            ts = get("receivedAt")
            if ts is None:
                raise SegmentError(RejectCode.MISSING_FIELD, "timestamp is required")
    if ts.__class__ is str:
        ts = _timestamp(ts)
    context = get("context")
    account = None
    if context is not None:
        if context.__class__ is not dict:
            raise SegmentError(RejectCode.WRONG_TYPE, "context must be an object")
        account = context.get("groupId")
    props = get("properties")
    readable = props if props.__class__ is dict else None  # the decoder rejects properties of another type
    if account is None and readable is not None:
        account = readable.get("groupId")
    feature = None
    if call == "track":
        name = get("event")
        if name is None:
            raise SegmentError(RejectCode.MISSING_FIELD, "event is required on a track call")
        if name.__class__ is not str:
            raise SegmentError(RejectCode.WRONG_TYPE, "event must be a string")
        kind, feature = vocab.segment_map.get(name, (OTHER, None))
        if kind == vocab.feature:
            if feature is None and readable is not None:
                feature = readable.get("feature")
        elif kind == EXPERIMENT_EXPOSED and readable is not None:
            props = _exposure(readable)
        elif name in _DIRECTIONS and (props is None or readable is not None):
            props = {**(readable or {}), "direction": _DIRECTIONS[name]}
    elif call == "page" or call == "screen":
        kind = PAGE_VIEW
    else:
        kind = call  # identify, group, alias: known to no vocabulary, so counted as other
        props = None  # their traits are never read
        if call == "group":
            account = get("groupId")
            if account is None:
                raise SegmentError(RejectCode.MISSING_FIELD, "groupId is required on a group call")
        elif anonymous_id is None:
            # A link: `alias` joins its previousId to the user, an identified `identify` its anonymousId.
            linked = get("previousId") if call == "alias" else get("anonymousId") if call == "identify" else None
            if linked is not None and linked != "" and linked != user_id:
                anonymous_id = linked
    doc = {
        "event_id": message_id,
        "user_id": user_id,
        "account_id": account,
        "type": kind,
        "ts": ts,
        "feature": feature,
        "properties": props,
    }
    if anonymous_id is not None:
        doc["anonymous_id"] = anonymous_id
    return doc


def _exposure(props: dict[str, Any]) -> dict[str, Any]:
    """`Experiment Viewed`: experiment_name (else experiment_id) and variation_name (else variation_id)."""
    exposure = dict(props)
    for key, names in (
        ("experiment", ("experiment_name", "experiment_id")),
        ("variant", ("variation_name", "variation_id")),
    ):
        for source in names:
            if props.get(source) is not None:
                exposure[key] = props[source]
                break
    return exposure
