"""`pulse console` against the real Redis: the data is written with the live sink's own writer
(engine.serving.Writer through engine.sinks.ProfileStore) under a prefix of its own, then read back
through the pages and the JSON API."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import redis
from starlette.testclient import TestClient

from engine.config import RedisSettings, Settings, load_settings
from engine.console.app import ConsoleAccessError, create_app
from engine.serving import Writer
from engine.sinks import ProfileStore, WriteUnit, redis_fields
from schemas.codec import parse_ts
from schemas.outputs import Entity
from tests.integration.conftest import REDIS_URL, ROOT, stop_process, wait_for

pytestmark = pytest.mark.integration

AS_OF = "2026-03-05T12:00:00.000Z"
# The console's wall clock in these tests: two days after the profiles' own clock (`as_of`).
NOW = parse_ts("2026-03-07T12:00:00.000Z") / 1000
XSS = "<script>alert(1)</script>"
STEP = {"action": "adopt_feature", "feature": "integrations", "lift": 1.39, "scope": "global"}


def _user(
    user_id: str, account_id: str | None, score: float, band: str, last_seen: str, **extra: Any
) -> dict[str, Any]:
    """A profile shaped like a `pulse demo` one (README "Profiles"); contact data never exists in profiles."""
    return {
        "user_id": user_id,
        "account_id": account_id,
        "score": score,
        "band": band,
        "components": {
            "recency": 0.2,
            "frequency": 0.4,
            "adoption": 0.33,
            "sentiment": 0.6,
            "support": 1.0,
            "commercial": 1.0,
            "time_in_product": 0.1,
        },
        "engagement": "lapsed" if band == "at_risk" else "active",
        "commercial": "paying",
        "first_seen": "2026-01-05T11:22:08.559Z",
        "last_seen": last_seen,
        "as_of": AS_OF,
        "active_days_7": 0,
        "active_days_28": 3,
        "active_days_total": 9,
        "counts": {"activity": 40, "commercial": 1, "other": 0, "privacy": 0, "sentiment": 1, "support": 0, "team": 0},
        "features": {"dashboards": 3, "reports": 1, "mobile": 2},
        "expected_gap_days": 3.5,
        "p_alive": None,
        "nps": 6,
        "nps_segment": "detractor",
        "open_tickets": 1,
        "journey_stage": "paying",
        "journey_stage_since": "2026-01-06T10:08:15.999Z",
        "sessions_7": 2,
        "sessions_28": 9,
        "minutes_7": 31.5,
        "minutes_28": 140.25,
        "median_session_minutes": 12.5,
        **extra,
    }


def _change(ts: str, score: float, previous: float | None, band: str, reasons: list[tuple[str, float]]) -> bytes:
    """A score_changed record as the sink receives it (the history keeps a subset of it)."""
    return orjson.dumps(
        {
            "kind": "score_changed",
            "ts": ts,
            "score": score,
            "previous_score": previous,
            "band": band,
            "previous_band": None if previous is None else band,
            "reasons": [{"component": c, "delta": d, "contribution": d} for c, d in reasons],
            "cause_event_id": f"e-{ts}",
            "components": {},
        }
    )


def _alert(alert_id: str, kind: str, user_id: str, account_id: str, status: str = "firing", **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "alert_id": alert_id,
            "kind": kind,
            "status": status,
            "user_id": user_id,
            "account_id": account_id,
            "ts": "2026-03-04T00:00:00.000Z",
            "last_seen": "2026-03-01T00:00:00.000Z",
            "score": 20.0,
            "band": "at_risk",
            "p_alive": None,
            "silent_days": 3.0,
            **extra,
        }
    )


def _account(account_id: str, score: float, band: str, users: int, active: int, **extra: Any) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "as_of": AS_OF,
        "score": score,
        "band": band,
        "components": {"user_health": 0.5, "active_share": 0.4, "not_at_risk": 0.5, "team": 1.0, "commercial": 1.0},
        "users": users,
        "active_users_7d": active,
        "at_risk_users": 2,
        "seats_added_28d": 3,
        "seats_removed_28d": 1,
        "admin_changes_28d": 0,
        "commercial": "paying",
        "minutes_per_active_member_28d": 81.68,
        "nps": -16.7,
        "nps_responses": 4,
        **extra,
    }


def _history(writer: Writer, entity: Entity, key: str, record: bytes) -> WriteUnit:
    return writer.history(entity, key, parse_ts(orjson.loads(record)["ts"]), record)


def populate(prefix: str) -> None:
    """Two accounts with members in every band, a user without an account, one whose id needs escaping and
    one erased after its account last wrote its members."""
    writer = Writer(prefix)
    user, account = Entity.USER, Entity.ACCOUNT
    units: list[WriteUnit] = [
        writer.profile(
            user, "u-risk1", redis_fields(_user("u-risk1", "a-acme", 20.0, "at_risk", "2026-03-01T00:00:00.000Z"))
        ),
        _history(
            writer, user, "u-risk1", _change("2026-03-02T00:00:00.000Z", 25.0, 30.0, "at_risk", [("frequency", -5.0)])
        ),
        _history(
            writer,
            user,
            "u-risk1",
            _change("2026-03-04T00:00:00.000Z", 20.0, 25.0, "at_risk", [("recency", -4.0), ("frequency", -1.0)]),
        ),
        writer.alert(_alert("lapse-1", "lapse", "u-risk1", "a-acme", next_step=None)),
        writer.alert(_alert("churn-1", "churn_risk", "u-risk1", "a-acme", next_step=STEP)),
        writer.alert(_alert("lapse-0", "lapse", "u-risk1", "a-acme")),
        writer.alert(_alert("lapse-0", "lapse", "u-risk1", "a-acme", status="resolved")),
        # Last active on 02-25; the NPS answer of 03-05 is their latest event, but no activity.
        writer.profile(
            user,
            "u-risk2",
            redis_fields(
                _user(
                    "u-risk2",
                    "a-acme",
                    35.0,
                    "at_risk",
                    "2026-03-05T00:00:00.000Z",
                    last_active="2026-02-25T12:00:00.000Z",
                    signals=["recency", "frequency", "adoption", "sentiment", "time_in_product"],
                    commercial="cancel_requested",
                )
            ),
        ),
        # A churn-risk alert as `pulse run` writes it before any drivers report qualifies: next_step null.
        writer.alert(_alert("churn-2", "churn_risk", "u-risk2", "a-acme", next_step=None)),
        _history(
            writer, user, "u-risk2", _change("2026-03-05T00:00:00.000Z", 35.0, 30.0, "at_risk", [("adoption", 5.0)])
        ),
        writer.profile(
            user, "u-watch", redis_fields(_user("u-watch", "a-acme", 50.0, "watch", "2026-03-05T06:00:00.000Z"))
        ),
        _history(writer, user, "u-watch", _change("2026-03-05T06:00:00.000Z", 50.0, 50.0, "watch", [("support", 0.0)])),
        # Last active after the console's clock (a producer's clock ahead of it): 0 days, never negative.
        writer.profile(
            user,
            "u-healthy",
            redis_fields(_user("u-healthy", "a-acme", 80.0, "healthy", AS_OF, last_active="2026-03-08T00:00:00.000Z")),
        ),
        writer.profile(user, "u-erased", redis_fields(_user("u-erased", "a-acme", 5.0, "at_risk", AS_OF))),
        # Never active (signed up, answered NPS): last_active null.
        writer.profile(
            user, "u-other", redis_fields(_user("u-other", "a-other", 45.0, "watch", AS_OF, last_active=None))
        ),
        writer.profile(
            user, "u-solo", redis_fields(_user("u-solo", None, 10.0, "at_risk", "2026-02-25T12:00:00.000Z"))
        ),
        writer.profile(user, XSS, redis_fields(_user(XSS, "a-other", 48.0, "watch", AS_OF))),
        writer.profile(
            account,
            "a-acme",
            redis_fields(_account("a-acme", 30.0, "at_risk", 5, 2)),
            members=("u-risk1", "u-risk2", "u-watch", "u-healthy", "u-erased"),
        ),
        _history(
            writer,
            account,
            "a-acme",
            orjson.dumps(
                {
                    "kind": "account_health_changed",
                    "ts": "2026-03-01T00:00:00.000Z",
                    "score": 45.0,
                    "previous_score": 60.0,
                    "band": "watch",
                    "previous_band": "healthy",
                    "reasons": [{"component": "active_share", "delta": -15.0}],
                }
            ),
        ),
        _history(
            writer,
            account,
            "a-acme",
            orjson.dumps(
                {
                    "kind": "account_health_changed",
                    "ts": "2026-03-04T00:00:00.000Z",
                    "score": 30.0,
                    "previous_score": 45.0,
                    "band": "at_risk",
                    "previous_band": "watch",
                    "reasons": [
                        {"component": "not_at_risk", "delta": -9.0},
                        {"component": "user_health", "delta": -6.0},
                    ],
                }
            ),
        ),
        writer.profile(
            account, "a-other", redis_fields(_account("a-other", 60.0, "watch", 2, 1)), members=("u-other", XSS)
        ),
        writer.profile(account, "a-fine", redis_fields(_account("a-fine", 90.0, "healthy", 1, 1)), members=()),
        # Erased after a-acme last wrote its members: no hash, history or alerts, in no band set.
        writer.profile(user, "u-erased", None),
    ]
    store = ProfileStore(RedisSettings(url=REDIS_URL, key_prefix=prefix))
    try:
        store.write(units)
    finally:
        store.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    run = f"tc{uuid.uuid4().hex[:10]}"
    populate(run)
    yield run
    keys = list(redis_client.scan_iter(f"{run}:*"))
    if keys:
        redis_client.delete(*keys)


def _settings(prefix: str, **env: str) -> Settings:
    return load_settings(None, env={"PULSE_REDIS_URL": REDIS_URL, "PULSE_REDIS_KEY_PREFIX": prefix, **env})


@pytest.fixture
def client(prefix: str) -> TestClient:
    return TestClient(create_app(_settings(prefix), now=lambda: NOW))


def _ids(rows: list[dict[str, Any]], key: str = "user_id") -> list[str]:
    return [row[key] for row in rows]


def test_at_risk_lists_at_risk_then_watch_each_by_score(client: TestClient) -> None:
    data = client.get("/api/at-risk").json()
    assert _ids(data["users"]["rows"]) == ["u-solo", "u-risk1", "u-risk2", "u-other", XSS, "u-watch"]
    assert data["users"]["total"] == 6
    assert _ids(data["accounts"]["rows"], "account_id") == ["a-acme", "a-other"]
    assert data["accounts"]["total"] == 2
    assert "u-erased" not in _ids(data["users"]["rows"])
    assert "u-healthy" not in _ids(data["users"]["rows"])


def test_trend_top_reason_days_silent_and_open_alerts(client: TestClient) -> None:
    rows = {row["user_id"]: row for row in client.get("/api/at-risk").json()["users"]["rows"]}
    risk1 = rows["u-risk1"]
    assert (risk1["score"], risk1["band"], risk1["account_id"]) == (20.0, "at_risk", "a-acme")
    assert (risk1["trend"], risk1["previous_score"], risk1["top_reason"]) == ("down", 25.0, "recency")
    # No last_active field (a profile of an older version): since last_seen 03-01 00:00, to now 03-07 12:00.
    assert (risk1["days_silent"], risk1["never_active"], risk1["last_active"]) == (6.5, False, None)
    assert risk1["open_alerts"] == 2  # lapse-0 was resolved
    assert (rows["u-risk2"]["trend"], rows["u-risk2"]["top_reason"]) == ("up", "adoption")
    assert rows["u-watch"]["trend"] == "flat"
    assert rows["u-watch"]["days_silent"] == 2.2
    assert (rows["u-other"]["trend"], rows["u-other"]["top_reason"], rows["u-other"]["open_alerts"]) == (None, None, 0)
    assert rows["u-solo"]["account_id"] is None
    assert rows["u-solo"]["days_silent"] == 10.0
    acme = client.get("/api/at-risk").json()["accounts"]["rows"][0]
    assert (acme["trend"], acme["top_reason"], acme["users"], acme["active_users_7d"]) == ("down", "not_at_risk", 5, 2)


def _row(html: str, user_id: str) -> str:
    """The HTML of one user's row of a table."""
    start = html.index(f'data-user-id="{user_id}"')
    return html[start : html.index("</tr>", start)]


