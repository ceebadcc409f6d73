"""Recovery snapshots with a state key: segments and headers are envelopes, nothing of a person is readable
in the recovery directory, and a snapshot that fails authentication stops the resume before any unpickling."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine import flow, statestore
from engine.crypto import Keyring, SnapshotError, SnapshotSealer, envelope_key_id
from engine.flow import FlowConfig, UserLogic
from engine.statestore import DeltaStore
from operators.shard import Shard, ShardConfig, shard_of
from schemas.events import Vocabulary
from tests.factories import DAY_MS, T0, make_event

SHARD = ShardConfig(live_profiles=True, track_changes=True)
CANARY = "canary-7f3a@example.com"
ERASED = "erased-canary-7f3a@example.com"
KEY = Keyring([("k1", os.urandom(32))])


def _config(state_dir: Path, sealer: SnapshotSealer, shards: int = 1) -> FlowConfig:
    return FlowConfig(Vocabulary(), shards, SHARD, state_dir=state_dir / "state", sealer=sealer)


def _batch(day: int) -> list[Any]:
    users = [CANARY, ERASED, *(f"u{n:03d}" for n in range(20))]
    return [
        make_event(event_id=f"e{day}-{n}", user_id=user, account_id=f"acct-{CANARY}", ts=T0 + day * DAY_MS + n)
        for n, user in enumerate(users)
    ]


def _erase(day: int) -> list[Any]:
    return [make_event(event_id=f"gone-{day}", user_id=ERASED, type="erasure_requested", ts=T0 + day * DAY_MS + 99)]


def _run(tmp_path: Path, sealer: SnapshotSealer) -> tuple[UserLogic, bytes]:
    """Three snapshots, one of them after an erasure (the header then holds the erased id); bytewax's copy
    of the last header is kept in the recovery directory, as its SQLite file would be."""
    logic = UserLogic(_config(tmp_path, sealer), None)
    header = b""
    for day, items in enumerate((_batch(0), _batch(1) + _erase(1), _batch(2)[2:7])):
        logic.on_batch([items])
        snapshot = logic.snapshot()
        assert snapshot is not None
        header = snapshot
        (tmp_path / f"header-{day}.bin").write_bytes(header)
    return logic, header


def _every_byte(root: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file())


def _shard(logic: UserLogic) -> Shard:
    assert isinstance(logic._state, Shard)
    return logic._state


def test_with_a_key_no_byte_of_the_recovery_dir_holds_a_person_and_resume_works(tmp_path: Path) -> None:
    plain_dir, sealed_dir = tmp_path / "plain", tmp_path / "sealed"
    _run(plain_dir, SnapshotSealer())
    # The canaries are there without a key (so the search below can find them)...
    assert CANARY.encode() in _every_byte(plain_dir)
    assert ERASED.encode() in b"".join(p.read_bytes() for p in plain_dir.glob("header-*.bin"))

    sealer = SnapshotSealer(KEY)
    logic, header = _run(sealed_dir, sealer)
    everything = _every_byte(sealed_dir)
    for canary in (CANARY, ERASED, f"acct-{CANARY}"):
        assert canary.encode() not in everything
    assert len(list((sealed_dir / "state").rglob("*.pickle"))) == 3

    resumed = UserLogic(_config(sealed_dir, sealer), header)
    assert sorted(_shard(resumed).users) == sorted(_shard(logic).users)
    assert CANARY in _shard(resumed).users
    assert ERASED in _shard(resumed).erased
    more = _batch(3)
    assert repr(resumed.on_batch([more])) == repr(logic.on_batch([more]))


def _no_unpickling(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """pickle.loads in the snapshot code paths, recorded: a refused snapshot must never reach it."""
    calls: list[bytes] = []
    original = pickle.loads

    def recording(data: bytes, /, **kwargs: Any) -> Any:
        calls.append(data)
        return original(data, **kwargs)

    # Both modules unpickle through the one `pickle` module: patching it covers segments and headers.
    assert vars(flow)["pickle"] is vars(statestore)["pickle"] is pickle
    monkeypatch.setattr(pickle, "loads", recording)
    return calls


def test_a_tampered_segment_stops_the_resume_before_unpickling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sealer = SnapshotSealer(KEY)
    _, header = _run(tmp_path, sealer)
    segments = DeltaStore(tmp_path / "state" / "s000").segments()
    start = max((s.seq for s in segments if s.base), default=0)
    segment = next(s.path for s in segments if s.seq >= start)  # the first one the resume reads
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x40
    segment.write_bytes(bytes(data))
    calls = _no_unpickling(monkeypatch)
    with pytest.raises(SnapshotError) as refused:
        UserLogic(_config(tmp_path, sealer), header)
    assert str(refused.value) == (
        f"pulse: recovery snapshot {segment} failed authentication (key id k1): wrong key or tampered file"
    )
    assert len(calls) == 1  # the header (authenticated) only; no segment was unpickled
    assert b"s000" in calls[0]


def test_a_tampered_header_stops_the_resume_before_unpickling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sealer = SnapshotSealer(KEY)
    _, header = _run(tmp_path, sealer)
    tampered = bytearray(header)
    tampered[-3] ^= 0x01
    calls = _no_unpickling(monkeypatch)
    with pytest.raises(SnapshotError, match=r"header of a Shard in .* failed authentication \(key id k1\)"):
        UserLogic(_config(tmp_path, sealer), bytes(tampered))
    assert calls == []


def test_the_wrong_key_or_no_key_is_refused(tmp_path: Path) -> None:
    _, header = _run(tmp_path, SnapshotSealer(KEY))
    other = SnapshotSealer(Keyring([("k1", b"\x00" * 32)]))
    with pytest.raises(SnapshotError, match=r"failed authentication \(key id k1\): wrong key or tampered file"):
        UserLogic(_config(tmp_path, other), header)
    with pytest.raises(SnapshotError, match="with key id k1, which is not configured"):
        UserLogic(_config(tmp_path, SnapshotSealer(Keyring([("k2", b"\x00" * 32)]))), header)
    with pytest.raises(SnapshotError, match=r"is encrypted \(key id k1\) but no state key is configured"):
        UserLogic(_config(tmp_path, SnapshotSealer()), header)


def test_a_segment_copied_to_another_shard_fails_authentication(tmp_path: Path) -> None:
    sealer = SnapshotSealer(KEY)
    source, target = DeltaStore(tmp_path / "s000", sealer), DeltaStore(tmp_path / "s001", sealer)
    source.write(1, {CANARY: "state"}, base=True)
    target.write(1, {"u1": "state"}, base=True)
    (segment,) = source.segments()
    shutil.copy(segment.path, target.directory / segment.path.name)  # same name: replaces s001's own
    (replaced,) = target.segments()
    assert replaced.path.read_bytes() == segment.path.read_bytes()
    with pytest.raises(SnapshotError, match="failed authentication"):
        target.load(1)
    assert source.load(1) == {CANARY: "state"}


def test_a_header_restored_under_another_shard_key_stops(tmp_path: Path) -> None:
    sealer = SnapshotSealer(KEY)
    config = _config(tmp_path, sealer, shards=2)
    users = [f"u{n:03d}" for n in range(40)]
    mine = [u for u in users if shard_of(u, 2) == 0]
    theirs = [u for u in users if shard_of(u, 2) == 1]
    logic = UserLogic(config, None)
    logic.on_batch([[make_event(event_id="a", user_id=mine[0], ts=T0)]])
    header = logic.snapshot()
    resumed = UserLogic(config, header)
    with pytest.raises(SnapshotError, match="snapshot of shard s000 was restored for shard s001"):
        resumed.on_batch([[make_event(event_id="b", user_id=theirs[0], ts=T0 + 1)]])
    UserLogic(config, header).on_batch([[make_event(event_id="c", user_id=mine[1], ts=T0 + 1)]])


def test_plain_snapshots_are_refused_with_a_key_unless_migrating(tmp_path: Path) -> None:
    logic, header = _run(tmp_path, SnapshotSealer())
    with pytest.raises(SnapshotError, match="is not encrypted but a state key is configured"):
        UserLogic(_config(tmp_path, SnapshotSealer(KEY)), header)
    migrating = SnapshotSealer(KEY, allow_plain=True)
    resumed = UserLogic(_config(tmp_path, migrating), header)
    assert sorted(_shard(resumed).users) == sorted(_shard(logic).users)
    resumed.on_batch([_batch(5)])
    sealed_header = resumed.snapshot()
    assert sealed_header is not None
    assert sealed_header.startswith(b"PLSE")
    # The first snapshot after a plain resume is a base: no plain segment is needed by a resume any more.
    newest = DeltaStore(tmp_path / "state" / "s000").segments()[-1]
    assert newest.base
    assert newest.path.read_bytes().startswith(b"PLSE")
    # After the migration the strict policy resumes from what was written since.
    again = UserLogic(_config(tmp_path, SnapshotSealer(KEY)), sealed_header)
    assert CANARY in _shard(again).users


def test_after_a_key_rotation_the_next_snapshot_rewrites_a_base_under_the_new_key(tmp_path: Path) -> None:
    old_key = os.urandom(32)
    logic, header = _run(tmp_path, SnapshotSealer(Keyring([("2026-05", old_key)])))
    new_key = os.urandom(32)
    rotated = SnapshotSealer(Keyring([("2026-11", new_key), ("2026-05", old_key)]))
    resumed = UserLogic(_config(tmp_path, rotated), header)  # the old key still opens everything
    assert sorted(_shard(resumed).users) == sorted(_shard(logic).users)
    newer = resumed.snapshot()  # nothing changed since the resume: a base all the same
    assert newer is not None
    assert envelope_key_id(newer) == "2026-11"
    segments = DeltaStore(tmp_path / "state" / "s000").segments()
    assert segments[-1].base
    assert envelope_key_id(segments[-1].path.read_bytes()) == "2026-11"
    # The new key alone now resumes: nothing it needs is under the old one.
    alone = UserLogic(_config(tmp_path, SnapshotSealer(Keyring([("2026-11", new_key)]))), newer)
    assert sorted(_shard(alone).users) == sorted(_shard(logic).users)
