"""The CS console in a real browser: `pulse run` on a crafted stream, then `pulse console` driven by headless
Chromium (Playwright): at-risk list -> account -> member -> user timeline, and an erasure that empties them.

With PULSE_SCREENSHOTS=1 the three pages are saved to docs/console-*.png (full page, 1280 wide) for the
README; otherwise to the test's tmp_path, so `make test` leaves the tree alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from playwright.sync_api import expect

from schemas.codec import format_ts, loads
from tests.integration.browser import chromium, chromium_executable
from tests.integration.conftest import ROOT, Names, PulseProcess, produce, stop_process, wait_for

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000

ACCOUNT = "northwind"  # four members: two healthy daily users, the NPS drop and a lapsed user
OTHER_ACCOUNT = "globex"
HEALTHY = ("dana.ortiz", "eli.nguyen", "hana.kim")
NPS_DROP = "fay.okafor"  # a weekly user gone quiet: NPS 9, then 1 two hours ago -> at risk, top reason sentiment
LAPSED = "gus.patel"  # daily for two weeks, silent for 25 days, an urgent ticket open -> at risk; erased below
CANCELLING = "ivan.petrov"  # asked to cancel -> at risk
WATCH = "jo.silva"  # two active days in three weeks -> watch
MEMBERS = {ACCOUNT: ("dana.ortiz", "eli.nguyen", NPS_DROP, LAPSED), OTHER_ACCOUNT: ("hana.kim", CANCELLING, WATCH)}
AT_RISK = (NPS_DROP, LAPSED, CANCELLING)


class Stream:
    """Input events for a few users, keyed by user id (as producers should key them), in event-time order."""

    def __init__(self) -> None:
        self.events: list[tuple[int, bytes, bytes]] = []

    def add(self, user: str, account: str, event_type: str, ts: int, **extra: Any) -> None:
        doc = {"event_id": f"{user}-{len(self.events)}", "user_id": user, "account_id": account,
               "type": event_type, "ts": format_ts(ts), **extra}  # fmt: skip
        self.events.append((ts, user.encode(), orjson.dumps(doc)))

    def session(self, user: str, account: str, start: int, features: list[str], minutes: int) -> None:
        """One working session: a start, one use of each feature a minute apart, an end `minutes` later."""
        self.add(user, account, "session_start", start)
        for i, feature in enumerate(features):
            self.add(user, account, "feature_used", start + (i + 1) * MINUTE_MS, feature=feature)
        self.add(user, account, "session_end", start + minutes * MINUTE_MS)

    def messages(self) -> list[tuple[bytes | None, bytes]]:
        return [(key, value) for _, key, value in sorted(self.events, key=lambda e: e[0])]


def crafted_stream(now: int) -> list[tuple[bytes | None, bytes]]:
    """Recent event times, so the console reads like a real morning's list: every time is relative to `now`,
    so the bands come out the same whatever the time of day the test runs.

    Fay's NPS drop is her last event, two hours ago, and no daily re-score can move her score by the 2 points
    a change needs before the test ends (her recency falls about 1.3 points a day), so her latest change stays
    the NPS one, with sentiment (about -13 points) far ahead of any other reason."""
    base = now - 3 * HOUR_MS  # the daily users' last session started three hours ago
    s = Stream()
    features = {
        "dana.ortiz": ["dashboards", "reports", "alerts", "integrations"],
        "eli.nguyen": ["dashboards", "reports", "workflows"],
        "hana.kim": ["dashboards", "exports", "reports", "alerts"],
    }
    for user in HEALTHY:
        account = ACCOUNT if user in MEMBERS[ACCOUNT] else OTHER_ACCOUNT
        s.add(user, account, "subscribed", base - 31 * DAY_MS, properties={"plan": "team", "mrr": 400})
        for day in range(30, -1, -1):
            s.session(user, account, base - day * DAY_MS, features[user], minutes=40)
        s.add(user, account, "nps_response", base - 10 * DAY_MS + HOUR_MS, properties={"score": 9})
    for day in (35, 28, 21, 14):
        s.session(NPS_DROP, ACCOUNT, base - day * DAY_MS, ["reports"], minutes=15)
    s.add(NPS_DROP, ACCOUNT, "nps_response", base - 30 * DAY_MS + HOUR_MS, properties={"score": 9})
    s.add(NPS_DROP, ACCOUNT, "nps_response", now - 2 * HOUR_MS, properties={"score": 1})
    for day in range(40, 24, -1):
        s.session(LAPSED, ACCOUNT, base - day * DAY_MS, ["dashboards"], minutes=20)
    s.add(LAPSED, ACCOUNT, "support_ticket_opened", base - 5 * DAY_MS,
          properties={"ticket_id": "T-17", "severity": "urgent"})  # fmt: skip
    for day in range(35, 20, -1):
        s.session(CANCELLING, OTHER_ACCOUNT, base - day * DAY_MS, ["exports"], minutes=10)
    s.add(CANCELLING, OTHER_ACCOUNT, "cancellation_requested", base - 3 * DAY_MS,
          properties={"reason": "too_expensive"})  # fmt: skip
    for day in (20, 12):
        s.session(WATCH, OTHER_ACCOUNT, base - day * DAY_MS, ["dashboards", "reports"], minutes=25)
    return s.messages()


def _members(redis_client: redis.Redis, prefix: str, account: str) -> set[str]:
    members: set[bytes] = redis_client.smembers(f"{prefix}:members:{account}")  # type: ignore[assignment]
    return {m.decode() for m in members}


def _band_index(redis_client: redis.Redis, prefix: str, band: str) -> set[str]:
    users: list[bytes] = redis_client.zrange(f"{prefix}:index:users:{band}", 0, -1)  # type: ignore[assignment]
    return {u.decode() for u in users}


def _latest_change(redis_client: redis.Redis, prefix: str, user: str) -> dict[str, Any] | None:
    entries: list[bytes] = redis_client.zrange(f"{prefix}:history:user:{user}", -1, -1)  # type: ignore[assignment]
    latest: dict[str, Any] | None = loads(entries[0]) if entries else None
    return latest


def last_seen(messages: list[tuple[bytes | None, bytes]]) -> dict[str, str]:
    """Each user's latest event time in the stream: their profile's `last_seen` once all of it is applied."""
    latest: dict[str, str] = {}
    for _, value in messages:
        doc = loads(value)
        latest[doc["user_id"]] = max(latest.get(doc["user_id"], ""), doc["ts"])  # format_ts sorts as text
    return latest


def wait_for_serving_indexes(
    redis_client: redis.Redis, prefix: str, pulse: PulseProcess, expected_last_seen: dict[str, str]
) -> None:
    """Until the live sink has written every profile and index the console reads, as the whole stream implies
    (every user's profile at their last event, so no page shows a half-applied stream)."""
    missing = "nothing read yet"

    def applied(user: str) -> bool:
        seen: bytes | None = redis_client.hget(f"{prefix}:user:{user}", "last_seen")  # type: ignore[assignment]
        return seen is not None and seen.decode() == expected_last_seen[user]

    def ready() -> bool:
        nonlocal missing
        pulse.assert_alive()
        checks: dict[str, Callable[[], bool]] = {
            "every event applied (profiles' last_seen)": lambda: all(applied(u) for u in expected_last_seen),
            "account profiles": lambda: all(redis_client.exists(f"{prefix}:account:{a}") for a in MEMBERS),
            "members sets": lambda: all(_members(redis_client, prefix, a) == set(m) for a, m in MEMBERS.items()),
            f"at_risk index = {sorted(AT_RISK)}": lambda: _band_index(redis_client, prefix, "at_risk") == set(AT_RISK),
            f"watch index = [{WATCH!r}]": lambda: _band_index(redis_client, prefix, "watch") == {WATCH},
            "Fay's latest change led by sentiment": lambda: (
                (latest := _latest_change(redis_client, prefix, NPS_DROP)) is not None
                and latest["reasons"][0]["component"] == "sentiment"
            ),
        }
        for what, check in checks.items():
            if not check():
                bands = {band: sorted(_band_index(redis_client, prefix, band)) for band in ("at_risk", "watch")}
                missing = f"{what} (band indexes now: {bands})"
                return False
        return True

    try:
        wait_for(ready, 120, "the profiles, members, band indexes and Fay's sentiment change in Redis", interval=0.25)
    except pytest.fail.Exception as failure:
        pytest.fail(f"{failure}; still missing: {missing}")


def _pulse_cli(names: Names, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env={**os.environ, **names.env},
        cwd=ROOT,
        capture_output=True,
        timeout=180,
    )


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


class Console:
    """`pulse console --port 0` as a real subprocess (the system picks a free loopback port, which the console
    logs); stopped by its own pid."""

    def __init__(self, names: Names, log: Path) -> None:
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "console", "--host", "127.0.0.1", "--port", "0"],
            env={**os.environ, **names.env},
            cwd=ROOT,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        self.base = ""

    def assert_alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"pulse console exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")

    def listening(self) -> bool:
        self.assert_alive()
        found = re.search(r"serving on (http://127\.0\.0\.1:\d+)/", self.log.read_text())
        if found:
            self.base = found.group(1)
        return found is not None

    def healthy(self) -> bool:
        self.assert_alive()
        return _status(f"{self.base}/healthz") == 200

    def stop(self) -> None:
        stop_process(self.proc)
        self._log_file.close()


