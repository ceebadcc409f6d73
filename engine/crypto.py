"""Personal data at rest: AES-256-GCM envelopes for recovery snapshots and dead letters.

Snapshots hold per-user state and held events (user ids, account ids, event ids), and dead letters hold
the raw input. Both can be sealed with a key that never comes from the TOML file: the environment
(one key) or a key file (`key_id:base64key` per line; the first line is the key new data is written with,
the others still open what older keys wrote, which is how a key is rotated).

A binary envelope is `MAGIC | VERSION | len(key id) | key id | nonce (12) | ciphertext + tag`. The
associated data authenticates the magic, version and key id together with a *context* the caller names
(a segment's shard and file name, a header's shard kind): a file moved to another name or shard fails
authentication like a tampered one. Opening happens before anything is unpickled, so a forged snapshot
never reaches pickle.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.config import ConfigError, Settings

log = logging.getLogger("pulse.crypto")

MAGIC = b"PLSE"
VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32
# Key ids go into every envelope and into messages: short, printable, no separator of the key file.
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DLQ_ENVELOPE = "pulse_dlq_envelope"
DLQ_CONTEXT = b"dlq"


class SnapshotError(RuntimeError):
    """A recovery snapshot that must not be loaded (failed authentication, unknown key, a plain snapshot
    where encrypted ones are required); the message is one line for the operator."""


class EnvelopeError(ValueError):
    """An envelope that cannot be opened: unknown key id, failed authentication, or malformed."""


class UnknownKeyIdError(EnvelopeError):
    """The envelope names a key id the keyring does not hold (a key removed too early, another keyring)."""


class AuthenticationError(EnvelopeError):
    """The key exists but the tag does not verify: another key under the same id, or altered bytes."""


def new_key() -> str:
    """A fresh key, base64 as the environment and key file take it."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def _parse_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: the key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{where}: the key must be {KEY_BYTES} bytes (base64 of os.urandom(32)), got {len(key)}")
    return key


def _check_id(key_id: str, where: str) -> str:
    if not _KEY_ID.fullmatch(key_id):
        raise ConfigError(f"{where}: key id {key_id!r} must be 1-64 characters of A-Z a-z 0-9 . _ - (not first)")
    return key_id


