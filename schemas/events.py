"""The input event model: ids, the type vocabulary and the rejection codes (CONTRACT §2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
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
DETAIL_KEYS = frozenset({"score", "severity", "ticket_id", "plan", "mrr", "direction", "reason", "regrettable"})


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


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """Which event types mean what; every list is configurable (CONTRACT §2 defaults)."""

    activity: frozenset[str] = frozenset({"session_start", "page_view", "feature_used", "api_call", "purchase"})
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
    categories: dict[str, Category] = field(init=False, compare=False, hash=False)
    kept_properties: frozenset[str] = field(init=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        table: dict[str, Category] = {t: Category.ACTIVITY for t in self.activity}
        table[self.nps] = Category.SENTIMENT
        table[self.ticket_opened] = Category.SUPPORT
        table[self.ticket_resolved] = Category.SUPPORT
        table.update({t: Category.TEAM for t in self.team})
        table.update({t: Category.COMMERCIAL for t in self.commercial})
        table[self.erasure] = Category.PRIVACY
        object.__setattr__(self, "categories", table)
        object.__setattr__(self, "kept_properties", DETAIL_KEYS - self.pii_fields)

    def category(self, event_type: str) -> Category:
        return self.categories.get(event_type, Category.OTHER)


@dataclass(frozen=True, slots=True)
class Event:
    """One valid input event; `ts` is event time in epoch milliseconds.

    `feature` is set only on the vocabulary's feature type. `properties` holds only the known
    type-specific scalars (DETAIL_KEYS): personal data and nested values never get past the decoder.
    """

    event_id: EventId
    user_id: UserId
    account_id: AccountId | None
    type: str
    ts: int
    feature: str | None
    properties: dict[str, Any] | None
    category: Category


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
