"""Latency: from handing an event to a Kafka producer to its score record being read by a downstream consumer.

Run by `python -m bench.throughput --latency` (and `--all`), once per workload and input rate, after phase
(c) has measured the LiveSink throughput the rates are a share of. One run:

1. a fresh input topic `pulse-bench-latency-<workload>-<pct>` (4 partitions) and fresh output topics
   (`...-out-<kind>`), so no record of an earlier run is read;
2. the phase-(c) flow (`--phase latency-flow`: the real LiveSink, the unbounded KafkaSource from the
   earliest offset) in its own process, which says `ready` on stdout once every partition was polled;
3. a producer process (`--phase latency-produce`) sending the workload's seeded events at a fixed rate,
   each with its `ts` rewritten to the wall-clock time it is handed to the producer, so the engine treats
   the stream as live;
4. this process consuming the scores topic: latency = wall time the record is read - its `ts` (the event
   time of the event that caused it, which is that event's produce time). Only records caused by an event
   count (timer records carry the timer's time); records of events produced in the first WARMUP_S are
   left out (first connections and metadata look-ups);
5. once the producer is done and no record arrived for QUIET_S (or a deadline passed), a stop file ends
   the flow, which then reports what its shards applied.
"""

from __future__ import annotations

import json
import math
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.progress import Progress
from bench.topic import SEED, WORKLOADS, BenchSetupError, user_key
from engine.config import KafkaSettings
from schemas.codec import format_ts, parse_ts

PCTS = (10, 50, 80)  # input rates, as % of the workload's phase-(c) throughput
HEADLINE_PCT = 50  # the load whose p50/p99 are the report's latency_p50_ms / latency_p99_ms
WARMUP_S = 1.0
QUIET_S = 3.0  # the output is drained once nothing arrived for this long after the last produce
READY_TIMEOUT_S = 120.0
_TS_FIELD = b'"ts":'


def topic_names(workload: str, pct: int) -> tuple[str, str]:
    """(input topic, prefix of the output topics) of one latency run."""
    base = f"pulse-bench-latency-{workload}-{pct}"
    return base, f"{base}-out"


def with_ts(value: bytes, ms: int) -> bytes:
    """A generated event with its `ts` replaced by `ms`, in the form it had: an RFC 3339 UTC string with
    milliseconds (as the generator and the engine's outputs write it) or integer epoch milliseconds."""
    start = value.find(_TS_FIELD)
    if start < 0:
        raise ValueError(f"event without ts: {value[:120]!r}")
    start += len(_TS_FIELD)
    if value[start : start + 1] == b'"':
        end = value.index(b'"', start + 1) + 1
        new = b'"%s"' % format_ts(ms).encode()
    else:
        end = start
        while value[end : end + 1] in b"-0123456789" and end < len(value):
            end += 1
        new = b"%d" % ms
    return value[:start] + new + value[end:]


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence: a value that was measured, never interpolated."""
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(latencies_ms)
    if not ordered:
        return {"samples": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "samples": len(ordered),
        "p50_ms": round(percentile(ordered, 50), 1),
        "p99_ms": round(percentile(ordered, 99), 1),
        "max_ms": round(ordered[-1], 1),
    }


# ---------------------------------------------------------------------------------------------------------
# the producer process


def run_produce(
    kafka: KafkaSettings, topic: str, workload: str, users: int, rate: float, seconds: float
) -> dict[str, Any]:
    """Sends `rate` events/s for `seconds`, each stamped with the wall-clock time it is handed over.

    linger.ms is 0 so the producer's own batching delay is not part of the figure; otherwise the
    engine's producer settings (idempotent, acks=all)."""
    total = max(1, round(rate * seconds))
    producer = Producer({**kafka.producer_config(), "linger.ms": 0})
    errors: list[str] = []
    delivered = 0

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        nonlocal delivered
        if error is not None:
            errors.append(str(error))
        else:
            delivered += 1

    # Generated before the clock starts, so the paced loop only stamps and sends (less CPU taken from the
    # engine on a small machine).
    events = [(value, user_key(value)) for value in WORKLOADS[workload](total, users, SEED)]
    progress = Progress(f"latency produce {rate:,.0f}/s", total)
    produce = producer.produce
    sent = 0
    start = time.time()
    first_ms = last_ms = int(start * 1000)
    while sent < total:
        # Everything due by now goes out, then a wait until the next event is due: the rate holds on
        # average even when a wait overshoots.
        due = min(total, 1 + int((time.time() - start) * rate))
        while sent < due:
            value, key = events[sent]
            ms = int(time.time() * 1000)
            if not sent:
                first_ms = ms
            last_ms = ms
            stamped = with_ts(value, ms)
            while True:
                try:
                    produce(topic, stamped, key, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.01)
            sent += 1
        producer.poll(0)
        progress.update(sent)
        wait = start + sent / rate - time.time()
        if wait > 0:
            time.sleep(wait)
    remaining = producer.flush(60)
    progress.done(sent)
    span = (last_ms - first_ms) / 1000
    problems = []
    if remaining or errors or delivered != sent:
        problems.append(f"produce: {delivered}/{sent} acknowledged, {remaining} pending, {len(errors)} failed")
    return {
        "target_rate": round(rate, 1),
        "produced": sent,
        "delivered": delivered,
        "first_ms": first_ms,
        "last_ms": last_ms,
        "achieved_rate": round((sent - 1) / span, 1) if span > 0 else None,
        "problems": problems,
    }