def test_days_silent_count_from_the_last_activity_to_now(client: TestClient, prefix: str) -> None:
    rows = {row["user_id"]: row for row in client.get("/api/at-risk").json()["users"]["rows"]}
    risk2 = rows["u-risk2"]  # last active 02-25 12:00; their NPS answer of 03-05 (last_seen) is no activity
    assert (risk2["days_silent"], risk2["never_active"], risk2["last_active"]) == (
        10.0,
        False,
        "2026-02-25T12:00:00.000Z",
    )
    other = rows["u-other"]  # never active: no number, and no fall-back to last_seen
    assert (other["days_silent"], other["never_active"], other["last_active"]) == (None, True, None)
    members = {m["user_id"]: m for m in client.get("/api/accounts/a-acme").json()["members"]}
    assert members["u-risk2"]["days_silent"] == 10.0
    assert members["u-healthy"]["days_silent"] == 0.0  # last active after "now": never negative
    user = client.get("/api/users/u-risk2").json()
    assert (user["days_silent"], user["never_active"]) == (10.0, False)
    assert client.get("/api/users/u-other").json()["days_silent"] is None
    # The same data a day later: the count follows the wall clock, not the profile's as_of.
    later = TestClient(create_app(_settings(prefix), now=lambda: NOW + 86_400))
    assert later.get("/api/users/u-risk2").json()["days_silent"] == 11.0
    home = client.get("/").text
    assert 'data-testid="days-silent"><span class="muted">never active<' in _row(home, "u-other")
    assert 'data-testid="days-silent">10.0<' in _row(home, "u-risk2")
    account = client.get("/accounts/a-acme").text
    assert 'data-testid="days-silent">0.0<' in _row(account, "u-healthy")
    user_page = client.get("/users/u-other").text
    assert 'data-testid="days-silent"><span class="muted" title="never active">never active</span>' in user_page


