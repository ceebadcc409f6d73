"""Settings: one frozen object loaded once from a TOML file plus PULSE_<SECTION>_<KEY> overrides."""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NewType
from urllib.parse import urlsplit

from operators.journey import Journey
from operators.lapse import LapseModel
from operators.scoring import ScoreModel
from operators.shard import HOLD_ALL, HOUR_MS, ShardConfig
from operators.state import DAY_MS
from schemas.events import INPUT_FORMATS, NAME_PATTERN, REASON_CODES, Vocabulary
from schemas.outputs import Entity, OutputKind
from schemas.segment import mapping_problem, merged_events


class ConfigError(ValueError):
    """A configuration problem; the message is meant for the user as it stands."""


# A length of time written for people: "1d", "36h", "90m", "30s", "500ms"; a bare number is seconds.
Duration = NewType("Duration", str)
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}


def parse_duration_ms(text: str) -> int:
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ConfigError(f"{text!r} is not a duration such as 1d, 36h, 90m, 30s or 500ms")
    return round(float(match.group(1)) * _UNIT_MS[match.group(2)])


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:9092"
    input_topic: str = "pulse-events"
    # Partitions for topics Pulse creates when missing; input partitions bound the useful process count.
    input_partitions: int = 4
    output_partitions: int = 4
    replication_factor: int = 1
    start_from: str = "earliest"
    # Where to resume when a snapshot offset no longer exists (removed by retention): earliest | latest.
    auto_offset_reset: str = "earliest"
    batch_size: int = 2000
    poll_timeout_ms: int = 50
    # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL. Events carry personal data: outside one host, use (SASL_)SSL.
    security_protocol: str = "PLAINTEXT"
    # TLS: the CA file (PEM) that signed the brokers' certificates ("" = the system's CAs); a client certificate
    # and key (PEM) for mutual TLS, both or neither; "https" checks the broker's name in its certificate.
    ssl_ca_location: str = ""
    ssl_certificate_location: str = ""
    ssl_key_location: str = ""
    ssl_endpoint_identification: str = "https"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    # Files holding a secret (read once at start): a way to keep secrets out of the environment as well.
    sasl_password_file: str = ""
    ssl_key_password_file: str = ""
    # Secrets: from the environment (PULSE_KAFKA_SASL_PASSWORD, PULSE_KAFKA_SSL_KEY_PASSWORD) or from the
    # *_file keys above; a TOML file holding one is refused (config files get copied, committed, pasted).
    sasl_password: str = field(default="", repr=False)
    ssl_key_password: str = field(default="", repr=False)
    # How long the producer keeps retrying a message (a broker outage) before it fails the run.
    message_timeout_ms: int = 300_000
    # Also commit the input offsets of each snapshot to this consumer group, so Kafka's own lag tools
    # (kafka-consumer-groups.sh, Burrow, exporters) see Pulse. Informational: Pulse resumes from its snapshots.
    commit_offsets: bool = False
    group_id: str = "pulse"

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol.upper() in ("SSL", "SASL_SSL")

    def client_config(self) -> dict[str, str | int | bool]:
        """The only place librdkafka's dotted keys appear."""
        config: dict[str, str | int | bool] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.uses_tls:
            config["ssl.endpoint.identification.algorithm"] = self.ssl_endpoint_identification
            if self.ssl_ca_location:
                config["ssl.ca.location"] = self.ssl_ca_location
            if self.ssl_certificate_location:
                config["ssl.certificate.location"] = self.ssl_certificate_location
                config["ssl.key.location"] = self.ssl_key_location
            if self.ssl_key_password:
                config["ssl.key.password"] = self.ssl_key_password
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password
        return config

    def consumer_config(self) -> dict[str, str | int | bool]:
        return {
            **self.client_config(),
            # assign() with offsets in bytewax snapshots: the group is never joined, and offsets are
            # committed to it (at each snapshot) only with commit_offsets, for Kafka's lag tools.
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "auto.offset.reset": self.auto_offset_reset,
            "fetch.wait.max.ms": self.poll_timeout_ms,
            # librdkafka prefetches up to 64 MiB per partition by default; 8 MiB keeps up at our rate
            # (bench: peak RSS 553 -> 436 MiB, throughput within noise).
            "queued.max.messages.kbytes": 8192,
        }

    def producer_config(self) -> dict[str, str | int | bool]:
        return {
            **self.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.timeout.ms": self.message_timeout_ms,
        }