# ---------------------------------------------------------------------------------------------------------
# the parent: topics, the two processes, the consumer


@dataclass(frozen=True, slots=True)
class LatencyRun:
    workload: str
    pct: int
    rate: float
    seconds: float
    input_topic: str
    scores_topic: str
    out_topics: tuple[str, ...]


# (phase, extra arguments) -> the command line of a bench child process
Child = Callable[[str, list[str]], list[str]]


def delete_topics(kafka: KafkaSettings, topics: Sequence[str], deadline_s: float = 120.0) -> None:
    """Deletes the topics that exist and waits until the broker no longer lists them."""
    admin = AdminClient(dict(kafka.client_config()))
    existing = set(admin.list_topics(timeout=30).topics)
    doomed = [t for t in topics if t in existing]
    if not doomed:
        return
    for future in admin.delete_topics(doomed, operation_timeout=30).values():
        try:
            future.result(timeout=60)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
    deadline = time.monotonic() + deadline_s
    while set(doomed) & set(admin.list_topics(timeout=30).topics):
        if time.monotonic() > deadline:
            raise BenchSetupError(f"topics {doomed} still listed {deadline_s:.0f}s after their deletion")
        time.sleep(0.2)


def _wait_ready(process: subprocess.Popen[str], timeout: float) -> None:
    """Waits for the flow process's `ready` line (or its exit, or the timeout)."""
    stdout: IO[str] | None = process.stdout
    if stdout is None:
        raise BenchSetupError("latency flow started without a stdout pipe")
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchSetupError(f"latency flow not ready after {timeout:.0f}s")
        readable, _, _ = select.select([stdout], [], [], min(left, 1.0))
        if readable:
            line = stdout.readline()
            if not line:
                raise BenchSetupError(f"latency flow exited before it was ready ({process.wait()})")
            if line.strip() == "ready":
                return


