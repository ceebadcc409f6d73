"""Property tests for schemas.codec: decode is total, rejections keep the bytes, valid events round-trip."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import RawBatch, decode, decode_batch, dumps, format_ts, parse_ts
from schemas.events import MAX_ID_LENGTH, MAX_TS_MS, MIN_TS_MS, Event, Origin, RejectCode, Rejection, Vocabulary
from tests.factories import ORIGIN, VOCAB, event_bytes, kept_details, kept_feature, kept_type

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RFC3339_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Types whose properties are validated; arbitrary properties are only generated for the others.
CHECKED_TYPES = {"nps_response", "support_ticket_opened", "plan_changed", "subscribed", "subscription_cancelled"}
_CHECKED_KEYS = {"score", "severity", "direction", "mrr", "regrettable"}
DEFAULT_TYPES = sorted(
    {*VOCAB.activity, *VOCAB.team, *VOCAB.commercial, VOCAB.nps, VOCAB.ticket_opened, VOCAB.ticket_resolved}
    | {VOCAB.erasure}
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=15,
)
ids = st.text(min_size=1, max_size=MAX_ID_LENGTH)


def _check_decoded(value: bytes, origin: Origin, key: bytes | None, result: Event | Rejection) -> None:
    """What holds for every decode result, valid or not."""
    if isinstance(result, Rejection):
        assert result.code in set(RejectCode)
        assert isinstance(result.code, RejectCode)
        assert result.raw.value == value
        assert result.raw.origin == origin
        assert result.raw.key == key
        assert result.detail
    else:
        assert isinstance(result, Event)
        assert isinstance(result.event_id, str)
        assert 1 <= len(result.event_id) <= MAX_ID_LENGTH
        assert isinstance(result.user_id, str)
        assert 1 <= len(result.user_id) <= MAX_ID_LENGTH
        assert result.account_id is None or 1 <= len(result.account_id) <= MAX_ID_LENGTH
        assert isinstance(result.type, str)
        assert result.type
        assert MIN_TS_MS <= result.ts <= MAX_TS_MS
        assert result.properties is None or isinstance(result.properties, dict)
        assert result.category is VOCAB.category(result.type)


@FAST
@given(value=st.binary(max_size=512), key=st.none() | st.binary(max_size=8))
def test_decode_never_raises_on_arbitrary_bytes(value: bytes, key: bytes | None) -> None:
    _check_decoded(value, ORIGIN, key, decode(value, ORIGIN, VOCAB, key))


@FAST
@given(value=json_values)
def test_decode_never_raises_on_arbitrary_json(value: Any) -> None:
    encoded = dumps(value)
    result = decode(encoded, ORIGIN, VOCAB)
    _check_decoded(encoded, ORIGIN, None, result)
    if not isinstance(value, dict):
        assert isinstance(result, Rejection)
        assert result.code is RejectCode.NOT_OBJECT


# Documents shaped like events, each field either plausible or arbitrary, to reach every check in turn.
ts_like = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.integers(min_value=MIN_TS_MS, max_value=MAX_TS_MS)
    | st.integers(min_value=MIN_TS_MS, max_value=MAX_TS_MS).map(format_ts)
    | st.text(max_size=40)
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "event_id": ids | json_values,
        "user_id": ids | json_values,
        "account_id": st.none() | ids | json_values,
        "type": st.sampled_from([*DEFAULT_TYPES, "made_up"]) | json_values,
        "ts": ts_like | json_values,
        "feature": st.none() | st.text(max_size=10) | json_values,
        "properties": st.none()
        | st.fixed_dictionaries(
            {},
            optional={
                "score": st.integers(-2, 12) | json_values,
                "severity": st.sampled_from(["low", "normal", "high", "urgent", "bad"]) | json_values,
                "direction": st.sampled_from(["up", "down", "left"]) | json_values,
                "mrr": st.floats() | st.integers(-5, 5) | json_values,
                "regrettable": st.booleans() | json_values,
            },
        )
        | json_values,
    },
)


@FAST
@given(doc=event_like)
def test_decode_never_raises_on_event_shaped_documents(doc: dict[str, Any]) -> None:
    # orjson writes NaN and infinities as null, which is what a consumer would then read.
    encoded = dumps(doc)
    _check_decoded(encoded, ORIGIN, None, decode(encoded, ORIGIN, VOCAB))


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    value = bytearray(event_bytes(type=draw(st.sampled_from(DEFAULT_TYPES)), properties={"score": 7}))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate"]))
        at = draw(st.integers(0, max(len(value) - 1, 0)))
        if kind == "flip" and value:
            value[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "delete":
            del value[at : at + draw(st.integers(1, 8))]
        elif kind == "insert":
            value[at:at] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b'"', b"{", b"}", b",", b"\\"]))
        elif kind == "truncate":
            del value[at:]
        else:
            value[at:at] = value[at : at + draw(st.integers(1, 16))]
    return bytes(value)


@FAST
@given(value=mutated_events())
def test_decode_never_raises_on_mutated_events(value: bytes) -> None:
    origin = Origin("events.jsonl", -1, 9)
    _check_decoded(value, origin, b"k", decode(value, origin, VOCAB, b"k"))


@FAST
@given(values=st.lists(st.binary(max_size=64) | mutated_events() | event_like.map(dumps), max_size=8))
def test_decode_batch_agrees_with_decode(values: list[bytes]) -> None:
    offsets = list(range(100, 100 + len(values)))
    results = list(decode_batch(RawBatch("topic", 2, values, offsets), VOCAB))
    assert results == [decode(v, Origin("topic", 2, o), VOCAB) for v, o in zip(values, offsets, strict=True)]


# ---------------------------------------------------------------- valid events round-trip


@st.composite
def rfc3339_times(draw: st.DrawFn) -> tuple[str, int]:
    """An RFC 3339 string with any offset and 0-9 fractional digits, and the epoch ms it denotes (floored)."""
    seconds = draw(st.integers(MIN_TS_MS // 1000, MAX_TS_MS // 1000))
    digits = draw(st.text(alphabet="0123456789", max_size=9))
    offset_minutes = draw(st.integers(-(24 * 60 - 1), 24 * 60 - 1))
    try:
        local = EPOCH + timedelta(seconds=seconds, minutes=offset_minutes)
    except OverflowError:
        local = EPOCH + timedelta(seconds=seconds)
        offset_minutes = 0
    if offset_minutes == 0 and draw(st.booleans()):
        zone = "Z"
    else:
        sign = "+" if offset_minutes >= 0 else "-"
        zone = f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"
    fraction = f".{digits}" if digits else ""
    text = f"{local:%Y-%m-%dT%H:%M:%S}{fraction}{zone}"
    return text, seconds * 1000 + int((digits + "000")[:3])


@st.composite
def valid_events(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    """A valid event document and its event time in epoch ms."""
    event_type = draw(st.sampled_from(DEFAULT_TYPES) | st.text(min_size=1, max_size=30))
    properties = draw(
        st.none() | st.dictionaries(st.text(max_size=8).filter(lambda k: k not in _CHECKED_KEYS), json_values)
    )
    if event_type in CHECKED_TYPES and properties is not None:
        properties |= draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "score": st.integers(0, 10),
                    "severity": st.sampled_from(["low", "normal", "high", "urgent"]),
                    "direction": st.sampled_from(["up", "down"]),
                    "mrr": st.integers(0, 10**6) | st.floats(0, 1e6),
                    "regrettable": st.booleans(),
                },
            )
        )
    if properties is not None:
        # Free-text properties: tracked names, and anything else, which must not survive decoding.
        properties |= draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "reason": st.sampled_from(sorted(VOCAB.reasons)) | st.text(max_size=20),
                    "plan": st.sampled_from(["team", "pro-v2"]) | st.text(max_size=20) | st.integers(0, 9),
                    "ticket_id": st.text(max_size=20) | st.integers(-(2**63), 2**63 - 1),
                    "experiment": st.sampled_from(["pricing_page", "onboarding.v2"]) | st.text(max_size=20),
                    "variant": st.sampled_from(["control", "b"]) | st.text(max_size=20) | st.integers(0, 9),
                },
            )
        )
    ms = draw(st.integers(MIN_TS_MS, MAX_TS_MS))
    ts: int | str = ms
    if draw(st.booleans()):
        ts, ms = draw(rfc3339_times())
    doc = {
        "event_id": draw(ids),
        "user_id": draw(ids),
        "account_id": draw(st.none() | ids),
        "type": event_type,
        "ts": ts,
        "feature": draw(st.none() | st.sampled_from(["reports", "api.v2:export"]) | st.text(max_size=20)),
        "properties": properties,
    }
    return doc, ms


@FAST
@given(case=valid_events())
def test_valid_events_round_trip(case: tuple[dict[str, Any], int]) -> None:
    doc, ms = case
    event = decode(dumps(doc), ORIGIN, VOCAB)
    assert isinstance(event, Event), event
    assert event.event_id == doc["event_id"]
    assert event.user_id == doc["user_id"]
    assert event.account_id == doc["account_id"]
    assert event.type == kept_type(doc)
    assert event.ts == ms
    assert format_ts(event.ts) == format_ts(ms)
    assert event.feature == kept_feature(doc)
    assert event.properties == kept_details(doc)
    assert event.category is VOCAB.category(doc["type"])


@FAST
@given(case=valid_events(), vocab_activity=st.frozensets(st.sampled_from(DEFAULT_TYPES), max_size=5))
def test_validity_does_not_depend_on_the_activity_list(
    case: tuple[dict[str, Any], int], vocab_activity: frozenset[str]
) -> None:
    doc, _ = case
    assert isinstance(decode(dumps(doc), ORIGIN, Vocabulary(activity=vocab_activity)), Event)


# ---------------------------------------------------------------- format_ts / parse_ts

epoch_ms = st.integers(min_value=MIN_TS_MS, max_value=MAX_TS_MS)


@settings(max_examples=300, deadline=None)
@given(ms=epoch_ms)
def test_format_then_parse_is_identity(ms: int) -> None:
    text = format_ts(ms)
    assert RFC3339_MS.fullmatch(text)
    assert parse_ts(text) == ms


@FAST
@given(a=epoch_ms, b=epoch_ms)
def test_formatted_times_sort_like_numbers(a: int, b: int) -> None:
    assert (format_ts(a) < format_ts(b)) == (a < b)


@FAST
@given(case=rfc3339_times())
def test_parse_then_format_normalises_to_utc_milliseconds(case: tuple[str, int]) -> None:
    text, ms = case
    assert parse_ts(text) == ms
    assert parse_ts(format_ts(parse_ts(text))) == ms