@dataclass(frozen=True, slots=True)
class TopicSettings:
    scores: str = "pulse-scores"
    alerts: str = "pulse-alerts"
    lifecycle: str = "pulse-lifecycle"
    accounts: str = "pulse-accounts"
    dlq: str = "pulse-dlq"
    # Compacted, keyed tables of the latest profile per user / account; an erased user gets a tombstone.
    profiles: str = "pulse-profiles"
    account_profiles: str = "pulse-account-profiles"
    # A person's export of what Pulse holds about them (answering `access_requested`), keyed by user id.
    access: str = "pulse-access"
    # Business-wide insights: funnel figures per cohort day (keyed by the day) and the daily drivers report.
    funnel: str = "pulse-funnel"
    insights: str = "pulse-insights"

    def for_kind(self, kind: OutputKind) -> str:
        name: str = getattr(self, kind.value)
        return name

    def for_profiles(self, entity: Entity) -> str:
        return self.profiles if entity is Entity.USER else self.account_profiles


@dataclass(frozen=True, slots=True)
class RedisSettings:
    # rediss:// for TLS. Out of repr: a URL given in PULSE_REDIS_URL may still carry a password.
    url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    # TLS (rediss://): the CA file (PEM) that signed the server's certificate ("" = the system's CAs), and a
    # client certificate and key (PEM) when the server asks for one (tls-auth-clients), both or neither.
    ssl_ca_certs: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    # An ACL user (see README "Secure deployment"); its password from PULSE_REDIS_PASSWORD or password_file.
    username: str = ""
    password_file: str = ""
    password: str = field(default="", repr=False)
    key_prefix: str = "pulse"
    # Profile hashes per MULTI/EXEC, so one big flush never blocks Redis for long.
    pipeline_size: int = 1000
    # A write that fails (Redis down) is retried with backoff for this long; 0 = forever (backpressure).
    retry_deadline_seconds: float = 0.0
    # The serving indexes beside the profiles (engine.serving): band sets, members, histories, open alerts.
    indexes: bool = True
    # Score changes kept per user and per account in their history.
    history_size: int = 50


@dataclass(frozen=True, slots=True)
class EngineSettings:
    # Users are spread over this many state keys; changing it needs a fresh recovery directory.
    shards: int = 16
    workers: int = 1
    dedup_horizon_hours: int = 168
    snapshot_interval_seconds: float = 10.0
    # `pulse run` snapshots here (relative to the working directory); "" disables recovery.
    recovery_dir: str = ".pulse/recovery"
    replay_batch_size: int = 2000
    # Live mode: a user's Redis profile is rewritten at most this often, however many events arrive.
    profile_flush_ms: int = 5000
    # Events up to this late (event time) are re-ordered before they are applied, so bounded shuffling
    # does not change any output. Always on in replay; in `pulse run` it delays outputs by as much, so
    # it is off unless reorder_live is true.
    allowed_lateness_minutes: int = 60
    reorder_live: bool = False
    # Live: timers follow event time while events flow, the wall clock once a shard is idle this long.
    timer_idle_ms: int = 5000
    # ...and only while event time is within this of the wall clock (not during a backfill of history).
    timer_wall_clock_max_lag_hours: int = 168
    # Events stamped further than this ahead of the wall clock (at processing time) are dead letters
    # (`future_timestamp`): a duration such as "1d", "36h", "90m", "30s" or "500ms" (a bare number: seconds).
    max_future_skew: Duration = Duration("1d")
    # A late event more than this before its user's first event adds to their counts only.
    max_backfill_days: int = 366
    # One user's jump of more than this ahead of the shard's event time moves only that user until another
    # user's events confirm it.
    max_clock_jump_days: int = 30
    # Recovery snapshots are encrypted when a state key is configured: PULSE_STATE_KEY (+ PULSE_STATE_KEY_ID)
    # or this file of `key_id:base64key` lines (the first writes, all read). Keys never come from the TOML.
    state_key_file: str = ""
    # With a key, a plain (unencrypted) snapshot is refused unless this is true: a one-off migration.
    allow_plain_state: bool = False

    @property
    def max_future_skew_ms(self) -> int:
        return parse_duration_ms(self.max_future_skew)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    enabled: bool = True
    # Loopback by default. Bound elsewhere, protect it: basic auth, TLS, or both.
    host: str = "127.0.0.1"
    port: int = 9464
    # Basic auth for /metrics: a username here, its password from PULSE_METRICS_PASSWORD or password_file.
    username: str = ""
    password_file: str = ""
    password: str = field(default="", repr=False)
    # HTTPS: the server's certificate and key (PEM), both or neither; with client_cafile, scrapers must
    # present a certificate signed by that CA (mutual TLS).
    tls_certfile: str = ""
    tls_keyfile: str = ""
    tls_client_cafile: str = ""
    # /readyz answers 200 once every input partition this process reads is at most this many messages
    # behind its end (consumer lag), 503 with the reason until then.
    ready_max_lag: int = 1000

    @property
    def scheme(self) -> str:
        return "https" if self.tls_certfile else "http"


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    # `pulse console`, the read-only CS web console (engine.console). Loopback by default: no login needed.
    # Bound elsewhere it refuses to start unless a password (basic auth) or a bearer token is configured.
    host: str = "127.0.0.1"
    port: int = 8080
    # Basic auth: a username here, its password from PULSE_CONSOLE_PASSWORD or password_file.
    username: str = ""
    password_file: str = ""
    password: str = field(default="", repr=False)
    # A bearer token (`Authorization: Bearer ...`) from PULSE_CONSOLE_TOKEN or token_file, for scripts.
    token_file: str = ""
    token: str = field(default="", repr=False)
    # Rows per table on the "At risk now" page (and /api/at-risk) unless ?limit= asks for fewer.
    page_size: int = 100


