"""Unit tests for schemas.codec: every rejection code, the accepted forms, and the raw bytes kept verbatim."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import RawBatch, decode, decode_batch, dumps, format_ts, loads, parse_ts
from schemas.events import (
    MAX_ID_LENGTH,
    MAX_MESSAGE_BYTES,
    MAX_TS_MS,
    AccountId,
    Category,
    Event,
    EventId,
    Origin,
    RejectCode,
    Rejection,
    UserId,
    Vocabulary,
)
from tests.factories import (
    MISSING,
    ORIGIN,
    T0,
    VOCAB,
    RawJSON,
    event_bytes,
    event_doc,
    kept_details,
    kept_feature,
    kept_type,
)

R = RejectCode
LONG_ID = "x" * (MAX_ID_LENGTH + 1)
MAX_ID = "x" * MAX_ID_LENGTH


def _reject(value: bytes, key: bytes | None = None) -> Rejection:
    result = decode(value, ORIGIN, VOCAB, key)
    assert isinstance(result, Rejection), f"expected a rejection, got {result!r}"
    return result


def _accept(value: bytes) -> Event:
    result = decode(value, ORIGIN, VOCAB)
    assert isinstance(result, Event), f"expected an event, got {result!r}"
    return result


# ---------------------------------------------------------------- rejections: not a JSON object at all

NOT_JSON_CASES = [
    pytest.param(b"", R.INVALID_JSON, id="empty"),
    pytest.param(b"   \n", R.INVALID_JSON, id="whitespace-only"),
    pytest.param(b"{", R.INVALID_JSON, id="truncated"),
    pytest.param(b"{'event_id': 'e'}", R.INVALID_JSON, id="single-quotes"),
    pytest.param(b'{"a":1,}', R.INVALID_JSON, id="trailing-comma"),
    pytest.param(b'{"a":1} {"b":2}', R.INVALID_JSON, id="two-documents"),
    pytest.param(b'\xef\xbb\xbf{"a":1}', R.INVALID_JSON, id="utf8-bom"),
    pytest.param(b"\xff\xfe\x00", R.INVALID_JSON, id="invalid-utf8-bytes"),
    pytest.param(event_bytes()[:-2] + b'\xc3"}', R.INVALID_JSON, id="invalid-utf8-in-string"),
    pytest.param(b'{"event_id":"\xed\xa0\x80"}', R.INVALID_JSON, id="utf8-encoded-surrogate"),
    pytest.param(b'{"event_id":"\\ud800"}', R.INVALID_JSON, id="lone-surrogate-escape"),
    pytest.param(event_bytes().replace(b'"ts":"2026-03-02T12:00:00Z"', b'"ts":NaN'), R.INVALID_JSON, id="nan"),
    pytest.param(
        event_bytes().replace(b'"ts":"2026-03-02T12:00:00Z"', b'"ts":Infinity'), R.INVALID_JSON, id="infinity"
    ),
    pytest.param(
        event_bytes().replace(b'"ts":"2026-03-02T12:00:00Z"', b'"ts":-Infinity'), R.INVALID_JSON, id="minus-infinity"
    ),
    pytest.param(b'{"ts":1e400}', R.INVALID_JSON, id="float-overflow"),
    pytest.param(b"[" * 100_000, R.INVALID_JSON, id="100k-open-brackets"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, R.INVALID_JSON, id="100k-nested-arrays"),
    pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, R.INVALID_JSON, id="100k-nested-objects"),
    pytest.param(b"[]", R.NOT_OBJECT, id="empty-array"),
    pytest.param(b"[" + event_bytes() + b"]", R.NOT_OBJECT, id="array-of-event"),
    pytest.param(b'"event"', R.NOT_OBJECT, id="string"),
    pytest.param(b"42", R.NOT_OBJECT, id="number"),
    pytest.param(b"null", R.NOT_OBJECT, id="null"),
    pytest.param(b"true", R.NOT_OBJECT, id="boolean"),
]


@pytest.mark.parametrize(("value", "code"), NOT_JSON_CASES)
def test_rejects_malformed_documents(value: bytes, code: RejectCode) -> None:
    rejection = _reject(value)
    assert rejection.code is code
    assert rejection.raw.value == value
    assert rejection.raw.origin == ORIGIN
    assert rejection.detail


# ---------------------------------------------------------------- rejections: fields, limits and properties

FIELD_CASES = [
    # required ids
    pytest.param({"event_id": MISSING}, R.MISSING_FIELD, id="event_id-missing"),
    pytest.param({"event_id": None}, R.MISSING_FIELD, id="event_id-null"),
    pytest.param({"event_id": ""}, R.INVALID_ID, id="event_id-empty"),
    pytest.param({"event_id": LONG_ID}, R.INVALID_ID, id="event_id-257-chars"),
    pytest.param({"event_id": 123}, R.WRONG_TYPE, id="event_id-int"),
    pytest.param({"event_id": ["e"]}, R.WRONG_TYPE, id="event_id-array"),
    pytest.param({"event_id": True}, R.WRONG_TYPE, id="event_id-bool"),
    pytest.param({"event_id": RawJSON(b"18446744073709551616")}, R.WRONG_TYPE, id="event_id-int-beyond-64-bits"),
    pytest.param({"user_id": MISSING}, R.MISSING_FIELD, id="user_id-missing"),
    pytest.param({"user_id": None}, R.MISSING_FIELD, id="user_id-null"),
    pytest.param({"user_id": ""}, R.INVALID_ID, id="user_id-empty"),
    pytest.param({"user_id": LONG_ID}, R.INVALID_ID, id="user_id-257-chars"),
    pytest.param({"user_id": "é" * 257}, R.INVALID_ID, id="user_id-257-non-ascii-chars"),
    pytest.param({"user_id": 7}, R.WRONG_TYPE, id="user_id-int"),
    pytest.param({"user_id": {"id": "u"}}, R.WRONG_TYPE, id="user_id-object"),
    # optional id
    pytest.param({"account_id": ""}, R.INVALID_ID, id="account_id-empty"),
    pytest.param({"account_id": LONG_ID}, R.INVALID_ID, id="account_id-257-chars"),
    pytest.param({"account_id": 5}, R.WRONG_TYPE, id="account_id-int"),
    pytest.param({"account_id": False}, R.WRONG_TYPE, id="account_id-bool"),
    # type
    pytest.param({"type": MISSING}, R.MISSING_FIELD, id="type-missing"),
    pytest.param({"type": None}, R.MISSING_FIELD, id="type-null"),
    pytest.param({"type": ""}, R.WRONG_TYPE, id="type-empty"),
    pytest.param({"type": 3}, R.WRONG_TYPE, id="type-int"),
    pytest.param({"type": ["page_view"]}, R.WRONG_TYPE, id="type-array"),
    # ts: wrong JSON type
    pytest.param({"ts": MISSING}, R.MISSING_FIELD, id="ts-missing"),
    pytest.param({"ts": None}, R.MISSING_FIELD, id="ts-null"),
    pytest.param({"ts": True}, R.WRONG_TYPE, id="ts-bool-true"),
    pytest.param({"ts": False}, R.WRONG_TYPE, id="ts-bool-false"),
    pytest.param({"ts": float(T0)}, R.WRONG_TYPE, id="ts-float"),
    pytest.param({"ts": 1.5}, R.WRONG_TYPE, id="ts-fractional-float"),
    pytest.param({"ts": [T0]}, R.WRONG_TYPE, id="ts-array"),
    pytest.param({"ts": {"ms": T0}}, R.WRONG_TYPE, id="ts-object"),
    # ts: impossible or not RFC 3339 with an offset
    pytest.param({"ts": "2026-03-02T12:00:00"}, R.INVALID_TIMESTAMP, id="ts-naive-iso"),
    pytest.param({"ts": "2026-03-02"}, R.INVALID_TIMESTAMP, id="ts-date-only"),
    pytest.param({"ts": "2026-02-30T10:00:00Z"}, R.INVALID_TIMESTAMP, id="ts-february-30"),
    pytest.param({"ts": "2026-13-01T10:00:00Z"}, R.INVALID_TIMESTAMP, id="ts-month-13"),
    pytest.param({"ts": "2026-03-02T24:00:00Z"}, R.INVALID_TIMESTAMP, id="ts-hour-24"),
    pytest.param({"ts": "2026-03-02T12:00:00+24:00"}, R.INVALID_TIMESTAMP, id="ts-offset-24h"),
    pytest.param({"ts": "10000-01-01T00:00:00Z"}, R.INVALID_TIMESTAMP, id="ts-year-10000"),
    pytest.param({"ts": "9999-12-31T23:59:59.999-00:01"}, R.INVALID_TIMESTAMP, id="ts-after-9999-via-offset"),
    pytest.param({"ts": "1969-12-31T23:59:59.999Z"}, R.INVALID_TIMESTAMP, id="ts-before-1970"),
    pytest.param({"ts": "1970-01-01T00:30:00+01:00"}, R.INVALID_TIMESTAMP, id="ts-before-1970-via-offset"),
    pytest.param({"ts": ""}, R.INVALID_TIMESTAMP, id="ts-empty-string"),
    pytest.param({"ts": "yesterday"}, R.INVALID_TIMESTAMP, id="ts-words"),
    pytest.param({"ts": str(T0)}, R.INVALID_TIMESTAMP, id="ts-epoch-ms-as-string"),
    pytest.param({"ts": -1}, R.INVALID_TIMESTAMP, id="ts-negative-ms"),
    pytest.param({"ts": MAX_TS_MS + 1}, R.INVALID_TIMESTAMP, id="ts-ms-after-9999"),
    pytest.param({"ts": 2**64 - 1}, R.INVALID_TIMESTAMP, id="ts-max-uint64"),
    pytest.param({"ts": -(2**63)}, R.INVALID_TIMESTAMP, id="ts-min-int64"),
    # feature and properties
    pytest.param({"feature": 5}, R.WRONG_TYPE, id="feature-int"),
    pytest.param({"feature": {"name": "x"}}, R.WRONG_TYPE, id="feature-object"),
    pytest.param({"properties": []}, R.WRONG_TYPE, id="properties-array"),
    pytest.param({"properties": "score=7"}, R.WRONG_TYPE, id="properties-string"),
    pytest.param({"properties": 1}, R.WRONG_TYPE, id="properties-int"),
    pytest.param({"properties": True}, R.WRONG_TYPE, id="properties-bool"),
    # type-specific properties
    pytest.param({"type": "nps_response", "properties": {"score": 11}}, R.INVALID_PROPERTY, id="nps-11"),
    pytest.param({"type": "nps_response", "properties": {"score": -1}}, R.INVALID_PROPERTY, id="nps-minus-1"),
    pytest.param({"type": "nps_response", "properties": {"score": "7"}}, R.INVALID_PROPERTY, id="nps-string"),
    pytest.param({"type": "nps_response", "properties": {"score": True}}, R.INVALID_PROPERTY, id="nps-true"),
    pytest.param({"type": "nps_response", "properties": {"score": 7.0}}, R.INVALID_PROPERTY, id="nps-float"),
    pytest.param({"type": "nps_response", "properties": {"score": None}}, R.INVALID_PROPERTY, id="nps-null"),
    pytest.param(
        {"type": "nps_response", "properties": {"score": RawJSON(b"18446744073709551616")}},
        R.INVALID_PROPERTY,
        id="nps-beyond-64-bits",
    ),
    pytest.param(
        {"type": "support_ticket_opened", "properties": {"ticket_id": "t", "severity": "critical"}},
        R.INVALID_PROPERTY,
        id="severity-unknown",
    ),
    pytest.param(
        {"type": "support_ticket_opened", "properties": {"severity": "HIGH"}},
        R.INVALID_PROPERTY,
        id="severity-wrong-case",
    ),
    pytest.param(
        {"type": "support_ticket_opened", "properties": {"severity": 3}}, R.INVALID_PROPERTY, id="severity-int"
    ),
    pytest.param(
        {"type": "plan_changed", "properties": {"direction": "sideways"}}, R.INVALID_PROPERTY, id="direction-unknown"
    ),
    pytest.param({"type": "subscribed", "properties": {"mrr": -1}}, R.INVALID_PROPERTY, id="mrr-negative"),
    pytest.param({"type": "subscribed", "properties": {"mrr": "99"}}, R.INVALID_PROPERTY, id="mrr-string"),
    pytest.param({"type": "subscribed", "properties": {"mrr": True}}, R.INVALID_PROPERTY, id="mrr-bool"),
    pytest.param(
        {"type": "subscription_cancelled", "properties": {"regrettable": "yes"}},
        R.INVALID_PROPERTY,
        id="regrettable-string",
    ),
    pytest.param(
        {"type": "subscription_cancelled", "properties": {"regrettable": 1}},
        R.INVALID_PROPERTY,
        id="regrettable-int",
    ),
]


@pytest.mark.parametrize(("fields", "code"), FIELD_CASES)
def test_rejects_invalid_fields(fields: dict[str, Any], code: RejectCode) -> None:
    value = event_bytes(**fields)
    key = b"user-1"
    rejection = _reject(value, key)
    assert rejection.code is code
    assert rejection.raw.value == value
    assert rejection.raw.origin == ORIGIN
    assert rejection.raw.key == key
    assert rejection.detail


# 2026-11-27T12:00:00Z, worked out with `date -u -d 2026-11-27T12:00:00Z +%s`, plus one day of skew.
NOW_MS = 1_795_780_800_000
MAX_TS = NOW_MS + 86_400_000
FUTURE_CASES = [
    pytest.param("9000-01-01T00:00:00Z", R.FUTURE_TIMESTAMP, id="year-9000"),
    pytest.param("2026-11-28T12:00:00.001Z", R.FUTURE_TIMESTAMP, id="one-ms-beyond-the-skew"),
    pytest.param("2026-11-28T13:00:00+01:00", None, id="exactly-the-skew-with-an-offset"),
    pytest.param(MAX_TS + 1, R.FUTURE_TIMESTAMP, id="epoch-ms-beyond"),
    pytest.param(MAX_TS, None, id="epoch-ms-at-the-limit"),
    pytest.param("1971-01-01T00:00:00Z", None, id="the-distant-past-is-not-the-future"),
]


@pytest.mark.parametrize(("ts", "code"), FUTURE_CASES)
def test_events_too_far_ahead_of_the_wall_clock_are_rejected(ts: object, code: RejectCode | None) -> None:
    raw = event_bytes(ts=ts)
    result = decode(raw, ORIGIN, VOCAB, max_ts=MAX_TS)
    if code is None:
        assert isinstance(result, Event)
    else:
        assert isinstance(result, Rejection)
        assert (result.code, result.raw.value) == (code, raw)
    # Without a limit (the default) only the calendar bounds apply.
    assert isinstance(decode(raw, ORIGIN, VOCAB), Event)


def test_every_reject_code_is_covered_by_the_tables() -> None:
    codes = {p.values[1] for p in NOT_JSON_CASES + FIELD_CASES + FUTURE_CASES} - {None} | {R.TOO_LARGE}
    assert codes == set(RejectCode)


def test_reject_codes_are_stable() -> None:
    # Dead-letter consumers branch on these strings: renaming one is a breaking change.
    assert sorted(c.value for c in RejectCode) == sorted(
        [
            "too_large",
            "invalid_json",
            "not_object",
            "missing_field",
            "wrong_type",
            "invalid_id",
            "invalid_timestamp",
            "invalid_property",
            "future_timestamp",
        ]
    )


@pytest.mark.parametrize("literal", [b"18446744073709551616", b"-9223372036854775809"], ids=["2**64", "-2**63-1"])
def test_ts_integer_beyond_64_bits_is_an_invalid_timestamp(literal: bytes) -> None:
    rejection = _reject(event_bytes(ts=RawJSON(literal)))
    assert rejection.code is R.INVALID_TIMESTAMP


# ---------------------------------------------------------------- size limit


def _padded(total: int) -> bytes:
    """A valid event of exactly `total` bytes, padded inside its properties."""
    base = event_bytes(properties={"pad": ""})
    value = event_bytes(properties={"pad": "p" * (total - len(base))})
    assert len(value) == total
    return value


def test_message_of_exactly_one_mib_is_accepted() -> None:
    assert _accept(_padded(MAX_MESSAGE_BYTES)).event_id == "evt-1"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(_padded(MAX_MESSAGE_BYTES + 1), id="valid-event-one-byte-over"),
        pytest.param(b"\xff" * (MAX_MESSAGE_BYTES + 10), id="garbage-over-the-limit"),
        pytest.param(b"[" * (MAX_MESSAGE_BYTES + 1), id="deep-nesting-over-the-limit"),
    ],
)
def test_message_over_one_mib_is_too_large(value: bytes) -> None:
    rejection = _reject(value)
    assert rejection.code is R.TOO_LARGE
    assert rejection.raw.value == value
    assert rejection.raw.origin == ORIGIN


# ---------------------------------------------------------------- accepted forms

VALID_TS_CASES = [
    pytest.param("2026-03-02T12:00:00Z", T0, id="rfc3339-z"),
    pytest.param("2026-03-02T12:00:00+00:00", T0, id="rfc3339-plus-zero"),
    pytest.param("2026-03-02T12:00:00-00:00", T0, id="rfc3339-minus-zero"),
    pytest.param("2026-03-02T13:00:00+01:00", T0, id="rfc3339-plus-01"),
    pytest.param("2026-03-02T06:30:00-05:30", T0, id="rfc3339-minus-0530"),
    pytest.param("2026-03-03T00:00:00+12:00", T0, id="rfc3339-other-local-day"),
    pytest.param("2026-03-02T12:00:00.5Z", T0 + 500, id="fraction-1-digit"),
    pytest.param("2026-03-02T12:00:00.123Z", T0 + 123, id="fraction-3-digits"),
    pytest.param("2026-03-02T12:00:00.123456Z", T0 + 123, id="fraction-6-digits-floored"),
    pytest.param("2026-03-02T12:00:00.1239999Z", T0 + 123, id="fraction-7-digits-floored"),
    pytest.param("2026-03-02T13:00:00.250+01:00", T0 + 250, id="fraction-with-offset"),
    pytest.param("1970-01-01T00:00:00Z", 0, id="epoch-start"),
    pytest.param("9999-12-31T23:59:59.999Z", MAX_TS_MS, id="last-representable-ms"),
    pytest.param(T0, T0, id="epoch-ms"),
    pytest.param(0, 0, id="epoch-ms-zero"),
    pytest.param(MAX_TS_MS, MAX_TS_MS, id="epoch-ms-max"),
]


@pytest.mark.parametrize(("ts", "expected_ms"), VALID_TS_CASES)
def test_accepts_timestamps(ts: str | int, expected_ms: int) -> None:
    assert _accept(event_bytes(ts=ts)).ts == expected_ms


@pytest.mark.parametrize("ts", ["2026-03-02t12:00:00z", "2026-03-02T12:00:00z"])
def test_accepts_lower_case_rfc3339_separators(ts: str) -> None:
    assert _accept(event_bytes(ts=ts)).ts == T0


@pytest.mark.parametrize(
    "ts",
    ["2026-03-02T12:00:00.123456xyzZ", "2026-03-02T12:00:00.1234567abc+01:00", "2026-03-02T12:00:00.123456!!Z"],
)
def test_rejects_timestamps_with_trailing_garbage(ts: str) -> None:
    assert _reject(event_bytes(ts=ts)).code is R.INVALID_TIMESTAMP


@pytest.mark.parametrize(
    "ts",
    [
        pytest.param("20260302T120000Z", id="basic-format"),
        pytest.param("2026-W10-1T12:00:00Z", id="week-date"),
        pytest.param("2026-03-02T12Z", id="hour-only"),
        pytest.param("2026-03-02T12:00:00,5Z", id="decimal-comma"),
        pytest.param("2026-03-02T12:00:00+0100", id="offset-without-colon"),
    ],
)
def test_rejects_iso8601_forms_that_are_not_rfc3339(ts: str) -> None:
    assert _reject(event_bytes(ts=ts)).code is R.INVALID_TIMESTAMP


def test_decodes_every_field() -> None:
    value = event_bytes(
        event_id="e-9",
        user_id="u-9",
        account_id="a-9",
        type="feature_used",
        ts="2026-03-02T13:00:00.042+01:00",
        feature="export",
        properties={"email": "a@example.com", "nested": {"list": [1, 2.5, None, True]}},
    )
    assert _accept(value) == Event(
        EventId("e-9"),
        UserId("u-9"),
        AccountId("a-9"),
        "feature_used",
        T0 + 42,
        "export",
        None,  # personal data and nested values are dropped at decode; only known scalars are kept
        Category.ACTIVITY,
    )


VALID_FIELD_CASES = [
    pytest.param({"event_id": MAX_ID}, id="event_id-256-chars"),
    pytest.param({"user_id": "é" * MAX_ID_LENGTH}, id="user_id-256-non-ascii-chars"),
    pytest.param({"user_id": "x"}, id="user_id-1-char"),
    pytest.param({"account_id": MISSING}, id="account_id-missing"),
    pytest.param({"account_id": None}, id="account_id-null"),
    pytest.param({"account_id": MAX_ID}, id="account_id-256-chars"),
    pytest.param({"feature": MISSING, "properties": MISSING}, id="optional-fields-missing"),
    pytest.param({"properties": {}}, id="properties-empty"),
    pytest.param({"extra": {"ignored": True}}, id="unknown-field-ignored"),
    pytest.param({"type": "nps_response", "properties": {"score": 0}}, id="nps-0"),
    pytest.param({"type": "nps_response", "properties": {"score": 10}}, id="nps-10"),
    pytest.param({"type": "nps_response", "properties": {"comment": "no score"}}, id="nps-without-score"),
    pytest.param({"type": "nps_response", "properties": None}, id="nps-without-properties"),
    *[
        pytest.param({"type": "support_ticket_opened", "properties": {"severity": s}}, id=f"severity-{s}")
        for s in ("low", "normal", "high", "urgent")
    ],
    pytest.param({"type": "plan_changed", "properties": {"direction": "down"}}, id="direction-down"),
    pytest.param({"type": "subscribed", "properties": {"plan": "pro", "mrr": 0}}, id="mrr-zero"),
    pytest.param({"type": "subscribed", "properties": {"mrr": 49.5}}, id="mrr-float"),
    pytest.param({"type": "subscription_cancelled", "properties": {"regrettable": False}}, id="regrettable-false"),
    # Property rules belong to their own type: the same values on another type are not checked.
    pytest.param({"type": "page_view", "properties": {"score": 99, "severity": "?"}}, id="unchecked-on-other-types"),
]


@pytest.mark.parametrize("fields", VALID_FIELD_CASES)
def test_accepts_valid_variants(fields: dict[str, Any]) -> None:
    doc = event_doc(**fields)
    event = _accept(dumps(doc))
    assert event.event_id == doc["event_id"]
    assert event.user_id == doc["user_id"]
    assert event.account_id == doc.get("account_id")
    assert event.type == kept_type(doc)
    assert event.feature == kept_feature(doc)
    assert event.properties == kept_details(loads(dumps(doc)))


CATEGORY_CASES = [
    *[pytest.param(t, Category.ACTIVITY, id=t) for t in sorted(Vocabulary().activity)],
    pytest.param("nps_response", Category.SENTIMENT, id="nps_response"),
    pytest.param("support_ticket_opened", Category.SUPPORT, id="support_ticket_opened"),
    pytest.param("support_ticket_resolved", Category.SUPPORT, id="support_ticket_resolved"),
    *[pytest.param(t, Category.TEAM, id=t) for t in ("seat_added", "seat_removed", "admin_changed")],
    *[pytest.param(t, Category.COMMERCIAL, id=t) for t in sorted(Vocabulary().commercial)],
    pytest.param("erasure_requested", Category.PRIVACY, id="erasure_requested"),
    pytest.param("made_up_type", Category.OTHER, id="unknown-type"),
    pytest.param("Page_View", Category.OTHER, id="types-are-case-sensitive"),
]


@pytest.mark.parametrize(("event_type", "category"), CATEGORY_CASES)
def test_categorises_types(event_type: str, category: Category) -> None:
    event = _accept(event_bytes(type=event_type))
    # A type outside the vocabulary is valid but its name, which could be anything, is not kept.
    assert event.type == (event_type if category is not Category.OTHER else "other")
    assert event.category is category


def test_vocabulary_is_configurable() -> None:
    vocab = Vocabulary(activity=frozenset({"clicked"}), nps="survey")
    clicked = decode(event_bytes(type="clicked"), ORIGIN, vocab)
    page_view = decode(event_bytes(type="page_view"), ORIGIN, vocab)
    survey = decode(event_bytes(type="survey", properties={"score": 11}), ORIGIN, vocab)
    assert isinstance(clicked, Event)
    assert clicked.category is Category.ACTIVITY
    assert isinstance(page_view, Event)
    assert page_view.category is Category.OTHER
    assert isinstance(survey, Rejection)
    assert survey.code is R.INVALID_PROPERTY


def test_accepted_events_survive_pickling() -> None:
    depth = 1000
    value = event_bytes(properties={"x": RawJSON(b"[" * depth + b"]" * depth)})
    result = decode(value, ORIGIN, VOCAB)
    assert pickle.loads(pickle.dumps(result)) == result


# ---------------------------------------------------------------- batches and timestamps


def test_decode_batch_matches_decode_and_keeps_origins() -> None:
    values = [event_bytes(event_id="a"), b"not json", event_bytes(event_id="b", ts=True), b"[1]"]
    keys: list[bytes | None] = [b"k0", b"k1", None, b"k3"]
    batch = RawBatch("pulse-events", 7, values, [100, 101, 102, 103], keys)
    results = list(decode_batch(batch, VOCAB))
    expected = [decode(v, Origin("pulse-events", 7, 100 + i), VOCAB, keys[i]) for i, v in enumerate(values)]
    assert results == expected
    assert [type(r).__name__ for r in results] == ["Event", "Rejection", "Rejection", "Rejection"]
    rejected = [r for r in results if isinstance(r, Rejection)]
    assert [r.raw.origin.offset for r in rejected] == [101, 102, 103]
    assert [r.raw.key for r in rejected] == [b"k1", None, b"k3"]
    assert [r.code for r in rejected] == [R.INVALID_JSON, R.WRONG_TYPE, R.NOT_OBJECT]


def test_decode_batch_without_keys() -> None:
    batch = RawBatch("events.jsonl", -1, [b"{}"], [12])
    (result,) = decode_batch(batch, VOCAB)
    assert isinstance(result, Rejection)
    assert result.raw.key is None
    assert result.raw.origin == Origin("events.jsonl", -1, 12)


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        pytest.param(0, "1970-01-01T00:00:00.000Z", id="epoch"),
        pytest.param(T0, "2026-03-02T12:00:00.000Z", id="t0"),
        pytest.param(T0 + 7, "2026-03-02T12:00:00.007Z", id="milliseconds-zero-padded"),
        pytest.param(MAX_TS_MS, "9999-12-31T23:59:59.999Z", id="max"),
    ],
)
def test_format_ts(ms: int, text: str) -> None:
    assert format_ts(ms) == text
    assert parse_ts(text) == ms


@pytest.mark.parametrize(
    ("value", "code"),
    [
        pytest.param(None, R.WRONG_TYPE, id="none"),
        pytest.param(True, R.WRONG_TYPE, id="bool"),
        pytest.param(1.0, R.WRONG_TYPE, id="float"),
        pytest.param("2026-03-02", R.INVALID_TIMESTAMP, id="date-only"),
        pytest.param("9999-12-31T23:59:59.999-01:00", R.INVALID_TIMESTAMP, id="after-9999"),
        pytest.param(-1, R.INVALID_TIMESTAMP, id="before-1970"),
    ],
)
def test_parse_ts_signals_the_reject_code(value: object, code: RejectCode) -> None:
    # parse_ts raises the codec's internal exception carrying the code; only decode promises never to raise.
    with pytest.raises(Exception, match=code.value) as info:
        parse_ts(value)
    assert getattr(info.value, "code", None) is code


@settings(max_examples=300)
@given(
    ms=st.integers(min_value=0, max_value=MAX_TS_MS),
    other=st.integers(min_value=0, max_value=MAX_TS_MS),
    millis=st.text(alphabet="0123456789٣x.", min_size=3, max_size=3),
)
def test_parse_ts_of_known_parts_agrees_with_the_full_parser(ms: int, other: int, millis: str) -> None:
    # The common form is parsed from remembered date and time-of-day parts: a string mixing the date of
    # one accepted time with the time of day of another, and any three characters as milliseconds, must
    # be read exactly as the full parser reads it (same value, or the same reject code).
    parse_ts(format_ts(ms))
    parse_ts(format_ts(other))
    mixed = f"{format_ts(ms)[:11]}{format_ts(other)[11:20]}{millis}Z"
    slow = _full_parse(mixed)
    try:
        fast: object = parse_ts(mixed)
    except Exception as exc:  # the codec's internal exception, carrying the code
        fast = getattr(exc, "code", exc)
    assert fast == slow


def _full_parse(text: str) -> object:
    """parse_ts with its remembered parts forgotten: the regular expression and datetime only."""
    from schemas import codec

    days, clocks = dict(codec._DAY_STARTS), dict(codec._DAY_CLOCKS)
    codec._DAY_STARTS.clear()
    codec._DAY_CLOCKS.clear()
    try:
        return parse_ts(text)
    except Exception as exc:
        return getattr(exc, "code", exc)
    finally:
        codec._DAY_STARTS.clear()
        codec._DAY_CLOCKS.clear()
        codec._DAY_STARTS.update(days)
        codec._DAY_CLOCKS.update(clocks)


def test_dumps_is_canonical() -> None:
    assert dumps({"b": 1, "a": [1, 2]}) == b'{"a":[1,2],"b":1}'
    assert dumps({"a": 1, "b": 2}) == dumps({"b": 2, "a": 1})
    assert loads(dumps({"ü": "€"})) == {"ü": "€"}


def test_a_property_configured_as_personal_data_is_dropped_at_decode() -> None:
    vocab = Vocabulary(pii_fields=frozenset({"email", "reason"}))
    doc = event_doc(type="subscription_cancelled", properties={"reason": "alice@example.com", "regrettable": True})
    event = decode(dumps(doc), ORIGIN, vocab)
    assert isinstance(event, Event)
    assert event.properties == {"regrettable": True}
    # Not configured as personal data, a reason is kept only as one of the reason codes.
    assert _accept(dumps(doc)).properties == {"reason": "other", "regrettable": True}