def test_paging_walks_on_from_at_risk_into_watch(client: TestClient) -> None:
    page = client.get("/api/at-risk?limit=2&offset=2").json()
    assert _ids(page["users"]["rows"]) == ["u-risk2", "u-other"]
    assert (page["offset"], page["limit"], page["users"]["total"]) == (2, 2, 6)
    assert _ids(page["accounts"]["rows"], "account_id") == []
    assert _ids(client.get("/api/at-risk?limit=2&offset=4").json()["users"]["rows"]) == [XSS, "u-watch"]
    assert client.get("/api/at-risk?offset=6").json()["users"]["rows"] == []
    last = client.get("/api/at-risk?limit=2&offset=4").json()
    assert last["users"]["total"] == 6


def test_the_account_filter(client: TestClient) -> None:
    data = client.get("/api/at-risk?account=a-acme").json()
    assert data["account"] == "a-acme"
    assert _ids(data["users"]["rows"]) == ["u-risk1", "u-risk2", "u-watch"]  # not u-healthy, not u-erased
    assert _ids(data["accounts"]["rows"], "account_id") == ["a-acme"]
    assert data["users"]["rows"][0]["top_reason"] == "recency"
    assert _ids(client.get("/api/at-risk?account=a-acme&limit=1&offset=1").json()["users"]["rows"]) == ["u-risk2"]
    other = client.get("/api/at-risk?account=a-other").json()
    assert _ids(other["users"]["rows"]) == ["u-other", XSS]
    assert client.get("/api/at-risk?account=a-fine").json()["users"]["rows"] == []
    assert client.get("/api/at-risk?account=a-fine").json()["accounts"]["rows"] == []  # healthy: not at risk
    missing = client.get("/api/at-risk?account=a-none")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"