@dataclass(frozen=True, slots=True)
class DlqSettings:
    # Dead letters hold the raw input (personal data): when true their values are AES-GCM envelopes, keyed
    # by PULSE_DLQ_KEY (+ PULSE_DLQ_KEY_ID) or key_file (`key_id:base64key` lines, the first writes).
    encrypt: bool = False
    key_file: str = ""


@dataclass(frozen=True, slots=True)
class VocabularySettings:
    activity: tuple[str, ...] = ("session_start", "session_end", "page_view", "feature_used", "api_call", "purchase")
    pii_fields: tuple[str, ...] = ("email", "name", "phone", "ip")
    # Free text never enters state: a properties.reason outside these codes reads "other"...
    reasons: tuple[str, ...] = REASON_CODES
    # ...and so does a feature or plan name the whole of which does not match this tracking plan,
    name_pattern: str = NAME_PATTERN
    # or, when an allow-list is given, is not in it (each entry must match name_pattern).
    features: tuple[str, ...] = ()
    plans: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InputSettings:
    # What the input topic (and a replayed file) carries: "pulse", the native event document, or "segment",
    # Segment / RudderStack spec messages (track, page, screen, identify, group, alias; schemas.segment).
    format: str = "pulse"
    # segment: track event name = Pulse type, over the defaults (schemas.segment.DEFAULT_EVENTS); "other"
    # unmaps a default; "feature_used:NAME" is a feature use of NAME.
    segment_events: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SessionSettings:
    # A user's activity events at most this far apart are one session (see operators.sessions).
    gap_minutes: int = 30


@dataclass(frozen=True, slots=True)
class Settings:
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    redis: RedisSettings = RedisSettings()
    engine: EngineSettings = EngineSettings()
    metrics: MetricsSettings = MetricsSettings()
    console: ConsoleSettings = ConsoleSettings()
    dlq: DlqSettings = DlqSettings()
    vocabulary: VocabularySettings = VocabularySettings()
    input: InputSettings = InputSettings()
    sessions: SessionSettings = SessionSettings()
    lapse: LapseModel = LapseModel()  # noqa: RUF009 - frozen, so one shared default is safe
    score: ScoreModel = ScoreModel()  # noqa: RUF009 - frozen, so one shared default is safe
    journey: Journey = Journey()  # noqa: RUF009 - frozen, so one shared default is safe

    def vocab(self) -> Vocabulary:
        return _vocabulary(self.vocabulary, self.input)

    def shard_config(self, live: bool, until_ms: int = -1, input_partitions: tuple[str, ...] = ()) -> ShardConfig:
        lateness = self.engine.allowed_lateness_minutes * 60_000
        reorder = lateness if not live or self.engine.reorder_live else 0
        return ShardConfig(
            dedup_horizon_ms=self.engine.dedup_horizon_hours * HOUR_MS,
            live_profiles=live,
            reorder_ms=reorder,
            account_reorder_ms=reorder if live else HOLD_ALL,
            model=self.score,
            model_version=self.score.version,
            lapse=self.lapse,
            until_ms=until_ms,
            timer_lag_ms=0 if reorder else lateness,
            max_backfill_ms=self.engine.max_backfill_days * DAY_MS,
            max_clock_jump_ms=self.engine.max_clock_jump_days * DAY_MS,
            wall_clock_max_lag_ms=self.engine.timer_wall_clock_max_lag_hours * HOUR_MS,
            input_partitions=input_partitions,
            session_gap_ms=self.sessions.gap_minutes * 60_000,
            journey=self.journey,
        )


