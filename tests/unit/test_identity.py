"""The identity stage of `pulse run` with Segment input (operators.identity) and what a user shard does with
its outputs: visitors' events held (bounded), the first link re-sends them under the user id and merges the
visitor away, later events of a linked visitor go to the user."""

from __future__ import annotations

import orjson

from operators.identity import HELD_PER_VISITOR, LINK_HORIZON_MS, IdentityShard, Merge, Replayed
from operators.shard import Shard, ShardConfig
from schemas.events import Event
from schemas.outputs import ProfileWrite, Record
from tests.factories import DAY_MS, T0, make_event


def _visit(event_id: str, anonymous_id: str, ts: int) -> Event:
    return make_event(event_id=event_id, user_id=anonymous_id, account_id=None, type="page_view", ts=ts,
                      anonymous_id=anonymous_id)  # fmt: skip


def _link(event_id: str, user_id: str, anonymous_id: str, ts: int) -> Event:
    return make_event(event_id=event_id, user_id=user_id, account_id=None, type="alias", ts=ts,
                      anonymous_id=anonymous_id)  # fmt: skip


def test_a_visitors_events_go_on_and_are_held_until_the_link_sends_them_to_the_user() -> None:
    shard = IdentityShard()
    visits = [_visit(f"p{n}", "anon-1", T0 + (3 - n) * DAY_MS) for n in range(3)]  # newest first
    out = shard.process(visits)
    assert out == visits  # on to the visitor's own profile meanwhile

    out = shard.process([_link("al", "u-1", "anon-1", T0 + 5 * DAY_MS)])

    link, *replayed, merge = out
    assert isinstance(link, Event)
    assert (link.user_id, link.anonymous_id, link.event_id) == ("u-1", None, "al")
    assert all(isinstance(r, Replayed) for r in replayed)
    # Re-sent oldest first, as the user's, with their own ids and times.
    assert [(r.event.event_id, r.event.user_id, r.event.ts) for r in replayed if isinstance(r, Replayed)] == [
        (f"p{n}", "u-1", T0 + (3 - n) * DAY_MS) for n in (2, 1, 0)
    ]
    assert merge == Merge("anon-1", "u-1", T0 + 5 * DAY_MS, "al")

    # Later: the visitor's events are the user's; another link for the same visitor changes nothing.
    later = shard.process([_visit("p9", "anon-1", T0 + 6 * DAY_MS), _link("al2", "u-2", "anon-1", T0 + 6 * DAY_MS)])
    assert [(e.user_id, e.event_id) for e in later if isinstance(e, Event)] == [("u-1", "p9"), ("u-2", "al2")]
    assert not [e for e in later if isinstance(e, Replayed | Merge)]


def test_a_link_before_any_visit_sends_the_visits_to_the_user() -> None:
    shard = IdentityShard()
    out = shard.process([_link("al", "u-1", "anon-1", T0), _visit("p1", "anon-1", T0 - DAY_MS)])
    assert [o.user_id for o in out] == ["u-1", "anon-1", "u-1"]  # the link, the merge (nothing held), the visit
    assert isinstance(out[1], Merge)
    assert isinstance(out[2], Event)
    assert out[2].anonymous_id is None


def test_held_events_are_bounded_and_visitors_forgotten_after_the_horizon() -> None:
    shard = IdentityShard()
    many = HELD_PER_VISITOR + 10
    shard.process([_visit(f"p{n}", "anon-1", T0 + n * 1000) for n in range(many)])
    out = shard.process([_link("al", "u-1", "anon-1", T0 + many * 1000)])
    replayed = [o.event.event_id for o in out if isinstance(o, Replayed)]
    assert replayed == [f"p{n}" for n in range(10, many)]  # the newest HELD_PER_VISITOR

    shard.process([_visit("q1", "anon-2", T0)])
    assert "anon-2" in shard.visitors
    shard.process([_visit("q2", "anon-3", T0 + LINK_HORIZON_MS + many * 1000 + 1)])
    assert "anon-2" not in shard.visitors  # silent for longer than the horizon: forgotten here
    assert "anon-1" not in shard.visitors  # linked, then silent as long
    assert "anon-3" in shard.visitors


def test_an_identity_shard_restores_from_its_snapshot_entries() -> None:
    shard = IdentityShard()
    shard.process([_visit("p1", "anon-1", T0), _link("al", "u-2", "anon-2", T0)])
    entries = shard.take_changed()
    restored = IdentityShard.restore(shard.header(), ((k, v) for k, v in entries.items() if v is not None))
    assert restored.visitors == shard.visitors
    assert restored.newest == shard.newest


def test_a_user_shard_merges_the_visitor_away_and_counts_replayed_events_once() -> None:
    config = ShardConfig()
    shard = Shard()
    visits = [make_event(event_id=f"p{d}", user_id="anon-1", account_id="acme", ts=T0 + d * DAY_MS) for d in range(3)]
    shard.process(visits, config)
    assert "anon-1" in shard.users
    replayed = [Replayed(make_event(event_id=e.event_id, user_id="u-1", account_id="acme", ts=e.ts)) for e in visits]
    link = make_event(event_id="al", user_id="u-1", account_id="acme", type="alias", ts=T0 + 3 * DAY_MS)

    out = shard.process([link, *replayed, Merge("anon-1", "u-1", link.ts, "al")], config)
    out += shard.drain(config)

    assert "anon-1" not in shard.users
    assert shard.users["u-1"].active_day_count == 3  # the visits; the alias is no activity
    assert (shard.counters.applied, shard.counters.merged, shard.counters.visitors_merged) == (4, 3, 1)
    assert any(isinstance(o, ProfileWrite) and o.key == "anon-1" and o.fields is None for o in out)
    merged = [orjson.loads(o.value) for o in out if isinstance(o, Record) and b"user_merged" in o.value]
    assert [(m["user_id"], m["into"], m["cause_event_id"]) for m in merged] == [("anon-1", "u-1", "al")]
    assert not [o for o in out if isinstance(o, Record) and b"user_erased" in o.value]