def _consumer(kafka: KafkaSettings, scores_topic: str, input_topic: str) -> Consumer:
    """Assigned to every partition of the scores topic, and to partition 0 of the input topic (the floor).

    fetch.wait.max.ms is 5 (the engine's consumers use 50): the broker answers a fetch as soon as data is
    there anyway, and this keeps the measuring side's own wait out of the figures."""
    consumer = Consumer({**kafka.consumer_config(), "group.id": "pulse-bench-latency", "fetch.wait.max.ms": 5})
    metadata = consumer.list_topics(scores_topic, timeout=30)
    info = metadata.topics.get(scores_topic)
    if info is None or info.error is not None or not info.partitions:
        consumer.close()
        raise BenchSetupError(f"output topic {scores_topic!r} is not available")
    parts = [TopicPartition(scores_topic, p, OFFSET_BEGINNING) for p in sorted(info.partitions)]
    consumer.assign([*parts, TopicPartition(input_topic, 0, OFFSET_BEGINNING)])
    return consumer


class _Samples:
    """What the consumer read: (event time ms, receive wall time s) of each event-caused score record,
    counts of the other records, and (produce time ms, receive time s) of the input events it read."""

    def __init__(self, input_topic: str) -> None:
        self.input_topic = input_topic
        self.records = 0
        self.timer_records = 0
        self.received: list[tuple[int, float]] = []
        self.inputs: list[tuple[int, float]] = []
        self.last_record: float | None = None  # receive wall time of the last score record

    def add(self, messages: list[Message], received: float) -> None:
        loads = orjson.loads
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                continue
            if message.topic() == self.input_topic:
                # The producer's CreateTime: when produce() was called, as the event's ts.
                self.inputs.append((message.timestamp()[1], received))
                continue
            self.records += 1
            self.last_record = received
            doc = loads(message.value() or b"{}")
            if not doc.get("cause_event_id"):
                self.timer_records += 1
                continue
            self.received.append((parse_ts(doc["ts"]), received))


def _consume(consumer: Consumer, samples: _Samples, timeout: float) -> bool:
    """Reads what is there (waiting up to `timeout` for the first record); True if a score record came."""
    first = consumer.poll(timeout)
    if first is None:
        return False
    # Stamped right after poll() returns; then what is already fetched, without waiting for more.
    received = time.time()
    before = samples.records
    samples.add([first, *consumer.consume(1000, 0)], received)
    return samples.records > before


def measure(run: LatencyRun, kafka: KafkaSettings, child: Child, cwd: Path) -> dict[str, Any]:
    """One latency run. `child(phase, args)` is the command line of a bench child process."""
    delete_topics(kafka, [run.input_topic, *run.out_topics])
    from bench.topic import _recreate  # the bench topic's own (re)creation: 4 partitions, waits for leaders

    _recreate(kafka, run.input_topic)
    label = f"latency {run.workload} {run.pct}%"
    print(f"bench: {label}: {run.rate:,.0f} events/s for {run.seconds:g}s", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="pulse-bench-latency-") as tmp:
        flow_result, produce_result, stop = Path(tmp) / "flow.json", Path(tmp) / "produce.json", Path(tmp) / "stop"
        flow_cmd = child("latency-flow", ["--stop-file", str(stop), "--result-file", str(flow_result)])
        produce_cmd = child("latency-produce", ["--rate", str(run.rate), "--result-file", str(produce_result)])
        samples, drained, producer_code = _measure(run, kafka, flow_cmd, produce_cmd, stop, cwd)
        produced: dict[str, Any] = _read_json(produce_result, "latency producer")
        flow: dict[str, Any] = _read_json(flow_result, "latency flow")
    delete_topics(kafka, [run.input_topic, *run.out_topics])
    cut = produced["first_ms"] + WARMUP_S * 1000
    counted = sorted((ts, received * 1000 - ts) for ts, received in samples.received if ts >= cut)
    latencies = [ms for _, ms in counted]
    summary = latency_summary(latencies)
    # Latency that grows from the first half of the run to the second means the flow fell behind the input.
    half = len(latencies) // 2
    halves = [latency_summary(latencies[:half])["p50_ms"], latency_summary(latencies[half:])["p50_ms"]]
    floor = latency_summary([received * 1000 - ts for ts, received in samples.inputs if ts >= cut])
    problems = list(produced.get("problems", [])) + list(flow.get("problems", []))
    warnings: list[str] = []
    if producer_code != 0:
        problems.append(f"producer exit code {producer_code}")
    if not summary["samples"]:
        problems.append(f"no score record caused by an event arrived ({samples.records} records in all)")
    if not drained:
        warnings.append(
            f"output still arriving {max(30.0, 2 * run.seconds):.0f}s after the last event: the flow fell behind "
            f"(applied {flow.get('applied')} of {produced['produced']} when stopped)"
        )
    elif flow.get("applied") != produced["produced"]:
        problems.append(f"flow applied {flow.get('applied')} of {produced['produced']} events produced")
    return summary | {
        "pct": run.pct,
        "target_rate": produced["target_rate"],
        "achieved_rate": produced["achieved_rate"],
        "produced": produced["produced"],
        "seconds": run.seconds,
        "applied": flow.get("applied"),
        "score_records": samples.records,
        "timer_records": samples.timer_records,
        "warmup_samples": len(samples.received) - len(latencies),
        "p50_ms_by_half": halves,
        # From the last event produced to the last score record read: how far behind the flow ended.
        "drain_s": None if samples.last_record is None else round(samples.last_record - produced["last_ms"] / 1000, 3),
        # The same measurement on the input topic (partition 0), no engine in between: the harness's floor.
        "floor_p50_ms": floor["p50_ms"],
        "floor_p99_ms": floor["p99_ms"],
        "floor_samples": floor["samples"],
        "drained": drained,
        "flow_peak_rss_kib": flow.get("peak_rss_kib"),
        "topic": run.input_topic,
        "problems": problems,
        "warnings": warnings,
    }


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        raise BenchSetupError(f"{what} wrote no result")
    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return result


