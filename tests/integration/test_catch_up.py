"""`pulse run` catching up on a backlog in a 4-partition topic gives exactly what a replay gives."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from demo.generator import GeneratorConfig, generate
from engine.config import load_settings
from engine.replay import replay
from schemas.codec import loads, parse_ts
from tests.integration.conftest import Names, PulseProcess, produce, read_topic, wait_for

pytestmark = pytest.mark.integration
DAY_MS = 86_400_000
PARTITIONS = 4


def keyed(lines: list[bytes]) -> list[tuple[bytes | None, bytes]]:
    """Keyed by user id, as the input contract recommends; malformed lines unkeyed."""
    messages: list[tuple[bytes | None, bytes]] = []
    for line in lines:
        try:
            messages.append((str(loads(line)["user_id"]).encode(), line))
        except Exception:
            messages.append((None, line))
    return messages


def alert_set(docs: list[dict[str, Any]], before_ms: int) -> set[tuple[str, str, str]]:
    return {(d["alert_id"], d["kind"], d["status"]) for d in docs if parse_ts(d["ts"]) < before_ms}


def redis_profiles(client: redis.Redis, prefix: str, entity: str) -> dict[str, dict[str, Any]]:
    """Every profile hash under the prefix, decoded back to the JSON a replay writes."""
    found: dict[str, dict[str, Any]] = {}
    for key in client.scan_iter(f"{prefix}:{entity}:*", count=1000):
        stored: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
        doc: dict[str, Any] = {}
        for field, value in stored.items():
            try:
                doc[field.decode()] = loads(value)
            except Exception:
                doc[field.decode()] = value.decode()  # strings are stored as they are
        found[key.decode().split(":", 2)[2]] = doc
    return found


def profile_diff(actual: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]) -> list[str]:
    """Up to five differences, for a failure message a person can act on."""
    out = [f"missing {u}" for u in sorted(set(expected) - set(actual))][:5]
    out += [f"extra {u}" for u in sorted(set(actual) - set(expected))][:5]
    for user in sorted(set(actual) & set(expected)):
        fields = {
            k for k in actual[user].keys() | expected[user].keys() if actual[user].get(k) != expected[user].get(k)
        }
        out += [f"{user}.{k}: live {actual[user].get(k)!r} != replay {expected[user].get(k)!r}" for k in sorted(fields)]
    return out[:8]


def settle(
    read: Callable[[], dict[str, dict[str, Any]]], expected: dict[str, dict[str, Any]], runs: list[Any]
) -> list[str]:
    """Wait (with a deadline) until the profiles read equal the expected ones; the remaining differences."""
    deadline = time.monotonic() + 120
    while True:
        for run in runs:
            run.assert_alive()
        diff = profile_diff(read(), expected)
        if not diff or time.monotonic() > deadline:
            return diff
        time.sleep(1)


LIVE_ENV = {"PULSE_ENGINE_TIMER_IDLE_MS": "1000", "PULSE_ENGINE_PROFILE_FLUSH_MS": "200"}


def assert_equals_replay(
    client: redis.Redis, kafka: str, prefix: str, alerts_topic: str, runs: list[PulseProcess], expected: Any
) -> set[tuple[str, str, str]]:
    """Every profile under `prefix` and every alert due a day before the end equal the replay's."""
    expected_alerts, expected_profiles, last = expected
    diff = settle(functools.partial(redis_profiles, client, prefix, "user"), expected_profiles, runs)
    assert diff == [], f"{prefix}: " + "; ".join(diff)
    settled = last - DAY_MS
    live = alert_set([loads(m.value() or b"") for m in read_topic(kafka, alerts_topic)], settled)
    assert len(alert_set(expected_alerts, settled)) > 100
    assert live == alert_set(expected_alerts, settled)
    return live


def live_values(kafka: str, topic: str) -> list[bytes]:
    return [v for v in (m.value() for m in read_topic(kafka, topic)) if v]


def final_funnel(values: list[bytes]) -> dict[str, Any]:
    """cohort day -> (stages, variants) of its latest funnel record (records of a day are in order)."""
    latest: dict[str, Any] = {}
    for value in values:
        if value.strip():
            doc = loads(value)
            latest[doc["cohort_day"]] = (doc["stages"], doc["variants"])
    return latest


def assert_funnel_equals_replay(kafka: str, topic: str, out: Path) -> None:
    """The journey funnel: each cohort day's latest figures on the topic are the replay's."""
    replayed_funnel = final_funnel((out / "funnel.jsonl").read_bytes().splitlines())
    assert replayed_funnel, "the demo stream enters journey stages"
    wait_for(
        lambda: final_funnel([m.value() or b"" for m in read_topic(kafka, topic)]) == replayed_funnel,
        60,
        "the live funnel figures to equal the replay's",
    )


def replayed(lines: list[bytes], tmp_path: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], int]:
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    replay(tmp_path / "in.jsonl", tmp_path / "out", load_settings(None, env={}))
    out = tmp_path / "out"
    alerts = [loads(x) for x in (out / "alerts.jsonl").read_bytes().splitlines()]
    profiles = {p["user_id"]: p for p in map(loads, (out / "profiles.jsonl").read_bytes().splitlines())}
    last = max(parse_ts(p["last_seen"]) for p in profiles.values())
    return alerts, profiles, last


