"""Incremental snapshots: only changed entries are written, and a resume rebuilds exactly the snapshot's state."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.flow import AccountLogic, FlowConfig, UserLogic
from engine.statestore import KEEP, REWRITE_FACTOR, DeltaStore
from operators.accounts import AccountShard
from operators.health import MemberUpdate
from operators.shard import Shard, ShardConfig
from schemas.events import Vocabulary
from tests.factories import DAY_MS, T0, make_event

SHARD = ShardConfig(live_profiles=True, track_changes=True)


# A stopped wall clock, after every event here: live profile flushes (due a second after a shard starts or
# last flushed) then never depend on how long a test takes, so a resumed shard and the original flush alike.
STOPPED_CLOCK = datetime(2027, 1, 1, tzinfo=UTC)


def _config(state_dir: Path) -> FlowConfig:
    return FlowConfig(Vocabulary(), 1, SHARD, state_dir=state_dir, clock=lambda: STOPPED_CLOCK)


def _events(users: range, day: int, tag: str = "") -> list[Any]:
    return [
        make_event(
            event_id=f"e{day}{tag}-{u}", user_id=f"u{u:04d}", account_id=f"acct-{u % 7}", ts=T0 + day * DAY_MS + u
        )
        for u in users
    ]


def _state(shard: Shard | AccountShard) -> dict[str, Any]:
    """Everything the shard holds, comparable: a copy, with entries as pickles and the timer heap as its
    current timers."""
    if isinstance(shard, AccountShard):
        state: dict[str, Any] = {
            "header": shard.header(),
            "accounts": {k: pickle.dumps(v) for k, v in sorted(shard.accounts.items())},
        }
    else:
        state = {
            "header": shard.header(),
            "users": {k: pickle.dumps(v) for k, v in sorted(shard.users.items())},
            "seen": shard.seen,
            "seen_count": shard.seen_count,
            "timers": sorted((u.timer_at, k) for k, u in shard.users.items() if u.timer_at >= 0),
        }
    copy: dict[str, Any] = pickle.loads(pickle.dumps(state))
    return copy


def _store(tmp_path: Path) -> DeltaStore:
    return DeltaStore(tmp_path / "s000")


def _segments(path: Path) -> list[tuple[int, bool, int]]:
    return [(s.seq, s.base, s.entries) for s in DeltaStore(path).segments()]


def _keys_stored(store: DeltaStore) -> set[str]:
    return {key for segment in store.segments() for key in pickle.loads(segment.path.read_bytes())}


def test_a_snapshot_writes_only_the_users_changed_since_the_last(tmp_path: Path) -> None:
    logic = UserLogic(_config(tmp_path), None)
    logic.on_batch([_events(range(100), 0)])
    logic.snapshot()
    logic.on_batch([_events(range(10), 0, "again")])  # the same day: no timer of anybody else is due
    logic.snapshot()
    logic.snapshot()  # nothing changed: no rows, same sequence number
    assert _segments(tmp_path / "s000") == [(1, False, 100), (2, False, 10)]


def test_resume_rebuilds_the_state_exactly(tmp_path: Path) -> None:
    config = _config(tmp_path)
    logic = UserLogic(config, None)
    for day in range(3 * KEEP):  # several base segments and compactions on the way
        logic.on_batch([_events(range(day % 5, 60, 3), day)])
        header = logic.snapshot()
    assert isinstance(logic._state, Shard)
    expected = _state(logic._state)
    resumed = UserLogic(config, header)
    assert isinstance(resumed._state, Shard)
    assert _state(resumed._state) == expected
    # The resumed shard goes on like the original: the same outputs for the same next events.
    more = _events(range(60), 40, "next")
    assert repr(resumed.on_batch([more])) == repr(logic.on_batch([more]))


def test_resume_from_an_earlier_snapshot_forgets_the_uncommitted_one(tmp_path: Path) -> None:
    """A crash after a snapshot was written but before bytewax committed it resumes from the one before."""
    config = _config(tmp_path)
    logic = UserLogic(config, None)
    logic.on_batch([_events(range(50), 0)])
    committed = logic.snapshot()
    assert isinstance(logic._state, Shard)
    expected = _state(logic._state)
    logic.on_batch([_events(range(20), 1), _events(range(50, 70), 1)])
    logic.snapshot()
    resumed = UserLogic(config, committed)
    assert isinstance(resumed._state, Shard)
    assert _state(resumed._state) == expected
    assert [seq for seq, _, _ in _segments(tmp_path / "s000")] == [1]


def test_a_fresh_shard_ignores_rows_left_by_an_earlier_run(tmp_path: Path) -> None:
    config = _config(tmp_path)
    old = UserLogic(config, None)
    old.on_batch([_events(range(30), 0)])
    old.snapshot()
    fresh = UserLogic(config, None)  # bytewax has no state for the key: a new recovery directory
    fresh.on_batch([_events(range(5), 3)])
    header = fresh.snapshot()
    resumed = UserLogic(config, header)
    assert isinstance(resumed._state, Shard)
    assert sorted(resumed._state.users) == [f"u{u:04d}" for u in range(5)]


def test_an_erased_user_leaves_the_store_after_compaction(tmp_path: Path) -> None:
    config = _config(tmp_path)
    logic = UserLogic(config, None)
    logic.on_batch([_events(range(10), 0)])
    logic.snapshot()
    erase = make_event(event_id="gone", user_id="u0003", type="erasure_requested", ts=T0 + DAY_MS)
    logic.on_batch([[erase]])
    header = logic.snapshot()
    resumed = UserLogic(config, header)
    assert isinstance(resumed._state, Shard)
    assert "u0003" not in resumed._state.users
    store = _store(tmp_path)
    latest = pickle.loads(store.segments()[-1].path.read_bytes())
    assert latest["u0003"][0] is None  # no state: only the ids that catch re-sent copies of old events
    for day in range(2, 10 + 2 * KEEP):  # the ids age out on day 8; then a base, KEEP snapshots old
        assert isinstance(logic._state, Shard)
        logic._state.prune_at = 1  # prune the ids every batch
        logic.on_batch([_events(range(4, 10), day)])
        header = logic.snapshot()
    assert "u0003" not in _keys_stored(store)
    for path in store.directory.iterdir():
        assert b"u0003" not in path.read_bytes(), path.name
    # Bases and compaction keep the store in proportion to the state: at most the last KEEP snapshots (9
    # users changed in each) and one rewrite cycle before them.
    assert sum(s.entries for s in store.segments()) <= (KEEP + REWRITE_FACTOR + 1) * 9
    assert any(s.base for s in store.segments())
    resumed = UserLogic(config, header)
    assert isinstance(resumed._state, Shard)
    assert isinstance(logic._state, Shard)
    assert _state(resumed._state) == _state(logic._state)


def test_account_shards_snapshot_incrementally_too(tmp_path: Path) -> None:
    config = FlowConfig(Vocabulary(), 1, SHARD, state_dir=tmp_path)
    logic = AccountLogic(config, None)
    updates = [
        MemberUpdate(f"acct-{n % 4}", f"u{n}", T0 + n, 70.0, "healthy", T0 + n, "paying", T0, None, f"e{n}", 1)
        for n in range(40)
    ]
    logic.on_batch([updates])
    header = logic.snapshot()
    assert _segments(tmp_path / "a000") == [(1, False, 4)]
    resumed = AccountLogic(config, header)
    assert isinstance(resumed._state, AccountShard)
    assert isinstance(logic._state, AccountShard)
    assert _state(resumed._state) == _state(logic._state)


def test_no_recovery_means_no_snapshot(tmp_path: Path) -> None:
    logic = UserLogic(FlowConfig(Vocabulary(), 1, ShardConfig(live_profiles=True), state_dir=None), None)
    logic.on_batch([_events(range(3), 0)])
    assert logic.snapshot() is None
    assert not list(tmp_path.iterdir())


def test_store_load_replays_the_latest_base_and_the_segments_after_it(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write(1, {"a": "a1", "b": "b1"}, base=False)
    store.write(2, {"a": "a2", "b": None}, base=False)
    assert store.load(2) == {"a": "a2"}
    store.write(3, {"a": "a2", "c": "c3"}, base=True)
    store.write(4, {"c": "c4"}, base=False)
    store.compact(3)
    assert [s.seq for s in store.segments()] == [3, 4]
    assert store.load(4) == {"a": "a2", "c": "c4"}
    assert store.load(3) == {"a": "a2", "c": "c3"}  # and segment 4 is gone
    assert [s.seq for s in store.segments()] == [3]


def test_store_asks_for_a_base_when_segments_outgrow_the_state(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for seq in range(1, REWRITE_FACTOR + 1):
        store.write(seq, {"a": seq, "b": seq}, base=False)
    assert not store.needs_base(changed=0, live=2)  # REWRITE_FACTOR x 2 entries stored for 2 live: the limit
    assert store.needs_base(changed=1, live=2)
    store.write(REWRITE_FACTOR + 1, {"a": 0, "b": 0}, base=True)
    store.write(REWRITE_FACTOR + 2, {"a": 1}, base=False)
    assert not store.needs_base(changed=2, live=2)
    reopened = _store(tmp_path)
    reopened.discard_after(REWRITE_FACTOR + 2)  # what a resumed shard does: the counts come back from the files
    assert (reopened.stored, reopened.deltas) == (1, 1)


def test_the_state_size_estimate_comes_from_bases_not_from_busy_deltas(tmp_path: Path) -> None:
    store = DeltaStore(tmp_path / "s000")
    store.write(1, {"small": "x" * 10}, base=False)  # before any base, a delta is all there is
    assert store.entry_bytes == len(pickle.dumps({"small": "x" * 10}, protocol=pickle.HIGHEST_PROTOCOL))
    entries = {f"k{n}": "x" * 100 for n in range(10)}
    store.write(2, entries, base=True)
    per_entry = len(pickle.dumps(entries, protocol=pickle.HIGHEST_PROTOCOL)) / 10
    assert store.entry_bytes == per_entry
    store.write(3, {"k0": "x" * 100_000, "gone": None}, base=False)  # one busy, big entry changed
    assert store.entry_bytes == per_entry
