"""Outputs: Kafka topics with checked delivery, Redis profile hashes, and an in-memory collector for replay."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from itertools import chain
from typing import Any, TypeVar

import hiredis
import orjson
import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, Message, Producer
from redis.backoff import NoBackoff
from redis.retry import Retry

from engine import metrics
from engine.config import RedisSettings, Settings, TopicSettings
from engine.crypto import Keyring, dlq_envelope, dlq_keyring
from engine.latency import ingest_of
from engine.serving import Command, Writer
from schemas.codec import DUMPS_OPTIONS, dumps
from schemas.events import Rejection
from schemas.outputs import Entity, OutputKind, ProfileWrite, Record

# What flows into the sink: each item is (shard key, list of outputs) from one batch of one step.
Item = tuple[str, list[Any]]
# The Redis commands of one profile write (the hash and its index entries) or of one record's index entries
# (engine.serving): the unit ProfileStore chunks into transactions.
WriteUnit = Sequence[Command]
T = TypeVar("T")

log = logging.getLogger("pulse.sink")
# What an outage or a restarting Redis looks like to the client: retried with backoff, never dropped.
REDIS_TRANSIENT: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


class DeliveryError(RuntimeError):
    """A produce that Kafka did not acknowledge; raised so the batch fails instead of vanishing."""


def dlq_headers(rejection: Rejection) -> list[tuple[str, bytes]]:
    origin = rejection.raw.origin
    return [
        ("pulse.error", rejection.code.value.encode()),
        ("pulse.detail", rejection.detail.encode()),
        ("pulse.source", origin.source.encode()),
        ("pulse.partition", str(origin.partition).encode()),
        ("pulse.offset", str(origin.offset).encode()),
    ]


def output_kinds(topics: TopicSettings) -> dict[str, str]:
    """Topic name -> the `kind` label of pulse_outputs_total."""
    kinds = {topics.for_kind(kind): kind.value for kind in OutputKind if kind is not OutputKind.PROFILES}
    kinds[topics.profiles] = "profiles"
    kinds[topics.account_profiles] = "account_profiles"
    return kinds


class _NotConnectionFailures(logging.Filter):
    """librdkafka logs a FAIL line per reconnect attempt; error_cb reports each too (counted, and logged once
    per outage), so the lines themselves are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.args, tuple) and record.args[:1] == ("FAIL",))


# librdkafka's own log lines, routed through Python logging (served on poll/flush).
RDKAFKA_LOG = logging.getLogger("pulse.rdkafka")
RDKAFKA_LOG.addFilter(_NotConnectionFailures())


class CheckedProducer:
    """Idempotent, acks=all producer that reads every delivery report and fails loudly on any error.

    A broker outage is not an error: librdkafka retries every queued message for `message.timeout.ms` and
    `flush` waits as long as that takes (backpressure). Only a delivery report with an error (the broker
    refused the message, or it timed out) or a fatal client error raises DeliveryError. Outputs are
    counted in `pulse_outputs_total` when acknowledged, by the `kinds` mapping of topic to label."""

    def __init__(
        self, config: Mapping[str, Any], kinds: Mapping[str, str] | None = None, progress_every: float = 10.0
    ) -> None:
        self._producer = Producer({"logger": RDKAFKA_LOG, **config, "error_cb": self._on_error})
        self._progress_every = progress_every
        self._errors: list[str] = []
        self._fatal: str | None = None
        self._counters = {topic: metrics.OUTPUTS.labels(kind) for topic, kind in (kinds or {}).items()}
        self._trouble_since: float | None = None
        self.delivered = 0

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's error_cb: connection trouble it recovers from by itself, or a fatal error."""
        metrics.KAFKA_ERRORS.inc()
        if error.fatal():
            self._fatal = str(error)
            return
        if self._trouble_since is None:  # one line per outage, not one per reconnect attempt
            self._trouble_since = time.monotonic()
            log.warning("kafka producer: %s; messages stay queued and are retried", error)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(f"{message.topic()}: {error}")
            return
        self.delivered += 1
        counter = self._counters.get(message.topic() or "")
        if counter is not None:
            counter.inc()
        if self._trouble_since is not None:
            log.warning("kafka producer: delivering again (%.1fs after the first error)", self._since_trouble())
            self._trouble_since = None

    def _since_trouble(self) -> float:
        return time.monotonic() - (self._trouble_since or time.monotonic())

    def _raise_failures(self) -> None:
        if self._fatal is not None:
            raise DeliveryError(f"fatal Kafka producer error: {self._fatal}")
        if self._errors:
            errors, self._errors = self._errors, []
            raise DeliveryError(f"{len(errors)} message(s) failed delivery; first: {errors[0]}")

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: list[Any] | None = None) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=self._on_delivery)
                return
            except BufferError:
                # Local queue full (e.g. the broker is away): serve delivery reports until there is room.
                self._producer.poll(0.1)
                self._raise_failures()

    def flush(self) -> None:
        """Blocks until every message is acknowledged, however long a broker outage lasts (librdkafka
        retries each message up to message.timeout.ms); raises DeliveryError if any delivery failed."""
        started = time.monotonic()
        next_note = started + self._progress_every
        noted = False
        while True:
            remaining: int = self._producer.flush(min(1.0, self._progress_every))
            self._raise_failures()
            if not remaining:
                break
            now = time.monotonic()
            if now >= next_note:
                next_note = now + self._progress_every
                noted = True
                log.warning(
                    "kafka producer: %d message(s) not yet acknowledged after %.0fs; waiting (retried until "
                    "message.timeout.ms)",
                    remaining,
                    now - started,
                )
        if noted:
            log.warning("kafka producer: all messages acknowledged after %.1fs", time.monotonic() - started)