class Keyring:
    """Keys by id; `current` seals, every key opens. Never shows key material (repr lists the ids)."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ConfigError("a keyring needs at least one key")
        self.current = keys[0][0]
        self._ciphers: dict[str, AESGCM] = {}
        for key_id, key in keys:
            if key_id in self._ciphers:
                raise ConfigError(f"key id {key_id!r} appears twice")
            self._ciphers[key_id] = AESGCM(key)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    def __repr__(self) -> str:
        return f"Keyring(current={self.current!r}, ids={list(self._ciphers)!r})"

    def encrypt(self, data: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """(nonce, ciphertext + tag) under the current key. A random 96-bit nonce per message: the number
        of messages one key seals (a few per shard and epoch) stays far below the 2^32 bound."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce, self._ciphers[self.current].encrypt(nonce, data, aad)

    def decrypt(self, key_id: str, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownKeyIdError(f"unknown key id {key_id!r} (this keyring has {', '.join(self._ciphers)})")
        try:
            return cipher.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise AuthenticationError(f"failed authentication (key id {key_id}): wrong key or tampered data") from None


def _aad(key_id: bytes, context: bytes) -> bytes:
    return MAGIC + bytes([VERSION, len(key_id)]) + key_id + context


def seal(keys: Keyring, data: bytes, context: bytes) -> bytes:
    """The binary envelope of `data`, bound to `context`."""
    key_id = keys.current.encode("ascii")
    nonce, ciphertext = keys.encrypt(data, _aad(key_id, context))
    return MAGIC + bytes([VERSION, len(key_id)]) + key_id + nonce + ciphertext


def is_sealed(data: bytes) -> bool:
    return data[: len(MAGIC)] == MAGIC


def envelope_key_id(data: bytes) -> str:
    """The key id an envelope names (unauthenticated until opened: for messages only)."""
    start = len(MAGIC) + 2
    if len(data) < start or data[len(MAGIC)] != VERSION:
        raise EnvelopeError("not a Pulse envelope of a known version")
    return data[start : start + data[start - 1]].decode("ascii", "replace")


def open_sealed(keys: Keyring, data: bytes, context: bytes) -> bytes:
    """The plaintext of an envelope made by `seal` with the same context; EnvelopeError otherwise."""
    if not is_sealed(data) or len(data) < len(MAGIC) + 2:
        raise EnvelopeError("not a Pulse envelope")
    if data[len(MAGIC)] != VERSION:
        raise EnvelopeError(f"envelope format version {data[len(MAGIC)]} is not supported (this Pulse reads 1)")
    start = len(MAGIC) + 2
    end = start + data[start - 1]
    key_id = data[start:end]
    nonce, ciphertext = data[end : end + NONCE_BYTES], data[end + NONCE_BYTES :]
    if len(nonce) != NONCE_BYTES or not ciphertext:
        raise EnvelopeError("truncated envelope")
    return keys.decrypt(key_id.decode("ascii", "replace"), nonce, ciphertext, _aad(key_id, context))


@dataclass(frozen=True, slots=True)
class SnapshotSealer:
    """The snapshot policy: with a keyring every snapshot is sealed and only sealed ones are loaded (a plain
    one is refused unless `allow_plain`, for a one-off migration); without one, snapshots are plain pickles
    and a sealed one is refused (its key is missing, not to be ignored)."""

    keys: Keyring | None = None
    allow_plain: bool = False

    def seal(self, data: bytes, context: str) -> bytes:
        return data if self.keys is None else seal(self.keys, data, context.encode())

    def open(self, data: bytes, context: str, where: str) -> bytes:
        """The pickle inside a snapshot read from `where`; SnapshotError when it must not be loaded."""
        if not is_sealed(data):
            if self.keys is None or self.allow_plain:
                return data
            raise SnapshotError(
                f"pulse: recovery snapshot {where} is not encrypted but a state key is configured: refusing it "
                "(set [engine] allow_plain_state = true once to migrate a plain recovery directory)"
            )
        if self.keys is None:
            raise SnapshotError(
                f"pulse: recovery snapshot {where} is encrypted (key id {_key_id_or_unknown(data)}) but no state key "
                "is configured: set PULSE_STATE_KEY and PULSE_STATE_KEY_ID or [engine] state_key_file"
            )
        key_id = _key_id_or_unknown(data)
        try:
            return open_sealed(self.keys, data, context.encode())
        except UnknownKeyIdError:
            raise SnapshotError(
                f"pulse: recovery snapshot {where} was written with key id {key_id}, which is not configured "
                f"(configured: {', '.join(self.keys.ids)}): keep the old key in the key file until it is rotated out"
            ) from None
        except AuthenticationError:
            raise SnapshotError(
                f"pulse: recovery snapshot {where} failed authentication (key id {key_id}): wrong key or tampered file"
            ) from None
        except EnvelopeError as exc:
            raise SnapshotError(f"pulse: recovery snapshot {where} cannot be read: {exc}") from None


PLAIN = SnapshotSealer()


def _key_id_or_unknown(data: bytes) -> str:
    try:
        return envelope_key_id(data)
    except EnvelopeError:
        return "?"


def read_key_file(path: Path) -> Keyring:
    """`key_id:base64key` per line (blank lines and `#` comments skipped); the first key is the current one."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"key file {where}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("key file %s is readable by group or others: chmod 600 it", where)
    keys: list[tuple[str, bytes]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key_id, sep, key = line.partition(":")
        if not sep:
            raise ConfigError(f"key file {where} line {number}: expected key_id:base64key")
        keys.append((_check_id(key_id.strip(), f"{where} line {number}"), _parse_key(key, f"{where} line {number}")))
    if not keys:
        raise ConfigError(f"key file {where} holds no key")
    return Keyring(keys)


def load_keyring(env: Mapping[str, str], key_var: str, key_file: str, setting: str) -> Keyring | None:
    """The keyring from `key_var` (+ `key_var`_ID) or from `key_file`; None when neither is set. Both set is
    an error: which one writes would otherwise be a guess."""
    key_text = env.get(key_var, "")
    if key_text and key_file:
        raise ConfigError(f"both {key_var} and {setting} are set: use one")
    if key_file:
        return read_key_file(Path(key_file))
    if not key_text:
        return None
    id_var = f"{key_var}_ID"
    key_id = env.get(id_var, "")
    if not key_id:
        raise ConfigError(f"{key_var} is set without {id_var}: name the key (it is stored with what it seals)")
    return Keyring([(_check_id(key_id, id_var), _parse_key(key_text, key_var))])


def state_sealer(settings: Settings, env: Mapping[str, str] | None = None) -> SnapshotSealer:
    """The snapshot policy of `pulse run`: sealed with PULSE_STATE_KEY or [engine] state_key_file."""
    engine = settings.engine
    keys = load_keyring(
        os.environ if env is None else env, "PULSE_STATE_KEY", engine.state_key_file, "[engine] state_key_file"
    )
    return SnapshotSealer(keys, engine.allow_plain_state)


def dlq_keyring(settings: Settings, env: Mapping[str, str] | None = None) -> Keyring | None:
    """What dead letters are sealed with: None unless [dlq] encrypt is on, and then a key is required."""
    if not settings.dlq.encrypt:
        return None
    keys = _dlq_keys(settings, env)
    if keys is None:
        raise ConfigError("[dlq] encrypt = true needs a key: PULSE_DLQ_KEY and PULSE_DLQ_KEY_ID, or [dlq] key_file")
    return keys


def dlq_reader_keyring(settings: Settings, env: Mapping[str, str] | None = None) -> Keyring:
    """What `pulse dlq decrypt` opens envelopes with: the same keys, whatever [dlq] encrypt says now."""
    keys = _dlq_keys(settings, env)
    if keys is None:
        raise ConfigError("no dead-letter key: set PULSE_DLQ_KEY and PULSE_DLQ_KEY_ID, or [dlq] key_file")
    return keys


def _dlq_keys(settings: Settings, env: Mapping[str, str] | None) -> Keyring | None:
    return load_keyring(os.environ if env is None else env, "PULSE_DLQ_KEY", settings.dlq.key_file, "[dlq] key_file")


def dlq_envelope(keys: Keyring, raw: bytes) -> dict[str, Any]:
    """The JSON envelope of a dead letter's original bytes."""
    key_id = keys.current
    nonce, ciphertext = keys.encrypt(raw, _dlq_aad(key_id))
    return {
        DLQ_ENVELOPE: VERSION,
        "key_id": key_id,
        "nonce": base64.b64encode(nonce).decode("ascii"),
        "ciphertext": base64.b64encode(ciphertext).decode("ascii"),
    }


def _dlq_aad(key_id: str) -> bytes:
    return _aad(key_id.encode("ascii"), DLQ_CONTEXT)


def open_dlq_envelope(keys: Keyring, doc: Mapping[str, Any]) -> bytes:
    """The original bytes of a dead-letter envelope (a parsed JSON object); EnvelopeError otherwise."""
    version = doc.get(DLQ_ENVELOPE)
    if version != VERSION:
        raise EnvelopeError(f"not a dead-letter envelope of a known version ({DLQ_ENVELOPE} = {version!r})")
    key_id, nonce, ciphertext = doc.get("key_id"), doc.get("nonce"), doc.get("ciphertext")
    if not (isinstance(key_id, str) and isinstance(nonce, str) and isinstance(ciphertext, str)):
        raise EnvelopeError("a dead-letter envelope needs key_id, nonce and ciphertext strings")
    try:
        raw_nonce = base64.b64decode(nonce, validate=True)
        raw_ciphertext = base64.b64decode(ciphertext, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError("a dead-letter envelope's nonce or ciphertext is not base64") from None
    if len(raw_nonce) != NONCE_BYTES:
        raise EnvelopeError("a dead-letter envelope's nonce must be 12 bytes")
    if not _KEY_ID.fullmatch(key_id):
        raise EnvelopeError(f"malformed key id {key_id!r}")
    return keys.decrypt(key_id, raw_nonce, raw_ciphertext, _dlq_aad(key_id))
