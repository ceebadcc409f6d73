"""Prometheus metrics of the service; replay updates them too, harmlessly, so one code path serves both."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS_IN = Counter("pulse_events_in", "Raw messages read from the input")
APPLIED = Counter("pulse_events_applied", "Valid events applied to state (first time seen)")
DUPLICATES = Counter("pulse_events_duplicate", "Valid events ignored because their event_id was seen")
REJECTED = Counter("pulse_events_rejected", "Messages sent to the dead-letter output", ["code"])
OUTPUTS = Counter("pulse_outputs", "Records written to Kafka, by output kind", ["kind"])
PROFILE_WRITES = Counter("pulse_profile_writes", "Profile hashes written to Redis")
# Label: the input topic's partition number as a string ("0", "1", ...); there is one input topic.
OFFSET_RESETS = Counter(
    "pulse_offset_resets", "Input offsets that no longer existed (retention) and were reset", ["partition"]
)
USERS = Gauge("pulse_users", "Users held in state, by shard", ["shard"])
WATERMARK = Gauge("pulse_event_time_watermark_seconds", "Newest event time seen, by shard", ["shard"])
BATCH_SECONDS = Histogram(
    "pulse_shard_batch_seconds",
    "Time to apply one batch of events to one shard",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)


def serve(host: str, port: int) -> None:
    """Expose /metrics over HTTP; loopback by default because it has no authentication."""
    start_http_server(port, addr=host)