def redis_fields(fields: dict[str, Any]) -> dict[str, str]:
    """Hash values are strings: text as it is, everything else as JSON, so readers can decode exactly.
    (`schemas.codec.dumps` inlined: this runs for every field of every profile written.)"""
    encode = orjson.dumps
    return {k: v if v.__class__ is str else encode(v, option=DUMPS_OPTIONS).decode() for k, v in fields.items()}


def redis_key(settings: RedisSettings, entity: Entity, key: str) -> str:
    return f"{settings.key_prefix}:{entity.value}:{key}"


def serving_writer(settings: RedisSettings) -> Writer:
    return Writer(settings.key_prefix, settings.indexes, settings.history_size)


def connect_redis(settings: RedisSettings) -> redis.Redis:
    """A client that notices a dead server: 5 s connect and read timeouts, TCP keepalive, and a PING before
    reusing a connection idle for 10 s. Options in the URL's query string take precedence. A rediss:// URL
    verifies the server's certificate and name (against `ssl_ca_certs`, or the system's CAs)."""
    tls: dict[str, Any] = {}
    if settings.url.startswith("rediss://"):
        tls = {"ssl_cert_reqs": "required", "ssl_min_version": ssl.TLSVersion.TLSv1_2}
        if settings.ssl_ca_certs:
            tls["ssl_ca_certs"] = settings.ssl_ca_certs
        if settings.ssl_certfile:
            tls["ssl_certfile"] = settings.ssl_certfile
            tls["ssl_keyfile"] = settings.ssl_keyfile
    return redis.Redis.from_url(
        settings.url,
        username=settings.username or None,
        password=settings.password or None,
        socket_connect_timeout=5,
        socket_timeout=5,
        socket_keepalive=True,
        health_check_interval=10,
        # One immediate reconnect (a stale pooled connection); longer outages are ProfileStore's.
        retry=Retry(NoBackoff(), 1),
        **tls,
    )


# hiredis's stub types its argument as a one-element tuple; it takes any number of arguments.
_pack: Callable[[tuple[str | bytes, ...]], bytes] = hiredis.pack_command  # type: ignore[assignment]
_MULTI = _pack(("MULTI",))
_EXEC = _pack(("EXEC",))


def _send(connection: Any, payload: bytes, replies: int) -> list[Any]:
    """Writes packed commands and reads one reply each; on any failure the connection is dropped, so
    unread replies never reach the next user of the connection."""
    try:
        connection.send_packed_command([payload])
        return [connection.read_response() for _ in range(replies)]
    except BaseException:
        connection.disconnect()
        raise


class RedisUnavailableError(RuntimeError):
    """Redis stayed unreachable for longer than redis.retry_deadline_seconds."""


class RedisAccessError(RedisUnavailableError):
    """Redis refused Pulse (wrong username or password) or its certificate is not trusted: waiting cannot fix
    that, so it ends the run at once instead of being retried like an outage."""


