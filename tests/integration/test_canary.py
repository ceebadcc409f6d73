"""Free text never leaves: e-mail addresses and names pushed through every free-text field of valid events
appear in no output topic, Redis value, snapshot, log line, /metrics page or replay output file."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis

from engine.config import load_settings
from engine.replay import replay
from tests.integration.conftest import Names, PulseProcess, produce, read_topic, redis_blob, wait_for
from tests.integration.test_health_service import committed_input_offsets

pytestmark = pytest.mark.integration
CANARIES = (b"carl.smith", b"Carl Smith", b"@x.com", b"Smith")
EMAIL = "carl.smith@x.com"


def _canary_events() -> list[bytes]:
    person = {"email": EMAIL, "name": "Carl Smith", "phone": "+1 555 0100", "ip": "10.1.2.3"}
    rows: list[dict[str, object]] = [
        {"type": "session_start", "properties": person},
        {"type": "feature_used", "feature": f"search:q={EMAIL}"},
        {"type": "feature_used", "feature": "Carl Smith's board"},
        {"type": "feature_used", "feature": "reports"},
        {"type": "subscribed", "properties": {"plan": f"Carl Smith ({EMAIL})", "mrr": 99}},
        {"type": "plan_changed", "properties": {"plan": EMAIL, "direction": "up"}},
        {"type": "support_ticket_opened", "properties": {"ticket_id": f"{EMAIL}-1", "severity": "high"}},
        {"type": "support_ticket_resolved", "properties": {"ticket_id": f"{EMAIL}-1"}},
        {"type": f"{EMAIL} clicked", "properties": {"note": "Carl Smith"}},
        {"type": "experiment_exposed", "properties": {"experiment": EMAIL, "variant": "Carl Smith"}},
        {"type": "nps_response", "properties": {"score": 3, "comment": f"Carl Smith {EMAIL} hates it"}},
        {"type": "cancellation_requested", "properties": {"reason": f"Carl Smith {EMAIL} said too pricey"}},
        {"type": "subscription_cancelled", "properties": {"reason": "Carl Smith", "regrettable": True}},
    ]
    events = []
    for i, row in enumerate(rows):
        ts = 1_767_600_000_000 + i * 3_600_000  # 2026-01-05, an hour apart
        events.append(orjson.dumps({"event_id": f"c{i}", "user_id": "u-7", "account_id": "acct-9", "ts": ts, **row}))
    return events


def _leaks(blob: bytes) -> list[bytes]:
    return [c for c in CANARIES if c in blob]


def test_no_free_text_reaches_any_output(
    kafka: str,
    names: Names,
    pulse_run: Callable[..., PulseProcess],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    events = _canary_events()
    produce(kafka, names.topic("events"), [(b"u-7", e) for e in events], partitions=1)
    recovery = tmp_path / "recovery"
    env = {
        **names.env,
        "PULSE_ENGINE_RECOVERY_DIR": str(recovery),
        "PULSE_ENGINE_SNAPSHOT_INTERVAL_SECONDS": "0.5",
        "PULSE_ENGINE_PROFILE_FLUSH_MS": "100",
    }
    service = pulse_run(env)
    wait_for(lambda: committed_input_offsets(recovery) == len(events), 60, "a snapshot of every event")
    wait_for(lambda: redis_client.exists(f"{names.run}:user:u-7"), 30, "the profile in Redis")
    with urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5) as response:
        metrics_page = response.read()
    assert b'pulse_untracked_names_total{field="feature"} 2.0' in metrics_page
    service.assert_alive()
    service.stop()  # SIGTERM: the log is complete

    topics = ("scores", "alerts", "lifecycle", "accounts", "profiles", "account-profiles", "dlq")
    found: dict[str, list[bytes]] = {}
    for topic in topics:
        for message in read_topic(kafka, names.topic(topic)):
            leaks = _leaks((message.value() or b"") + (message.key() or b""))
            if leaks:
                found[f"topic {topic}"] = leaks
    assert read_topic(kafka, names.topic("lifecycle")), "the stream produced lifecycle records to check"
    for key in redis_client.scan_iter(f"{names.run}:*"):
        blob = key + redis_blob(redis_client, key)
        if _leaks(blob):
            found[f"redis {key!r}"] = _leaks(blob)
    snapshots = list(recovery.glob("part-*.sqlite3"))
    entries = list(recovery.glob("state/*/*.pickle"))  # the incremental snapshots: changed users and accounts
    assert snapshots
    assert entries
    snapshots += entries
    for db in snapshots:
        for path in (db, db.with_name(db.name + "-wal")):
            if path.exists() and _leaks(path.read_bytes()):
                found[f"snapshot {path.name}"] = _leaks(path.read_bytes())
    if _leaks(service.log.read_bytes()):
        found["log"] = _leaks(service.log.read_bytes())
    if _leaks(metrics_page):
        found["/metrics"] = _leaks(metrics_page)

    (tmp_path / "in.jsonl").write_bytes(b"\n".join(events) + b"\n")
    summary = replay(tmp_path / "in.jsonl", tmp_path / "out", load_settings(None, env={})).summary
    assert summary["rejected"] == 0, "every canary event is valid: none may hide in the dead letters"
    for path in (tmp_path / "out").iterdir():
        if _leaks(path.read_bytes()):
            found[f"replay {path.name}"] = _leaks(path.read_bytes())
    assert found == {}
