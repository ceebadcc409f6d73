"""Render the Grafana dashboard's panels from a real run: `pulse run` under load, scraped by a real
Prometheus (scripts/prometheus-local, with the alert rules loaded), then `bench.dashboard` draws the PNG.

    python -m bench.dashboard_run --minutes 6 --rate 1500 --out bench/results/dashboard.png

The load is the bench's session-shaped stream, re-stamped with the wall clock so event-time lag means
something, with 0.5% malformed lines (dead letters) and a burst at three times the rate in the middle
third (consumer lag rises, then falls). Uses the Kafka broker and Redis of `make services`; everything it
starts it stops, by pid, and its topics and Redis keys are its own."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench import dashboard
from demo.generator import session_events

ROOT = Path(__file__).resolve().parents[1]
KAFKA = os.environ.get("PULSE_BENCH_KAFKA", "127.0.0.1:9092")
REDIS = os.environ.get("PULSE_BENCH_REDIS", "redis://127.0.0.1:6379/14")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def restamped(seed: int) -> Iterator[tuple[bytes, bytes]]:
    """(key, value): the session stream with `ts` set to now; every 200th message is malformed."""
    for n, line in enumerate(session_events(10**9, 20_000, seed)):
        if n % 200 == 199:
            yield b"u1", b'{"event_id":"bad-%d","user_id":"u1","type":"page_view"}' % n  # no ts: missing_field
            continue
        doc = orjson.loads(line)
        doc["ts"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        yield doc["user_id"].encode(), orjson.dumps(doc)


def produce(topic: str, rate: int, seconds: float) -> int:
    """`rate` events/s (three times that in the middle third) for `seconds`; returns the count."""
    producer = Producer({"bootstrap.servers": KAFKA, "linger.ms": 20})
    stream = restamped(seed=11)
    started = time.monotonic()
    sent = 0
    next_note = started + 30
    while (elapsed := time.monotonic() - started) < seconds:
        burst = seconds / 3 <= elapsed < 2 * seconds / 3
        per_tick = max(1, (rate * (3 if burst else 1)) // 10)
        for _ in range(per_tick):
            key, value = next(stream)
            producer.produce(topic, value, key)
            sent += 1
        producer.poll(0)
        if time.monotonic() >= next_note:
            next_note += 30
            print(f"dashboard_run: {sent:,} events produced ({elapsed:.0f}s)", file=sys.stderr, flush=True)
        # 10 ticks a second: wait for the next tick (the load generator's pacing, not a race).
        time.sleep(max(0.0, started + (int(elapsed * 10) + 1) / 10 - time.monotonic()))
    producer.flush(60)
    return sent


def wait_http(url: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {deadline_s:g}s") from None
            time.sleep(0.2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_run", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6.0, help="how long to run the load")
    parser.add_argument("--rate", type=int, default=1500, help="events per second outside the burst")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dashboard.png")
    args = parser.parse_args(argv)

    run = f"dash{uuid.uuid4().hex[:8]}"
    topic = f"{run}-events"
    admin = AdminClient({"bootstrap.servers": KAFKA})
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(timeout=30)
    metrics_port, prometheus_port = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="pulse-dashboard-"))
    env = {
        **os.environ,
        "PULSE_KAFKA_INPUT_TOPIC": topic,
        "PULSE_KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "PULSE_KAFKA_COMMIT_OFFSETS": "true",
        "PULSE_KAFKA_GROUP_ID": run,
        "PULSE_REDIS_URL": REDIS,
        "PULSE_REDIS_KEY_PREFIX": run,
        "PULSE_METRICS_PORT": str(metrics_port),
        "PULSE_ENGINE_RECOVERY_DIR": str(work / "recovery"),
        **{f"PULSE_TOPICS_{kind.upper()}": f"{run}-{kind}" for kind in
           ("scores", "alerts", "lifecycle", "accounts", "dlq", "profiles", "account_profiles", "access", "funnel",
            "insights")},
    }  # fmt: skip
    prometheus = [str(ROOT / "scripts" / "prometheus-local")]
    where = ["--dir", str(work / "prometheus")]
    log = (work / "pulse.log").open("wb")
    pulse = subprocess.Popen([sys.executable, "-m", "engine.cli", "run"], env=env, cwd=ROOT, stdout=log, stderr=log)
    try:
        wait_http(f"http://127.0.0.1:{metrics_port}/healthz", 60)
        subprocess.run(
            [*prometheus, "start", *where, "--port", str(prometheus_port), "--target", f"127.0.0.1:{metrics_port}",
             "--rules", str(ROOT / "deploy" / "prometheus" / "pulse-rules.yml"), "--scrape-interval", "2s"],
            check=True,
        )  # fmt: skip
        sent = produce(topic, args.rate, args.minutes * 60)
        print(f"dashboard_run: {sent:,} events produced; rendering", file=sys.stderr, flush=True)
        time.sleep(10)  # two more scrapes after the last event, so the drain shows on the charts
        return dashboard.main(
            ["--prometheus", f"http://127.0.0.1:{prometheus_port}", "--minutes", str(int(args.minutes) + 1),
             "--out", str(args.out)]
        )  # fmt: skip
    finally:
        subprocess.run([*prometheus, "stop", *where], check=False)
        pulse.terminate()
        pulse.wait(timeout=60)
        log.close()
        topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(run)]
        for future in admin.delete_topics(topics).values():
            future.result(timeout=30)


if __name__ == "__main__":
    raise SystemExit(main())