def _vocabulary(v: VocabularySettings, i: InputSettings | None = None) -> Vocabulary:
    return Vocabulary(
        activity=frozenset(v.activity),
        pii_fields=frozenset(v.pii_fields),
        reasons=frozenset(v.reasons),
        name_pattern=v.name_pattern,
        features=frozenset(v.features),
        plans=frozenset(v.plans),
        input_format=i.format if i else "pulse",
        segment_events=merged_events(i.segment_events if i else {}),
    )


# Secrets come from PULSE_<SECTION>_<KEY> or from the file named by the `<key>_file` key, never from the TOML.
_SECRETS = {
    ("kafka", "sasl_password"),
    ("kafka", "ssl_key_password"),
    ("redis", "password"),
    ("metrics", "password"),
    ("console", "password"),
    ("console", "token"),
}


def _read_secret(where: str, path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    secret = text.rstrip("\r\n")  # the newline an editor or `echo` adds is not part of the secret
    if not secret:
        raise ConfigError(f"{where}: {path} is empty")
    return secret


def _url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None  # redis-py reports a malformed URL when it connects


def _coerce(where: str, kind: Any, value: Any) -> Any:
    """Check a TOML value (or an environment string) against the field's declared type."""
    from_env = isinstance(value, str) and where.startswith("PULSE_")
    if kind is bool:
        if from_env:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
    elif kind is int:
        if from_env:
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if from_env:
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind is Duration:
        text = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        if isinstance(text, str):
            try:
                parse_duration_ms(text)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            return Duration(text)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(kind) is dict and typing.get_args(kind)[1:] == (str,):  # names, e.g. [journey] events
        if from_env:
            value = {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in value.split(",") if p.strip())}
        if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            return {str(k): v for k, v in value.items()}
    elif typing.get_origin(kind) is dict:
        if from_env:
            with contextlib.suppress(ValueError):
                value = {k.strip(): float(v) for k, v in (p.split("=", 1) for p in value.split(",") if p.strip())}
        if isinstance(value, dict) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
        ):
            return {str(k): float(v) for k, v in value.items()}
    elif typing.get_origin(kind) is tuple:
        items = [v.strip() for v in value.split(",") if v.strip()] if from_env else value
        if isinstance(items, list) and all(isinstance(v, str) for v in items):
            return tuple(items)
    name = getattr(kind, "__name__", str(kind))
    raise ConfigError(f"{where}: expected {name}, got {value!r}")


def _section(name: str, cls: type[Any], table: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.init}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"[{name}]: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for key in known:
        if key in table:
            if (name, key) in _SECRETS:
                raise ConfigError(
                    f"[{name}] {key} is a secret: set PULSE_{name.upper()}_{key.upper()} or {key}_file instead"
                )
            if (name, key) == ("redis", "url") and isinstance(table[key], str) and _url_password(table[key]):
                raise ConfigError(
                    "[redis] url holds a password, and a secret must not be in the config file: set "
                    "PULSE_REDIS_PASSWORD or redis.password_file (and redis.username for an ACL user) instead"
                )
            values[key] = _coerce(f"[{name}] {key}", hints[key], table[key])
        env_name = f"PULSE_{name.upper()}_{key.upper()}"
        if env_name in env:
            values[key] = _coerce(env_name, hints[key], env[env_name])
    for section, secret in sorted(_SECRETS):
        if section == name and values.get(f"{secret}_file"):
            if values.get(secret):
                raise ConfigError(
                    f"[{name}] {secret} is set twice: by PULSE_{name.upper()}_{secret.upper()} and by {secret}_file"
                )
            values[secret] = _read_secret(f"[{name}] {secret}_file", values[f"{secret}_file"])
    try:
        instance = cls(**values)
    except ValueError as exc:
        raise ConfigError(f"[{name}]: {exc}") from None
    _validate(name, instance)
    return instance


