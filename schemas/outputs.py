"""What the engine emits: keyed records per output kind and absolute profile writes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


def record_id(kind: str, *about: object) -> str:
    """A deterministic id for a score, account or lifecycle record, like `alert_id` for alerts: derived from
    what the record says (whose, when, caused by what), so a copy re-emitted after a restart has the same
    id and a consumer can drop it."""
    text = "|".join(map(str, (kind, *about)))
    return f"{kind}-{hashlib.blake2b(text.encode(), digest_size=10).hexdigest()}"


class OutputKind(StrEnum):
    """One output per kind: a Kafka topic in `pulse run`, a `<kind>.jsonl` file in replay."""

    SCORES = "scores"
    ALERTS = "alerts"
    LIFECYCLE = "lifecycle"
    ACCOUNTS = "accounts"
    DLQ = "dlq"
    PROFILES = "profiles"
    # A person's export of everything held about them, answering their `access_requested` event.
    ACCESS = "access"
    # Business-wide insights (operators.insights): the journey funnel per cohort day, the daily drivers report.
    FUNNEL = "funnel"
    INSIGHTS = "insights"


class Entity(StrEnum):
    USER = "user"
    ACCOUNT = "account"


@dataclass(frozen=True, slots=True)
class Record:
    """A keyed JSON document bound for one output; `value` is already encoded by the codec."""

    kind: OutputKind
    key: str
    value: bytes
    ts: int  # event time it describes, epoch ms: replay orders each output file by (ts, key)


@dataclass(frozen=True, slots=True)
class ProfileWrite:
    """The whole current profile of one user or account; `fields` None means erase it. `members` (accounts):
    the account's member ids, for the members set beside the profile (engine.serving); not a profile field."""

    entity: Entity
    key: str
    fields: dict[str, Any] | None
    members: tuple[str, ...] | None = None