def assert_drivers_equal_replay(kafka: str, names: Names, out: Path, expected: Any) -> None:
    """The daily drivers reports and the next_step they put in alerts, for the days settled before the end
    of the backlog (live, the insights step waits for the slowest user shard's frontier)."""
    settled = expected[2] - 2 * DAY_MS
    reports = {d["report_day"]: d for d in map(loads, (out / "insights.jsonl").read_bytes().splitlines())}
    reports = {day: d for day, d in reports.items() if parse_ts(f"{day}T00:00:00Z") < settled}
    assert any(d["features"] for d in reports.values()), "the backlog is long enough for a drivers report"

    def live_reports() -> dict[str, Any]:
        found = {d["report_day"]: d for d in map(loads, live_values(kafka, names.topic("insights")))}
        return {day: found.get(day) for day in reports}

    deadline = time.monotonic() + 60
    while (live := live_reports()) != reports and time.monotonic() < deadline:
        time.sleep(0.5)  # polling the topic until the deadline, then the failure says what differs
    if live != reports:
        differ = sorted(day for day in reports if live[day] != reports[day])
        missing = [day for day in differ if live[day] is None]
        pytest.fail(
            f"drivers reports differ on {len(differ)} of {len(reports)} days; missing live: {missing[:5]}; "
            f"first differing: {differ[:1]} live {live[differ[0]]} replay {reports[differ[0]]}"
        )
    steps = {(a["alert_id"], a["status"]): a.get("next_step") for a in expected[0] if parse_ts(a["ts"]) < settled}
    alerts = map(loads, live_values(kafka, names.topic("alerts")))
    live_steps = {(a["alert_id"], a["status"]): a.get("next_step") for a in alerts}
    assert {key: live_steps.get(key) for key in steps} == steps


def test_catch_up_on_a_backlog_equals_the_replay(
    kafka: str, names: Names, pulse_run: Callable[..., PulseProcess], redis_client: redis.Redis, tmp_path: Path
) -> None:
    lines = list(generate(GeneratorConfig(users=320, accounts=40, days=60, seed=21)))
    assert len(lines) >= 30_000
    produce(kafka, names.topic("events"), keyed(lines), partitions=PARTITIONS)  # the backlog, before the run
    expected = replayed(lines, tmp_path)
    assert len(expected[1]) >= 300

    # The demo stream delivers 1% of a user's events up to 30 min late: without reorder_live a score record
    # can then be emitted at a different event of the day than in the replay (see README "Ordering").
    service = pulse_run({**names.env, **LIVE_ENV, "PULSE_ENGINE_REORDER_LIVE": "true"})
    wait_for(lambda: service.metrics().get("pulse_events_in_total") == len(lines), 120, "the backlog read")
    assert_equals_replay(redis_client, kafka, names.run, names.topic("alerts"), [service], expected)
    assert_funnel_equals_replay(kafka, names.topic("funnel"), tmp_path / "out")
    assert_drivers_equal_replay(kafka, names, tmp_path / "out", expected)


def test_two_processes_give_what_one_gives(
    kafka: str, names: Names, pulse_run: Callable[..., PulseProcess], redis_client: redis.Redis, tmp_path: Path
) -> None:
    from tests.integration.conftest import free_port

    lines = list(generate(GeneratorConfig(users=320, accounts=40, days=45, seed=22)))
    produce(kafka, names.topic("events"), keyed(lines), partitions=PARTITIONS)
    expected = replayed(lines, tmp_path)
    # A second process starts late, so its partitions lag days behind: applying events on arrival, a
    # member's own event can then run ahead of an admin's account pause (README, "Timers"). Holding events
    # to the low watermark (reorder_live) is exact whatever the processes' speeds.
    env = {**names.env, **LIVE_ENV, "PULSE_ENGINE_REORDER_LIVE": "true"}
    single = pulse_run(env)
    # The same input through a two-process bytewax cluster, writing to its own topics and keys.
    cluster_env = {
        **env,
        "PULSE_REDIS_KEY_PREFIX": f"{names.run}c",
        "PULSE_TOPICS_ALERTS": f"{names.run}-calerts",
        "PULSE_TOPICS_PROFILES": f"{names.run}-cprofiles",
        "PULSE_TOPICS_ACCOUNT_PROFILES": f"{names.run}-caccount-profiles",
    }
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    cluster = [pulse_run(cluster_env, ["--process-id", str(i), "--addresses", addresses]) for i in (0, 1)]

    one = assert_equals_replay(redis_client, kafka, names.run, names.topic("alerts"), [single], expected)
    two = assert_equals_replay(redis_client, kafka, f"{names.run}c", f"{names.run}-calerts", cluster, expected)
    assert one == two


def test_unkeyed_backlog_with_reorder_live_equals_the_replay(
    kafka: str, names: Names, pulse_run: Callable[..., PulseProcess], redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Pulse must not depend on the message key: unkeyed, each user's events spread over all 4 partitions.
    lines = list(generate(GeneratorConfig(users=320, accounts=40, days=45, seed=23)))
    produce(kafka, names.topic("events"), [(None, line) for line in lines], partitions=PARTITIONS)
    expected = replayed(lines, tmp_path)
    service = pulse_run({**names.env, **LIVE_ENV, "PULSE_ENGINE_REORDER_LIVE": "true"})
    wait_for(lambda: service.metrics().get("pulse_events_in_total") == len(lines), 120, "the backlog read")
    assert_equals_replay(redis_client, kafka, names.run, names.topic("alerts"), [service], expected)
    assert_funnel_equals_replay(kafka, names.topic("funnel"), tmp_path / "out")
