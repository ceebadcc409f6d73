"""Segment / RudderStack spec input (`[input] format = "segment"`): every call type, every default event name,
every rejection, the timestamp forms, the configuration, and the demo converter."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from demo.generator import GeneratorConfig, generate
from demo.segment import convert_line
from engine.config import ConfigError, load_settings
from engine.privacy import PrivacyError, erasure_event
from schemas.codec import decode, loads, ticket_digest
from schemas.events import Category, Event, Origin, RejectCode, Rejection, Vocabulary

DATA = Path(__file__).resolve().parents[1] / "data" / "segment"
SEGMENT = Vocabulary(input_format="segment")
ORIGIN = Origin("pulse-events", 0, 7)
T0 = 1_772_442_000_000  # 2026-03-02T09:00:00Z
CANARIES = (b"canary", b"Canary", b"+351 910")


def _fixture(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


TRACK = {message["event"]: message for message in _fixture("track.json")}


def _decode(message: dict[str, Any] | bytes, vocab: Vocabulary = SEGMENT) -> Event | Rejection:
    raw = message if isinstance(message, bytes) else orjson.dumps(message)
    return decode(raw, ORIGIN, vocab)


def _event(message: dict[str, Any] | bytes, vocab: Vocabulary = SEGMENT) -> Event:
    event = _decode(message, vocab)
    assert isinstance(event, Event), event
    return event


# Event name -> (type, feature, properties kept): written out here, not read from the default map.
EXPECTED: dict[str, tuple[str, str | None, dict[str, Any] | None]] = {
    "Signed Up": ("signed_up", None, None),
    "Signed In": ("session_start", None, None),
    "Signed Out": ("session_end", None, None),
    "Trial Started": ("trial_started", None, None),
    "Trial Ended": ("other", None, None),
    "Account Created": ("signed_up", None, None),
    "Account Deleted": ("subscription_cancelled", None, None),
    "Account Added User": ("seat_added", None, None),
    "Account Removed User": ("seat_removed", None, None),
    "Invite Sent": ("feature_used", "invites", None),
    "Feature Used": ("feature_used", "reports", None),
    "Order Completed": ("purchase", None, None),
    "Experiment Viewed": ("experiment_exposed", None, {"experiment": "onboarding_checklist", "variant": "checklist"}),
    "Session Started": ("session_start", None, None),
    "Session Ended": ("session_end", None, None),
    "API Called": ("api_call", None, None),
    "NPS Submitted": ("nps_response", None, {"score": 9}),
    "NPS Survey Answered": ("nps_response", None, {"score": 4}),
    "Ticket Opened": ("support_ticket_opened", None, {"ticket_id": ticket_digest("ZD-5521"), "severity": "high"}),
    "Support Ticket Opened": (
        "support_ticket_opened",
        None,
        {"ticket_id": ticket_digest("ZD-5522"), "severity": "low"},
    ),
    "Ticket Resolved": ("support_ticket_resolved", None, {"ticket_id": ticket_digest("ZD-5521")}),
    "Support Ticket Resolved": ("support_ticket_resolved", None, {"ticket_id": ticket_digest("ZD-5522")}),
    "Subscription Started": ("subscribed", None, {"plan": "business", "mrr": 490}),
    "Plan Changed": ("plan_changed", None, {"plan": "team", "mrr": 190, "direction": "down"}),
    "Plan Upgraded": ("plan_changed", None, {"plan": "enterprise", "mrr": 1290, "direction": "up"}),
    "Plan Downgraded": ("plan_changed", None, {"plan": "team", "mrr": 190, "direction": "down"}),
    "Subscription Paused": ("subscription_paused", None, {"reason": "not_using"}),
    "Subscription Resumed": ("subscription_resumed", None, None),
    "Cancellation Requested": ("cancellation_requested", None, {"reason": "too_expensive"}),
    "Subscription Cancelled": (
        "subscription_cancelled",
        None,
        {"reason": "switched_competitor", "regrettable": True},
    ),
    "Demo Requested": ("demo_requested", None, None),
    "Newsletter Subscribed": ("newsletter_subscribed", None, None),
    "Admin Changed": ("admin_changed", None, None),
    "Erasure Requested": ("erasure_requested", None, None),
    "Access Requested": ("access_requested", None, None),
    "Report Exported": ("other", None, None),  # not in the default map: counted as other, the name not kept
}


def test_the_fixtures_cover_every_expected_name() -> None:
    assert set(TRACK) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_default_track_name(name: str) -> None:
    message = TRACK[name]
    event = _event(message)
    kind, feature, props = EXPECTED[name]
    assert (event.type, event.feature, event.properties) == (kind, feature, props)
    assert event.event_id == message["messageId"]
    assert event.user_id == "usr_8812"  # userId wins over anonymousId
    assert event.account_id == "acct-northwind"  # context.groupId
    assert event.ts == T0 + list(TRACK).index(name) * 60_000 + 14_512  # timestamp, not sentAt or receivedAt
    assert not any(canary in orjson.dumps(repr(event)) for canary in (b"@", b"Ada", b"Quill", b"198.51"))


def test_the_generator_emits_only_types_a_segment_name_maps_to() -> None:
    mapped = {kind for kind, _ in SEGMENT.segment_map.values()} | {"page_view"}
    emitted = set()
    for line in generate(GeneratorConfig(users=60, accounts=8, days=30, seed=3)):
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and doc.get("type") in SEGMENT.categories:
            emitted.add(doc["type"])
    assert emitted <= mapped
    assert len(emitted) >= 20


@pytest.mark.parametrize("name", ["page.json", "screen.json"])
def test_page_and_screen_are_page_views(name: str) -> None:
    event = _event(_fixture(name))
    assert (event.type, event.category, event.account_id, event.properties) == (
        "page_view", Category.ACTIVITY, "acct-northwind", None,
    )  # fmt: skip


def test_identify_is_other_and_its_traits_go_nowhere() -> None:
    message = _fixture("identify.json")
    event = _event(message)
    assert (event.type, event.category, event.user_id, event.account_id) == (
        "other", Category.OTHER, "usr_8812", "acct-northwind",
    )  # fmt: skip
    assert (event.feature, event.properties) == (None, None)
    assert not any(canary in repr(event).encode() for canary in CANARIES)


def test_identify_traits_are_not_read_even_as_properties() -> None:
    message = {**_fixture("identify.json"), "properties": {"score": 3, "plan": "team"}}
    assert _event(message).properties is None


def test_group_moves_the_user_to_its_group_and_its_traits_go_nowhere() -> None:
    event = _event(_fixture("group.json"))
    assert (event.type, event.account_id, event.properties) == ("other", "acct-contoso", None)
    assert not any(canary in repr(event).encode() for canary in CANARIES)
    message = {**_fixture("group.json"), "context": {**_fixture("group.json")["context"], "groupId": "acct-x"}}
    assert _event(message).account_id == "acct-contoso"  # the call's groupId is the group


def test_alias_is_an_event_of_the_new_user_id() -> None:
    event = _event(_fixture("alias.json"))
    assert (event.type, event.user_id) == ("other", "usr_8812")


def test_links_and_visitors_carry_the_anonymous_id() -> None:
    """What operators.identity reads: a visitor's event (the anonymous id is the user), a link (alias, an
    identify with both ids) naming the visitor it joins; nothing on an identified event."""
    assert _event(_fixture("alias.json")).anonymous_id == "5b0f2a9e-3c51-4c8e-9a36-0d5e1f4b7a20"
    identify = _fixture("identify.json")
    assert _event({**identify, "anonymousId": "anon-5"}).anonymous_id == "anon-5"
    assert _event({k: v for k, v in identify.items() if k != "anonymousId"}).anonymous_id is None
    visitor = _event({k: v for k, v in TRACK["Feature Used"].items() if k != "userId"})
    assert visitor.anonymous_id == visitor.user_id
    assert _event({**TRACK["Feature Used"], "anonymousId": "anon-5"}).anonymous_id is None
    assert _event({**_fixture("alias.json"), "previousId": "usr_8812"}).anonymous_id is None  # itself: no link


def test_the_anonymous_id_is_the_user_without_a_user_id() -> None:
    message = {k: v for k, v in TRACK["Feature Used"].items() if k != "userId"}
    assert _event(message).user_id == "5b0f2a9e-3c51-4c8e-9a36-0d5e1f4b7a20"
    assert _event({**message, "userId": ""}).user_id == "5b0f2a9e-3c51-4c8e-9a36-0d5e1f4b7a20"
    assert _event({**message, "userId": None}).user_id == "5b0f2a9e-3c51-4c8e-9a36-0d5e1f4b7a20"


def test_the_account_is_context_group_then_properties_group_then_none() -> None:
    message = copy.deepcopy(TRACK["Feature Used"])
    del message["context"]["groupId"]
    assert _event(message).account_id is None
    message["properties"]["groupId"] = "acct-props"
    assert _event(message).account_id == "acct-props"
    message["context"]["groupId"] = "acct-context"
    assert _event(message).account_id == "acct-context"
    del message["context"]
    assert _event(message).account_id == "acct-props"


def test_feature_names_follow_the_tracking_plan() -> None:
    message = copy.deepcopy(TRACK["Feature Used"])
    message["properties"]["feature"] = "search: someone@mail.example"
    assert _event(message).feature == "other"
    del message["properties"]["feature"]
    assert _event(message).feature is None


def test_experiment_ids_stand_in_for_missing_names() -> None:
    message = copy.deepcopy(TRACK["Experiment Viewed"])
    del message["properties"]["experiment_name"], message["properties"]["variation_name"]
    assert _event(message).properties == {"experiment": "exp-311", "variant": "v-2"}


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        pytest.param("2026-03-02T09:00:00Z", T0, id="Z"),
        pytest.param("2026-03-02T09:00:00.250z", T0 + 250, id="lowercase-z"),
        pytest.param("2026-03-02T10:00:00+01:00", T0, id="colon-offset"),
        pytest.param("2026-03-02T10:00:00+0100", T0, id="compact-offset"),
        pytest.param("2026-03-02T04:30:00-0430", T0, id="negative-compact-offset"),
        pytest.param("2026-03-02T11:00:00+02", T0, id="hour-offset"),
        pytest.param("2026-03-02 09:00:00Z", T0, id="space"),
        pytest.param("2026-03-02 10:00:00.5+0100", T0 + 500, id="space-compact-offset"),
        pytest.param("2026-03-02T09:00:00.123456789Z", T0 + 123, id="nine-fraction-digits"),
        pytest.param("2026-03-02T09:00:00.1Z", T0 + 100, id="one-fraction-digit"),
        pytest.param("2026-03-02T09:00:00", T0, id="no-offset-is-utc"),
        pytest.param("2026-03-02 09:00:00.042", T0 + 42, id="space-no-offset-is-utc"),
        pytest.param(T0, T0, id="epoch-ms"),
    ],
)
def test_iso_8601_forms(stamp: object, expected: int) -> None:
    message = {**TRACK["Feature Used"], "timestamp": stamp}
    assert _event(message).ts == expected


def test_timestamp_then_original_timestamp_then_received_at_and_never_sent_at() -> None:
    message = dict(TRACK["Feature Used"])
    message.update(timestamp="2026-03-02T09:00:00Z", originalTimestamp="2026-03-02T09:00:01Z")
    message.update(receivedAt="2026-03-02T09:00:02Z", sentAt="2026-03-02T09:00:03Z")
    assert _event(message).ts == T0
    del message["timestamp"]
    assert _event(message).ts == T0 + 1000
    message["originalTimestamp"] = None
    assert _event(message).ts == T0 + 2000


def _without(message: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k not in keys}


FEATURE = TRACK["Feature Used"]
REJECTIONS = [
    pytest.param(_without(FEATURE, "type"), RejectCode.MISSING_FIELD, "type", id="no-call-type"),
    pytest.param({**FEATURE, "type": "batch"}, RejectCode.WRONG_TYPE, "type", id="unknown-call-type"),
    pytest.param({"batch": [FEATURE]}, RejectCode.MISSING_FIELD, "type", id="batch-envelope-not-read"),
    pytest.param({**FEATURE, "type": 3}, RejectCode.WRONG_TYPE, "type", id="call-type-not-a-string"),
    pytest.param(_without(FEATURE, "messageId"), RejectCode.MISSING_FIELD, "messageId is required", id="no-id"),
    pytest.param({**FEATURE, "messageId": ""}, RejectCode.INVALID_ID, "event_id", id="empty-message-id"),
    pytest.param({**FEATURE, "messageId": "m" * 257}, RejectCode.INVALID_ID, "event_id", id="long-message-id"),
    pytest.param(_without(FEATURE, "userId", "anonymousId"), RejectCode.MISSING_FIELD, "userId", id="no-user"),
    pytest.param({**FEATURE, "userId": 42}, RejectCode.WRONG_TYPE, "user_id", id="user-id-number"),
    pytest.param(
        _without(FEATURE, "timestamp", "originalTimestamp", "receivedAt"),
        RejectCode.MISSING_FIELD,
        "timestamp is required",
        id="no-timestamp",
    ),
    pytest.param({**FEATURE, "timestamp": "yesterday"}, RejectCode.INVALID_TIMESTAMP, "ISO 8601", id="not-iso"),
    pytest.param({**FEATURE, "timestamp": "2026-03-02"}, RejectCode.INVALID_TIMESTAMP, "ISO 8601", id="date-only"),
    pytest.param({**FEATURE, "timestamp": "2026-02-30T10:00:00Z"}, RejectCode.INVALID_TIMESTAMP, "", id="feb-30"),
    pytest.param({**FEATURE, "timestamp": True}, RejectCode.WRONG_TYPE, "ts", id="timestamp-bool"),
    pytest.param(_without(FEATURE, "event"), RejectCode.MISSING_FIELD, "event is required", id="track-no-event"),
    pytest.param({**FEATURE, "event": ["Feature Used"]}, RejectCode.WRONG_TYPE, "event", id="event-not-string"),
    pytest.param(_without(_fixture("group.json"), "groupId"), RejectCode.MISSING_FIELD, "groupId", id="group-no-id"),
    pytest.param({**FEATURE, "context": "web"}, RejectCode.WRONG_TYPE, "context", id="context-not-object"),
    pytest.param({**FEATURE, "properties": [1]}, RejectCode.WRONG_TYPE, "properties", id="properties-not-object"),
    pytest.param({**FEATURE, "context": {"groupId": 7}}, RejectCode.WRONG_TYPE, "account_id", id="group-id-not-string"),
    pytest.param(
        {**TRACK["NPS Submitted"], "properties": {"score": 11}}, RejectCode.INVALID_PROPERTY, "score", id="nps-11"
    ),
    pytest.param(
        {**TRACK["Ticket Opened"], "properties": {"severity": "blocker"}},
        RejectCode.INVALID_PROPERTY,
        "severity",
        id="bad-severity",
    ),
]


@pytest.mark.parametrize(("message", "code", "detail"), REJECTIONS)
def test_rejections_keep_the_native_codes_and_the_original_bytes(
    message: dict[str, Any], code: RejectCode, detail: str
) -> None:
    raw = orjson.dumps(message)
    rejection = _decode(raw)
    assert isinstance(rejection, Rejection), rejection
    assert (rejection.code, rejection.raw.value, rejection.raw.origin) == (code, raw, ORIGIN)
    assert detail in rejection.detail


@pytest.mark.parametrize(
    ("raw", "code"),
    [(b"not json", RejectCode.INVALID_JSON), (b"[1]", RejectCode.NOT_OBJECT), (b'"track"', RejectCode.NOT_OBJECT)],
)
def test_what_is_not_an_object_is_rejected_before_translation(raw: bytes, code: RejectCode) -> None:
    rejection = _decode(raw)
    assert isinstance(rejection, Rejection)
    assert (rejection.code, rejection.raw.value) == (code, raw)


def test_a_future_timestamp_is_a_future_timestamp() -> None:
    rejection = decode(orjson.dumps(FEATURE), ORIGIN, SEGMENT, max_ts=T0)
    assert isinstance(rejection, Rejection)
    assert rejection.code is RejectCode.FUTURE_TIMESTAMP


def test_the_native_format_is_the_default_and_reads_no_segment_message() -> None:
    native = Vocabulary()
    assert not native.segment
    rejection = _decode(FEATURE, native)
    assert isinstance(rejection, Rejection)
    assert (rejection.code, rejection.detail) == (RejectCode.MISSING_FIELD, "event_id is required")
    doc = {"event_id": "e1", "user_id": "u1", "type": "feature_used", "ts": T0, "feature": "reports"}
    rejection = _decode(doc)  # and segment mode reads no native document
    assert isinstance(rejection, Rejection)
    assert rejection.code is RejectCode.WRONG_TYPE


# ---------------------------------------------------------------- configuration


def test_the_format_is_pulse_unless_configured() -> None:
    settings = load_settings(None, env={})
    assert (settings.input.format, settings.vocab().segment) == ("pulse", False)
    assert settings.vocab() == Vocabulary()


def test_pulse_input_format_segment_from_the_environment() -> None:
    vocab = load_settings(None, env={"PULSE_INPUT_FORMAT": "segment"}).vocab()
    assert vocab.segment
    assert vocab == SEGMENT
    assert _event(FEATURE, vocab).type == "feature_used"


def test_any_other_format_fails_at_load_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(None, env={"PULSE_INPUT_FORMAT": "rudderstack"})
    assert str(raised.value) == "[input] format must be pulse or segment, got 'rudderstack'"
    path = tmp_path / "pulse.toml"
    path.write_text('[input]\nformat = "json"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^\[input\] format must be pulse or segment, got 'json'$"):
        load_settings(path, env={})


def test_a_custom_map_overrides_adds_and_unmaps(tmp_path: Path) -> None:
    path = tmp_path / "pulse.toml"
    path.write_text(
        '[input]\nformat = "segment"\n\n[input.segment_events]\n"Trial Ended" = "trial_started"\n'
        '"Signed In" = "other"\n"Report Exported" = "feature_used:exports"\n"Dashboard Viewed" = "feature_used"\n',
        encoding="utf-8",
    )
    vocab = load_settings(path, env={}).vocab()
    assert _event(TRACK["Trial Ended"], vocab).type == "trial_started"
    assert _event(TRACK["Signed In"], vocab).type == "other"
    exported = _event(TRACK["Report Exported"], vocab)
    assert (exported.type, exported.feature) == ("feature_used", "exports")
    viewed = {**TRACK["Feature Used"], "event": "Dashboard Viewed"}
    assert _event(viewed, vocab).feature == "reports"  # no name in the map: properties.feature
    assert _event(TRACK["Signed Up"], vocab).type == "signed_up"  # the other defaults stay


def test_the_custom_map_from_the_environment() -> None:
    env = {"PULSE_INPUT_FORMAT": "segment", "PULSE_INPUT_SEGMENT_EVENTS": "Trial Ended=trial_started, Signed In=other"}
    vocab = load_settings(None, env=env).vocab()
    assert _event(TRACK["Trial Ended"], vocab).type == "trial_started"
    assert _event(TRACK["Signed In"], vocab).type == "other"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("X=signed-up", "'X' = 'signed-up': signed-up is not in the vocabulary"),
        ("X=nps_response:score", "'X' = 'nps_response:score': only feature_used takes a :feature name"),
        ("X=feature_used:a b", "'X' = 'feature_used:a b': 'a b' is not a tracked feature name"),
    ],
)
def test_a_custom_entry_that_cannot_work_fails_at_load(entry: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(None, env={"PULSE_INPUT_SEGMENT_EVENTS": entry})
    assert str(raised.value).startswith(f"[input] segment_events: {message}")


def test_a_vocabulary_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="input format"):
        Vocabulary(input_format="xml")


# ---------------------------------------------------------------- the demo converter


def test_the_demo_stream_as_segment_decodes_to_the_same_events_and_codes() -> None:
    native, seen = Vocabulary(), set()
    for line in generate(GeneratorConfig(users=80, accounts=10, days=30, seed=5, malformed_rate=0.02)):
        converted = convert_line(line)
        expected, got = _decode(line, native), _decode(converted)
        if isinstance(expected, Event):
            assert got == expected, (line, converted)
            seen.add(expected.type)
        else:
            assert isinstance(got, Rejection), (line, converted)
            assert got.code == expected.code, (line, converted)
            assert got.raw.value == converted
            seen.add(expected.code.value)
    assert {"page_view", "feature_used", "plan_changed", "experiment_exposed", "invalid_json", "wrong_type"} <= seen


def test_pulse_erase_speaks_the_configured_format() -> None:
    event_id, native = erasure_event("usr_8812", T0)
    assert loads(native)["type"] == "erasure_requested"
    event_id, value = erasure_event("usr_8812", T0, SEGMENT)
    message = loads(value)
    assert (message["type"], message["event"], message["messageId"]) == ("track", "Erasure Requested", event_id)
    erasure = _event(value)
    assert (erasure.type, erasure.user_id, erasure.ts) == ("erasure_requested", "usr_8812", T0)
    unmapped = load_settings(
        None, env={"PULSE_INPUT_FORMAT": "segment", "PULSE_INPUT_SEGMENT_EVENTS": "Erasure Requested=other"}
    )
    with pytest.raises(PrivacyError, match="maps no event name to erasure_requested"):
        erasure_event("usr_8812", T0, unmapped.vocab())
