"""Unit tests for operators.shard: de-duplication, erasure, live profile writes, pruning and shard_of."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from operators.health import render_user
from operators.lapse import LapseModel
from operators.scoring import ScoreModel
from operators.shard import Output, Shard, ShardConfig, shard_of
from operators.state import render_profile
from schemas.events import Event
from schemas.outputs import Entity, ProfileWrite
from tests.factories import DAY_MS, T0, make_event

REPLAY = ShardConfig()
LIVE = ShardConfig(live_profiles=True)
HORIZON = REPLAY.dedup_horizon_ms


def _run(batches: Sequence[Sequence[Event]], config: ShardConfig = REPLAY) -> tuple[Shard, list[Output]]:
    shard = Shard()
    outputs: list[Output] = []
    for batch in batches:
        # Scores and member updates have their own tests (test_health.py); these are about profiles.
        outputs.extend(o for o in shard.process(batch, config) if isinstance(o, ProfileWrite))
    return shard, outputs


def _profiles(shard: Shard, as_of: int = T0) -> dict[str, dict[str, Any]]:
    return {uid: render_profile(uid, user, as_of) for uid, user in shard.users.items()}


A = make_event(event_id="a", type="feature_used", feature="export", ts=T0)
B = make_event(event_id="b", type="page_view", ts=T0 + DAY_MS)
A_AGAIN_OTHER_CONTENT = make_event(event_id="a", type="feature_used", feature="search", ts=T0 - 30 * DAY_MS)
C_OTHER_USER = make_event(event_id="c", user_id="user-2", ts=T0)
# SDKs number events per device: the same id from another user is another event.
A_OTHER_USER = make_event(event_id="a", user_id="user-2", type="feature_used", feature="export", ts=T0)


@pytest.mark.parametrize(
    ("batches", "unique", "duplicates"),
    [
        pytest.param([[A, A]], [A], 1, id="twice-in-one-batch"),
        pytest.param([[A], [A]], [A], 1, id="twice-across-batches"),
        pytest.param([[A, B], [B, A]], [A, B], 2, id="whole-batch-replayed"),
        pytest.param([[A], [A], [A]], [A], 2, id="three-copies"),
        pytest.param([[A], [A_AGAIN_OTHER_CONTENT]], [A], 1, id="same-id-other-content-is-still-a-duplicate"),
        pytest.param([[A, B, C_OTHER_USER]], [A, B, C_OTHER_USER], 0, id="distinct-ids"),
        pytest.param([[C_OTHER_USER], [A, C_OTHER_USER]], [C_OTHER_USER, A], 1, id="other-user"),
        pytest.param([[A, A_OTHER_USER], [A_OTHER_USER]], [A, A_OTHER_USER], 1, id="same-id-other-user-is-not-one"),
    ],
)
def test_duplicates_change_nothing(batches: list[list[Event]], unique: list[Event], duplicates: int) -> None:
    shard, _ = _run(batches)
    reference, _ = _run([unique])
    assert shard.counters.duplicates == duplicates
    assert shard.counters.applied == len(unique)
    assert shard.counters.applied + shard.counters.duplicates == sum(len(b) for b in batches)
    assert _profiles(shard) == _profiles(reference)
    assert shard.event_time == reference.event_time


def test_duplicate_is_counted_once_and_state_unchanged() -> None:
    shard, _ = _run([[A]])
    before = _profiles(shard)
    shard.process([A], REPLAY)
    assert shard.counters.duplicates == 1
    assert _profiles(shard) == before


ERASE_1 = make_event(event_id="erase-1", type="erasure_requested", ts=T0 + 2 * DAY_MS)


@pytest.mark.parametrize("config", [REPLAY, LIVE], ids=["replay", "live"])
def test_erasure_removes_the_user_and_emits_a_delete(config: ShardConfig) -> None:
    shard, _ = _run([[A, B, C_OTHER_USER]], config)
    others = _profiles(shard)["user-2"]
    outputs = _writes(shard.process([ERASE_1], config))
    assert outputs == [ProfileWrite(Entity.USER, "user-1", None)]
    assert set(shard.users) == {"user-2"}
    assert _profiles(shard)["user-2"] == others
    assert shard.counters.erasures == 1
    assert shard.counters.applied == 4


def test_erasure_of_an_unknown_user_still_emits_a_delete() -> None:
    shard, outputs = _run([[ERASE_1]])
    assert outputs == [ProfileWrite(Entity.USER, "user-1", None)]
    assert shard.users == {}
    assert shard.counters.erasures == 1


def test_duplicate_erasure_is_a_duplicate() -> None:
    shard, outputs = _run([[A, ERASE_1], [ERASE_1]])
    assert outputs == [ProfileWrite(Entity.USER, "user-1", None)]
    assert (shard.counters.erasures, shard.counters.duplicates) == (1, 1)


def test_events_after_an_erasure_start_afresh() -> None:
    later = make_event(event_id="later", type="page_view", ts=T0 + 3 * DAY_MS)
    shard, _ = _run([[A, B, ERASE_1], [later]])
    profile = _profiles(shard, T0 + 3 * DAY_MS)["user-1"]
    assert profile["first_seen"] == "2026-03-05T12:00:00.000Z"
    assert profile["features"] == {}
    assert profile["active_days_total"] == 1


def test_late_event_from_before_the_erasure_does_not_resurrect_the_user() -> None:
    in_order, _ = _run([[A, ERASE_1]])
    reordered, _ = _run([[ERASE_1, A]])
    assert set(in_order.users) == set()
    assert set(reordered.users) == set(in_order.users)


def _writes(outputs: Sequence[Output]) -> list[ProfileWrite]:
    return [o for o in outputs if isinstance(o, ProfileWrite)]


def test_live_mode_flush_writes_every_changed_profile_once_sorted() -> None:
    shard = Shard()
    assert _writes(shard.process([C_OTHER_USER, B], LIVE)) == []
    assert _writes(shard.process([A], LIVE)) == []
    outputs = _writes(shard.flush_profiles())
    assert [(o.entity, o.key) for o in outputs] == [(Entity.USER, "user-1"), (Entity.USER, "user-2")]
    for output in outputs:
        user = shard.users[output.key]
        assert output.fields == render_user(output.key, user, ScoreModel(), LapseModel())
    assert shard.flush_profiles() == []
    shard.process([A], LIVE)  # a duplicate changes nothing, so nothing is due
    assert shard.flush_profiles() == []


def test_live_mode_erasure_in_the_same_batch() -> None:
    shard = Shard()
    outputs = _writes(shard.process([A, C_OTHER_USER, ERASE_1], LIVE) + shard.flush_profiles())
    assert [(o.key, o.fields is None) for o in outputs] == [("user-1", True), ("user-2", False)]
    later = make_event(event_id="later", ts=T0 + 4 * DAY_MS)
    erase_again = make_event(event_id="erase-2", type="erasure_requested", ts=T0 + 3 * DAY_MS)
    outputs = _writes(shard.process([erase_again, later], LIVE) + shard.flush_profiles())
    # user-2 said nothing, but two days passed: its timers re-scored it, so its profile is due too.
    assert [(o.key, o.fields is None) for o in outputs] == [("user-1", True), ("user-1", False), ("user-2", False)]


def test_replay_mode_writes_no_profiles() -> None:
    _, outputs = _run([[A, B, C_OTHER_USER]])
    assert outputs == []


@pytest.mark.parametrize(
    ("late_ts", "beyond"),
    [
        pytest.param(T0 + 10 * DAY_MS - HORIZON, 0, id="at-the-horizon"),
        pytest.param(T0 + 10 * DAY_MS - HORIZON - 1, 1, id="one-ms-beyond"),
        pytest.param(T0, 1, id="far-beyond"),
    ],
)
def test_events_beyond_the_dedup_horizon_are_applied_and_counted(late_ts: int, beyond: int) -> None:
    recent = make_event(event_id="recent", ts=T0 + 10 * DAY_MS)
    late = make_event(event_id="late", ts=late_ts)
    shard, _ = _run([[recent], [late]])
    assert shard.counters.beyond_dedup_horizon == beyond
    assert shard.counters.applied == 2
    assert shard.event_time == T0 + 10 * DAY_MS


def test_pruning_forgets_only_ids_older_than_the_horizon() -> None:
    shard = Shard(prune_at=3)
    old = make_event(event_id="old", ts=T0 - 8 * DAY_MS)
    edge = make_event(event_id="edge", ts=T0 - HORIZON)
    new = make_event(event_id="new", ts=T0)
    shard.process([old, edge, new], REPLAY)
    assert shard.seen == {"user-1": {"edge": T0 - HORIZON, "new": T0}}
    assert shard.prune_at == 4096
    shard.process([edge, new], REPLAY)
    assert shard.counters.duplicates == 2


# ---------------------------------------------------------------- shard_of


@pytest.mark.parametrize(
    ("user_id", "shards", "expected"),
    [
        # CRC-32 check value: crc32(b"123456789") == 0xCBF43926 (the standard's published vector).
        pytest.param("123456789", 2**32, 0xCBF43926, id="crc32-check-value"),
        pytest.param("123456789", 1000, 0xCBF43926 % 1000, id="check-value-mod-1000"),
        pytest.param("123456789", 1, 0, id="one-shard"),
        pytest.param("", 7, 0, id="empty-string-crc-is-zero"),
    ],
)
def test_shard_of_known_values(user_id: str, shards: int, expected: int) -> None:
    assert shard_of(user_id, shards) == expected


@pytest.mark.parametrize("shards", [1, 2, 3, 8, 64, 1000])
def test_shard_of_in_range_and_spread(shards: int) -> None:
    ids = [f"user-{i}" for i in range(5000)] + ["é", "用户", "\U0001f600", "x" * 256]
    counts = Counter(shard_of(uid, shards) for uid in ids)
    assert set(counts) <= set(range(shards))
    if shards <= 8:
        assert len(counts) == shards
        assert min(counts.values()) > len(ids) / shards / 2


def test_shard_of_is_stable_across_processes() -> None:
    # The built-in str hash is salted per process; shard_of must not be.
    ids = ["user-1", "user-2", "é", "acct/7"]
    code = f"from operators.shard import shard_of; print([shard_of(u, 16) for u in {ids!r}])"
    results = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert results == {str([shard_of(u, 16) for u in ids])}