def test_the_account_page_data(client: TestClient) -> None:
    data = client.get("/api/accounts/a-acme").json()
    profile = data["profile"]
    assert (profile["score"], profile["band"], profile["commercial"], profile["nps"]) == (
        30.0,
        "at_risk",
        "paying",
        -16.7,
    )
    assert (profile["seats_added_28d"], profile["seats_removed_28d"]) == (3, 1)
    assert data["active_share"] == 0.4
    assert [m["user_id"] for m in data["members"]] == ["u-risk1", "u-risk2", "u-watch", "u-healthy"]
    assert data["members_total"] == 4  # the erased member is still in the set, but has no profile
    assert [m["band"] for m in data["members"]] == ["at_risk", "at_risk", "watch", "healthy"]
    assert data["members"][0]["open_alerts"] == 2
    history = data["history"]
    assert [h["score"] for h in history] == [45.0, 30.0]
    assert history[-1]["reasons"][0]["component"] == "not_at_risk"
    assert client.get("/api/accounts/a-none").status_code == 404


def test_the_user_page_data(client: TestClient) -> None:
    data = client.get("/api/users/u-risk1").json()
    profile = data["profile"]
    assert (profile["score"], profile["band"], profile["account_id"]) == (20.0, "at_risk", "a-acme")
    assert (profile["engagement"], profile["commercial"], profile["journey_stage"]) == ("lapsed", "paying", "paying")
    assert (profile["sessions_7"], profile["sessions_28"], profile["minutes_28"]) == (2, 9, 140.25)
    assert profile["median_session_minutes"] == 12.5
    assert data["days_silent"] == 6.5
    key = {f["feature"]: f["count"] for f in data["key_features"]}
    assert list(key) == ["dashboards", "reports", "alerts", "integrations", "workflows", "exports"]
    assert (key["dashboards"], key["reports"], key["integrations"]) == (3, 1, 0)
    assert data["other_features"] == {"mobile": 2}
    assert sorted(a["alert_id"] for a in data["alerts"]) == ["churn-1", "lapse-1"]
    assert data["next_step"] == {**STEP, "source": "alert", "alert_id": "churn-1", "alert_kind": "churn_risk"}
    assert [h["score"] for h in data["history"]] == [25.0, 20.0]
    assert [r["component"] for r in data["history"][-1]["reasons"]] == ["recency", "frequency"]
    assert set(profile) >= {"components", "features", "nps_segment", "open_tickets"}
    assert not {"email", "name", "phone", "ip"} & set(profile)


