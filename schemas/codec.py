"""The one place that owns JSON: decoding raw bytes into events or rejections, and encoding outputs."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from schemas.events import (
    MAX_ID_LENGTH,
    MAX_MESSAGE_BYTES,
    MAX_TS_MS,
    MIN_TS_MS,
    NPS_MAX,
    NPS_MIN,
    OTHER,
    PLAN_DIRECTIONS,
    SEVERITIES,
    AccountId,
    Category,
    Event,
    EventId,
    Origin,
    Raw,
    RejectCode,
    Rejection,
    UserId,
    Vocabulary,
)
from schemas.segment import SegmentError, translate

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# RFC 3339 §5.6 date-time, nothing more: datetime.fromisoformat alone accepts other ISO 8601 forms and,
# on 3.11, ignores whatever follows a sixth fractional digit.
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d{1,6})?\d*([Zz]|[+-]\d{2}:\d{2})")
_MS = timedelta(milliseconds=1)
# A tuple, not `str | int | float`: that union is built anew at every evaluation, on the per-event path.
_SCALARS = (str, int, float)
# Kept properties that may hold free text, normalised by _scrub.
_EXPERIMENT_KEYS = ("experiment", "variant")
_SCRUBBED = frozenset({"reason", "plan", "ticket_id", *_EXPERIMENT_KEYS})
# Sorted keys make every output byte-identical for identical content, whatever dict order built it.
DUMPS_OPTIONS = orjson.OPT_SORT_KEYS


@dataclass(frozen=True, slots=True)
class RawBatch:
    """Messages read together from one source partition; parallel lists keep the hot path allocation-free."""

    source: str
    partition: int
    values: list[bytes]
    offsets: list[int]
    keys: list[bytes | None] | None = None
    # Kafka: the partition has had nothing to read for engine.timer_idle_ms (values is then empty), so it
    # must not hold event time back. An empty batch that is not idle registers a partition with no data yet.
    idle: bool = False
    # Kafka: the timestamp (ms) of the batch's first message, when it entered Kafka; 0 when unknown (files).
    ingest_ms: int = 0


class _Invalid(Exception):  # noqa: N818 - internal control flow, never escapes this module
    def __init__(self, code: RejectCode, detail: str) -> None:
        self.code = code
        self.detail = detail


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=DUMPS_OPTIONS)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


_DATES: dict[int, str] = {}
_TIMES: dict[int, str] = {}


def format_ts(ms: int) -> str:
    """Event time as RFC 3339 UTC with milliseconds, the form every output uses.

    Hot (three per profile): dates and seconds-of-day are cached, 2.4x faster than strftime.
    """
    seconds, millis = divmod(ms, 1000)
    day, second = divmod(seconds, 86_400)
    date = _DATES.get(day)
    if date is None:
        if len(_DATES) > 100_000:
            _DATES.clear()
        date = _DATES[day] = (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%dT")
    time = _TIMES.get(second)
    if time is None:
        time = _TIMES[second] = f"{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}."
    return f"{date}{time}{millis:03d}Z"


# The commonest form, "YYYY-MM-DDTHH:MM:SS.mmmZ": dates and times of day that the full parser accepted
# before, to epoch ms of the day's start and ms of the day. Valid dates and times combine into a valid
# time, so a string made of known parts needs no regular expression and no datetime (2x faster decoding).
_DAY_STARTS: dict[str, int] = {}
_DAY_CLOCKS: dict[str, int] = {}


def _known_ts(value: str) -> int | None:
    if len(value) != 24 or value[23] != "Z" or value[19] != "." or value[10] != "T":
        return None
    day = _DAY_STARTS.get(value[:10])
    clock = _DAY_CLOCKS.get(value[11:19])
    millis = value[20:23]
    if day is None or clock is None or not (millis.isascii() and millis.isdigit()):
        return None
    return day + clock + int(millis)


def _learn_ts(value: str, ms: int) -> None:
    """Remembers the parts of a 24-character UTC form the full parser accepted (see _known_ts)."""
    if len(value) != 24 or value[23] != "Z" or value[19] != "." or value[10] != "T":
        return
    if len(_DAY_STARTS) > 100_000:
        _DAY_STARTS.clear()
    of_day = ms % 86_400_000
    _DAY_STARTS[value[:10]] = ms - of_day
    _DAY_CLOCKS[value[11:19]] = of_day - int(value[20:23])  # at most 86,400 valid times of day


def parse_ts(value: object) -> int:
    """RFC 3339 with an offset, or integer epoch milliseconds, to epoch milliseconds."""
    if isinstance(value, str):
        known = _known_ts(value)
        if known is not None:
            return known
    if isinstance(value, bool):
        raise _Invalid(RejectCode.WRONG_TYPE, "ts must be an RFC 3339 string or integer epoch milliseconds")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, str):
        match = _RFC3339.fullmatch(value)
        if match is None:
            raise _Invalid(RejectCode.INVALID_TIMESTAMP, "ts is not an RFC 3339 date-time with a UTC offset")
        date, time, fraction, offset = match.groups()
        try:
            parsed = datetime.fromisoformat(f"{date}T{time}{fraction or ''}{'+00:00' if offset in 'Zz' else offset}")
        except ValueError:
            raise _Invalid(RejectCode.INVALID_TIMESTAMP, "ts is not a valid calendar date and time") from None
        try:
            ms = (parsed - _EPOCH) // _MS
        except OverflowError:
            raise _Invalid(RejectCode.INVALID_TIMESTAMP, "ts is out of range") from None
    elif isinstance(value, float) and (not math.isfinite(value) or not MIN_TS_MS <= value <= MAX_TS_MS):
        # orjson reads integers beyond 64 bits as floats: those are out of range, not of the wrong type.
        raise _Invalid(RejectCode.INVALID_TIMESTAMP, "ts is outside 1970-01-01..9999-12-31")
    else:
        raise _Invalid(RejectCode.WRONG_TYPE, "ts must be an RFC 3339 string or integer epoch milliseconds")
    if not MIN_TS_MS <= ms <= MAX_TS_MS:
        raise _Invalid(RejectCode.INVALID_TIMESTAMP, "ts is outside 1970-01-01..9999-12-31")
    if isinstance(value, str):
        _learn_ts(value, ms)
    return ms


def _id(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(RejectCode.WRONG_TYPE, f"{name} must be a string")
    if not 0 < len(value) <= MAX_ID_LENGTH:
        raise _Invalid(RejectCode.INVALID_ID, f"{name} must be 1-{MAX_ID_LENGTH} characters")
    return value


def _check_properties(event_type: str, props: dict[str, Any], vocab: Vocabulary) -> None:
    """Type-specific properties that are present must be valid (an NPS score outside 0-10 is not)."""
    if event_type == vocab.nps and "score" in props:
        score = props["score"]
        if isinstance(score, bool) or not isinstance(score, int) or not NPS_MIN <= score <= NPS_MAX:
            raise _Invalid(RejectCode.INVALID_PROPERTY, "properties.score must be an integer 0-10")
    elif event_type == vocab.ticket_opened and "severity" in props:
        if props["severity"] not in SEVERITIES:
            raise _Invalid(RejectCode.INVALID_PROPERTY, f"properties.severity must be one of {SEVERITIES}")
    elif event_type == "plan_changed" and "direction" in props:
        if props["direction"] not in PLAN_DIRECTIONS:
            raise _Invalid(RejectCode.INVALID_PROPERTY, "properties.direction must be up or down")
    elif event_type == "subscribed" and "mrr" in props:
        mrr = props["mrr"]
        if isinstance(mrr, bool) or not isinstance(mrr, int | float) or not math.isfinite(mrr) or mrr < 0:
            raise _Invalid(RejectCode.INVALID_PROPERTY, "properties.mrr must be a non-negative number")
    elif event_type == "subscription_cancelled" and "regrettable" in props:
        if not isinstance(props["regrettable"], bool):
            raise _Invalid(RejectCode.INVALID_PROPERTY, "properties.regrettable must be a boolean")


def ticket_digest(ticket: object) -> str:
    """A short stable stand-in for a ticket id: open and resolved still match, no text is kept."""
    return "t-" + hashlib.blake2b(str(ticket).encode(), digest_size=8).hexdigest()


Untracked = MutableMapping[str, int]
"""Counts of names replaced by "other", by field (feature, plan, reason, type); owned by the caller."""


def _count(untracked: Untracked | None, name: str) -> None:
    if untracked is not None:
        untracked[name] = untracked.get(name, 0) + 1


def _scrub(props: dict[str, Any], vocab: Vocabulary, untracked: Untracked | None) -> None:
    """Free-text properties, in place: reason, plan, experiment and variant to a tracked name or "other",
    ticket_id to a digest."""
    if "reason" in props and props["reason"] not in vocab.reasons:
        props["reason"] = OTHER
        _count(untracked, "reason")
    if "plan" in props:
        plan = props["plan"]
        if plan.__class__ is not str or not vocab.tracked_plan(plan):
            props["plan"] = OTHER
            _count(untracked, "plan")
    if "ticket_id" in props:
        props["ticket_id"] = ticket_digest(props["ticket_id"])
    for key in _EXPERIMENT_KEYS:  # experiment and variant names: like feature names, without an allow-list
        if key in props:
            name = props[key]
            if name.__class__ is not str or not vocab.tracked_name(name):
                props[key] = OTHER
                _count(untracked, key)


def _validate(value: bytes, vocab: Vocabulary, untracked: Untracked | None = None, max_ts: int = MAX_TS_MS) -> Event:
    if len(value) > MAX_MESSAGE_BYTES:
        raise _Invalid(RejectCode.TOO_LARGE, f"message exceeds {MAX_MESSAGE_BYTES} bytes")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise _Invalid(RejectCode.INVALID_JSON, str(exc)[:200]) from None
    if not isinstance(doc, dict):
        raise _Invalid(RejectCode.NOT_OBJECT, "an event must be a JSON object")
    if vocab.segment:  # a Segment / RudderStack call becomes the native document, validated as any
        try:
            doc = translate(doc, vocab)
        except SegmentError as exc:
            raise _Invalid(exc.code, exc.detail) from None
    get = doc.get
    # Ids checked inline: this is the per-event path.
    event_id = get("event_id")
    if event_id is None:
        raise _Invalid(RejectCode.MISSING_FIELD, "event_id is required")
    if event_id.__class__ is not str or not 0 < len(event_id) <= MAX_ID_LENGTH:
        event_id = _id(event_id, "event_id")
    user_id = get("user_id")
    if user_id is None:
        raise _Invalid(RejectCode.MISSING_FIELD, "user_id is required")
    if user_id.__class__ is not str or not 0 < len(user_id) <= MAX_ID_LENGTH:
        user_id = _id(user_id, "user_id")
    account_id = get("account_id")
    if account_id is not None and (account_id.__class__ is not str or not 0 < len(account_id) <= MAX_ID_LENGTH):
        account_id = _id(account_id, "account_id")
    event_type = doc.get("type")
    if event_type is None:
        raise _Invalid(RejectCode.MISSING_FIELD, "type is required")
    if not isinstance(event_type, str) or not event_type:
        raise _Invalid(RejectCode.WRONG_TYPE, "type must be a non-empty string")
    if "ts" not in doc or doc["ts"] is None:
        raise _Invalid(RejectCode.MISSING_FIELD, "ts is required")
    ts = parse_ts(doc["ts"])
    if ts > max_ts:
        # A client clock far ahead would drag event time (timers, de-duplication, as_of) along with it.
        raise _Invalid(RejectCode.FUTURE_TIMESTAMP, "ts is further ahead of the wall clock than max_future_skew")
    feature = doc.get("feature")
    if feature is not None and not isinstance(feature, str):
        raise _Invalid(RejectCode.WRONG_TYPE, "feature must be a string or null")
    props = doc.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            raise _Invalid(RejectCode.WRONG_TYPE, "properties must be an object or null")
        _check_properties(event_type, props, vocab)
        # Only known type-specific scalars are kept, and never a field configured as personal data.
        kept = vocab.kept_properties
        props = {k: v for k, v in props.items() if k in kept and isinstance(v, _SCALARS)} or None
        if props is not None and not _SCRUBBED.isdisjoint(props):
            _scrub(props, vocab, untracked)
    if event_type != vocab.feature:
        feature = None
    elif feature is not None and not vocab.tracked_feature(feature):
        feature = OTHER
        _count(untracked, "feature")
    category = vocab.categories.get(event_type)
    if category is None:
        # An unknown type is counted as "other"; its name, which could be anything, is not kept.
        event_type = OTHER
        category = Category.OTHER
        _count(untracked, "type")
    anonymous_id = None
    if vocab.segment:
        anonymous_id = doc.get("anonymous_id")
        if anonymous_id is not None:
            anonymous_id = _id(anonymous_id, "anonymousId")
    return Event(
        EventId(event_id),
        UserId(user_id),
        AccountId(account_id) if account_id is not None else None,
        event_type,
        ts,
        feature,
        props,
        category,
        anonymous_id,
    )


def decode(
    value: bytes,
    origin: Origin,
    vocab: Vocabulary,
    key: bytes | None = None,
    untracked: Untracked | None = None,
    max_ts: int = MAX_TS_MS,
) -> Event | Rejection:
    """Every byte string becomes an event or a rejection; this never raises.

    `max_ts` is the latest event time accepted: the wall clock at processing time plus the allowed skew.
    """
    try:
        return _validate(value, vocab, untracked, max_ts)
    except _Invalid as exc:
        return Rejection(exc.code, exc.detail, Raw(value, origin, key))
    except RecursionError:  # pragma: no cover - orjson bounds nesting itself; belt and braces
        return Rejection(RejectCode.INVALID_JSON, "document nested too deeply", Raw(value, origin, key))


def decode_batch(
    batch: RawBatch, vocab: Vocabulary, untracked: Untracked | None = None, max_ts: int = MAX_TS_MS
) -> Iterator[Event | Rejection]:
    """`decode` for a batch; names replaced by "other" are added up in `untracked` when one is given."""
    keys = batch.keys
    for i, value in enumerate(batch.values):
        try:
            yield _validate(value, vocab, untracked, max_ts)
        except _Invalid as exc:
            origin = Origin(batch.source, batch.partition, batch.offsets[i])
            yield Rejection(exc.code, exc.detail, Raw(value, origin, keys[i] if keys else None))
