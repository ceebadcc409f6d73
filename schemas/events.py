"""The input event model: ids, the type vocabulary and the rejection codes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from functools import lru_cache
from typing import Any, NewType

EventId = NewType("EventId", str)
UserId = NewType("UserId", str)
AccountId = NewType("AccountId", str)

MAX_ID_LENGTH = 256
MAX_MESSAGE_BYTES = 1024 * 1024
# Epoch milliseconds from 1970-01-01 to the end of 9999-12-31: anything outside is impossible.
MIN_TS_MS = 0
MAX_TS_MS = 253_402_300_799_999

NPS_MIN, NPS_MAX = 0, 10
SEVERITIES = ("low", "normal", "high", "urgent")
PLAN_DIRECTIONS = ("up", "down")
# The only properties the engine keeps (scalars): everything else, PII included, is dropped at decode.
DETAIL_KEYS = frozenset(
    {"score", "severity", "ticket_id", "plan", "mrr", "direction", "reason", "regrettable", "experiment", "variant"}
)
# What an untracked name (feature, plan, reason, event type) becomes at decode: free text never enters state.
OTHER = "other"
REASON_CODES: tuple[str, ...] = (
    "too_expensive",
    "missing_features",
    "not_using",
    "switched_competitor",
    "technical_issues",
    "support_experience",
    "business_closed",
    OTHER,
)
# The tracking plan for feature and plan names: a short identifier, never `@`, whitespace, `=` or `/`
# (so no e-mail address, sentence, query string, path or URL). The whole name must match.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
FEATURE_CACHE_SIZE = 10_000
# A person asks for what Pulse holds about them: a privacy event that is read, never applied to state.
ACCESS_REQUESTED = "access_requested"
# A user saw a variant of an A/B test (`properties.experiment`, `properties.variant`, names in the tracking
# plan): counted as `other`, neither activity nor commercial; the journey keeps the first exposure per experiment.
EXPERIMENT_EXPOSED = "experiment_exposed"
# What the input carries: the native event document, or Segment / RudderStack spec messages (schemas.segment).
INPUT_FORMATS = ("pulse", "segment")


@lru_cache(maxsize=FEATURE_CACHE_SIZE)
def _matches(pattern: re.Pattern[str], name: str) -> bool:
    """A feature event costs one cached lookup instead of a regex match; bounded, so free text cannot grow it."""
    return pattern.fullmatch(name) is not None


class Category(IntEnum):
    """What an event type counts towards; the int is an index into compact per-user counters."""

    ACTIVITY = 0
    SENTIMENT = 1
    SUPPORT = 2
    TEAM = 3
    COMMERCIAL = 4
    PRIVACY = 5
    OTHER = 6


class RejectCode(StrEnum):
    """Stable codes carried by every dead letter; consumers may branch on them."""

    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_ID = "invalid_id"
    INVALID_TIMESTAMP = "invalid_timestamp"
    INVALID_PROPERTY = "invalid_property"
    FUTURE_TIMESTAMP = "future_timestamp"


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """Which event types mean what; every list is configurable (these are the defaults)."""

    activity: frozenset[str] = frozenset(
        {"session_start", "session_end", "page_view", "feature_used", "api_call", "purchase"}
    )
    feature: str = "feature_used"
    nps: str = "nps_response"
    ticket_opened: str = "support_ticket_opened"
    ticket_resolved: str = "support_ticket_resolved"
    team: frozenset[str] = frozenset({"seat_added", "seat_removed", "admin_changed"})
    commercial: frozenset[str] = frozenset(
        {
            "signed_up",
            "trial_started",
            "demo_requested",
            "newsletter_subscribed",
            "subscribed",
            "plan_changed",
            "subscription_paused",
            "subscription_resumed",
            "cancellation_requested",
            "subscription_cancelled",
        }
    )
    erasure: str = "erasure_requested"
    pii_fields: frozenset[str] = frozenset({"email", "name", "phone", "ip"})
    # `properties.reason` outside these codes becomes "other".
    reasons: frozenset[str] = frozenset(REASON_CODES)
    # Feature and plan names must match the pattern and, when an allow-list is given, be in it; else "other".
    name_pattern: str = NAME_PATTERN
    features: frozenset[str] = frozenset()
    plans: frozenset[str] = frozenset()
    # What a message is: "pulse" (the native document) or "segment" (a Segment / RudderStack spec call,
    # translated by schemas.segment); segment_events maps track event names to types ("feature_used:NAME"
    # also names the feature), None = schemas.segment.DEFAULT_EVENTS.
    input_format: str = "pulse"
    segment_events: tuple[tuple[str, str], ...] | None = None
    categories: dict[str, Category] = field(init=False, compare=False, hash=False)
    segment: bool = field(init=False, compare=False, hash=False)
    segment_map: dict[str, tuple[str, str | None]] = field(init=False, compare=False, hash=False)
    kept_properties: frozenset[str] = field(init=False, compare=False, hash=False)
    name_re: re.Pattern[str] = field(init=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        table: dict[str, Category] = {t: Category.ACTIVITY for t in self.activity}
        table[self.nps] = Category.SENTIMENT
        table[self.ticket_opened] = Category.SUPPORT
        table[self.ticket_resolved] = Category.SUPPORT
        table.update({t: Category.TEAM for t in self.team})
        table.update({t: Category.COMMERCIAL for t in self.commercial})
        table[self.erasure] = Category.PRIVACY
        table[ACCESS_REQUESTED] = Category.PRIVACY
        table[EXPERIMENT_EXPOSED] = Category.OTHER  # a known type (kept), counted with the other events
        object.__setattr__(self, "categories", table)
        object.__setattr__(self, "kept_properties", DETAIL_KEYS - self.pii_fields)
        try:
            name_re = re.compile(self.name_pattern)
        except re.error as exc:
            raise ValueError(f"name_pattern: not a regular expression: {exc}") from None
        object.__setattr__(self, "name_re", name_re)
        for key, names in (("features", self.features), ("plans", self.plans)):
            stray = sorted(n for n in names if not name_re.fullmatch(n))
            if stray:
                raise ValueError(f"{key}: {', '.join(map(repr, stray))} not matched by name_pattern")
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"input format must be pulse or segment, got {self.input_format!r}")
        if self.segment_events is None:
            from schemas.segment import DEFAULT_EVENTS  # imports this module: resolved at first use

            object.__setattr__(self, "segment_events", DEFAULT_EVENTS)
        object.__setattr__(self, "segment", self.input_format == "segment")
        segment_map: dict[str, tuple[str, str | None]] = {}
        for name, target in self.segment_events or ():
            kind, _, feature = target.partition(":")
            segment_map[name] = (kind, feature if feature and kind == self.feature else None)
        object.__setattr__(self, "segment_map", segment_map)

    def category(self, event_type: str) -> Category:
        return self.categories.get(event_type, Category.OTHER)

    def tracked_feature(self, name: str) -> bool:
        """Whether a feature name is in the tracking plan (feature events are common: the match is cached)."""
        return name in self.features if self.features else _matches(self.name_re, name)

    def tracked_name(self, name: str) -> bool:
        """Whether an experiment or variant name matches the tracking plan's pattern (cached, like features)."""
        return _matches(self.name_re, name)

    def tracked_plan(self, name: str) -> bool:
        """Whether a plan name is in the tracking plan (plan events are rare: no cache)."""
        return name in self.plans if self.plans else self.name_re.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class Event:
    """One valid input event; `ts` is event time in epoch milliseconds.

    `feature` is set only on the vocabulary's feature type. `properties` holds only the known
    type-specific scalars (DETAIL_KEYS): personal data and nested values never get past the decoder.
    Nothing free-form does either: an unknown `type`, an untracked `feature` or plan and a reason outside
    the codes read "other", and a ticket id is kept only as a digest (schemas.codec).
    """

    event_id: EventId
    user_id: UserId
    account_id: AccountId | None
    type: str
    ts: int
    feature: str | None
    properties: dict[str, Any] | None
    category: Category
    # Segment input only (schemas.segment): the anonymous id of a visitor's event (then equal to user_id), or
    # the anonymous id a link (`alias`, an `identify` with both ids) joins to user_id; None otherwise.
    anonymous_id: str | None = None


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a raw message came from: a Kafka coordinate or a file line."""

    source: str  # topic name or file path
    partition: int  # Kafka partition; -1 for files
    offset: int  # Kafka offset, or 1-based line number for files


@dataclass(frozen=True, slots=True)
class Raw:
    """A message exactly as it arrived, before decoding."""

    value: bytes
    origin: Origin
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A raw message that is not a valid event, with the reason; the bytes are kept verbatim."""

    code: RejectCode
    detail: str
    raw: Raw