def _component(html: str, name: str) -> str:
    start = html.index(f'data-component="{name}"')
    return html[start : html.index("</tr>", start)]


def test_components_without_a_signal_show_no_value(client: TestClient) -> None:
    page = client.get("/users/u-risk2").text  # signals: all but support and commercial
    for name in ("support", "commercial"):
        row = _component(page, name)
        assert 'data-signal="no"' in row
        assert 'data-testid="component-value">no signal<' in row
        assert "1.00" not in row
    recency = _component(page, "recency")
    assert 'data-signal="yes"' in recency
    assert 'data-testid="component-value">0.20<' in recency
    assert "left out of the score" in page
    old = client.get("/users/u-risk1").text  # no signals field (an older profile): every value shown
    assert 'data-signal="no"' not in old
    assert 'data-testid="component-value">1.00<' in _component(old, "support")
    assert client.get("/api/users/u-risk2").json()["profile"]["components"]["support"] == 1.0  # JSON: as written


def _visible(html: str) -> str:
    """The text a reader sees: no style sheet, no tags (and so no attributes)."""
    return re.sub(r"<[^>]*>", " ", re.sub(r"<style>.*?</style>", "", html, flags=re.S))


RAW_NAMES = re.compile(
    r"\b(at_risk|cancel_requested|time_in_product|not_at_risk|user_health|active_share|churn_risk)\b"
)


