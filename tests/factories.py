"""Factories with defaults for input events, shared by the unit and property tiers."""

from __future__ import annotations

from typing import Any, Final

from schemas.codec import dumps
from schemas.events import DETAIL_KEYS, AccountId, Event, EventId, Origin, UserId, Vocabulary

VOCAB: Final = Vocabulary()
ORIGIN: Final = Origin("pulse-events", 3, 42)
DAY_MS: Final = 86_400_000
# 2026-03-02T12:00:00Z, worked out independently of the code under test (`date -u -d ... +%s`).
T0: Final = 1_772_452_800_000
T0_DAY: Final = T0 // DAY_MS


class _Missing:
    """Marks a field to leave out of an event document altogether (as opposed to sending null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def event_doc(**fields: Any) -> dict[str, Any]:
    """A valid event document; keyword arguments replace fields, MISSING removes them."""
    doc: dict[str, Any] = {
        "event_id": "evt-1",
        "user_id": "user-1",
        "account_id": "acct-1",
        "type": "page_view",
        "ts": "2026-03-02T12:00:00Z",
        "feature": None,
        "properties": None,
    }
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not MISSING}


class RawJSON:
    """JSON text spliced verbatim into an encoded event: for what orjson will not write (2**64, deep nesting)."""

    def __init__(self, text: bytes) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"RawJSON({self.text[:20]!r})"


def _placeholders(value: Any, found: dict[bytes, bytes]) -> Any:
    if isinstance(value, RawJSON):
        marker = f"__raw_json_{len(found)}__"
        found[dumps(marker)] = value.text
        return marker
    if isinstance(value, dict):
        return {k: _placeholders(v, found) for k, v in value.items()}
    if isinstance(value, list):
        return [_placeholders(v, found) for v in value]
    return value


def event_bytes(**fields: Any) -> bytes:
    """`event_doc` encoded as one message; RawJSON values anywhere in it are spliced in verbatim."""
    found: dict[bytes, bytes] = {}
    encoded = dumps(_placeholders(event_doc(**fields), found))
    for marker, text in found.items():
        encoded = encoded.replace(marker, text)
    return encoded


def make_event(
    event_id: str = "evt-1",
    user_id: str = "user-1",
    account_id: str | None = "acct-1",
    type: str = "page_view",
    ts: int = T0,
    feature: str | None = None,
    properties: dict[str, Any] | None = None,
    vocab: Vocabulary = VOCAB,
) -> Event:
    """A decoded event built directly, for the state and shard tests."""
    return Event(
        EventId(event_id),
        UserId(user_id),
        AccountId(account_id) if account_id is not None else None,
        type,
        ts,
        feature if type == vocab.feature else None,
        properties,
        vocab.category(type),
    )


def day_ts(day_offset: int, hour: int = 12) -> int:
    """Epoch ms at `hour` UTC on the day `day_offset` days from T0's day."""
    return (T0_DAY + day_offset) * DAY_MS + hour * 3_600_000


def kept_details(doc: dict[str, Any]) -> dict[str, Any] | None:
    """What the decoder keeps of `properties`: the known type-specific scalars only (no PII, no nesting)."""
    props = doc.get("properties") or {}
    kept = {k: v for k, v in props.items() if k in DETAIL_KEYS and isinstance(v, str | int | float)}
    return kept or None


def kept_feature(doc: dict[str, Any], vocab: Vocabulary = VOCAB) -> str | None:
    """The decoder keeps `feature` only on the vocabulary's feature type."""
    return doc.get("feature") if doc.get("type") == vocab.feature else None