def redis_access_refused(exc: BaseException) -> bool:
    """Whether a redis-py connection error is a refusal rather than an outage: redis-py raises a login
    failure as a ConnectionError subclass, and a failed certificate check as a ConnectionError whose
    context is the ssl error."""
    if isinstance(exc, redis.AuthenticationError):
        return True
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class ProfileStore:
    """Profile hashes and serving indexes in Redis: absolute writes (DEL + HSET, ZREM + ZADD, ...) in
    MULTI/EXEC pipelines of at most `pipeline_size` write units (engine.serving), each retried through
    outages with capped exponential backoff (0.1 s doubling to 5 s) forever or up to
    `retry_deadline_seconds`. A pipeline is idempotent, so a retry after an unknown outcome is safe; the
    caller waits meanwhile, which is the backpressure."""

    FIRST_DELAY = 0.1
    MAX_DELAY = 5.0

    def __init__(
        self,
        settings: RedisSettings,
        client: redis.Redis | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.client = client if client is not None else connect_redis(settings)
        self._sleep = sleep
        self._clock = clock
        self._down_since: float | None = None
        self._failures = 0

    @property
    def where(self) -> str:
        """host:port/db of the server, never the URL (it may hold a password)."""
        kwargs = self.client.connection_pool.connection_kwargs
        return f"{kwargs.get('host', kwargs.get('path', '?'))}:{kwargs.get('port', '')}/{kwargs.get('db', 0)}"

    def write(self, units: Sequence[WriteUnit]) -> None:
        size = self.settings.pipeline_size
        for start in range(0, len(units), size):
            chunk = units[start : start + size]
            started = time.perf_counter()
            self.call(partial(self._execute, chunk))
            metrics.REDIS_WRITE_SECONDS.observe(time.perf_counter() - started)

    def _execute(self, chunk: Sequence[WriteUnit]) -> None:
        """One MULTI/EXEC, packed by hiredis in C and sent in one write. redis-py's pipeline object spends
        more per command than Redis does (profiled: 16% of `pulse run`), so this is the hot path's own."""
        pack = _pack
        commands = [_MULTI]
        commands.extend(pack(command) for command in chain.from_iterable(chunk))
        commands.append(_EXEC)
        payload = b"".join(commands)
        pool = self.client.connection_pool
        connection: Any = pool.get_connection()
        try:
            # As redis-py does for a command: one immediate retry on a fresh connection (a stale pooled one).
            replies = connection.retry.call_with_retry(
                lambda: _send(connection, payload, len(commands)), lambda _: connection.disconnect()
            )
        finally:
            pool.release(connection)
        failed = [r for r in replies[-1] if isinstance(r, Exception)] if replies[-1] is not None else []
        if replies[-1] is None or failed:
            raise redis.ResponseError(f"redis: profile transaction failed: {failed[:1] or 'EXEC aborted'}")

    def call(self, operation: Callable[[], T]) -> T:
        """`operation()`, retried while Redis is unreachable; one warning when an outage starts, one when it
        ends, and every failed attempt counted in pulse_redis_errors_total."""
        delay = self.FIRST_DELAY
        while True:
            try:
                result = operation()
            except REDIS_TRANSIENT as exc:
                metrics.REDIS_ERRORS.inc()
                if redis_access_refused(exc):
                    raise RedisAccessError(f"Redis at {self.where} refused the connection: {exc}") from exc
                self._failures += 1
                now = self._clock()
                deadline = self.settings.retry_deadline_seconds
                if self._down_since is None:
                    self._down_since = now
                    limit = f"for up to {deadline:g}s" if deadline else "until it is back"
                    log.warning(
                        "redis %s: %s: %s; writes wait and are retried %s", self.where, type(exc).__name__, exc, limit
                    )
                waited = now - self._down_since
                if deadline and waited >= deadline:
                    raise RedisUnavailableError(
                        f"Redis at {self.where} unavailable for {waited:.0f}s ({self._failures} failed attempts; "
                        f"redis.retry_deadline_seconds = {deadline:g}): {type(exc).__name__}: {exc}"
                    ) from exc
                self._sleep(min(delay, deadline - waited) if deadline else delay)
                delay = min(delay * 2, self.MAX_DELAY)
                continue
            if self._down_since is not None:
                log.warning(
                    "redis %s: reachable again after %.1fs (%d failed attempts)",
                    self.where,
                    self._clock() - self._down_since,
                    self._failures,
                )
                self._down_since = None
                self._failures = 0
            return result

    def close(self) -> None:
        self.client.close()


def count_alert(doc: dict[str, Any]) -> None:
    """pulse_alerts_total{kind,status}: alerts are few, so the sink decodes them (once, for this and the
    open-alerts index)."""
    metrics.ALERTS.labels(str(doc.get("kind")), str(doc.get("status"))).inc()


class _LivePartition(StatelessSinkPartition[Item]):
    def __init__(self, settings: Settings, dlq_keys: Keyring | None) -> None:
        self._topics: TopicSettings = settings.topics
        self._dlq_keys = dlq_keys
        self._writer = serving_writer(settings.redis)
        self._producer = CheckedProducer(settings.kafka.producer_config(), output_kinds(settings.topics))
        self._store = ProfileStore(settings.redis)

    def write_batch(self, items: list[Item]) -> None:
        started = time.perf_counter()
        produce = self._producer.produce
        writer = self._writer
        units: list[WriteUnit] = []
        profiles = 0
        for _, outputs in items:
            for out in outputs:
                if isinstance(out, Record):
                    kind = out.kind
                    produce(self._topics.for_kind(kind), out.key.encode(), out.value)
                    if kind is OutputKind.SCORES:
                        units.append(writer.history(Entity.USER, out.key, out.ts, out.value))
                    elif kind is OutputKind.ACCOUNTS:
                        units.append(writer.history(Entity.ACCOUNT, out.key, out.ts, out.value))
                    elif kind is OutputKind.ALERTS:
                        alert = orjson.loads(out.value)
                        count_alert(alert)
                        units.append(writer.alert(out.value, alert))
                elif isinstance(out, Rejection):
                    raw = out.raw
                    if self._dlq_keys is None:
                        produce(self._topics.dlq, raw.key, raw.value, dlq_headers(out))
                    else:
                        # [dlq] encrypt: the value is the envelope of the original bytes, and the message
                        # key (the user id, by convention) is dropped; the headers hold no input data.
                        envelope = dumps(dlq_envelope(self._dlq_keys, raw.value))
                        produce(self._topics.dlq, None, envelope, dlq_headers(out))
                elif isinstance(out, ProfileWrite):
                    fields = None if out.fields is None else redis_fields(out.fields)
                    units.append(writer.profile(out.entity, out.key, fields, out.members))
                    profiles += 1
                    # The same profile on the compacted table topic; None is a tombstone (erasure).
                    table = self._topics.for_profiles(out.entity)
                    value = None if out.fields is None else dumps(out.fields)
                    produce(table, out.key.encode(), value)
        if profiles or any(units):
            self._store.write(units)
            metrics.PROFILE_WRITES.inc(profiles)
        # Outputs are counted as Kafka acknowledges them (the delivery reports served here).
        self._producer.flush()
        metrics.KAFKA_WRITE_SECONDS.observe(time.perf_counter() - started)
        ingest_ms = ingest_of(outputs for _, outputs in items)
        if ingest_ms:
            metrics.E2E_LATENCY.observe(max(0.0, time.time() - ingest_ms / 1000))

    def close(self) -> None:
        self._producer.flush()
        self._store.close()


class LiveSink(DynamicSink[Item]):
    """Kafka topics per output kind plus Redis profiles; each worker owns one producer and connection."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # Loaded here, once, so a missing or bad dead-letter key stops `pulse run` before the dataflow starts.
        self._dlq_keys = dlq_keyring(settings)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LivePartition:
        return _LivePartition(self._settings, self._dlq_keys)


class Collector(DynamicSink[Item]):
    """Keeps everything a replay emits in memory, from every worker, for the replay writer to order."""

    def __init__(self) -> None:
        self.outputs: list[Any] = []
        self._lock = threading.Lock()

    def extend(self, outputs: Iterable[Any]) -> None:
        with self._lock:
            self.outputs.extend(outputs)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CollectorPartition:
        return _CollectorPartition(self)


class _CollectorPartition(StatelessSinkPartition[Item]):
    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    def write_batch(self, items: list[Item]) -> None:
        self._collector.extend(out for _, outputs in items for out in outputs)