def test_html_shows_labels_and_the_api_raw_names(client: TestClient) -> None:
    pages = {path: client.get(path).text for path in ("/", "/accounts/a-acme", "/users/u-risk1", "/users/u-risk2")}
    for path, html in pages.items():
        assert not RAW_NAMES.search(_visible(html)), (path, RAW_NAMES.findall(_visible(html)))
    assert 'data-testid="top-reason">not at risk<' in pages["/"]  # a-acme's latest change
    assert "not at risk -9.00, user health -6.00" in pages["/accounts/a-acme"]  # its latest change's reasons
    assert "active share" in _visible(pages["/accounts/a-acme"])
    assert "time in product" in _visible(pages["/users/u-risk1"])
    assert 'data-testid="commercial">cancel requested<' in pages["/users/u-risk2"]
    assert '<span class="band band-at_risk" data-testid="band">at risk</span>' in pages["/users/u-risk2"]
    assert ">churn risk<" in pages["/users/u-risk2"]  # the open alert's kind
    user = client.get("/api/users/u-risk2").json()
    assert (user["profile"]["band"], user["profile"]["commercial"]) == ("at_risk", "cancel_requested")
    assert user["alerts"][0]["kind"] == "churn_risk"
    assert client.get("/api/at-risk").json()["accounts"]["rows"][0]["top_reason"] == "not_at_risk"


def test_the_next_step_of_the_newest_open_alert_and_plain_copy_without_one(client: TestClient) -> None:
    risk1 = client.get("/users/u-risk1").text  # churn-1 carries a step, lapse-1 (as new) a null one
    assert 'data-testid="next-step-feature">integrations<' in risk1
    assert "retained 1.39\u00d7 as often" in risk1  # the lift
    assert "from the churn risk alert" in risk1
    for alert_id in ("churn-1", "lapse-1"):  # the raw alert ids stay in the JSON only
        assert alert_id not in risk1
    assert sorted(a["alert_id"] for a in client.get("/api/users/u-risk1").json()["alerts"]) == ["churn-1", "lapse-1"]
    # What `pulse run` writes while no drivers report qualifies: an open churn-risk alert with next_step null.
    risk2 = client.get("/users/u-risk2").text
    assert client.get("/api/users/u-risk2").json()["next_step"] is None
    assert 'data-testid="next-step-none">No suggestion right now.<' in risk2
    assert "none suggested" not in risk2
    assert "churn-2" not in risk2


def test_the_page_header_shows_no_key_prefix(client: TestClient, prefix: str) -> None:
    html = client.get("/").text
    header = html[html.index("<header>") : html.index("</header>")]
    assert prefix not in header
    assert f"data: Redis prefix <code>{prefix}</code>" in html  # in the footer


def test_an_erased_or_unknown_user_is_a_404(client: TestClient, redis_client: redis.Redis, prefix: str) -> None:
    assert redis_client.sismember(f"{prefix}:members:a-acme", "u-erased")  # the account has not rewritten yet
    for user_id in ("u-erased", "u-never"):
        api = client.get(f"/api/users/{user_id}")
        assert api.status_code == 404
        assert api.json() == {
            "error": "not_found",
            "user": user_id,
            "message": f"no user '{user_id}': unknown, or erased",
        }
        page = client.get(f"/users/{user_id}")
        assert page.status_code == 404
        assert "unknown, or erased" in page.text
    assert client.get("/accounts/a-none").status_code == 404


