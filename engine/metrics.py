"""Prometheus metrics of the service; replay updates them too, harmlessly, so one code path serves both."""

from __future__ import annotations

import base64
import contextlib
import hmac
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from engine.config import MetricsSettings

EVENTS_IN = Counter("pulse_events_in", "Raw messages read from the input")
APPLIED = Counter("pulse_events_applied", "Valid events applied to state (first time seen)")
DUPLICATES = Counter("pulse_events_duplicate", "Valid events ignored because their event_id was seen")
REJECTED = Counter("pulse_events_rejected", "Messages sent to the dead-letter output", ["code"])
# Label: feature, plan, reason or type; the event stays valid, only the name is replaced.
UNTRACKED = Counter(
    "pulse_untracked_names", "Names outside the vocabulary or tracking plan, replaced by 'other' at decode", ["field"]
)
# Counted in the delivery report: a record counts once Kafka acknowledged it, not when it was queued.
OUTPUTS = Counter("pulse_outputs", "Records acknowledged by Kafka, by output kind", ["kind"])
PROFILE_WRITES = Counter("pulse_profile_writes", "Profile hashes written to Redis")
REDIS_ERRORS = Counter(
    "pulse_redis_errors", "Failed Redis write attempts (connection, timeout, loading); each one is retried"
)
# Producer errors come from librdkafka's error_cb; the consumer's per-message errors (engine/sources.py)
# belong here too. Transient: the client reconnects and retries on its own.
KAFKA_ERRORS = Counter("pulse_kafka_errors", "Kafka client errors reported by librdkafka (the client retries)")
# Label: the input topic's partition number as a string ("0", "1", ...); there is one input topic.
OFFSET_RESETS = Counter(
    "pulse_offset_resets", "Input offsets that no longer existed (retention) and were reset", ["partition"]
)
ERASURES = Counter("pulse_erasures", "erasure_requested events applied: the person's state and profile removed")
ERASED_IDS = Gauge(
    "pulse_erased_ids", "Erased user ids remembered (for dedup horizon + lateness) so late events stay out", ["shard"]
)
LATE = Counter("pulse_events_late", "Events later than the allowed lateness, applied out of event-time order")
BEYOND_HORIZON = Counter(
    "pulse_events_beyond_dedup_horizon", "Events older than the de-duplication horizon (applied; not dedup-checked)"
)
BEYOND_BACKFILL = Counter(
    "pulse_events_beyond_backfill", "Events more than max_backfill_days before their user's first event: counted only"
)
USERS = Gauge("pulse_users", "Users held in state, by shard", ["shard"])
EVENT_TIME = Gauge(
    "pulse_shard_event_time_seconds", "The shard's event time (newest event, bad clocks held)", ["shard"]
)
LOW_WATERMARK = Gauge(
    "pulse_low_watermark_seconds",
    "The low watermark the shard's timers follow: the slowest active input partition's event time",
    ["shard"],
)
BATCH_SECONDS = Histogram(
    "pulse_shard_batch_seconds",
    "Time to apply one batch of events to one shard",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
SNAPSHOT_SECONDS = Histogram(
    "pulse_snapshot_seconds",
    "Time to snapshot one shard at an epoch close (changed entries written, header pickled)",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


ALERTS = Counter(
    "pulse_alerts", "Alert records written, by alert kind and status (firing, resolved)", ["kind", "status"]
)
E2E_LATENCY = Histogram(
    "pulse_end_to_end_latency_seconds",
    "From an input batch's oldest message entering Kafka (its timestamp) to Kafka acknowledging the outputs "
    "it caused; one observation per output batch",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
# Label: the input partition number as a string. High watermark minus the next offset to read.
CONSUMER_LAG = Gauge("pulse_consumer_lag", "Messages in the input partition not yet read by Pulse", ["partition"])
PARTITIONS = Gauge("pulse_partitions_assigned", "Input partitions this process reads")
STATE_BYTES = Gauge(
    "pulse_state_bytes", "Approximate state size of the shard (its entries as pickled at the last snapshot)", ["shard"]
)
KAFKA_WRITE_SECONDS = Histogram(
    "pulse_kafka_write_seconds",
    "From producing a sink batch's records to Kafka acknowledging all of them",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
REDIS_WRITE_SECONDS = Histogram(
    "pulse_redis_write_seconds",
    "One MULTI/EXEC of profile hashes, retries through an outage included",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)
# Label: the journey stage (never a user or cohort: the funnel records hold those figures).
FUNNEL_ENTERED = Counter("pulse_funnel_entered", "Users counted as entering a journey stage (funnel)", ["stage"])
FUNNEL_CONVERTED = Counter(
    "pulse_funnel_converted", "Users counted as converting from a journey stage to a later one (funnel)", ["stage"]
)
BUILD_INFO = Gauge("pulse_build_info", "Always 1: the running version and score model", ["version", "model"])


# Readiness: (ready, reason). The service installs one that knows its partitions and lag.
Readiness = Callable[[], tuple[bool, str]]


class PartitionProgress(Collector):
    """Per input partition: the event time read so far and the consumer lag, reported by the dataflow; the
    event-time lag (wall clock minus that event time, 0 while the partition is idle: nothing is pending)
    is computed when scraped, so it keeps growing while Pulse is stuck."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._event_time: dict[str, tuple[float, bool]] = {}
        self._lag: dict[str, int] = {}
        self._lock = threading.Lock()

    def event_time(self, partition: str, seconds: float, idle: bool) -> None:
        with self._lock:
            self._event_time[partition] = (seconds, idle)

    def consumer_lag(self, partition: str, messages: int) -> None:
        CONSUMER_LAG.labels(partition).set(messages)
        with self._lock:
            self._lag[partition] = messages

    def forget(self, partition: str) -> None:
        with self._lock:
            self._event_time.pop(partition, None)
            self._lag.pop(partition, None)
        with contextlib.suppress(KeyError):  # never reported (closed before its first fetch)
            CONSUMER_LAG.remove(partition)

    def lags(self) -> dict[str, int]:
        with self._lock:
            return dict(self._lag)

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "pulse_event_time_lag_seconds",
            "Wall clock minus the newest event time read from the input partition (0 while it is idle)",
            labels=["partition"],
        )
        now = self._clock()
        with self._lock:
            times = sorted(self._event_time.items())
        for partition, (seconds, idle) in times:
            family.add_metric([partition], 0.0 if idle or seconds <= 0 else max(0.0, now - seconds))
        yield family


PARTITION_PROGRESS = PartitionProgress()
REGISTRY.register(PARTITION_PROGRESS)


def readiness(max_lag: int) -> Readiness:
    """Ready once this process reads at least one input partition and every one of them is within `max_lag`
    messages of its end."""

    def ready() -> tuple[bool, str]:
        lags = PARTITION_PROGRESS.lags()
        if not lags:
            return False, "no input partition assigned yet"
        behind = {p: lag for p, lag in lags.items() if lag > max_lag}
        if behind:
            worst = max(behind, key=lambda p: behind[p])
            return False, f"catching up: partition {worst} is {behind[worst]} messages behind (ready at <= {max_lag})"
        return True, f"ok: {len(lags)} partition(s), max lag {max(lags.values())}"

    return ready


def _always_ready() -> tuple[bool, str]:
    return True, "ok"


def _plain(start_response: StartResponse, status: str, body: str, *extra: tuple[str, str]) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *extra])
    return [body.encode()]


def metrics_app(settings: MetricsSettings, ready: Readiness = _always_ready) -> WSGIApplication:
    """/metrics (behind basic auth when a username is set), /healthz and /readyz (open: they say only ok or
    why not, and orchestrators probe them without credentials)."""
    exposition = make_wsgi_app()
    expected = (
        b"Basic " + base64.b64encode(f"{settings.username}:{settings.password}".encode()) if settings.username else b""
    )

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _plain(start_response, "200 OK", "ok\n")
        if path == "/readyz":
            ok, reason = ready()
            return _plain(start_response, "200 OK" if ok else "503 Service Unavailable", reason + "\n")
        if path != "/metrics":
            return _plain(start_response, "404 Not Found", "not found: try /metrics, /healthz or /readyz\n")
        given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1")
        if expected and not hmac.compare_digest(given, expected):
            challenge = ("WWW-Authenticate", 'Basic realm="pulse metrics", charset="UTF-8"')
            return _plain(start_response, "401 Unauthorized", "unauthorized\n", challenge)
        return exposition(environ, start_response)  # type: ignore[no-any-return]

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood stderr."""


def _tls(settings: MetricsSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_certfile, settings.tls_keyfile)
    if settings.tls_client_cafile:
        context.load_verify_locations(settings.tls_client_cafile)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def serve(settings: MetricsSettings, ready: Readiness = _always_ready) -> WSGIServer:
    """Serve metrics and probes from a daemon thread; HTTPS (and mutual TLS) when certificates are set."""
    server = make_server(
        settings.host, settings.port, metrics_app(settings, ready), server_class=_Server, handler_class=_QuietHandler
    )
    if settings.tls_certfile:
        try:
            server.socket = _tls(settings).wrap_socket(server.socket, server_side=True)
        except (OSError, ValueError):
            server.server_close()
            raise
    threading.Thread(target=server.serve_forever, name="pulse-metrics", daemon=True).start()
    return server
