"""Factories with defaults for input events, shared by the unit and property tiers."""

from __future__ import annotations

import hashlib
import re
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
    anonymous_id: str | None = None,
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
        anonymous_id,
    )


def day_ts(day_offset: int, hour: int = 12) -> int:
    """Epoch ms at `hour` UTC on the day `day_offset` days from T0's day."""
    return (T0_DAY + day_offset) * DAY_MS + hour * 3_600_000


def _tracked(name: object, allowed: frozenset[str], vocab: Vocabulary) -> bool:
    """In the tracking plan: a string matching the whole name pattern and, if there is an allow-list, in it."""
    return (
        isinstance(name, str)
        and re.fullmatch(vocab.name_pattern, name) is not None
        and (not allowed or name in allowed)
    )


def kept_details(doc: dict[str, Any], vocab: Vocabulary = VOCAB) -> dict[str, Any] | None:
    """What the decoder keeps of `properties`: the known type-specific scalars only (no PII, no nesting),
    and no free text: a reason outside the codes and an untracked plan, experiment or variant read "other", a
    ticket id a digest."""
    props = doc.get("properties") or {}
    kept = {k: v for k, v in props.items() if k in DETAIL_KEYS and isinstance(v, str | int | float)}
    if "reason" in kept and kept["reason"] not in vocab.reasons:
        kept["reason"] = "other"
    if "plan" in kept and not _tracked(kept["plan"], vocab.plans, vocab):
        kept["plan"] = "other"
    if "ticket_id" in kept:
        kept["ticket_id"] = "t-" + hashlib.blake2b(str(kept["ticket_id"]).encode(), digest_size=8).hexdigest()
    for key in ("experiment", "variant"):  # like feature names, with no allow-list
        if key in kept and not _tracked(kept[key], frozenset(), vocab):
            kept[key] = "other"
    return kept or None


def kept_feature(doc: dict[str, Any], vocab: Vocabulary = VOCAB) -> str | None:
    """The decoder keeps `feature` only on the vocabulary's feature type, and only a tracked name."""
    if doc.get("type") != vocab.feature or doc.get("feature") is None:
        return None
    feature = doc["feature"]
    return feature if _tracked(feature, vocab.features, vocab) else "other"


def kept_type(doc: dict[str, Any], vocab: Vocabulary = VOCAB) -> str:
    """The decoder keeps a type in the vocabulary; any other type reads "other"."""
    event_type: str = doc["type"]
    return event_type if event_type in vocab.categories else "other"
