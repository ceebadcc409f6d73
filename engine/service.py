"""`pulse run`: Kafka in, Kafka and Redis out, with topics ensured, metrics served and snapshots kept."""

from __future__ import annotations

import logging
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bytewax._bytewax import cli_main
from bytewax.recovery import RecoveryConfig, init_db_dir
from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from engine import logs, metrics
from engine.config import ConfigError, EngineSettings, MetricsSettings, Settings
from engine.crypto import state_sealer
from engine.flow import build_flow, flow_config
from engine.restore import restore_if_empty
from engine.sinks import LiveSink
from engine.sources import KafkaSource, kafka_admin
from schemas.outputs import OutputKind

log = logging.getLogger("pulse.service")
KAFKA_OUTPUTS = (
    OutputKind.SCORES,
    OutputKind.ALERTS,
    OutputKind.LIFECYCLE,
    OutputKind.ACCOUNTS,
    OutputKind.DLQ,
    OutputKind.ACCESS,
    OutputKind.FUNNEL,
    OutputKind.INSIGHTS,
)


def ensure_topics(settings: Settings) -> list[str]:
    """Create the input and output topics that are missing; returns the names it created."""
    kafka = settings.kafka
    admin = kafka_admin(kafka)  # the first contact: a refused login or certificate ends the run here
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


def recovery_path(settings: Settings) -> Path | None:
    """Where `pulse run` snapshots. The default directory gets one subdirectory per input topic
    *incarnation* (name + Kafka topic id): a run over another topic, or over a topic deleted and created
    again, never resumes someone else's state. An explicit `engine.recovery_dir` is used as it is."""
    directory = settings.engine.recovery_dir
    if not directory:
        return None
    if directory != EngineSettings().recovery_dir:
        return Path(directory)
    topic = settings.kafka.input_topic
    try:
        admin = AdminClient(dict(settings.kafka.client_config()))
        described = admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=30)
        topic_id = str(described.topic_id).replace("/", "_").replace("+", "-")  # base64: path-safe
        return Path(directory) / f"{topic}-{topic_id}"
    except KafkaException:
        return Path(directory) / topic


def recovery_config(path: Path | None, partitions: int) -> RecoveryConfig | None:
    if path is None:
        return None
    if not any(path.glob("part-*.sqlite3")):
        path.mkdir(parents=True, exist_ok=True)
        init_db_dir(path, partitions)  # type: ignore[no-untyped-call]
    return RecoveryConfig(path)  # type: ignore[no-untyped-call]


def package_version() -> str:
    try:
        return version("pulse-engine")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def serve_metrics(settings: MetricsSettings) -> None:
    try:
        metrics.serve(settings, metrics.readiness(settings.ready_max_lag))
    except OSError as exc:  # the port taken, a certificate file missing or not matching its key
        raise ConfigError(f"[metrics] cannot serve on {settings.host}:{settings.port}: {exc}") from None
    protection = [name for name, on in (("basic auth", settings.username), ("TLS", settings.tls_certfile)) if on]
    logs.info(
        log,
        f"metrics on {settings.scheme}://{settings.host}:{settings.port}/metrics"
        f" ({', '.join(protection) or 'no authentication'}; probes /healthz /readyz)",
        url=f"{settings.scheme}://{settings.host}:{settings.port}/metrics",
        protection=protection,
    )


def run_service(settings: Settings, process_id: int | None = None, addresses: list[str] | None = None) -> None:
    sealer = state_sealer(settings)  # first: a key problem stops Pulse before it touches Kafka or Redis
    sink = LiveSink(settings)  # likewise for the dead-letter key ([dlq] encrypt)
    logs.banner(log, "run", settings, process_id=process_id, addresses=addresses)
    created = ensure_topics(settings)
    if created:
        logs.info(log, f"created topics {', '.join(created)}", topics=created)
    if settings.metrics.enabled:
        metrics.BUILD_INFO.labels(package_version(), settings.score.version).set(1)
        serve_metrics(settings.metrics)
    processes = len(addresses) if addresses else 1
    recovery_dir = recovery_path(settings)
    recovery = recovery_config(recovery_dir, max(processes, 1))
    if recovery is not None:
        where = recovery_dir.resolve() if recovery_dir is not None else None
        every = settings.engine.snapshot_interval_seconds
        logs.info(log, f"snapshots to {where} every {every:g}s (engine.recovery_dir)", path=str(where), every_s=every)
        if sealer.keys is None:
            logs.warning(
                log,
                "recovery snapshots are not encrypted (they hold user ids and held events): set "
                "PULSE_STATE_KEY and PULSE_STATE_KEY_ID, or [engine] state_key_file",
            )
        else:
            logs.info(log, f"snapshots encrypted with key id {sealer.keys.current}", key_id=sealer.keys.current)
    else:
        logs.info(log, "recovery off (engine.recovery_dir is empty): a restart starts again from kafka.start_from")
    if not process_id:  # one process of a cluster restores; the others wait for it to join the cluster
        restore_if_empty(settings)
    source = KafkaSource(settings.kafka, settings.engine.timer_idle_ms / 1000)
    # Every partition up front: the low watermark waits for partitions another process has not polled yet.
    partitions = tuple(source.list_parts())
    state_dir = recovery_dir / "state" if recovery is not None and recovery_dir is not None else None
    config = flow_config(settings, live=True, state_dir=state_dir, input_partitions=partitions, sealer=sealer)
    flow = build_flow(source, sink, config)
    logs.info(
        log,
        f"consuming {settings.kafka.input_topic} from {settings.kafka.bootstrap_servers}",
        topic=settings.kafka.input_topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        partitions=len(partitions),
    )
    cli_main(  # type: ignore[no-untyped-call]
        flow,
        workers_per_process=settings.engine.workers,
        process_id=process_id,
        addresses=addresses,
        epoch_interval=timedelta(seconds=settings.engine.snapshot_interval_seconds),
        recovery_config=recovery,
    )
