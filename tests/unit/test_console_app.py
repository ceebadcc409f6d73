"""The console without Redis: access rules, login checks, the 503 when Redis is down, config, charts and the
pure helpers of the reader. The Redis-backed pages are in tests/integration/test_console_api.py."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from engine import cli
from engine.config import ConfigError, ConsoleSettings, RedisSettings, Settings, load_settings, masked_config
from engine.console.app import ConsoleAccessError, _label, check_access, create_app, is_loopback
from engine.console.charts import HEIGHT, WIDTH, score_chart, y_of
from engine.console.store import (
    days_between,
    decode_field,
    hash_reply,
    next_step,
    scored,
    silence,
    top_reason,
    trend,
)
from engine.sinks import connect_redis
from schemas.codec import parse_ts
from tests.integration.conftest import free_port


def _settings(**console: str | int) -> Settings:
    return Settings(console=ConsoleSettings(**console))  # type: ignore[arg-type]


def _dead_redis() -> redis.Redis:
    """The console's own client (engine.sinks.connect_redis) for a port nobody listens on: every read fails
    at once with a connection error."""
    return connect_redis(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0"))


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.5", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("::", False), ("10.0.0.5", False), ("console.example.com", False), ("", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_console_beyond_loopback_needs_a_password_or_a_token() -> None:
    with pytest.raises(ConsoleAccessError, match=r"host '0.0.0.0' is not loopback"):
        check_access(ConsoleSettings(host="0.0.0.0"))
    with pytest.raises(ConsoleAccessError):
        create_app(_settings(host="0.0.0.0"), _dead_redis())
    check_access(ConsoleSettings(host="0.0.0.0", username="cs", password="pw"))
    check_access(ConsoleSettings(host="0.0.0.0", token="t0ken"))
    check_access(ConsoleSettings())


def test_the_cli_refuses_it_with_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("PULSE_CONSOLE_PASSWORD", "PULSE_CONSOLE_TOKEN", "PULSE_CONSOLE_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["console", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "not loopback" in err[0]


def test_on_loopback_no_login_is_asked_and_a_dead_redis_gives_503() -> None:
    client = TestClient(create_app(_settings(), _dead_redis()))
    api = client.get("/api/at-risk")
    assert api.status_code == 503
    assert api.json()["error"] == "redis_unreachable"
    page = client.get("/users/u1")
    assert page.status_code == 503
    assert "Redis unreachable" in page.text
    assert client.get("/healthz").text == "ok\n"


def test_with_a_login_every_route_but_healthz_needs_it() -> None:
    app = create_app(_settings(username="cs", password="s3cret", token="tok-123"), _dead_redis())
    client = TestClient(app)
    assert client.get("/healthz").status_code == 200
    for path in ("/", "/api/at-risk", "/users/u1", "/api/users/u1", "/accounts/a1", "/api/accounts/a1", "/nope"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Basic")
    bad = [
        _basic("cs", "wrong"),
        _basic("other", "s3cret"),
        _basic("cs", ""),
        {"Authorization": "Bearer tok-1234"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "tok-123"},
    ]
    for headers in bad:
        assert client.get("/api/at-risk", headers=headers).status_code == 401, headers
    # The right login passes the guard and reaches Redis, which is down here: 503, not 401.
    assert client.get("/api/at-risk", headers=_basic("cs", "s3cret")).status_code == 503
    assert client.get("/api/at-risk", headers={"Authorization": "Bearer tok-123"}).status_code == 503
    assert client.get("/api/at-risk", headers={"Authorization": "bearer tok-123"}).status_code == 503


def test_a_token_alone_or_a_password_alone_is_enough() -> None:
    token_only = TestClient(create_app(_settings(host="0.0.0.0", token="t"), _dead_redis()))
    assert token_only.get("/api/at-risk").status_code == 401
    assert token_only.get("/api/at-risk", headers=_basic("", "t")).status_code == 401  # no password configured
    assert token_only.get("/api/at-risk", headers={"Authorization": "Bearer t"}).status_code == 503
    password_only = TestClient(create_app(_settings(username="cs", password="pw"), _dead_redis()))
    assert password_only.get("/api/at-risk", headers={"Authorization": "Bearer pw"}).status_code == 401
    assert password_only.get("/api/at-risk", headers=_basic("cs", "pw")).status_code == 503


def test_responses_are_never_cached_and_allow_no_script() -> None:
    response = TestClient(create_app(_settings(), _dead_redis())).get("/healthz")
    assert response.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_bad_paging_parameters_are_a_400() -> None:
    client = TestClient(create_app(_settings(page_size=50), _dead_redis()))
    for query in ("offset=x", "offset=-1", "limit=0", "limit=1001"):
        response = client.get(f"/api/at-risk?{query}")
        assert response.status_code == 400, query
        assert response.json()["error"] == "bad_request"


def test_console_secrets_come_from_the_environment_or_files_never_the_toml(tmp_path: Path) -> None:
    config = tmp_path / "pulse.toml"
    config.write_text('[console]\nusername = "cs"\npassword = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="PULSE_CONSOLE_PASSWORD or password_file"):
        load_settings(config, env={})
    config.write_text('[console]\ntoken = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="PULSE_CONSOLE_TOKEN or token_file"):
        load_settings(config, env={})
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n", encoding="utf-8")
    config.write_text(
        f'[console]\nhost = "0.0.0.0"\nport = 9000\nusername = "cs"\ntoken_file = "{token_file}"\npage_size = 25\n',
        encoding="utf-8",
    )
    settings = load_settings(config, env={"PULSE_CONSOLE_PASSWORD": "env-pw"})
    console = settings.console
    assert (console.host, console.port, console.page_size) == ("0.0.0.0", 9000, 25)
    assert (console.password, console.token) == ("env-pw", "file-token")
    assert "env-pw" not in repr(settings)
    assert "file-token" not in repr(settings)
    assert masked_config(settings)["console"]["token"] == "***"
    with pytest.raises(ConfigError, match="needs PULSE_CONSOLE_PASSWORD"):
        load_settings(None, env={"PULSE_CONSOLE_USERNAME": "cs"})
    with pytest.raises(ConfigError, match="no username"):
        load_settings(None, env={"PULSE_CONSOLE_PASSWORD": "pw"})
    with pytest.raises(ConfigError, match="page_size"):
        load_settings(None, env={"PULSE_CONSOLE_PAGE_SIZE": "0"})


def test_the_trend_top_reason_and_days_silent_of_a_row() -> None:
    latest = {"score": 40.0, "previous_score": 45.5, "reasons": [{"component": "recency", "delta": -5.5}]}
    assert trend(latest) == "down"
    assert trend({"score": 50, "previous_score": 40}) == "up"
    assert trend({"score": 50, "previous_score": 50}) == "flat"
    assert trend({"score": 50, "previous_score": None}) is None  # the first score: nothing to compare
    assert trend(None) is None
    assert top_reason(latest) == "recency"
    assert top_reason({"reasons": []}) is None
    assert top_reason(None) is None
    assert days_between("2026-03-05T12:00:00.000Z", "2026-03-01T00:00:00.000Z") == 4.5
    assert days_between("2026-03-05T12:00:00.000Z", None) is None
    assert days_between("soon", "2026-03-01T00:00:00.000Z") is None


def test_days_silent_are_days_since_the_last_activity_to_now() -> None:
    now = parse_ts("2026-03-07T12:00:00.000Z")
    profile = {"as_of": "2026-03-05T12:00:00.000Z", "last_seen": "2026-03-05T00:00:00.000Z"}
    # last_active, not last_seen (an NPS answer, a ticket or a cancellation request is no activity), to now.
    assert silence({**profile, "last_active": "2026-02-25T12:00:00.000Z"}, now) == {
        "days_silent": 10.0,
        "never_active": False,
    }
    assert silence({**profile, "last_active": None}, now) == {"days_silent": None, "never_active": True}
    assert silence({**profile, "last_active": "2026-03-08T00:00:00.000Z"}, now)["days_silent"] == 0.0  # never < 0
    # A profile of an older version, without the field: last_seen, still to now (not to as_of).
    assert silence(profile, now) == {"days_silent": 2.5, "never_active": False}
    assert silence({**profile, "last_active": "soon"}, now) == {"days_silent": None, "never_active": False}
    assert silence({}, now) == {"days_silent": None, "never_active": False}
    assert decode_field("last_active", b"null") is None
    assert decode_field("last_active", b"2026-02-25T12:00:00.000Z") == "2026-02-25T12:00:00.000Z"


def test_internal_names_read_as_labels() -> None:
    assert _label("at_risk") == "at risk"
    assert _label("cancel_requested") == "cancel requested"
    assert _label("active_share") == "active share"
    assert _label("time_in_product") == "time in product"
    assert _label("signed_up") == "signed up"
    assert _label("churn_risk") == "churn risk"
    assert _label("nps") == "NPS"
    assert _label("paying") == "paying"
    assert _label(None) == _label("") == "\u2013"


def test_hash_fields_decode_as_the_sink_encoded_them() -> None:
    assert decode_field("user_id", b"123") == "123"  # text stays text, even when it looks like JSON
    assert decode_field("account_id", b"007") == "007"
    assert decode_field("account_id", b"null") is None
    assert decode_field("score", b"41.5") == 41.5
    assert decode_field("components", b'{"recency":0.5}') == {"recency": 0.5}
    assert decode_field("journey_stage", b"paying") == "paying"
    assert decode_field("nps", b"null") is None
    assert decode_field("anything", None) is None


def test_next_step_prefers_the_profile_then_the_newest_alert_with_one() -> None:
    step = {"action": "adopt_feature", "feature": "reports", "lift": 1.3, "scope": "global"}
    alerts: list[dict[str, Any]] = [
        {"alert_id": "lapse-2", "kind": "lapse", "next_step": None},
        {"alert_id": "churn-1", "kind": "churn_risk", "next_step": step},
    ]
    assert next_step({}, alerts) == {**step, "source": "alert", "alert_id": "churn-1", "alert_kind": "churn_risk"}
    assert next_step({"next_step": {"action": "call"}}, alerts) == {"action": "call", "source": "profile"}
    assert next_step({}, alerts[:1]) is None
    newer = {"alert_id": "lapse-3", "kind": "lapse", "next_step": {**step, "feature": "alerts"}}
    newest = next_step({}, [newer, *alerts])
    assert newest is not None
    assert (newest["alert_id"], newest["feature"]) == ("lapse-3", "alerts")  # the newest open alert's step


def test_the_score_chart() -> None:
    history = [
        {"ts_ms": 1000, "score": 80.0, "band": "healthy", "ts": "a"},
        {"ts_ms": 2000, "score": 50.0, "band": "watch", "ts": "b"},
        {"ts_ms": 5000, "score": 20.0, "band": "at_risk", "ts": "c"},
    ]
    chart = score_chart(history, 40.0, 70.0)
    assert chart is not None
    xs = [p.x for p in chart.points]
    assert xs == sorted(xs)
    assert xs[0] < xs[1] < xs[2]
    assert xs[1] - xs[0] < xs[2] - xs[1]  # time, not rank, on the x axis
    assert [p.y for p in chart.points] == [y_of(80), y_of(50), y_of(20)]
    assert y_of(100) < y_of(0) <= HEIGHT  # higher scores are drawn higher
    assert chart.healthy_y < chart.at_risk_y
    assert chart.polyline.count(",") == 3
    assert [label[2] for label in chart.x_labels] == ["a", "c"]  # the first and last dates under the axis
    assert chart.x_labels[0][0] == chart.left < chart.right == chart.x_labels[1][0] <= WIDTH
    assert [score for _, score in chart.y_ticks] == [0, 50, 100]
    days = score_chart(
        [
            {"ts_ms": 0, "score": 80.0, "band": "healthy", "ts": "2026-03-01T10:00:00.000Z"},
            {"ts_ms": 3 * 86_400_000, "score": 60.0, "band": "watch", "ts": "2026-03-04T10:00:00.000Z"},
        ],
        40.0,
        70.0,
    )
    assert days is not None
    assert [label[2] for label in days.x_labels] == ["2026-03-01", "2026-03-04"]
    single = score_chart(history[:1], 40.0, 70.0)
    assert single is not None
    assert len(single.points) == 1
    assert score_chart([], 40.0, 70.0) is None


def test_raw_replies_of_either_protocol_decode_alike() -> None:
    resp3 = [[b'{"score": 40}', 1000.0], [b'{"score": 30}', 2000.0]]
    resp2 = [b'{"score": 40}', b"1000", b'{"score": 30}', b"2000"]
    assert scored(resp3) == scored(resp2) == [(b'{"score": 40}', 1000.0), (b'{"score": 30}', 2000.0)]
    assert scored([]) == []
    assert hash_reply({b"score": b"41.5", b"band": b"watch"}) == hash_reply([b"score", b"41.5", b"band", b"watch"])
    assert hash_reply({}) == hash_reply([]) == {}