def test_html_pages_render_and_escape_ids(client: TestClient) -> None:
    home = client.get("/")
    assert home.status_code == 200
    assert home.headers["content-type"].startswith("text/html")
    assert home.text.count('data-testid="user-row"') == 6
    assert home.text.count('data-testid="account-row"') == 2
    assert 'href="/users/u-risk1"' in home.text
    assert 'href="/accounts/a-acme"' in home.text
    assert re.search(r'data-testid="top-reason">recency<', home.text)
    assert "20.00" in home.text
    assert XSS not in home.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in home.text
    assert f'href="/users/{quote(XSS, safe="")}"' in home.text
    assert client.get("/?account=a-acme").text.count('data-testid="user-row"') == 3

    user = client.get(f"/users/{quote(XSS, safe='')}")
    assert user.status_code == 200
    assert XSS not in user.text
    assert "&lt;script&gt;" in user.text
    risk1 = client.get("/users/u-risk1").text
    for marker in (
        'data-testid="score-chart"',
        'data-testid="next-step-feature">integrations<',
        'data-testid="components"',
        'data-feature="dashboards" data-used="yes"',
        'data-feature="integrations" data-used="no"',
    ):
        assert marker in risk1
    assert risk1.count('data-testid="change-row"') == 2
    assert risk1.count('data-testid="alert-row"') == 2
    account = client.get("/accounts/a-acme").text
    assert account.count('data-testid="member-row"') == 4
    assert 'data-testid="score-chart"' in account
    assert 'data-testid="active-share">40.0%' in account
    assert 'href="/users/u-healthy"' in account


def test_a_login_is_required_when_configured(prefix: str) -> None:
    settings = _settings(prefix, PULSE_CONSOLE_USERNAME="cs", PULSE_CONSOLE_PASSWORD="pw", PULSE_CONSOLE_TOKEN="tk")
    client = TestClient(create_app(settings))
    basic = "Basic " + base64.b64encode(b"cs:pw").decode()
    for path in ("/api/at-risk", "/", "/api/users/u-risk1", "/users/u-risk1", "/api/accounts/a-acme"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"Authorization": basic}).status_code == 200, path
        assert client.get(path, headers={"Authorization": "Bearer tk"}).status_code == 200, path
        assert client.get(path, headers={"Authorization": "Bearer pw"}).status_code == 401, path
    assert client.get("/healthz").status_code == 200
    users = client.get("/api/at-risk", headers={"Authorization": "Bearer tk"}).json()["users"]["rows"]
    assert users[0]["user_id"] == "u-solo"


def test_beyond_loopback_without_a_login_it_refuses(prefix: str) -> None:
    with pytest.raises(ConsoleAccessError):
        create_app(_settings(prefix, PULSE_CONSOLE_HOST="0.0.0.0"))
    with_token = TestClient(create_app(_settings(prefix, PULSE_CONSOLE_HOST="0.0.0.0", PULSE_CONSOLE_TOKEN="tk")))
    assert with_token.get("/api/at-risk").status_code == 401
    env = {**os.environ, "PULSE_REDIS_URL": REDIS_URL, "PULSE_REDIS_KEY_PREFIX": prefix}
    env = {k: v for k, v in env.items() if not k.startswith("PULSE_CONSOLE_")}
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "console", "--host", "0.0.0.0", "--port", "0"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "not loopback" in done.stderr


def test_pulse_console_serves_and_stops_on_sigterm(prefix: str, tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    env = {**os.environ, "PULSE_REDIS_URL": REDIS_URL, "PULSE_REDIS_KEY_PREFIX": prefix}
    env = {k: v for k, v in env.items() if not k.startswith("PULSE_CONSOLE_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "console", "--port", "0"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            url = wait_for(
                lambda: (m := re.search(r"serving on (http://127\.0\.0\.1:\d+/)", log.read_text())) and m.group(1),
                60,
                "pulse console to print its URL",
            )
            with urllib.request.urlopen(f"{url}healthz", timeout=5) as response:
                assert response.read() == b"ok\n"
            with urllib.request.urlopen(f"{url}api/at-risk", timeout=5) as response:
                assert orjson.loads(response.read())["users"]["rows"][0]["user_id"] == "u-solo"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            stop_process(proc)
    assert "console: stopped" in log.read_text()


def test_redis_refusing_the_login_is_a_503_that_says_so(prefix: str) -> None:
    settings = _settings(prefix, PULSE_REDIS_USERNAME=f"nobody-{prefix}", PULSE_REDIS_PASSWORD="wrong")
    client = TestClient(create_app(settings))
    api = client.get("/api/at-risk")
    assert api.status_code == 503
    assert api.json()["error"] == "redis_login_refused"
    page = client.get("/users/u-risk1")
    assert page.status_code == 503
    assert "Redis refused the console&#39;s login" in page.text