def _measure(
    run: LatencyRun, kafka: KafkaSettings, flow_cmd: list[str], produce_cmd: list[str], stop: Path, cwd: Path
) -> tuple[_Samples, bool, int]:
    """Runs the flow, then the producer, consuming the scores topic meanwhile and until it is quiet."""
    flow = subprocess.Popen(flow_cmd, cwd=cwd, stdout=subprocess.PIPE, text=True)
    samples = _Samples(run.input_topic)
    drained = True
    try:
        _wait_ready(flow, READY_TIMEOUT_S)
        consumer = _consumer(kafka, run.scores_topic, run.input_topic)
        try:
            _consume(consumer, samples, 0.5)  # assigned and fetching before the first event goes out
            producer = subprocess.Popen(produce_cmd, cwd=cwd)
            try:
                last_record = time.monotonic()
                while producer.poll() is None:
                    if _consume(consumer, samples, 0.1):
                        last_record = time.monotonic()
                    if flow.poll() is not None:
                        raise BenchSetupError(f"latency flow exited ({flow.returncode}) while events were produced")
            finally:
                if producer.poll() is None:
                    producer.kill()
                    producer.wait()
            # Drained: nothing new for QUIET_S after the producer finished. The deadline bounds a flow that
            # cannot keep up (its backlog shows as ever larger latencies).
            done = time.monotonic()
            last_record = max(last_record, done)
            deadline = done + max(30.0, 2 * run.seconds)
            while time.monotonic() - last_record < QUIET_S:
                if time.monotonic() > deadline:
                    drained = False
                    break
                if _consume(consumer, samples, 0.1):
                    last_record = time.monotonic()
        finally:
            consumer.close()
    finally:
        # The flow's source partitions end once the stop file exists; its shards then report what they applied.
        stop.touch()
        try:
            code = flow.wait(timeout=120)
        except subprocess.TimeoutExpired:
            flow.kill()
            code = flow.wait()
        if flow.stdout is not None:
            flow.stdout.close()
    if code != 0:
        raise BenchSetupError(f"latency flow failed with exit code {code}")
    return samples, drained, producer.returncode