def _validate(name: str, section: Any) -> None:
    for f in fields(section):
        value = getattr(section, f.name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"[{name}] {f.name} must not be negative, got {value}")
    if isinstance(section, RedisSettings) and section.pipeline_size < 1:
        raise ConfigError("[redis] pipeline_size must be at least 1")
    if isinstance(section, RedisSettings) and section.history_size < 1:
        raise ConfigError("[redis] history_size must be at least 1")
    if isinstance(section, EngineSettings) and (section.shards < 1 or section.workers < 1):
        raise ConfigError("[engine] shards and workers must be at least 1")
    if isinstance(section, VocabularySettings):
        try:
            _vocabulary(section)  # fail at load, not when the flow starts
        except ValueError as exc:
            raise ConfigError(f"[vocabulary] {exc}") from None
    if isinstance(section, InputSettings) and section.format not in INPUT_FORMATS:
        raise ConfigError(f"[input] format must be pulse or segment, got {section.format!r}")
    if isinstance(section, KafkaSettings) and section.start_from not in ("earliest", "latest"):
        raise ConfigError(f"[kafka] start_from must be earliest or latest, got {section.start_from!r}")
    if isinstance(section, KafkaSettings) and section.auto_offset_reset not in ("earliest", "latest"):
        raise ConfigError(f"[kafka] auto_offset_reset must be earliest or latest, got {section.auto_offset_reset!r}")
    if isinstance(section, KafkaSettings):
        _validate_kafka_security(section)
    if isinstance(section, RedisSettings):
        _validate_redis_security(section)
    if isinstance(section, MetricsSettings):
        _validate_metrics_security(section)
    if isinstance(section, ConsoleSettings):
        _validate_console_security(section)


def _validate_kafka_security(kafka: KafkaSettings) -> None:
    """Contradictions that would otherwise surface as a vague connection failure, or worse, as personal data
    sent in clear text although TLS settings were given."""
    protocol = kafka.security_protocol.upper()
    if protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        raise ConfigError(
            "[kafka] security_protocol must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, "
            f"got {kafka.security_protocol!r}"
        )
    tls_keys = ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location", "ssl_key_password")
    given = [key for key in tls_keys if getattr(kafka, key)]
    if given and not kafka.uses_tls:
        raise ConfigError(f"[kafka] {given[0]} is set but security_protocol is {protocol}: use SSL or SASL_SSL")
    if bool(kafka.ssl_certificate_location) != bool(kafka.ssl_key_location):
        raise ConfigError("[kafka] ssl_certificate_location and ssl_key_location go together (mutual TLS)")
    if kafka.ssl_key_password and not kafka.ssl_key_location:
        raise ConfigError("[kafka] ssl_key_password is set but ssl_key_location is not")
    if kafka.ssl_endpoint_identification not in ("https", "none"):
        raise ConfigError(
            f"[kafka] ssl_endpoint_identification must be https or none, got {kafka.ssl_endpoint_identification!r}"
        )
    sasl = protocol.startswith("SASL_")
    if sasl and kafka.sasl_mechanism.upper() not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        raise ConfigError(
            f"[kafka] security_protocol {protocol} needs sasl_mechanism PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, "
            f"got {kafka.sasl_mechanism!r}"
        )
    if protocol == "SASL_PLAINTEXT" and kafka.sasl_mechanism.upper() == "PLAIN":
        raise ConfigError("[kafka] sasl_mechanism PLAIN sends the password itself: use it with SASL_SSL only")
    if sasl and not (kafka.sasl_username and kafka.sasl_password):
        raise ConfigError(
            f"[kafka] security_protocol {protocol} needs sasl_username and a password "
            "(PULSE_KAFKA_SASL_PASSWORD or sasl_password_file)"
        )
    if not sasl and (kafka.sasl_mechanism or kafka.sasl_username or kafka.sasl_password):
        raise ConfigError(f"[kafka] SASL settings are set but security_protocol is {protocol}: use SASL_SSL")


