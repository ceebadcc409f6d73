"""What an SRE reads from a running `pulse run`: consumer and event-time lag per partition, latency
histograms, build info, readiness, and the offsets committed for Kafka's own lag tools."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable

import orjson
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.integration.conftest import Names, PulseProcess, produce, wait_for

pytestmark = pytest.mark.integration
PARTITIONS = 4
EVENTS = 400


def _events(now_s: float) -> list[tuple[bytes | None, bytes]]:
    messages: list[tuple[bytes | None, bytes]] = []
    for n in range(EVENTS):
        user = f"u{n % 40:02d}"
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_s - 3600 + n))
        doc = {"event_id": f"e{n}", "user_id": user, "account_id": "acme", "type": "page_view", "ts": ts}
        messages.append((user.encode(), orjson.dumps(doc)))
    return messages


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def test_lag_latency_build_info_readiness_and_committed_offsets(
    kafka: str, names: Names, pulse_run: Callable[..., PulseProcess]
) -> None:
    produce(kafka, names.topic("events"), _events(time.time()), partitions=PARTITIONS)
    group = f"{names.run}-group"
    pulse = pulse_run({
        **names.env,
        "PULSE_KAFKA_COMMIT_OFFSETS": "true",
        "PULSE_KAFKA_GROUP_ID": group,
        "PULSE_ENGINE_SNAPSHOT_INTERVAL_SECONDS": "1",
    })  # fmt: skip

    def caught_up() -> dict[str, float]:
        m = pulse.metrics()
        lags = {k: v for k, v in m.items() if k.startswith("pulse_consumer_lag{")}
        done = m.get("pulse_events_applied_total") == EVENTS and len(lags) == PARTITIONS
        done = done and m.get("pulse_redis_write_seconds_count", 0) > 0  # profiles flush every 5 s
        return m if done and not any(lags.values()) else {}

    m = wait_for(caught_up, 90, f"{EVENTS} events applied, profiles written and zero lag on {PARTITIONS} partitions")
    pulse.assert_alive()
    assert m["pulse_partitions_assigned"] == PARTITIONS
    assert {f'pulse_consumer_lag{{partition="{p}"}}' for p in range(PARTITIONS)} <= set(m)
    event_lags = {k: v for k, v in m.items() if k.startswith("pulse_event_time_lag_seconds{")}
    assert len(event_lags) == PARTITIONS
    # The events are stamped within the last hour: the lag of a partition that is not idle yet is that old.
    assert all(0 <= v < 2 * 3600 for v in event_lags.values())
    assert m["pulse_end_to_end_latency_seconds_count"] > 0
    assert m["pulse_kafka_write_seconds_count"] > 0
    assert m["pulse_redis_write_seconds_count"] > 0
    (info,) = [k for k in m if k.startswith("pulse_build_info{")]
    assert 'model="score-' in info
    assert m[info] == 1

    status, reason = _get(pulse.metrics_port, "/readyz")
    assert (status, reason.split(":")[0]) == (200, "ok")
    assert _get(pulse.metrics_port, "/healthz") == (200, "ok\n")

    # Offsets of the snapshots are committed to the group, so Kafka's lag tools see Pulse caught up.
    admin = AdminClient({"bootstrap.servers": kafka})
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(names.topic("events"), p) for p in range(PARTITIONS)])

    def committed() -> int:
        result = admin.list_consumer_group_offsets([request])[group].result(timeout=10)
        return sum(tp.offset for tp in result.topic_partitions if tp.offset >= 0)

    wait_for(lambda: committed() == EVENTS, 60, f"committed offsets of group {group} to add up to {EVENTS}")
    pulse.assert_alive()
