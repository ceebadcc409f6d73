"""Personal data at rest on the real broker: encrypted dead letters that `pulse dlq decrypt --from-topic`
restores byte for byte, and `pulse run` with a state key writing snapshots with no readable person in them,
resuming from them after a crash, and refusing them under the wrong key or none."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis

from engine.crypto import new_key
from schemas.codec import loads
from tests.integration.conftest import ROOT, Names, PulseProcess, consume_all, produce, wait_for
from tests.integration.test_health_service import committed_input_offsets

pytestmark = pytest.mark.integration

CANARY = "canary-7f3a@example.com"
BAD = [
    b'{"event_id":"b1","user_id":"' + CANARY.encode() + b'","type":"page_view","ts":',
    b'{"event_id":"b2","user_id":"' + CANARY.encode() + b'","type":"page_view","ts":"last tuesday"}',
    b'{"event_id":"b3","user_id":"' + CANARY.encode() + b'","type":"nps_response","ts":1767607200000,'
    b'"properties":{"score":11}}',
]


def _event(event_id: str, user: str, day: int) -> bytes:
    return orjson.dumps(
        {"event_id": event_id, "user_id": user, "account_id": "acme", "type": "page_view",
         "ts": f"2026-01-{day:02d}T09:00:00Z"}
    )  # fmt: skip


def _decrypt(env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "dlq", "decrypt", "--from-topic"],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_encrypted_dead_letters_hold_no_input_and_decrypt_to_the_exact_bytes(
    kafka: str, names: Names, pulse_run: Callable[..., PulseProcess]
) -> None:
    messages: list[tuple[bytes | None, bytes]] = [(CANARY.encode(), value) for value in BAD]
    messages.append((CANARY.encode(), _event("g1", CANARY, 5)))
    produce(kafka, names.topic("events"), messages)
    keys = {"PULSE_DLQ_KEY": new_key(), "PULSE_DLQ_KEY_ID": "dlq-1"}
    pulse = pulse_run({**names.env, "PULSE_DLQ_ENCRYPT": "true", **keys})

    letters = consume_all(kafka, names.topic("dlq"), len(BAD))
    pulse.assert_alive()
    for letter in letters:
        value = letter.value() or b""
        headers = dict(letter.headers() or [])
        assert CANARY.encode() not in value
        assert letter.key() is None  # the user id the message was keyed by is dropped
        assert all(CANARY.encode() not in (v or b"") for v in headers.values())
        assert headers["pulse.error"] in {b"invalid_json", b"invalid_timestamp", b"invalid_property"}
        envelope = loads(value)
        assert (envelope["pulse_dlq_envelope"], envelope["key_id"]) == (1, "dlq-1")

    decrypted = _decrypt({**names.env, **keys})
    assert decrypted.returncode == 0, decrypted.stderr
    assert sorted(decrypted.stdout.splitlines()) == sorted(BAD)
    assert decrypted.stdout.count(b"\n") == len(BAD)
    assert decrypted.stderr.decode().strip() == f"pulse: decrypted 3 dead letter(s) from {names.topic('dlq')}"

    wrong = _decrypt({**names.env, "PULSE_DLQ_KEY": new_key(), "PULSE_DLQ_KEY_ID": "dlq-1"})
    assert wrong.returncode == 1
    assert wrong.stdout == b""
    assert b"failed authentication (key id dlq-1): wrong key or tampered data" in wrong.stderr


def _activity(redis_client: redis.Redis, names: Names) -> int:
    profile: dict[bytes, bytes] = redis_client.hgetall(f"{names.run}:user:{CANARY}")  # type: ignore[assignment]
    return int(loads(profile[b"counts"])["activity"]) if profile else 0


def _exited(run: PulseProcess) -> tuple[int, str]:
    code = run.proc.wait(timeout=120)
    run.stop()
    return code, run.log.read_text(errors="replace")


def test_run_with_a_state_key_encrypts_snapshots_and_resumes_from_them(
    kafka: str, names: Names, pulse_run: Callable[..., PulseProcess], redis_client: redis.Redis, tmp_path: Path
) -> None:
    users = [CANARY, *(f"user-{n}" for n in range(6))]
    first = [(u.encode(), _event(f"a{day}-{u}", u, day)) for day in (5, 6, 7) for u in users]
    second = [(u.encode(), _event(f"b{day}-{u}", u, day)) for day in (8, 9) for u in users]
    produce(kafka, names.topic("events"), first)
    recovery = tmp_path / "recovery"
    env = {
        **names.env,
        "PULSE_ENGINE_RECOVERY_DIR": str(recovery),
        "PULSE_ENGINE_SNAPSHOT_INTERVAL_SECONDS": "1",
        "PULSE_ENGINE_PROFILE_FLUSH_MS": "200",
        "PULSE_STATE_KEY": new_key(),
        "PULSE_STATE_KEY_ID": "state-1",
    }
    run = pulse_run(env)

    def committed_first() -> bool:
        run.assert_alive()
        return committed_input_offsets(recovery) == len(first)

    wait_for(committed_first, 120, "a snapshot of every event of the first part")
    wait_for(lambda: _activity(redis_client, names) == 3, 60, "the canary's profile after the first part")
    run.proc.kill()  # a crash
    run.stop()
    assert "pulse: snapshots encrypted with key id state-1" in run.log.read_text()
    files = [p for p in recovery.rglob("*") if p.is_file()]
    assert any(p.suffix == ".pickle" for p in files)
    for path in files:
        assert CANARY.encode() not in path.read_bytes(), path
        assert b"user-1" not in path.read_bytes(), path

    # More input, then the wrong key and no key: each stops at resume with one clear line and exit status 1
    # (and commits nothing, so the right key still finds every event of the second part unread).
    produce(kafka, names.topic("events"), second)
    wrong = pulse_run({**env, "PULSE_STATE_KEY": new_key()})
    code, log = _exited(wrong)
    assert code == 1, log
    assert "failed authentication (key id state-1): wrong key or tampered file" in log
    keyless = pulse_run({k: v for k, v in env.items() if not k.startswith("PULSE_STATE_KEY")})
    code, log = _exited(keyless)
    assert code == 1, log
    assert "is encrypted (key id state-1) but no state key is configured" in log
    assert "pulse: warning: recovery snapshots are not encrypted" in log

    # The right key resumes: the canary's three earlier events are still counted after two more.
    resumed = pulse_run(env)

    def caught_up() -> bool:
        resumed.assert_alive()
        return _activity(redis_client, names) == 5

    wait_for(caught_up, 120, "the canary's profile to count the events of both parts")
    wait_for(lambda: committed_input_offsets(recovery) == len(first) + len(second), 120, "a snapshot of both parts")
    assert resumed.stop() in (0, -15)