def _validate_redis_security(redis: RedisSettings) -> None:
    tls = redis.url.startswith("rediss://")
    given = [key for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile") if getattr(redis, key)]
    if given and not tls:
        raise ConfigError(f"[redis] {given[0]} is set but url is not rediss://: TLS would not be used")
    if bool(redis.ssl_certfile) != bool(redis.ssl_keyfile):
        raise ConfigError("[redis] ssl_certfile and ssl_keyfile go together (TLS client authentication)")
    if redis.password and _url_password(redis.url):
        raise ConfigError("[redis] a password is given both in PULSE_REDIS_URL and as redis.password: set one")
    if redis.username and not redis.password:
        raise ConfigError(f"[redis] username {redis.username!r} needs PULSE_REDIS_PASSWORD or redis.password_file")


def _validate_metrics_security(metrics: MetricsSettings) -> None:
    if metrics.username and not metrics.password:
        raise ConfigError(
            f"[metrics] username {metrics.username!r} needs PULSE_METRICS_PASSWORD or metrics.password_file"
        )
    if metrics.password and not metrics.username:
        raise ConfigError("[metrics] a password is set but no username: set metrics.username too")
    if bool(metrics.tls_certfile) != bool(metrics.tls_keyfile):
        raise ConfigError("[metrics] tls_certfile and tls_keyfile go together (HTTPS)")
    if metrics.tls_client_cafile and not metrics.tls_certfile:
        raise ConfigError("[metrics] tls_client_cafile needs tls_certfile and tls_keyfile (HTTPS)")


def _validate_console_security(console: ConsoleSettings) -> None:
    if console.username and not console.password:
        raise ConfigError(
            f"[console] username {console.username!r} needs PULSE_CONSOLE_PASSWORD or console.password_file"
        )
    if console.password and not console.username:
        raise ConfigError("[console] a password is set but no username: set console.username too")
    if console.page_size < 1:
        raise ConfigError("[console] page_size must be at least 1")


MASK = "***"
# Defence in depth: a key named like a secret is masked even if it is not (yet) in _SECRETS; not the *_file keys
# (paths), nor the ones that only name a file (ssl_keyfile, key_file) or a username.
_SECRET_NAME = re.compile(r"(?i)(password|secret|token|credential)(?!_file)")
_SECRET_QUERY = re.compile(r"(?i)pass|secret|token|auth|cred")


def mask_url(url: str) -> str:
    """`url` with its password (and any password-like query parameter) replaced by MASK; a user name stays.
    Userinfo without a ':' is masked whole (redis-py would not read it as a password, a person might)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    # Up to the last '@': a password may hold '/', '?' or '@' itself (a '@' in the query over-masks, harmlessly).
    userinfo, at, rest = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:{MASK}@{rest}" if colon and "/" not in user and "?" not in user else f"{MASK}@{rest}"
    head, question, query = rest.partition("?")
    if question:
        params = (p.partition("=") for p in query.split("&"))
        query = "&".join(f"{k}{eq}{MASK if eq and _SECRET_QUERY.search(k) else v}" for k, eq, v in params)
    return f"{scheme}{sep}{head}{question}{query}"


def masked_config(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every section and key of `settings` as plain JSON-able values, for a log line: secrets that are set read
    MASK (unset ones ""), redis.url without its password. Keys (PULSE_STATE_KEY, PULSE_DLQ_KEY) are not
    settings and never appear; their files appear as paths."""
    config: dict[str, dict[str, Any]] = {}
    for section in fields(settings):
        values: dict[str, Any] = {}
        obj = getattr(settings, section.name)
        for f in fields(obj):
            if not f.init or f.name.startswith("_"):
                continue
            value = getattr(obj, f.name)
            if (section.name, f.name) in _SECRETS or (isinstance(value, str) and _SECRET_NAME.search(f.name)):
                value = MASK if value else ""
            elif (section.name, f.name) == ("redis", "url"):
                value = mask_url(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            values[f.name] = value
        config[section.name] = values
    return config


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Pure: the same file and environment always give the same settings, or a ConfigError."""
    env = os.environ if env is None else env
    table: dict[str, Any] = {}
    if path is not None:
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    hints = typing.get_type_hints(Settings)
    unknown = sorted(set(table) - set(hints))
    if unknown:
        raise ConfigError(f"unknown section(s) [{'], ['.join(unknown)}]; known: {', '.join(sorted(hints))}")
    sections = {}
    for name, cls in hints.items():
        sub = table.get(name, {})
        if not isinstance(sub, dict):
            raise ConfigError(f"[{name}] must be a table")
        sections[name] = _section(name, cls, sub, env)
    settings = Settings(**sections)
    stray = settings.journey.unknown_types(settings.vocab().categories)
    if stray:
        raise ConfigError(f"[journey] events: {', '.join(stray)} not in the vocabulary (they would read other)")
    vocab = settings.vocab()
    for name, target in settings.input.segment_events.items():
        problem = mapping_problem(name, target, vocab)
        if problem:
            raise ConfigError(f"[input] segment_events: {problem}")
    return settings


__all__ = ["ConfigError", "Settings", "load_settings", "mask_url", "masked_config", "types"]
