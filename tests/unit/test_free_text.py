"""Free text never leaves: reasons, plans, features, ticket ids and unknown types are normalised at decode.

Expected values are worked out by hand from the rules in the README; ticket digests with coreutils
(`printf '%s' F0000123 | b2sum -l 64`), not with the code under test.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import schemas.events
from engine.config import ConfigError, load_settings
from engine.flow import FlowConfig, _decoder
from operators.shard import ShardConfig
from schemas.codec import RawBatch, decode, decode_batch
from schemas.events import Category, Event, Vocabulary
from tests.factories import ORIGIN, VOCAB, event_bytes

OPEN_F0000123 = "t-100aa811c0e4e1fa"
DIGEST_12345 = "t-74584b93e0c0f6a1"
DIGEST_FREE_TEXT = "t-59cf5c9585be6dff"  # of "Carl Smith carl@x.com broken login"


def _decode(vocab: Vocabulary = VOCAB, **fields: Any) -> tuple[Event, dict[str, int]]:
    untracked: Counter[str] = Counter()
    event = decode(event_bytes(**fields), ORIGIN, vocab, untracked=untracked)
    assert isinstance(event, Event), event
    return event, dict(untracked)


# ---------------------------------------------------------------- properties: reason, plan, ticket_id

PROPERTY_CASES = [
    # reason: one of the codes is kept, anything else reads "other" and is counted; the event stays valid
    pytest.param(
        "cancellation_requested", {"reason": "too_expensive"}, {"reason": "too_expensive"}, {}, id="reason-code"
    ),
    pytest.param(
        "cancellation_requested",
        {"reason": "missing_features"},
        {"reason": "missing_features"},
        {},
        id="reason-code-missing-features",
    ),
    pytest.param("cancellation_requested", {"reason": "other"}, {"reason": "other"}, {}, id="reason-other-is-a-code"),
    pytest.param(
        "subscription_cancelled",
        {"reason": "Carl Smith carl@x.com said too pricey", "regrettable": True},
        {"reason": "other", "regrettable": True},
        {"reason": 1},
        id="reason-free-text",
    ),
    pytest.param(
        "cancellation_requested", {"reason": "Too_Expensive"}, {"reason": "other"}, {"reason": 1}, id="reason-case"
    ),
    pytest.param(
        "cancellation_requested", {"reason": "missing_feature"}, {"reason": "other"}, {"reason": 1}, id="reason-near"
    ),
    pytest.param("cancellation_requested", {"reason": 3}, {"reason": "other"}, {"reason": 1}, id="reason-number"),
    pytest.param("seat_removed", {"reason": "inactive"}, {"reason": "other"}, {"reason": 1}, id="reason-on-any-type"),
    # plan: a name matching the tracking plan is kept
    pytest.param("subscribed", {"plan": "team", "mrr": 199}, {"plan": "team", "mrr": 199}, {}, id="plan-tracked"),
    pytest.param(
        "plan_changed",
        {"plan": "Enterprise-annual_v2.1:eu", "direction": "up"},
        {"plan": "Enterprise-annual_v2.1:eu", "direction": "up"},
        {},
        id="plan-every-allowed-character",
    ),
    pytest.param("subscribed", {"plan": "a" * 64}, {"plan": "a" * 64}, {}, id="plan-64-chars"),
    pytest.param("subscribed", {"plan": "a" * 65}, {"plan": "other"}, {"plan": 1}, id="plan-65-chars"),
    pytest.param("subscribed", {"plan": "carl@x.com"}, {"plan": "other"}, {"plan": 1}, id="plan-with-at"),
    pytest.param("subscribed", {"plan": "Carl's plan"}, {"plan": "other"}, {"plan": 1}, id="plan-with-space"),
    pytest.param("subscribed", {"plan": "team\tpro"}, {"plan": "other"}, {"plan": 1}, id="plan-with-tab"),
    pytest.param("subscribed", {"plan": "team\n"}, {"plan": "other"}, {"plan": 1}, id="plan-trailing-newline"),
    pytest.param("subscribed", {"plan": "tier=gold"}, {"plan": "other"}, {"plan": 1}, id="plan-with-equals"),
    pytest.param("subscribed", {"plan": "/pricing/team"}, {"plan": "other"}, {"plan": 1}, id="plan-path"),
    pytest.param("subscribed", {"plan": "_team"}, {"plan": "other"}, {"plan": 1}, id="plan-leading-underscore"),
    pytest.param("subscribed", {"plan": "équipe"}, {"plan": "other"}, {"plan": 1}, id="plan-non-ascii"),
    pytest.param("subscribed", {"plan": ""}, {"plan": "other"}, {"plan": 1}, id="plan-empty"),
    pytest.param("subscribed", {"plan": 3}, {"plan": "other"}, {"plan": 1}, id="plan-number"),
    # ticket_id: a digest, the same for the open and the resolve; no text is kept
    pytest.param(
        "support_ticket_opened",
        {"ticket_id": "F0000123", "severity": "high", "subject": "login broken"},
        {"ticket_id": OPEN_F0000123, "severity": "high"},
        {},
        id="ticket-opened",
    ),
    pytest.param(
        "support_ticket_resolved", {"ticket_id": "F0000123"}, {"ticket_id": OPEN_F0000123}, {}, id="ticket-resolved"
    ),
    pytest.param(
        "support_ticket_opened", {"ticket_id": 12345}, {"ticket_id": DIGEST_12345}, {}, id="ticket-int-as-text"
    ),
    pytest.param(
        "support_ticket_resolved", {"ticket_id": "12345"}, {"ticket_id": DIGEST_12345}, {}, id="ticket-text-as-int"
    ),
    pytest.param(
        "support_ticket_opened",
        {"ticket_id": "Carl Smith carl@x.com broken login"},
        {"ticket_id": DIGEST_FREE_TEXT},
        {},
        id="ticket-free-text",
    ),
    # several at once, each counted under its own field
    pytest.param(
        "cancellation_requested",
        {"reason": "hates it", "plan": "my plan", "ticket_id": "F0000123"},
        {"reason": "other", "plan": "other", "ticket_id": OPEN_F0000123},
        {"reason": 1, "plan": 1},
        id="all-three",
    ),
]


@pytest.mark.parametrize(("event_type", "properties", "kept", "counted"), PROPERTY_CASES)
def test_free_text_properties_are_normalised(
    event_type: str, properties: dict[str, Any], kept: dict[str, Any], counted: dict[str, int]
) -> None:
    event, untracked = _decode(type=event_type, properties=properties)
    assert event.type == event_type
    assert event.properties == kept
    assert untracked == counted


# ---------------------------------------------------------------- feature names

FEATURE_CASES = [
    pytest.param("reports", "reports", {}, id="tracked"),
    pytest.param("billing.export:v2", "billing.export:v2", {}, id="dotted-and-namespaced"),
    pytest.param("API_keys-2", "API_keys-2", {}, id="mixed-case-digits"),
    pytest.param("search:q=someone@mail.com", "other", {"feature": 1}, id="query-with-email"),
    pytest.param("someone@mail.com", "other", {"feature": 1}, id="email"),
    pytest.param("export csv", "other", {"feature": 1}, id="space"),
    pytest.param("a=b", "other", {"feature": 1}, id="equals"),
    pytest.param("-reports", "other", {"feature": 1}, id="leading-dash"),
    pytest.param("https://x.com/u/carl", "other", {"feature": 1}, id="url"),
    pytest.param("r" * 65, "other", {"feature": 1}, id="65-chars"),
    pytest.param("", "other", {"feature": 1}, id="empty"),
    pytest.param(None, None, {}, id="no-feature"),
]


@pytest.mark.parametrize(("feature", "kept", "counted"), FEATURE_CASES)
def test_feature_names_follow_the_tracking_plan(feature: str | None, kept: str | None, counted: dict[str, int]) -> None:
    event, untracked = _decode(type="feature_used", feature=feature)
    assert event.feature == kept
    assert event.category is Category.ACTIVITY
    assert untracked == counted


def test_a_tracked_feature_stays_tracked_the_second_time() -> None:
    # The second decode takes the cached path rather than the pattern; the answer must not change.
    vocab = Vocabulary()
    first = _decode(vocab, type="feature_used", feature="reports")
    second = _decode(vocab, type="feature_used", feature="reports")
    assert first == second
    assert (second[0].feature, second[1]) == ("reports", {})
    assert _decode(vocab, type="feature_used", feature="bad name")[0].feature == "other"
    assert _decode(vocab, type="feature_used", feature="bad name")[0].feature == "other"


def test_remembered_feature_names_are_bounded() -> None:
    vocab = Vocabulary()
    names = [f"f{n}" for n in range(schemas.events.FEATURE_CACHE_SIZE + 5)]
    assert all(_decode(vocab, type="feature_used", feature=n)[0].feature == n for n in names)
    assert schemas.events._matches.cache_info().currsize <= schemas.events.FEATURE_CACHE_SIZE


def test_feature_on_another_type_is_dropped_not_counted() -> None:
    event, untracked = _decode(type="page_view", feature="someone@mail.com")
    assert event.feature is None
    assert untracked == {}


ALLOW_LIST = Vocabulary(features=frozenset({"reports", "alerts"}), plans=frozenset({"team", "business"}))

ALLOW_LIST_CASES = [
    pytest.param({"type": "feature_used", "feature": "reports"}, "reports", None, {}, id="feature-listed"),
    pytest.param(
        {"type": "feature_used", "feature": "dashboards"}, "other", None, {"feature": 1}, id="feature-unlisted"
    ),
    pytest.param({"type": "feature_used", "feature": "a b"}, "other", None, {"feature": 1}, id="feature-bad-name"),
    pytest.param({"type": "subscribed", "properties": {"plan": "team"}}, None, {"plan": "team"}, {}, id="plan-listed"),
    pytest.param(
        {"type": "subscribed", "properties": {"plan": "starter"}}, None, {"plan": "other"}, {"plan": 1}, id="unlisted"
    ),
]


@pytest.mark.parametrize(("fields", "feature", "properties", "counted"), ALLOW_LIST_CASES)
def test_allow_lists_narrow_the_tracking_plan(
    fields: dict[str, Any], feature: str | None, properties: dict[str, Any] | None, counted: dict[str, int]
) -> None:
    event, untracked = _decode(ALLOW_LIST, **fields)
    assert event.feature == feature
    assert event.properties == properties
    assert untracked == counted


def test_a_configured_pattern_replaces_the_default() -> None:
    vocab = Vocabulary(name_pattern=r"[a-z]+")
    assert _decode(vocab, type="feature_used", feature="reports")[0].feature == "reports"
    assert _decode(vocab, type="feature_used", feature="reports2")[0].feature == "other"  # whole name must match
    assert _decode(vocab, type="subscribed", properties={"plan": "Team"})[0].properties == {"plan": "other"}


def test_configured_reason_codes_replace_the_defaults() -> None:
    vocab = Vocabulary(reasons=frozenset({"price"}))
    assert _decode(vocab, type="cancellation_requested", properties={"reason": "price"})[0].properties == {
        "reason": "price"
    }
    assert _decode(vocab, type="cancellation_requested", properties={"reason": "too_expensive"})[1] == {"reason": 1}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"name_pattern": "([a-z"}, "name_pattern: not a regular expression", id="bad-regex"),
        pytest.param({"features": frozenset({"ok", "a b"})}, "features: 'a b' not matched", id="bad-feature"),
        pytest.param({"plans": frozenset({"x@y"})}, "plans: 'x@y' not matched", id="bad-plan"),
    ],
)
def test_an_invalid_tracking_plan_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Vocabulary(**kwargs)


# ---------------------------------------------------------------- event types

TYPE_CASES = [
    pytest.param("webhook_delivered", "other", Category.OTHER, {"type": 1}, id="unknown"),
    pytest.param("experiment_exposed", "experiment_exposed", Category.OTHER, {}, id="known-counted-as-other"),
    pytest.param("Page_View", "other", Category.OTHER, {"type": 1}, id="wrong-case"),
    pytest.param("carl@x.com visited pricing", "other", Category.OTHER, {"type": 1}, id="free-text"),
    pytest.param("other", "other", Category.OTHER, {"type": 1}, id="other-itself"),
    pytest.param("page_view", "page_view", Category.ACTIVITY, {}, id="activity"),
    pytest.param("seat_added", "seat_added", Category.TEAM, {}, id="team"),
    pytest.param("erasure_requested", "erasure_requested", Category.PRIVACY, {}, id="privacy"),
]


@pytest.mark.parametrize(("event_type", "kept", "category", "counted"), TYPE_CASES)
def test_unknown_types_read_other(event_type: str, kept: str, category: Category, counted: dict[str, int]) -> None:
    event, untracked = _decode(type=event_type, properties={"plan": "team"})
    assert event.type == kept
    assert event.category is category
    assert event.properties == {"plan": "team"}
    assert untracked == counted


def test_a_page_view_without_properties_is_unchanged() -> None:
    event, untracked = _decode(type="page_view", feature=None, properties=None)
    assert (event.type, event.feature, event.properties, event.category) == ("page_view", None, None, Category.ACTIVITY)
    assert untracked == {}


def test_decode_without_a_counter_still_normalises() -> None:
    event = decode(event_bytes(type="made_up", properties={"reason": "x y"}), ORIGIN, VOCAB)
    assert isinstance(event, Event)
    assert (event.type, event.properties) == ("other", {"reason": "other"})


def test_decode_batch_adds_up_untracked_names() -> None:
    values = [
        event_bytes(event_id="a", type="made_up"),
        event_bytes(event_id="b", type="feature_used", feature="x y"),
        event_bytes(event_id="c", type="feature_used", feature="reports"),
        b"not json",
        event_bytes(event_id="d", type="subscription_cancelled", properties={"reason": "meh", "plan": "a@b"}),
        event_bytes(event_id="e", type="also_made_up"),
    ]
    untracked: dict[str, int] = {"type": 5}  # the caller's running total is added to
    results = list(decode_batch(RawBatch("t", 0, values, list(range(6))), VOCAB, untracked))
    assert len(results) == 6
    assert untracked == {"type": 7, "feature": 1, "reason": 1, "plan": 1}


def _untracked_metric(field: str) -> float:
    return REGISTRY.get_sample_value("pulse_untracked_names_total", {"field": field}) or 0.0


def test_the_flow_decoder_counts_untracked_names_in_prometheus() -> None:
    fields = ("feature", "plan", "reason", "type")
    before = {f: _untracked_metric(f) for f in fields}
    decode_step = _decoder(FlowConfig(Vocabulary(), 2, ShardConfig(), state_dir=None))
    values = [
        event_bytes(event_id="a", type="made_up"),
        event_bytes(event_id="b", type="made_up_too"),
        event_bytes(event_id="c", type="feature_used", feature="search:q=x"),
        event_bytes(event_id="d", type="subscribed", properties={"plan": "team"}),
    ]
    out = decode_step(RawBatch("t", 0, values, [1, 2, 3, 4]))
    events = [e for _, items in out for e in items]
    assert sorted(e.type for e in events) == ["feature_used", "other", "other", "subscribed"]
    assert {f: _untracked_metric(f) - before[f] for f in fields} == {"feature": 1, "plan": 0, "reason": 0, "type": 2}


# ---------------------------------------------------------------- configuration


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pulse.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_default_vocabulary_settings() -> None:
    vocab = load_settings(None, env={}).vocab()
    assert vocab.reasons == {
        "too_expensive",
        "missing_features",
        "not_using",
        "switched_competitor",
        "technical_issues",
        "support_experience",
        "business_closed",
        "other",
    }
    assert vocab.name_pattern == r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
    assert (vocab.features, vocab.plans) == (frozenset(), frozenset())
    assert vocab == Vocabulary()


def test_vocabulary_settings_from_toml(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        '[vocabulary]\nreasons = ["price", "other"]\nname_pattern = "^[a-z_]{1,20}$"\n'
        'features = ["reports", "alerts"]\nplans = ["team"]\n',
    )
    vocab = load_settings(path, env={}).vocab()
    assert vocab.reasons == {"price", "other"}
    assert vocab.name_pattern == "^[a-z_]{1,20}$"
    assert vocab.features == {"reports", "alerts"}
    assert vocab.plans == {"team"}
    assert _decode(vocab, type="cancellation_requested", properties={"reason": "price"})[0].properties == {
        "reason": "price"
    }
    assert _decode(vocab, type="feature_used", feature="dashboards")[0].feature == "other"


def test_vocabulary_settings_from_the_environment(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[vocabulary]\nreasons = ["price"]\n')
    env = {
        "PULSE_VOCABULARY_REASONS": "price, bug ,other",
        "PULSE_VOCABULARY_NAME_PATTERN": "^[a-z]{1,8}$",
        "PULSE_VOCABULARY_FEATURES": "reports,alerts",
        "PULSE_VOCABULARY_PLANS": "team",
    }
    settings = load_settings(path, env=env)
    assert settings.vocabulary.reasons == ("price", "bug", "other")
    assert settings.vocabulary.features == ("reports", "alerts")
    vocab = settings.vocab()
    assert (vocab.reasons, vocab.name_pattern, vocab.plans) == (
        frozenset({"price", "bug", "other"}),
        "^[a-z]{1,8}$",
        frozenset({"team"}),
    )


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        pytest.param(
            '[vocabulary]\nname_pattern = "([a-z"\n',
            {},
            "[vocabulary] name_pattern: not a regular expression: unterminated character set at position 1",
            id="bad-regex-toml",
        ),
        pytest.param(
            "",
            {"PULSE_VOCABULARY_NAME_PATTERN": "a{2,1}"},
            "[vocabulary] name_pattern: not a regular expression: min repeat greater than max repeat at position 2",
            id="bad-regex-env",
        ),
        pytest.param(
            '[vocabulary]\nfeatures = ["reports", "export csv"]\n',
            {},
            "[vocabulary] features: 'export csv' not matched by name_pattern",
            id="allow-list-outside-the-pattern",
        ),
        pytest.param(
            '[vocabulary]\nreasons = "price"\n',
            {},
            "[vocabulary] reasons: expected tuple, got 'price'",
            id="reasons-not-a-list",
        ),
    ],
)
def test_bad_vocabulary_settings_fail_fast(tmp_path: Path, toml: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_toml(tmp_path, toml), env=env)
    assert str(info.value) == message
    assert "\n" not in str(info.value)
