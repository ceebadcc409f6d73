"""`[dlq] encrypt` in replay: dlq.jsonl holds envelopes (and its other fields), no input byte in clear, and
`pulse dlq decrypt FILE` gives back the exact original lines with the key, and nothing without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import main
from engine.crypto import new_key
from schemas.codec import loads

CANARY = b"canary-7f3a@example.com"
# Invalid events with a canary: not JSON, invalid UTF-8, a bad timestamp; then one valid event.
BAD = [
    b'{"user_id": "' + CANARY + b'", "event_id": "e1", "type": "page_view", "ts": ' + b"}",
    b'{"user_id": "' + CANARY + b'", "note": "\xff\xfe"}',
    b'{"event_id":"e2","user_id":"' + CANARY + b'","type":"page_view","ts":"yesterday"}',
]
GOOD = b'{"event_id":"e3","user_id":"' + CANARY + b'","type":"page_view","ts":1767607200000}'


@pytest.fixture
def dlq_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = new_key()
    monkeypatch.setenv("PULSE_DLQ_ENCRYPT", "true")
    monkeypatch.setenv("PULSE_DLQ_KEY", key)
    monkeypatch.setenv("PULSE_DLQ_KEY_ID", "dlq-2026")
    return key


def test_replay_writes_envelopes_and_decrypt_restores_the_bytes(
    tmp_path: Path, dlq_key: str, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    events = tmp_path / "in.jsonl"
    events.write_bytes(b"\n".join([BAD[0], GOOD, BAD[1], BAD[2]]) + b"\n")
    out = tmp_path / "out"
    assert main(["replay", str(events), "--out", str(out)]) == 0
    dlq = (out / "dlq.jsonl").read_bytes()
    assert CANARY not in dlq
    docs = [loads(line) for line in dlq.splitlines()]
    assert [(d["code"], d["line"], d["source"]) for d in docs] == [
        ("invalid_json", 1, str(events)),
        ("invalid_json", 3, str(events)),
        ("invalid_timestamp", 4, str(events)),
    ]
    for doc in docs:
        assert set(doc) == {"code", "detail", "source", "line", "pulse_dlq_envelope", "key_id", "nonce", "ciphertext"}
        assert (doc["pulse_dlq_envelope"], doc["key_id"]) == (1, "dlq-2026")
    capsysbinary.readouterr()

    assert main(["dlq", "decrypt", str(out / "dlq.jsonl")]) == 0
    captured = capsysbinary.readouterr()
    assert captured.out == b"".join(line + b"\n" for line in BAD)
    assert captured.err == f"pulse: decrypted 3 dead letter(s) from {out / 'dlq.jsonl'}\n".encode()

    # Another key under the same id: a one-line refusal, and not a byte of output.
    monkeypatch.setenv("PULSE_DLQ_KEY", new_key())
    assert main(["dlq", "decrypt", str(out / "dlq.jsonl")]) == 1
    captured = capsysbinary.readouterr()
    assert captured.out == b""
    assert (
        captured.err
        == (
            f"pulse: error: {out / 'dlq.jsonl'} line 1: failed authentication (key id dlq-2026): wrong key or "
            "tampered data\n"
        ).encode()
    )


def test_without_encrypt_dlq_jsonl_is_unchanged_and_decrypt_skips_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    events = tmp_path / "in.jsonl"
    events.write_bytes(BAD[2] + b"\n")
    out = tmp_path / "out"
    assert main(["replay", str(events), "--out", str(out)]) == 0
    (doc,) = [loads(line) for line in (out / "dlq.jsonl").read_bytes().splitlines()]
    assert set(doc) == {"code", "detail", "source", "line", "raw", "raw_base64"}
    monkeypatch.setenv("PULSE_DLQ_KEY", new_key())
    monkeypatch.setenv("PULSE_DLQ_KEY_ID", "k")
    capsysbinary.readouterr()
    assert main(["dlq", "decrypt", str(out / "dlq.jsonl")]) == 0
    captured = capsysbinary.readouterr()
    assert captured.out == b""
    assert b"1 record(s) not encrypted, skipped" in captured.err


def test_encrypt_without_a_key_stops_before_replaying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PULSE_DLQ_ENCRYPT", "true")
    monkeypatch.delenv("PULSE_DLQ_KEY", raising=False)
    events = tmp_path / "in.jsonl"
    events.write_bytes(BAD[0] + b"\n")
    assert main(["replay", str(events), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        "pulse: error: [dlq] encrypt = true needs a key: PULSE_DLQ_KEY and PULSE_DLQ_KEY_ID, or [dlq] key_file\n"
    )
    assert not (tmp_path / "out").exists()
    assert main(["dlq", "decrypt"]) == 2
    assert main(["dlq", "decrypt", str(events), "--from-topic"]) == 2
