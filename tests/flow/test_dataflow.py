"""build_flow with bytewax's TestingSource and TestingSink: 1 and 2 workers agree on every output."""

from __future__ import annotations

from typing import Any

import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from demo.generator import GeneratorConfig, generate
from engine.flow import FlowConfig, ShardFinal, build_flow
from operators.shard import Shard, ShardConfig
from operators.state import render_profile
from schemas.codec import RawBatch
from schemas.events import Rejection, Vocabulary
from schemas.outputs import ProfileWrite


def _batches(size: int) -> list[RawBatch]:
    lines = list(generate(GeneratorConfig(users=60, accounts=8, days=21, seed=5, malformed_rate=0.02)))
    return [
        RawBatch("mem", 0, lines[i : i + size], list(range(i + 1, i + 1 + len(lines[i : i + size]))))
        for i in range(0, len(lines), size)
    ]


def _run(workers: int, batch: int, live: bool) -> list[Any]:
    out: list[tuple[str, list[Any]]] = []
    config = FlowConfig(Vocabulary(), 8, ShardConfig(live_profiles=live), state_dir=None)
    flow = build_flow(TestingSource(_batches(batch)), TestingSink(out), config)
    if workers == 1:
        run_main(flow)  # type: ignore[no-untyped-call]
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)  # type: ignore[no-untyped-call]
    return [item for _, items in out for item in items]


def _canonical(outputs: list[Any]) -> dict[str, Any]:
    finals = [o.shard_state for o in outputs if isinstance(o, ShardFinal) and isinstance(o.shard_state, Shard)]
    as_of = max(f.event_time for f in finals)
    profiles = {uid: render_profile(uid, state, as_of) for f in finals for uid, state in f.users.items()}
    # Live writes are measured at the shard's clock when written, which batching moves; everything else in
    # a user's last write is a function of that user's events alone.
    window = {"as_of", "active_days_7", "active_days_28", "score", "band", "components"}
    writes: dict[str, Any] = {}
    for o in outputs:
        if isinstance(o, ProfileWrite):
            writes[o.key] = None if o.fields is None else {k: v for k, v in o.fields.items() if k not in window}
    letters = sorted((r.raw.origin.offset, r.code, r.raw.value) for r in outputs if isinstance(r, Rejection))
    return {"profiles": profiles, "writes": writes, "dlq": letters}


@pytest.mark.parametrize("live", [False, True])
def test_one_and_two_workers_agree(live: bool) -> None:
    one = _canonical(_run(1, 500, live))
    two = _canonical(_run(2, 500, live))
    assert one["profiles"]
    assert one["dlq"]
    assert any(fields is not None for fields in one["writes"].values()) is live
    assert one == two


def test_batch_size_does_not_change_final_profiles() -> None:
    assert _canonical(_run(1, 97, False))["profiles"] == _canonical(_run(1, 1000, False))["profiles"]
