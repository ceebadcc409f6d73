"""Settings: one frozen object loaded once from a TOML file plus PULSE_<SECTION>_<KEY> overrides."""

from __future__ import annotations

import contextlib
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from operators.lapse import LapseModel
from operators.scoring import ScoreModel
from operators.shard import HOLD_ALL, HOUR_MS, ShardConfig
from schemas.events import Vocabulary
from schemas.outputs import OutputKind


class ConfigError(ValueError):
    """A configuration problem; the message is meant for the user as it stands."""


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
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    # Secrets: environment only (PULSE_KAFKA_SASL_PASSWORD); never read from the TOML file, never logged.
    sasl_password: str = field(default="", repr=False)

    def client_config(self) -> dict[str, str | int | bool]:
        """The only place librdkafka's dotted keys appear."""
        config: dict[str, str | int | bool] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password
        return config

    def consumer_config(self) -> dict[str, str | int | bool]:
        return {
            **self.client_config(),
            # assign() with offsets in bytewax snapshots: the group is never joined or committed.
            "group.id": "pulse",
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
        }


@dataclass(frozen=True, slots=True)
class TopicSettings:
    scores: str = "pulse-scores"
    alerts: str = "pulse-alerts"
    lifecycle: str = "pulse-lifecycle"
    accounts: str = "pulse-accounts"
    dlq: str = "pulse-dlq"

    def for_kind(self, kind: OutputKind) -> str:
        name: str = getattr(self, kind.value)
        return name


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "pulse"


@dataclass(frozen=True, slots=True)
class EngineSettings:
    # Users are spread over this many state keys; changing it needs a fresh recovery directory.
    shards: int = 16
    workers: int = 1
    dedup_horizon_hours: int = 168
    snapshot_interval_seconds: float = 10.0
    recovery_dir: str = ""
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


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True, slots=True)
class VocabularySettings:
    activity: tuple[str, ...] = ("session_start", "page_view", "feature_used", "api_call", "purchase")
    pii_fields: tuple[str, ...] = ("email", "name", "phone", "ip")


@dataclass(frozen=True, slots=True)
class Settings:
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    redis: RedisSettings = RedisSettings()
    engine: EngineSettings = EngineSettings()
    metrics: MetricsSettings = MetricsSettings()
    vocabulary: VocabularySettings = VocabularySettings()
    lapse: LapseModel = LapseModel()  # noqa: RUF009 - frozen, so one shared default is safe
    score: ScoreModel = ScoreModel()  # noqa: RUF009 - frozen, so one shared default is safe

    def vocab(self) -> Vocabulary:
        return Vocabulary(
            activity=frozenset(self.vocabulary.activity), pii_fields=frozenset(self.vocabulary.pii_fields)
        )

    def shard_config(self, live: bool, until_ms: int = -1) -> ShardConfig:
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
        )


_SECRETS = {("kafka", "sasl_password")}


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
    elif kind is str:
        if isinstance(value, str):
            return value
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
                raise ConfigError(f"[{name}] {key} is a secret: set PULSE_{name.upper()}_{key.upper()} instead")
            values[key] = _coerce(f"[{name}] {key}", hints[key], table[key])
        env_name = f"PULSE_{name.upper()}_{key.upper()}"
        if env_name in env:
            values[key] = _coerce(env_name, hints[key], env[env_name])
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
    if isinstance(section, EngineSettings) and (section.shards < 1 or section.workers < 1):
        raise ConfigError("[engine] shards and workers must be at least 1")
    if isinstance(section, KafkaSettings) and section.start_from not in ("earliest", "latest"):
        raise ConfigError(f"[kafka] start_from must be earliest or latest, got {section.start_from!r}")
    if isinstance(section, KafkaSettings) and section.auto_offset_reset not in ("earliest", "latest"):
        raise ConfigError(f"[kafka] auto_offset_reset must be earliest or latest, got {section.auto_offset_reset!r}")


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
    return Settings(**sections)


__all__ = ["ConfigError", "Settings", "load_settings", "types"]
