"""The console's Redis reader: what `pulse run` wrote (engine.serving) back as plain dicts, read only.

Every page is a bounded number of round trips, whatever the number of users:

* "At risk now": the band sets' sizes (1 round trip), one `ZRANGE ... LIMIT`-style rank range per band set
  for the page (1), then every row's profile fields, latest history entry and open-alert count in one
  pipeline (1). With `?account=`, that account's members set is read whole instead (it is one account's)
  and ranked with `ZMSCORE` against the user band sets.
* An account or a user: the hash, history and members or alerts in one pipeline, plus one pipeline for the
  members' rows.

Nothing here SCANs or reads a whole index. Hash values are decoded as the live sink encoded them
(engine.sinks.redis_fields): text fields as they are, every other field as JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
import orjson
import redis

from engine.serving import Keys
from schemas.codec import parse_ts
from schemas.outputs import Entity

DAY_MS = 86_400_000
# The bands the "At risk now" page lists, worst first.
ALERT_BANDS = ("at_risk", "watch")
BAND_RANK = {"at_risk": 0, "watch": 1, "healthy": 2}
# Members shown on an account page (the worst first); the total is always given.
MAX_MEMBERS = 1000

# Hash fields that are always text; NULLABLE_TEXT ones are text or JSON null. Every other field is JSON.
TEXT_FIELDS = frozenset(
    {"user_id", "first_seen", "last_seen", "as_of", "band", "engagement", "commercial", "journey_stage_since"}
)
NULLABLE_TEXT = frozenset({"account_id", "journey_stage", "nps_segment", "last_active"})

# hiredis's stub types its argument as a one-element tuple; it takes any number of arguments.
_pack: Callable[[tuple[str | bytes, ...]], bytes] = hiredis.pack_command  # type: ignore[assignment]
Command = tuple[str | bytes, ...]

# `last_active` last: a row's fields without it are what the API returns (absent: a profile of an older version).
USER_ROW_FIELDS = ("account_id", "score", "band", "as_of", "last_seen", "engagement", "commercial", "last_active")
ACCOUNT_ROW_FIELDS = ("score", "band", "as_of", "users", "active_users_7d", "at_risk_users", "commercial")


def decode_field(name: str, raw: bytes | None) -> Any:
    if raw is None:
        return None
    value = raw.decode("utf-8", "replace")
    if name in TEXT_FIELDS:
        return value
    if name in NULLABLE_TEXT:
        return None if value == "null" else value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


def decode_hash(fields: dict[bytes, bytes]) -> dict[str, Any]:
    return {name.decode(): decode_field(name.decode(), value) for name, value in sorted(fields.items())}


def decode_history(entries: Sequence[tuple[bytes, float]]) -> list[dict[str, Any]]:
    """History members (JSON, engine.serving.history_entry) oldest first, each with `ts_ms` (its score)."""
    out: list[dict[str, Any]] = []
    for member, ts_ms in entries:
        try:
            doc = orjson.loads(member)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            doc["ts_ms"] = int(ts_ms)
            out.append(doc)
    return out


def trend(entry: dict[str, Any] | None) -> str | None:
    """up, down or flat: the latest change's score against the score before it; None without one."""
    if entry is None:
        return None
    score, previous = entry.get("score"), entry.get("previous_score")
    if not isinstance(score, int | float) or not isinstance(previous, int | float):
        return None
    return "up" if score > previous else "down" if score < previous else "flat"


def top_reason(entry: dict[str, Any] | None) -> str | None:
    """The component that moved most in the latest change (reasons are sorted by |delta|, largest first)."""
    reasons = entry.get("reasons") if entry else None
    if isinstance(reasons, list) and reasons and isinstance(reasons[0], dict):
        component = reasons[0].get("component")
        return component if isinstance(component, str) else None
    return None


def days_between(later: Any, earlier: Any) -> float | None:
    """(later - earlier) in days, one decimal; None when either is not an RFC 3339 time."""
    if not isinstance(later, str) or not isinstance(earlier, str):
        return None
    try:
        return round((parse_ts(later) - parse_ts(earlier)) / DAY_MS, 1)
    except Exception:  # schemas.codec's rejection of a malformed time
        return None


