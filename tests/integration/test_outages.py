"""Outages lose nothing: `pulse run` waits out a Redis outage and a broker restart (backpressure, no crash,
no dropped write), and profiles come back when Redis comes back empty. Each test runs its own redis-server
or broker on free ports, so stopping it never disturbs the shared servers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from demo.generator import GeneratorConfig, generate
from engine.config import load_settings
from engine.replay import replay
from schemas.codec import dumps, loads, parse_ts
from tests.integration.conftest import ROOT, Names, PulseProcess, produce, read_topic, wait_for
from tests.integration.servers import KafkaBroker, RedisServer
from tests.integration.test_health_service import committed_input_offsets

pytestmark = pytest.mark.integration
# Event-time timers only, one input partition: runs are then comparable exactly (see test_alerts_service).
ORDERED = {"PULSE_ENGINE_TIMER_IDLE_MS": "3600000", "PULSE_ENGINE_PROFILE_FLUSH_MS": "200"}
OUTAGE_S = 30.0


def _lines(users: int = 40, days: int = 28, seed: int = 5) -> list[bytes]:
    return list(generate(GeneratorConfig(users=users, accounts=6, days=days, seed=seed, malformed_rate=0.0)))


def _messages(lines: list[bytes]) -> list[tuple[bytes | None, bytes]]:
    return [(loads(line)["user_id"].encode(), line) for line in lines]


class Expected:
    """What a replay of the same events gives: the events applied and duplicate, the users and accounts."""

    def __init__(self, lines: list[bytes], tmp: Path) -> None:
        (tmp / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        out = tmp / "replay"
        self.summary = replay(tmp / "in.jsonl", out, load_settings(None, env={})).summary
        self.users = {loads(line)["user_id"] for line in (out / "profiles.jsonl").read_bytes().splitlines()}
        self.accounts = {
            loads(line)["account_id"] for line in (out / "account_profiles.jsonl").read_bytes().splitlines()
        }


def _alert_ids(alerts: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(a["alert_id"], a["status"]) for a in alerts}


def _all_read(pulse: PulseProcess, expected: Expected) -> Callable[[], dict[str, float]]:
    def done() -> dict[str, float]:
        pulse.assert_alive()
        m = pulse.metrics()
        applied = (m.get("pulse_events_applied_total"), m.get("pulse_events_duplicate_total"))
        return m if applied == (expected.summary["applied"], expected.summary["duplicates"]) else {}

    return done


Outputs = tuple[list[bytes], set[tuple[str, str]]]


def _settled_outputs(kafka: str, names: Names, run: str = "") -> Callable[[], Outputs | None]:
    """(every score record, sorted; the alert ids) once two reads in a row agree."""

    def read() -> Outputs:
        return (
            sorted(m.value() or b"" for m in read_topic(kafka, names.topic(f"{run}scores"))),
            _alert_ids([loads(m.value() or b"") for m in read_topic(kafka, names.topic(f"{run}alerts"))]),
        )

    def settled() -> Outputs | None:
        first = read()
        return first if first[0] and read() == first else None

    return settled


def _difference(outputs: Outputs, reference: Outputs) -> list[str]:
    """What the run has that the reference has not, and the other way round (a few of each)."""
    scores, alerts = outputs
    ref_scores, ref_alerts = reference
    out = [f"{len(scores)} score records, reference {len(ref_scores)}"] if len(scores) != len(ref_scores) else []
    out += [f"extra score {s[:200]!r}" for s in sorted(set(scores) - set(ref_scores))][:3]
    out += [f"missing score {s[:200]!r}" for s in sorted(set(ref_scores) - set(scores))][:3]
    out += [f"extra alert {a}" for a in sorted(alerts - ref_alerts)][:3]
    out += [f"missing alert {a}" for a in sorted(ref_alerts - alerts)][:3]
    return out


def _straight_run(pulse_run: Callable[..., PulseProcess], env: dict[str, str], names: Names) -> PulseProcess:
    """The same input through a run without an outage, into its own topics and keys: the reference. (Live
    output differs from a replay's in timer timing, so a live run is compared with a live run.)"""
    straight = {**env, "PULSE_REDIS_KEY_PREFIX": f"{names.run}:straight"}
    for kind in ("scores", "alerts", "lifecycle", "accounts", "dlq", "profiles", "account_profiles"):
        straight[f"PULSE_TOPICS_{kind.upper()}"] = names.topic(f"straight-{kind.replace('_', '-')}")
    return pulse_run(straight)


def _profiles(client: Any, prefix: str) -> dict[bytes, dict[bytes, bytes]]:
    """The profile hashes (the serving indexes beside them are engine.serving's, tested in test_serving)."""
    keys = [*client.scan_iter(f"{prefix}:user:*", count=1000), *client.scan_iter(f"{prefix}:account:*", count=1000)]
    return {key: client.hgetall(key) for key in keys}


def _has_every_profile(client: Any, prefix: str, expected: Expected) -> Callable[[], bool]:
    keys = {f"{prefix}:user:{u}".encode() for u in expected.users}
    keys |= {f"{prefix}:account:{a}".encode() for a in expected.accounts}

    def present() -> bool:
        try:
            return keys <= set(client.scan_iter(f"{prefix}:*", count=1000))
        except Exception:  # Redis still starting
            return False

    return present


def test_a_redis_outage_of_30s_pauses_the_run_and_loses_nothing(
    kafka: str, names: Names, pulse_run: Callable[..., PulseProcess], tmp_path: Path
) -> None:
    lines = _lines()
    half = len(lines) // 2
    expected = Expected(lines, tmp_path)
    server = RedisServer(tmp_path / "redis", durable=True)  # comes back with what it acknowledged
    server.start()
    try:
        env = {**names.env, **ORDERED, "PULSE_REDIS_URL": server.url}
        produce(kafka, names.topic("events"), _messages(lines[:half]), partitions=1)
        pulse = pulse_run(env)
        # The reference: the same input, at the same moments, through a run whose Redis stays up.
        straight = _straight_run(pulse_run, {**names.env, **ORDERED}, names)

        def first_half_in_redis() -> bool:
            m = pulse.metrics()
            done = m.get("pulse_events_applied_total", 0) + m.get("pulse_events_duplicate_total", 0) == half
            return done and server.client.dbsize() > 0

        wait_for(first_half_in_redis, 90, "the first half applied and profiles in Redis")
        server.stop()
        stopped = time.monotonic()
        produce(kafka, names.topic("events"), _messages(lines[half:]), partitions=1)

        # The sink notices, counts the failed attempts, and waits: the process stays up the whole time.
        wait_for(lambda: pulse.metrics().get("pulse_redis_errors_total", 0) > 0, 30, "Redis errors to be counted")
        while time.monotonic() - stopped < OUTAGE_S:
            pulse.assert_alive()
            time.sleep(0.5)
        applied_during = pulse.metrics().get("pulse_events_applied_total", 0)
        server.start()
        back = time.monotonic()

        m = wait_for(_all_read(pulse, expected), 120, "every event applied after Redis came back")
        caught_up = time.monotonic() - back
        wait_for(_has_every_profile(server.client, names.run, expected), 60, "every user and account in Redis")
        outputs = wait_for(_settled_outputs(kafka, names), 120, "outputs to settle")
        pulse.assert_alive()
        log = pulse.log.read_text()
    finally:
        server.stop()
    wait_for(_all_read(straight, expected), 120, "the straight run to apply every event")
    reference = wait_for(_settled_outputs(kafka, names, "straight-"), 120, "the straight run's outputs")
    errors = m["pulse_redis_errors_total"]
    waited = re.search(r"reachable again after ([0-9.]+)s", log)
    print(
        f"\nredis outage: down {back - stopped:.1f}s, writes waited {waited[1] if waited else '?'}s, caught up "
        f"{caught_up:.1f}s after Redis came back; {errors:.0f} failed attempts counted; {applied_during:.0f} of "
        f"{expected.summary['applied']} events applied before Redis came back"
    )
    assert errors > 0
    assert "error writing output batch" not in log
    assert log.count("writes wait and are retried") == 1, "one warning per outage, not one per retry"
    assert "reachable again" in log
    assert _difference(outputs, reference) == []


def test_a_broker_restart_mid_run_is_ridden_out(
    names: Names, pulse_run: Callable[..., PulseProcess], tmp_path: Path, redis_client: Any
) -> None:
    lines = _lines(users=120)
    half = len(lines) // 2
    expected = Expected(lines, tmp_path)
    broker = KafkaBroker(tmp_path)
    broker.start()
    try:
        env = {**names.env, **ORDERED, "PULSE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap}
        produce(broker.bootstrap, names.topic("events"), _messages(lines[:half]), partitions=1)
        pulse = pulse_run(env)
        wait_for(lambda: pulse.metrics().get("pulse_events_applied_total", 0) > 0, 90, "the run to apply events")
        in_flight = pulse.metrics().get("pulse_events_applied_total", 0)
        down = broker.stop()
        stopped = time.monotonic()
        pulse.assert_alive()
        up = broker.start()
        restarted = time.monotonic()
        pulse.assert_alive()
        produce(broker.bootstrap, names.topic("events"), _messages(lines[half:]), partitions=1)

        m = wait_for(_all_read(pulse, expected), 180, "every event applied after the broker restart")
        caught_up = time.monotonic() - restarted
        outputs = wait_for(_settled_outputs(broker.bootstrap, names), 120, "outputs to settle")
        wait_for(_has_every_profile(redis_client, names.run, expected), 60, "every user and account in Redis")
        pulse.assert_alive()
        log = pulse.log.read_text()
        straight = _straight_run(pulse_run, env, names)
        wait_for(_all_read(straight, expected), 120, "the straight run to apply every event")
        reference = wait_for(_settled_outputs(broker.bootstrap, names, "straight-"), 120, "the straight run's outputs")
        pulse.stop()
        straight.stop()
    finally:
        broker.stop()
    errors = m.get("pulse_kafka_errors_total", 0)
    print(
        f"\nbroker restart: stop {down:.1f}s, down {restarted - stopped:.1f}s (start {up:.1f}s), caught up "
        f"{caught_up:.1f}s after; {errors:.0f} Kafka client errors counted; {in_flight:.0f} of "
        f"{expected.summary['applied']} events applied when it stopped"
    )
    assert errors > 0
    assert "DeliveryError" not in log
    assert _difference(outputs, reference) == []


def test_profiles_come_back_when_redis_comes_back_empty(
    kafka: str, names: Names, pulse_run: Callable[..., PulseProcess], tmp_path: Path
) -> None:
    lines = _lines(seed=11)
    # An erased user: a tombstone on the table, which a restore must not bring back.
    erased = loads(lines[0])["user_id"]
    last = max(parse_ts(loads(line)["ts"]) for line in lines)
    lines.append(dumps({"event_id": "bye", "user_id": erased, "type": "erasure_requested", "ts": last + 60_000}))
    expected = Expected(lines, tmp_path)
    assert erased not in expected.users
    server = RedisServer(tmp_path / "redis")  # no persistence: a restart comes back empty
    server.start()
    recovery = tmp_path / "recovery"
    try:
        env = {
            **names.env,
            **ORDERED,
            "PULSE_REDIS_URL": server.url,
            "PULSE_ENGINE_RECOVERY_DIR": str(recovery),
            "PULSE_ENGINE_SNAPSHOT_INTERVAL_SECONDS": "0.5",
        }
        produce(kafka, names.topic("events"), _messages(lines), partitions=1)
        first = pulse_run(env)
        wait_for(_all_read(first, expected), 120, "every event applied")
        wait_for(_has_every_profile(server.client, names.run, expected), 60, "every user and account in Redis")
        wait_for(lambda: committed_input_offsets(recovery) == len(lines), 60, "a snapshot of all the input")

        def settled() -> dict[bytes, dict[bytes, bytes]]:
            before = _profiles(server.client, names.run)
            return before if before == _profiles(server.client, names.run) else {}

        written = wait_for(settled, 60, "the profiles to settle")
        assert first.stop() in (0, -15)
        assert f"{names.run}:user:{erased}".encode() not in written

        # Redis restarts empty; `pulse restore-profiles` puts every hash back as it was.
        server.stop()
        server.start()
        assert server.client.dbsize() == 0
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "engine.cli", "restore-profiles"],
            env={**os.environ, **env},
            cwd=ROOT,
            capture_output=True,
            timeout=120,
        )
        took = time.monotonic() - started
        assert result.returncode == 0, result.stderr.decode()
        summary = result.stderr.decode().strip().splitlines()[-1]
        assert f"restored {len(expected.users)} user and {len(expected.accounts)} account profile(s)" in summary
        assert "1 tombstone(s) deleted" in summary
        assert _profiles(server.client, names.run) == written

        # And `pulse run` does it on its own when it starts on an empty Redis.
        server.client.flushdb()
        second = pulse_run(env)
        wait_for(lambda: _profiles(server.client, names.run) == written, 60, "the profiles restored by pulse run")
        wait_for(lambda: "restoring the profiles" in second.log.read_text(), 10, "the restore line")
        second.assert_alive()
    finally:
        server.stop()
    print(f"\nrestore-profiles: {len(written)} hashes in {took:.1f}s (process included): {summary}")