@pytest.fixture
def console(names: Names, tmp_path: Path) -> Iterator[Callable[[], Console]]:
    started: list[Console] = []

    def start() -> Console:
        process = Console(names, tmp_path / "console.log")
        started.append(process)
        wait_for(process.listening, 30, "pulse console to log the address it serves on")
        wait_for(process.healthy, 30, f"pulse console to answer {process.base}/healthz")
        return process

    yield start
    for process in started:
        process.stop()


def screenshot_dir(tmp_path: Path) -> Path:
    """docs/ when PULSE_SCREENSHOTS=1 (to refresh the README's pictures), else the test's tmp_path."""
    if os.environ.get("PULSE_SCREENSHOTS") != "1":
        return tmp_path
    (ROOT / "docs").mkdir(exist_ok=True)
    return ROOT / "docs"


def test_console_in_a_real_browser(
    kafka: str,
    redis_client: redis.Redis,
    names: Names,
    pulse_run: Callable[..., PulseProcess],
    console: Callable[[], Console],
    tmp_path: Path,
) -> None:
    executable = chromium_executable()  # no browser: fail now, not after the stream is processed
    now = int(time.time() * 1000)
    messages = crafted_stream(now)
    produce(kafka, names.topic("events"), messages)
    pulse = pulse_run(names.env)
    expected_last_seen = last_seen(messages)
    assert set(expected_last_seen) == {u for members in MEMBERS.values() for u in members}
    wait_for_serving_indexes(redis_client, names.run, pulse, expected_last_seen)
    served = console()
    shots = screenshot_dir(tmp_path)

    with chromium(executable) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(15_000)
        user_rows = page.get_by_test_id("user-row")

        # At risk now: the three at-risk users and the one on watch, nobody healthy; Fay's top reason is her NPS.
        page.goto(f"{served.base}/")
        expect(page).to_have_title(re.compile("At risk now"))
        expect(user_rows).to_have_count(len(AT_RISK) + 1)
        assert {row.get_attribute("data-user-id") for row in user_rows.all()} == {*AT_RISK, WATCH}
        fay_row = page.locator(f'[data-testid="user-row"][data-user-id="{NPS_DROP}"]')
        expect(fay_row.get_by_test_id("top-reason")).to_have_text("sentiment")
        expect(fay_row.get_by_test_id("band")).to_have_text("at risk")
        expect(fay_row.get_by_test_id("trend")).to_have_attribute("title", "down")
        page.screenshot(path=shots / "console-at-risk.png", full_page=True)

        # Into Fay's account: its four members, each linking to their page.
        fay_row.get_by_test_id("account-link").click()
        page.wait_for_url(f"{served.base}/accounts/{ACCOUNT}")
        expect(page.get_by_test_id("account-id")).to_have_text(ACCOUNT)
        members = page.get_by_test_id("member-row")
        expect(members).to_have_count(len(MEMBERS[ACCOUNT]))
        assert {row.get_attribute("data-user-id") for row in members.all()} == set(MEMBERS[ACCOUNT])
        expect(page.get_by_test_id("score-chart")).to_be_visible()
        page.screenshot(path=shots / "console-account.png", full_page=True)

        # Into Fay: her timeline (the NPS drop newest, sentiment first), her components and her features.
        page.locator(f'[data-testid="member-row"][data-user-id="{NPS_DROP}"]').get_by_test_id("user-link").click()
        page.wait_for_url(f"{served.base}/users/{NPS_DROP}")
        expect(page.get_by_test_id("user-id")).to_have_text(NPS_DROP)
        expect(page.get_by_test_id("score-chart")).to_be_visible()
        assert page.get_by_test_id("chart-point").count() >= 2
        newest = page.get_by_test_id("change-row").first
        expect(newest.get_by_test_id("change-reasons")).to_contain_text(re.compile(r"^sentiment -1\d\.\d\d"))
        expect(page.get_by_test_id("component")).to_have_count(7)
        sentiment = page.locator('[data-testid="component"][data-component="sentiment"] td.num')
        expect(sentiment).to_have_text("0.10")  # NPS 1 two hours ago: 0.6 + (0.1 - 0.6) * 0.5 ** (2 h / 90 d)
        expect(page.locator('[data-testid="key-feature"][data-feature="reports"]')).to_have_attribute(
            "data-used", "yes"
        )
        page.screenshot(path=shots / "console-user.png", full_page=True)

        # Erase Gus the way an operator would: he leaves the list, his account and his page is gone.
        erased = _pulse_cli(names, "erase", LAPSED)
        assert erased.returncode == 0, erased.stderr.decode()
        assert loads(erased.stdout)["redis"]["gone"] is True
        page.goto(f"{served.base}/")
        expect(user_rows).to_have_count(len(AT_RISK))
        assert {row.get_attribute("data-user-id") for row in user_rows.all()} == {NPS_DROP, CANCELLING, WATCH}
        response = page.goto(f"{served.base}/users/{LAPSED}")
        assert response is not None
        assert response.status == 404
        expect(page.get_by_test_id("error")).to_contain_text("unknown, or erased")
        page.goto(f"{served.base}/accounts/{ACCOUNT}")
        expect(page.get_by_test_id("member-row")).to_have_count(len(MEMBERS[ACCOUNT]) - 1)
        expect(page.locator(f'[data-testid="member-row"][data-user-id="{LAPSED}"]')).to_have_count(0)