def silence(profile: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """How long the user has been silent as of `now_ms` (the wall clock, not the profile's `as_of`):
    `days_silent`, days since their last activity (`last_active`), one decimal, never negative; None when
    they were never active (`never_active` true) or the time is unreadable. A profile without the
    `last_active` field (written by an older version) falls back to `last_seen`, its latest event of any kind."""
    if "last_active" in profile:
        since = profile["last_active"]
        if since is None:
            return {"days_silent": None, "never_active": True}
    else:
        since = profile.get("last_seen")
    if not isinstance(since, str):
        return {"days_silent": None, "never_active": False}
    try:
        days = (now_ms - parse_ts(since)) / DAY_MS
    except Exception:  # schemas.codec's rejection of a malformed time
        return {"days_silent": None, "never_active": False}
    return {"days_silent": round(max(0.0, days), 1), "never_active": False}


def scored(reply: Any) -> list[tuple[bytes, float]]:
    """A raw `ZRANGE ... WITHSCORES` reply as (member, score) pairs: RESP3 gives pairs, RESP2 a flat list."""
    if reply and isinstance(reply[0], list | tuple):
        return [(member, float(score)) for member, score in reply]
    return [(reply[i], float(reply[i + 1])) for i in range(0, len(reply), 2)]


def _latest(raw: Sequence[tuple[bytes, float]]) -> dict[str, Any] | None:
    history = decode_history(raw)
    return history[-1] if history else None


def _latest_change(history: Any) -> dict[str, Any]:
    """A list row's view of the newest change (a `ZRANGE key -1 -1 WITHSCORES` reply): trend, the score before
    it and its top reason."""
    latest = _latest(scored(history))
    return {
        "trend": trend(latest),
        "previous_score": latest.get("previous_score") if latest else None,
        "top_reason": top_reason(latest),
    }


def _row_fields(names: Sequence[str], values: Sequence[bytes | None]) -> dict[str, Any]:
    return {name: decode_field(name, value) for name, value in zip(names, values, strict=True)}


def _user_row(values: Sequence[bytes | None], now_ms: int) -> dict[str, Any]:
    """A user row's fields with its silence; `last_active` is null when the profile lacks it (an older one)."""
    fields = _row_fields(USER_ROW_FIELDS, values)
    present = fields if values[-1] is not None else {k: v for k, v in fields.items() if k != "last_active"}
    return {**fields, **silence(present, now_ms)}


@dataclass(frozen=True, slots=True)
class Page:
    offset: int
    limit: int


class ConsoleStore:
    """Reads one key prefix. `client` is shared by every request (its connection pool is thread-safe)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.keys = Keys(prefix)

    def ping(self) -> bool:
        return bool(self.client.ping())

    def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """Raw replies of `commands`, packed by hiredis and sent in one write: one round trip. redis-py's
        pipeline object costs more per command than Redis does (a page of 200 rows is ~500 commands).
        Like redis-py, one immediate retry on a fresh connection (a stale pooled one); an error reply raises
        once every reply is read, so the connection goes back to the pool clean."""
        if not commands:
            return []
        payload = b"".join(_pack(command) for command in commands)
        pool = self.client.connection_pool
        connection: Any = pool.get_connection()

        def send() -> list[Any]:
            try:
                connection.send_packed_command([payload])
                replies = []
                for _ in commands:
                    try:
                        replies.append(connection.read_response())
                    except redis.ResponseError as exc:
                        replies.append(exc)
                return replies
            except BaseException:
                connection.disconnect()
                raise

        try:
            replies: list[Any] = connection.retry.call_with_retry(send, lambda _: connection.disconnect())
        finally:
            pool.release(connection)
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise reply
        return replies

    # --- "At risk now" ------------------------------------------------------------------------------------

    def at_risk(self, page: Page, account: str | None = None, *, now_ms: int) -> dict[str, Any] | None:
        """Users and accounts in at_risk then watch, each band by score ascending (ties by id); `page`
        applies to each list. With `account`: that account and its members only; None when it is unknown.
        `now_ms`: the wall clock the users' days of silence are counted to."""
        if account is not None:
            return self._at_risk_of_account(account, page, now_ms)
        (users_total, user_ids), (accounts_total, account_ids) = self._ranked((Entity.USER, Entity.ACCOUNT), page)
        users, accounts = self._rows(user_ids, account_ids, now_ms)
        return {
            "account": None,
            "offset": page.offset,
            "limit": page.limit,
            "users": {"total": users_total, "rows": users},
            "accounts": {"total": accounts_total, "rows": accounts},
        }

    def _ranked(self, entities: Sequence[Entity], page: Page) -> list[tuple[int, list[str]]]:
        """Per entity, (total in the alert bands, the ids of this page), from the band sets alone: every
        ZCARD in one round trip, then every rank range (ZRANGE start stop) in one more."""
        sets = [[self.keys.band_index(entity, band) for band in ALERT_BANDS] for entity in entities]
        sizes: list[int] = self.pipeline([("ZCARD", key) for keys in sets for key in keys])
        ranges: list[Command] = []
        owners: list[int] = []
        for n, keys in enumerate(sets):
            start, remaining = page.offset, page.limit
            for key, size in zip(keys, sizes[n * len(ALERT_BANDS) :], strict=False):
                if remaining <= 0:
                    break
                if start < size:
                    ranges.append(("ZRANGE", key, str(start), str(start + remaining - 1)))
                    owners.append(n)
                    remaining -= min(size - start, remaining)
                start = max(0, start - size)
        ids: list[list[str]] = [[] for _ in entities]
        for owner, members in zip(owners, self.pipeline(ranges), strict=True):
            ids[owner].extend(member.decode() for member in members)
        bands = len(ALERT_BANDS)
        return [(sum(sizes[n * bands : (n + 1) * bands]), ids[n]) for n in range(len(entities))]

    def _at_risk_of_account(self, account: str, page: Page, now_ms: int) -> dict[str, Any] | None:
        keys = self.keys
        exists, raw_members, *account_scores = self.pipeline(
            [
                ("EXISTS", keys.profile(Entity.ACCOUNT, account)),
                ("SMEMBERS", keys.members(account)),
                *(("ZSCORE", keys.band_index(Entity.ACCOUNT, band), account) for band in ALERT_BANDS),
            ]
        )
        if not exists:
            return None
        members = sorted(m.decode() for m in raw_members)
        ranked: list[tuple[int, float, str]] = []
        if members:
            by_band = self.pipeline([("ZMSCORE", keys.band_index(Entity.USER, band), *members) for band in ALERT_BANDS])
            for rank, scores in enumerate(by_band):
                ranked.extend((rank, float(s), m) for m, s in zip(members, scores, strict=True) if s is not None)
        ranked.sort()
        chosen = [m for _, _, m in ranked[page.offset : page.offset + page.limit]]
        in_alert_band = any(score is not None for score in account_scores)
        show_account = in_alert_band and page.offset == 0
        users, accounts = self._rows(chosen, [account] if show_account else [], now_ms)
        return {
            "account": account,
            "offset": page.offset,
            "limit": page.limit,
            "users": {"total": len(ranked), "rows": users},
            "accounts": {"total": int(in_alert_band), "rows": accounts},
        }

    def _rows(
        self, user_ids: Sequence[str], account_ids: Sequence[str], now_ms: int
    ) -> tuple[list[dict[str, Any]], ...]:
        """Every row's fields, latest history entry and open-alert count: one pipeline for the whole page."""
        keys = self.keys
        commands: list[Command] = []
        for user_id in user_ids:
            commands.append(("HMGET", keys.profile(Entity.USER, user_id), *USER_ROW_FIELDS))
            commands.append(("ZRANGE", keys.history(Entity.USER, user_id), "-1", "-1", "WITHSCORES"))
            commands.append(("HLEN", keys.alerts(user_id)))
        for account_id in account_ids:
            commands.append(("HMGET", keys.profile(Entity.ACCOUNT, account_id), *ACCOUNT_ROW_FIELDS))
            commands.append(("ZRANGE", keys.history(Entity.ACCOUNT, account_id), "-1", "-1", "WITHSCORES"))
        replies = self.pipeline(commands)
        users: list[dict[str, Any]] = []
        for i, user_id in enumerate(user_ids):
            values, history, alerts = replies[3 * i : 3 * i + 3]
            if values[1] is None:  # erased (or rewritten) between the index read and this one
                continue
            change = _latest_change(history)
            users.append(
                {"kind": "user", "user_id": user_id, **_user_row(values, now_ms), **change, "open_alerts": int(alerts)}
            )
        accounts: list[dict[str, Any]] = []
        base = 3 * len(user_ids)
        for i, account_id in enumerate(account_ids):
            values, history = replies[base + 2 * i : base + 2 * i + 2]
            if values[0] is None:
                continue
            change = _latest_change(history)
            accounts.append(
                {"kind": "account", "account_id": account_id, **_row_fields(ACCOUNT_ROW_FIELDS, values), **change}
            )
        return users, accounts

    # --- Customer 360 ---------------------------------------------------------------------------------------

    def _entity(self, entity: Entity, key: str, extra: Command) -> tuple[dict[str, Any], Any, Any]:
        """One round trip: the profile (decoded; empty when unknown or erased), the raw history and `extra`'s
        reply."""
        raw, history, reply = self.pipeline(
            [
                ("HGETALL", self.keys.profile(entity, key)),
                ("ZRANGE", self.keys.history(entity, key), "0", "-1", "WITHSCORES"),
                extra,
            ]
        )
        return hash_reply(raw), history, reply

    def account(self, account_id: str, *, now_ms: int) -> dict[str, Any] | None:
        keys = self.keys
        profile, history, raw_members = self._entity(Entity.ACCOUNT, account_id, ("SMEMBERS", keys.members(account_id)))
        if not profile:
            return None
        member_ids = sorted(m.decode() for m in raw_members)
        commands: list[Command] = []
        for user_id in member_ids:
            commands.append(("HMGET", keys.profile(Entity.USER, user_id), *USER_ROW_FIELDS))
            commands.append(("HLEN", keys.alerts(user_id)))
        replies = self.pipeline(commands)
        members: list[dict[str, Any]] = []
        for i, user_id in enumerate(member_ids):
            values, alerts = replies[2 * i : 2 * i + 2]
            if values[1] is None:  # erased: its hash is gone before the account rewrites the members set
                continue
            fields = _user_row(values, now_ms)
            fields.pop("account_id")
            members.append({"user_id": user_id, **fields, "open_alerts": int(alerts)})
        members.sort(key=_member_order)
        users, active = profile.get("users"), profile.get("active_users_7d")
        active_share = (
            round(active / users, 4) if isinstance(users, int) and isinstance(active, int) and users > 0 else None
        )
        return {
            "account_id": account_id,
            "profile": profile,
            "active_share": active_share,
            "members_total": len(members),
            "members": members[:MAX_MEMBERS],
            "history": decode_history(scored(history)),
        }

    # --- User 360 -------------------------------------------------------------------------------------------

    def user(self, user_id: str, key_features: Sequence[str], *, now_ms: int) -> dict[str, Any] | None:
        profile, history, raw_alerts = self._entity(Entity.USER, user_id, ("HVALS", self.keys.alerts(user_id)))
        if not profile:
            return None
        alerts = []
        for value in raw_alerts:
            try:
                doc = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict):
                alerts.append(doc)
        alerts.sort(key=lambda a: (str(a.get("ts", "")), str(a.get("alert_id", ""))), reverse=True)
        features = profile.get("features")
        used: dict[str, int] = features if isinstance(features, dict) else {}
        return {
            "user_id": user_id,
            "profile": profile,
            **silence(profile, now_ms),
            "key_features": [{"feature": f, "count": int(used.get(f, 0) or 0)} for f in key_features],
            "other_features": {f: n for f, n in sorted(used.items()) if f not in set(key_features)},
            "next_step": next_step(profile, alerts),
            "alerts": alerts,
            "history": decode_history(scored(history)),
        }


def hash_reply(reply: Any) -> dict[str, Any]:
    """A raw HGETALL reply (RESP3: a map; RESP2: a flat list) decoded; {} when the key does not exist."""
    if isinstance(reply, dict):
        return decode_hash(reply)
    return decode_hash(dict(zip(reply[0::2], reply[1::2], strict=True)))


def _member_order(member: dict[str, Any]) -> tuple[int, float, str]:
    score = member.get("score")
    return (
        BAND_RANK.get(str(member.get("band")), 3),
        float(score) if isinstance(score, int | float) else float("inf"),
        str(member["user_id"]),
    )


def next_step(profile: dict[str, Any], alerts: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The suggested next step: the profile's own `next_step` when it has one, else that of the newest open
    alert carrying one (lapse and churn-risk alerts get it from the insights stage). `source` says which."""
    step = profile.get("next_step")
    if isinstance(step, dict):
        return {**step, "source": "profile"}
    for alert in alerts:  # newest first
        step = alert.get("next_step")
        if isinstance(step, dict):
            return {**step, "source": "alert", "alert_id": alert.get("alert_id"), "alert_kind": alert.get("kind")}
    return None
