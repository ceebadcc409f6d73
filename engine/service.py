"""`pulse run`: Kafka in, Kafka and Redis out, with topics ensured, metrics served and snapshots kept."""

from __future__ import annotations

import logging
import sys
from datetime import timedelta
from pathlib import Path

from bytewax._bytewax import cli_main
from bytewax.recovery import RecoveryConfig, init_db_dir
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from engine import metrics
from engine.config import Settings
from engine.flow import build_flow, flow_config
from engine.restore import restore_if_empty
from engine.sinks import LiveSink
from engine.sources import KafkaSource
from schemas.outputs import OutputKind

log = logging.getLogger("pulse.service")
KAFKA_OUTPUTS = (
    OutputKind.SCORES,
    OutputKind.ALERTS,
    OutputKind.LIFECYCLE,
    OutputKind.ACCOUNTS,
    OutputKind.DLQ,
)


def ensure_topics(settings: Settings) -> list[str]:
    """Create the input and output topics that are missing; returns the names it created."""
    kafka = settings.kafka
    admin = AdminClient(dict(kafka.client_config()))
    wanted = {kafka.input_topic: kafka.input_partitions}
    wanted.update({settings.topics.for_kind(kind): kafka.output_partitions for kind in KAFKA_OUTPUTS})
    tables = {settings.topics.profiles, settings.topics.account_profiles}
    wanted.update(dict.fromkeys(tables, kafka.output_partitions))
    existing = set(admin.list_topics(timeout=30).topics)
    missing = [
        # Profile tables keep the latest value per key (and drop erased users' tombstones in time).
        NewTopic(name, n, kafka.replication_factor, config={"cleanup.policy": "compact"} if name in tables else {})
        for name, n in sorted(wanted.items())
        if name not in existing
    ]
    if not missing:
        return []
    for future in admin.create_topics(missing).values():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # another process won the race: fine
                raise
    return [t.topic for t in missing]


def recovery_config(settings: Settings, partitions: int) -> RecoveryConfig | None:
    directory = settings.engine.recovery_dir
    if not directory:
        return None
    path = Path(directory)
    if not any(path.glob("part-*.sqlite3")):
        path.mkdir(parents=True, exist_ok=True)
        init_db_dir(path, partitions)  # type: ignore[no-untyped-call]
    return RecoveryConfig(path)  # type: ignore[no-untyped-call]


def run_service(settings: Settings, process_id: int | None = None, addresses: list[str] | None = None) -> None:
    created = ensure_topics(settings)
    if created:
        print(f"pulse: created topics {', '.join(created)}", file=sys.stderr, flush=True)
    if settings.metrics.enabled:
        metrics.serve(settings.metrics.host, settings.metrics.port)
        print(
            f"pulse: metrics on http://{settings.metrics.host}:{settings.metrics.port}/metrics",
            file=sys.stderr,
            flush=True,
        )
    processes = len(addresses) if addresses else 1
    recovery = recovery_config(settings, max(processes, 1))
    if recovery is not None:
        where = Path(settings.engine.recovery_dir).resolve()
        every = settings.engine.snapshot_interval_seconds
        print(f"pulse: snapshots to {where} every {every:g}s (engine.recovery_dir)", file=sys.stderr, flush=True)
    else:
        print(
            "pulse: recovery off (engine.recovery_dir is empty): a restart starts again from kafka.start_from",
            file=sys.stderr,
            flush=True,
        )
    if not process_id:  # one process of a cluster restores; the others wait for it to join the cluster
        restore_if_empty(settings)
    source = KafkaSource(settings.kafka, settings.engine.timer_idle_ms / 1000)
    # Every partition up front: the low watermark waits for partitions another process has not polled yet.
    partitions = tuple(source.list_parts())
    config = flow_config(settings, live=True, recovery=recovery is not None, input_partitions=partitions)
    flow = build_flow(source, LiveSink(settings), config)
    print(
        f"pulse: consuming {settings.kafka.input_topic} from {settings.kafka.bootstrap_servers}",
        file=sys.stderr,
        flush=True,
    )
    cli_main(  # type: ignore[no-untyped-call]
        flow,
        workers_per_process=settings.engine.workers,
        process_id=process_id,
        addresses=addresses,
        epoch_interval=timedelta(seconds=settings.engine.snapshot_interval_seconds),
        recovery_config=recovery,
    )
