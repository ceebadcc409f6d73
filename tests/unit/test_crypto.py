"""AES-256-GCM envelopes and keyrings (engine/crypto.py): what opens, what is refused, and why."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import pytest

from engine.config import ConfigError, load_settings
from engine.crypto import (
    MAGIC,
    AuthenticationError,
    EnvelopeError,
    Keyring,
    SnapshotError,
    SnapshotSealer,
    UnknownKeyIdError,
    dlq_envelope,
    dlq_keyring,
    dlq_reader_keyring,
    envelope_key_id,
    load_keyring,
    new_key,
    open_dlq_envelope,
    open_sealed,
    read_key_file,
    seal,
    state_sealer,
)

CANARY = b"canary-7f3a@example.com"


def _key() -> bytes:
    return os.urandom(32)


def _ring(*ids: str) -> Keyring:
    return Keyring([(key_id, _key()) for key_id in ids])


def test_roundtrip_binds_the_context_and_hides_the_plaintext() -> None:
    keys = _ring("k1")
    data = b"user " + CANARY + b" state"
    sealed = seal(keys, data, b"segment:s001/000000000001-delta-1.pickle")
    assert sealed.startswith(MAGIC)
    assert CANARY not in sealed
    assert envelope_key_id(sealed) == "k1"
    assert open_sealed(keys, sealed, b"segment:s001/000000000001-delta-1.pickle") == data
    # Two seals of the same bytes differ (a fresh nonce each): equal plaintexts are not revealed.
    assert seal(keys, data, b"c") != seal(keys, data, b"c")


def test_a_wrong_key_under_the_same_id_fails_authentication() -> None:
    sealed = seal(_ring("k1"), b"payload", b"ctx")
    with pytest.raises(AuthenticationError, match=r"failed authentication \(key id k1\)"):
        open_sealed(_ring("k1"), sealed, b"ctx")


@pytest.mark.parametrize("position", [0, 4, 5, 8, 12, 20, -1])
def test_any_altered_byte_is_refused(position: int) -> None:
    keys = _ring("k1")
    sealed = bytearray(seal(keys, b"payload " + CANARY, b"ctx"))
    sealed[position] ^= 0x01
    with pytest.raises(EnvelopeError):
        open_sealed(keys, bytes(sealed), b"ctx")


def test_an_unknown_key_id_says_so() -> None:
    sealed = seal(_ring("old"), b"payload", b"ctx")
    with pytest.raises(UnknownKeyIdError, match="unknown key id 'old'"):
        open_sealed(_ring("new"), sealed, b"ctx")


def test_rotation_old_keys_still_open_new_writes_use_the_current_key() -> None:
    old_key, new_key_bytes = _key(), _key()
    before = Keyring([("2025", old_key)])
    written_before = seal(before, b"old data", b"ctx")
    rotated = Keyring([("2026", new_key_bytes), ("2025", old_key)])
    assert open_sealed(rotated, written_before, b"ctx") == b"old data"
    written_after = seal(rotated, b"new data", b"ctx")
    assert envelope_key_id(written_after) == "2026"
    # The new key alone opens what is written now: the old one is not involved any more.
    assert open_sealed(Keyring([("2026", new_key_bytes)]), written_after, b"ctx") == b"new data"


def test_a_sealed_blob_under_another_context_fails() -> None:
    keys = _ring("k1")
    sealed = seal(keys, b"shard one", b"segment:s001/000000000003-delta-2.pickle")
    for other in (b"segment:s002/000000000003-delta-2.pickle", b"segment:s001/000000000004-delta-2.pickle"):
        with pytest.raises(AuthenticationError):
            open_sealed(keys, sealed, other)


def test_the_key_id_is_authenticated_too() -> None:
    """Relabelling an envelope with another configured key id (same length) fails, not falls through."""
    key = _key()
    keys = Keyring([("k1", key), ("k2", key)])
    sealed = seal(keys, b"payload", b"ctx")
    relabelled = sealed.replace(b"k1", b"k2", 1)
    with pytest.raises(AuthenticationError):
        open_sealed(keys, relabelled, b"ctx")


def test_the_sealer_refuses_plain_snapshots_with_a_key_unless_migrating() -> None:
    plain = b"\x80\x05plain pickle"
    with pytest.raises(SnapshotError, match=r"^pulse: recovery snapshot /r/x is not encrypted"):
        SnapshotSealer(_ring("k1")).open(plain, "ctx", "/r/x")
    assert SnapshotSealer(_ring("k1"), allow_plain=True).open(plain, "ctx", "/r/x") == plain
    assert SnapshotSealer().open(plain, "ctx", "/r/x") == plain


def test_the_sealer_messages_name_the_file_and_key() -> None:
    sealed = SnapshotSealer(_ring("k1")).seal(b"state", "ctx")
    with pytest.raises(SnapshotError) as wrong:
        SnapshotSealer(_ring("k1")).open(sealed, "ctx", "/r/s001/seg")
    assert str(wrong.value) == (
        "pulse: recovery snapshot /r/s001/seg failed authentication (key id k1): wrong key or tampered file"
    )
    with pytest.raises(SnapshotError, match="written with key id k1, which is not configured"):
        SnapshotSealer(_ring("k9")).open(sealed, "ctx", "/r/s001/seg")
    with pytest.raises(SnapshotError, match=r"is encrypted \(key id k1\) but no state key is configured"):
        SnapshotSealer().open(sealed, "ctx", "/r/s001/seg")


def test_keys_come_from_the_environment_with_an_id() -> None:
    key = new_key()
    keys = load_keyring({"PULSE_STATE_KEY": key, "PULSE_STATE_KEY_ID": "prod-1"}, "PULSE_STATE_KEY", "", "f")
    assert keys is not None
    assert keys.current == "prod-1"
    assert key not in repr(keys)
    assert load_keyring({}, "PULSE_STATE_KEY", "", "f") is None
    with pytest.raises(ConfigError, match="without PULSE_STATE_KEY_ID"):
        load_keyring({"PULSE_STATE_KEY": key}, "PULSE_STATE_KEY", "", "f")
    short = base64.b64encode(b"x" * 16).decode()
    with pytest.raises(ConfigError, match="32 bytes"):
        load_keyring({"PULSE_STATE_KEY": short, "PULSE_STATE_KEY_ID": "a"}, "PULSE_STATE_KEY", "", "f")
    with pytest.raises(ConfigError, match="not valid base64"):
        load_keyring({"PULSE_STATE_KEY": "not base64!", "PULSE_STATE_KEY_ID": "a"}, "PULSE_STATE_KEY", "", "f")


def test_key_file_first_line_writes_every_line_opens(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    current, previous = new_key(), new_key()
    path = tmp_path / "keys"
    path.write_text(f"# rotated 2026-11\n2026-11:{current}\n\n2026-05:{previous}\n", encoding="utf-8")
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="pulse.crypto"):
        keys = read_key_file(path)
    assert (keys.current, keys.ids) == ("2026-11", ("2026-11", "2026-05"))
    assert not caplog.records
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="pulse.crypto"):
        read_key_file(path)
    assert "readable by group or others" in caplog.text
    assert current not in caplog.text
    assert previous not in caplog.text
    path.write_text(f"2026-11:{current}\n2026-11:{previous}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="appears twice"):
        read_key_file(path)
    path.write_text(f"{current}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 1: expected key_id:base64key"):
        read_key_file(path)


def test_settings_pick_the_key_source(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"file-key:{new_key()}\n", encoding="utf-8")
    env = {"PULSE_ENGINE_STATE_KEY_FILE": str(path)}
    assert state_sealer(load_settings(None, env=env), env).keys is not None
    assert state_sealer(load_settings(None, env={}), {}).keys is None
    both = {**env, "PULSE_STATE_KEY": new_key(), "PULSE_STATE_KEY_ID": "e"}
    with pytest.raises(ConfigError, match="use one"):
        state_sealer(load_settings(None, env=both), both)


def test_a_key_in_the_toml_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "pulse.toml"
    config.write_text(f'[engine]\nstate_key = "{new_key()}"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key"):
        load_settings(config, env={})


def test_dlq_envelope_roundtrip_and_refusals() -> None:
    keys = _ring("dlq-1")
    raw = b'{"user_id": "' + CANARY + b'", "ts": nope}'
    doc = dlq_envelope(keys, raw)
    assert set(doc) == {"pulse_dlq_envelope", "key_id", "nonce", "ciphertext"}
    assert doc["pulse_dlq_envelope"] == 1
    assert doc["key_id"] == "dlq-1"
    assert CANARY.decode() not in repr(doc)
    assert open_dlq_envelope(keys, doc) == raw
    with pytest.raises(AuthenticationError):
        open_dlq_envelope(_ring("dlq-1"), doc)
    with pytest.raises(UnknownKeyIdError):
        open_dlq_envelope(_ring("dlq-2"), doc)
    tampered = bytearray(base64.b64decode(doc["ciphertext"]))
    tampered[0] ^= 1
    with pytest.raises(AuthenticationError):
        open_dlq_envelope(keys, {**doc, "ciphertext": base64.b64encode(bytes(tampered)).decode()})


def test_dlq_encrypt_needs_a_key() -> None:
    on = {"PULSE_DLQ_ENCRYPT": "true"}
    with pytest.raises(ConfigError, match=r"\[dlq\] encrypt = true needs a key"):
        dlq_keyring(load_settings(None, env=on), on)
    keyed = {"PULSE_DLQ_KEY": new_key(), "PULSE_DLQ_KEY_ID": "d1"}
    # A key alone does not turn encryption on (the decrypt command reads with it all the same).
    assert dlq_keyring(load_settings(None, env=keyed), keyed) is None
    assert dlq_reader_keyring(load_settings(None, env=keyed), keyed).current == "d1"
    ring = dlq_keyring(load_settings(None, env={**on, **keyed}), {**on, **keyed})
    assert ring is not None
    assert ring.current == "d1"
