"""The serving indexes in Redis: what the CS console (and any CS tool) reads beside the profile hashes.

Written by the live sink in the same MULTI/EXEC transactions as the profiles, and like them absolute, so a
re-processed batch (after a restart) or a retried pipeline (after an outage) leaves the same state:

| key | type | content |
|---|---|---|
| `{p}:index:users:{band}` | sorted set | user id -> score, one set per band; a user is in the set of their band only |
| `{p}:index:accounts` | sorted set | account id -> score, every account |
| `{p}:index:accounts:{band}` | sorted set | account id -> score, one set per band |
| `{p}:members:{account_id}` | set | the account's members (rewritten whole with the account profile) |
| `{p}:history:user:{user_id}` | sorted set | the last `history_size` score changes: JSON, by event time (ms) |
| `{p}:history:account:{account_id}` | sorted set | the same for the account's health changes |
| `{p}:alerts:user:{user_id}` | hash | alert id -> the firing alert (JSON); resolved alerts are removed |

`index`, `members`, `history` and `alerts` never clash with `{p}:user:{id}` or `{p}:account:{id}`, whatever
the ids hold. A history entry is a deterministic subset of the output record, so re-adding it is a no-op.
Erasing a user deletes their hash, history and alerts and removes them from the band sets; the account's
profile, rewritten because the member left, rewrites its members set without them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from operators.scoring import Band
from schemas.outputs import Entity

BANDS: tuple[str, ...] = tuple(b.value for b in Band)

# The fields of a score or account record kept in its history entry: what moved, how much, and why.
HISTORY_FIELDS = ("ts", "score", "previous_score", "band", "previous_band", "reasons", "cause_event_id")

Command = tuple[str | bytes, ...]


class Keys:
    """Key names under one prefix (`redis.key_prefix`)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def profile(self, entity: Entity, key: str) -> str:
        return f"{self.prefix}:{entity.value}:{key}"

    def band_index(self, entity: Entity, band: str) -> str:
        return f"{self.prefix}:index:{entity.value}s:{band}"

    def accounts_index(self) -> str:
        return f"{self.prefix}:index:accounts"

    def members(self, account_id: str) -> str:
        return f"{self.prefix}:members:{account_id}"

    def history(self, entity: Entity, key: str) -> str:
        return f"{self.prefix}:history:{entity.value}:{key}"

    def alerts(self, user_id: str) -> str:
        return f"{self.prefix}:alerts:user:{user_id}"


class Writer:
    """The Redis commands for each output the live sink (and `pulse restore-profiles`) writes: the profile
    hash, and with `indexes` on, the serving indexes above (`history_size` changes kept per user/account)."""

    __slots__ = ("history_size", "indexes", "keys")

    def __init__(self, prefix: str, indexes: bool = True, history_size: int = 50) -> None:
        self.keys = Keys(prefix)
        self.indexes = indexes
        self.history_size = history_size

    def profile(
        self, entity: Entity, key: str, fields: dict[str, str] | None, members: Sequence[str] | None = None
    ) -> list[Command]:
        """The profile hash (`fields` already encoded as strings; None erases) and its index entries.

        `members` (accounts only): the whole member list, which replaces the members set; None leaves it.
        """
        keys = self.keys
        hash_key = keys.profile(entity, key)
        commands: list[Command] = [("DEL", hash_key)]
        if fields is not None:
            commands.append(("HSET", hash_key, *_flat(fields)))
        if not self.indexes:
            return commands
        for band in BANDS:
            commands.append(("ZREM", keys.band_index(entity, band), key))
        if fields is None:
            commands.append(("DEL", keys.history(entity, key)))
            if entity is Entity.USER:
                commands.append(("DEL", keys.alerts(key)))
            else:
                commands.append(("ZREM", keys.accounts_index(), key))
                commands.append(("DEL", keys.members(key)))
            return commands
        score, band = fields.get("score"), fields.get("band", "")
        if score is not None and band in BANDS:
            commands.append(("ZADD", keys.band_index(entity, band), score, key))
            if entity is Entity.ACCOUNT:
                commands.append(("ZADD", keys.accounts_index(), score, key))
        if entity is Entity.ACCOUNT and members is not None:
            commands.append(("DEL", keys.members(key)))
            if members:
                commands.append(("SADD", keys.members(key), *members))
        return commands

    def history(self, entity: Entity, key: str, ts: int, value: bytes) -> list[Command]:
        """Adds one score (or account health) change to the capped history: the newest by event time stay."""
        if not self.indexes:
            return []
        history = self.keys.history(entity, key)
        return [
            ("ZADD", history, str(ts), history_entry(value)),
            ("ZREMRANGEBYRANK", history, "0", str(-self.history_size - 1)),
        ]

    def alert(self, value: bytes, doc: dict[str, Any] | None = None) -> list[Command]:
        """A firing alert joins the user's open alerts; a resolved one leaves them. `reactivated` is a
        notice that never stays open. `doc`: the record already decoded, when the caller has it."""
        if not self.indexes:
            return []
        if doc is None:
            doc = orjson.loads(value)
        user_id, alert_id = doc.get("user_id"), doc.get("alert_id")
        if not isinstance(user_id, str) or not isinstance(alert_id, str):
            return []
        if doc.get("status") == "firing" and doc.get("kind") != "reactivated":
            return [("HSET", self.keys.alerts(user_id), alert_id, value)]
        if doc.get("status") == "resolved":
            return [("HDEL", self.keys.alerts(user_id), alert_id)]
        return []


def _flat(fields: dict[str, str]) -> Iterable[str]:
    for name, value in fields.items():
        yield name
        yield value


def history_entry(value: bytes) -> bytes:
    """The history member for one score or account record: its HISTORY_FIELDS, in that order."""
    doc: dict[str, Any] = orjson.loads(value)
    return orjson.dumps({name: doc.get(name) for name in HISTORY_FIELDS})
