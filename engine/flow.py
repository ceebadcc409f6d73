"""The dataflow: raw batches → decode → shard by user → per-shard state → one sink for every output."""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from engine import metrics
from operators.shard import Output, Shard, ShardConfig, shard_of
from schemas.codec import RawBatch, decode_batch
from schemas.events import Event, Rejection, Vocabulary

DLQ_KEY = "dlq"


@dataclass(frozen=True, slots=True)
class ShardFinal:
    """What a shard hands the replay writer at end of input: its counters, clock and users."""

    shard: str
    shard_state: Shard


@dataclass(frozen=True, slots=True)
class FlowConfig:
    vocab: Vocabulary
    shards: int
    shard: ShardConfig
    # Snapshots cost a pickle of the shard per epoch; skip it when nothing would keep them.
    recovery: bool
    # Live mode: changed profiles are written at most this often per shard (wall clock).
    profile_flush: timedelta = timedelta(seconds=1)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC), compare=False)


def _decoder(config: FlowConfig) -> Any:
    vocab, shards = config.vocab, config.shards
    keys = [f"s{n:03d}" for n in range(shards)]

    def decode(batch: RawBatch) -> list[tuple[str, list[Any]]]:
        # One item per shard per input batch keeps bytewax's per-item overhead off the per-event path.
        groups: dict[str, list[Any]] = {}
        rejections: list[Any] = []
        for item in decode_batch(batch, vocab):
            if isinstance(item, Rejection):
                rejections.append(item)
                metrics.REJECTED.labels(item.code.value).inc()
            else:
                key = keys[shard_of(item.user_id, shards)]
                group = groups.get(key)
                if group is None:
                    groups[key] = [item]
                else:
                    group.append(item)
        metrics.EVENTS_IN.inc(len(batch.values))
        out = sorted(groups.items())
        if rejections:
            out.append((DLQ_KEY, rejections))
        return out

    return decode


class ShardLogic(StatefulBatchLogic[list[Event], list[Any], Any]):
    """Glue between bytewax and one Shard: metrics, the profile flush schedule, cheap snapshots."""

    def __init__(self, key: str, config: FlowConfig, resume: bytes | None) -> None:
        self._key = key
        self._config = config
        self._shard: Shard = pickle.loads(resume) if resume is not None else Shard()
        self._next_flush = config.clock() + config.profile_flush

    def on_batch(self, values: list[list[Event]]) -> tuple[Iterable[list[Output]], bool]:
        shard = self._shard
        before = shard.counters.applied, shard.counters.duplicates
        started = time.perf_counter()
        outputs = shard.process((e for batch in values for e in batch), self._config.shard)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.APPLIED.inc(shard.counters.applied - before[0])
        metrics.DUPLICATES.inc(shard.counters.duplicates - before[1])
        metrics.USERS.labels(self._key).set(len(shard.users))
        metrics.WATERMARK.labels(self._key).set(max(shard.watermark, 0) / 1000)
        if self._config.clock() >= self._next_flush:
            outputs.extend(self._flush())
        return ([outputs] if outputs else []), StatefulBatchLogic.RETAIN

    def _flush(self) -> list[Output]:
        self._next_flush = self._config.clock() + self._config.profile_flush
        return self._shard.flush_profiles()

    def on_notify(self) -> tuple[Iterable[list[Output]], bool]:
        writes = self._flush()
        return ([writes] if writes else []), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self._next_flush if self._shard.dirty else None

    def on_eof(self) -> tuple[Iterable[list[Any]], bool]:
        final: list[Any] = self._flush()
        final.append(ShardFinal(self._key, self._shard))
        return [final], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes | None:
        # A pickle is an immutable copy, several times cheaper than the deepcopy bytewax suggests.
        if not self._config.recovery:
            return None
        return pickle.dumps(self._shard, protocol=pickle.HIGHEST_PROTOCOL)


def build_flow(source: Source[RawBatch], sink: Sink[Any], config: FlowConfig) -> Dataflow:
    flow = Dataflow("pulse")
    batches = op.input("input", flow, source)
    decoded = op.flat_map("decode", batches, _decoder(config))
    split = op.branch("split", decoded, lambda item: item[0] != DLQ_KEY)
    users = op.stateful_batch("users", split.trues, lambda resume: ShardLogic("?", config, resume))
    outputs = op.merge("outputs", users, split.falses)
    op.output("sink", outputs, sink)
    return flow
