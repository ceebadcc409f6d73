"""Prometheus metrics of the service; replay updates them too, harmlessly, so one code path serves both."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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


def serve(host: str, port: int) -> None:
    """Expose /metrics over HTTP; loopback by default because it has no authentication."""
    start_http_server(port, addr=host)
