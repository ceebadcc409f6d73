"""Access and erasure on the real broker and Redis: the `access` topic, `pulse export` and `pulse erase`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis

from schemas.codec import format_ts, loads
from tests.integration.conftest import ROOT, Names, PulseProcess, consume_all, free_port, produce, read_topic, wait_for

pytestmark = pytest.mark.integration
DAY_MS = 86_400_000
HOUR_MS = 3_600_000


def _event(event_id: str, user: str, event_type: str, ts: int, **extra: Any) -> tuple[bytes, bytes]:
    """Keyed by the user id, as producers should key events (and as `pulse erase` does)."""
    doc = {"event_id": event_id, "user_id": user, "type": event_type, "ts": format_ts(ts), **extra}
    return user.encode(), orjson.dumps(doc)


def _pulse(names: Names, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env={**os.environ, **names.env, **(env or {})},
        cwd=ROOT,
        capture_output=True,
        timeout=180,
    )


def _json(result: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr.decode()
    doc: dict[str, Any] = loads(result.stdout)
    return doc


def test_access_export_then_pulse_export_and_pulse_erase(
    kafka: str, redis_client: redis.Redis, names: Names, pulse_run: Callable[..., PulseProcess]
) -> None:
    # Recent event times, so live timers run on the wall clock once the input is idle, as in production.
    now = int(time.time() * 1000)
    ann_day, cat_day = now - 2 * DAY_MS, now - 20 * DAY_MS
    events = [
        _event("a1", "ann", "feature_used", ann_day, account_id="acme", feature="reports"),
        _event("a2", "ann", "feature_used", ann_day + 300_000, account_id="acme", feature="reports"),
        _event("a3", "ann", "nps_response", ann_day + DAY_MS, account_id="acme", properties={"score": 8}),
        _event("m1", "mallory", "feature_used", ann_day, account_id="acme", feature="mallory-only"),
        # A daily user silent for two weeks: their lapse alert is open when they are erased.
        *[_event(f"c{d}", "cat", "session_start", cat_day + d * DAY_MS, account_id="acme") for d in range(5)],
        _event("req-1", "ann", "access_requested", ann_day + DAY_MS + HOUR_MS),
    ]
    produce(kafka, names.topic("events"), events)
    pulse = pulse_run(names.env)

    (message,) = consume_all(kafka, names.topic("access"), 1)
    pulse.assert_alive()
    assert message.key() == b"ann"
    export = loads(message.value() or b"")
    assert (export["kind"], export["user_id"], export["request_event_id"], export["found"]) == (
        "access_export", "ann", "req-1", True,
    )  # fmt: skip
    assert export["ts"] == format_ts(ann_day + DAY_MS + HOUR_MS)
    assert export["profile"]["user_id"] == "ann"
    assert export["signals"]["features"] == {"reports": 2}
    assert export["signals"]["nps"] == 8
    assert export["signals"]["account_id"] == "acme"
    assert b"mallory" not in (message.value() or b"")

    # `pulse export`: the Redis hash and the profile table agree, once the profile has been flushed to both.
    ann_key = f"{names.run}:user:ann"

    def settled() -> bool:
        """Ann's hash and her latest table record are the same write (no flush still on its way)."""
        table = [loads(m.value() or b"null") for m in read_topic(kafka, names.topic("profiles")) if m.key() == b"ann"]
        as_of: bytes | None = redis_client.hget(ann_key, "as_of")  # type: ignore[assignment]
        return bool(table) and as_of is not None and table[-1]["as_of"] == as_of.decode()

    wait_for(settled, 60, "ann's profile in Redis and on the profile table")
    held = _json(_pulse(names, "export", "ann"))
    assert held["found"] is True
    assert held["redis"]["key"] == ann_key
    assert held["redis"]["profile"]["features"] == {"reports": 2}
    assert held["redis"]["profile"]["nps"] == 8
    assert held["profile_table"]["profile"] == held["redis"]["profile"]
    assert held["profile_table"]["erased"] is False

    nobody = _json(_pulse(names, "export", "nobody"))
    assert nobody["found"] is False
    assert (nobody["redis"]["profile"], nobody["profile_table"]["profile"], nobody["open_alerts"]["alerts"]) == (
        None, None, [],
    )  # fmt: skip

    # Cat's lapse fires on the wall clock once the input is idle; `pulse export` lists it as open.
    def cat_lapse() -> list[dict[str, Any]]:
        alerts = [loads(m.value() or b"") for m in read_topic(kafka, names.topic("alerts"))]
        return [a for a in alerts if a["user_id"] == "cat" and a["kind"] == "lapse" and a["status"] == "firing"]

    (lapse,) = wait_for(cat_lapse, 90, "cat's lapse alert")
    cat_held = _json(_pulse(names, "export", "cat"))
    assert lapse["alert_id"] in {a["alert_id"] for a in cat_held["open_alerts"]["alerts"]}

    # `pulse erase`: through the input topic, then waits for the key to go and user_erased to come out.
    cat_key = f"{names.run}:user:cat"
    assert redis_client.exists(cat_key)
    erased = _json(_pulse(names, "erase", "cat", "--timeout", "90"))
    pulse.assert_alive()
    assert not redis_client.exists(cat_key)
    assert erased["redis"] == {"key": cat_key, "existed": True, "gone": True}
    assert erased["user_erased"]["kind"] == "user_erased"
    assert erased["user_erased"]["user_id"] == "cat"
    assert lapse["alert_id"] in {a["alert_id"] for a in erased["alerts_closed"]}
    assert all(a["resolution"] == "erased" and a["user_id"] == "cat" for a in erased["alerts_closed"])
    lifecycle = [loads(m.value() or b"") for m in read_topic(kafka, names.topic("lifecycle"))]
    assert erased["user_erased"] in [r for r in lifecycle if r["kind"] == "user_erased"]
    # The input topic holds the erasure event, keyed by the user id.
    requests = [m for m in read_topic(kafka, names.topic("events")) if m.key() == b"cat"]
    assert loads(requests[-1].value() or b"")["event_id"] == erased["erasure_event_id"]

    after = _json(_pulse(names, "export", "cat"))
    assert after["found"] is False
    assert after["profile_table"]["erased"] is True
    # Ann is untouched.
    assert redis_client.exists(ann_key)


def test_export_and_erase_fail_in_one_line_when_kafka_is_unreachable(names: Names) -> None:
    for command in ("export", "erase"):
        result = _pulse(
            names, command, "ann", "--timeout", "30", env={"PULSE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
        )
        assert result.returncode == 1
        assert result.stdout == b""
        (line,) = result.stderr.decode().strip().splitlines()
        assert line.startswith("pulse: error: Kafka at 127.0.0.1:")
        assert "unreachable" in line


def test_erase_times_out_in_one_line_when_no_service_applies_it(kafka: str, names: Names) -> None:
    produce(kafka, names.topic("events"), [])
    produce(kafka, names.topic("lifecycle"), [])
    started = time.monotonic()
    result = _pulse(names, "erase", "ann", "--timeout", "3")
    assert result.returncode == 1
    (line,) = result.stderr.decode().strip().splitlines()
    assert line.startswith("pulse: error: timed out after 3s waiting for the erasure of 'ann'")
    assert time.monotonic() - started < 60
