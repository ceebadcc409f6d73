"""Per-user state kept in event time, updated one event at a time, and rendered as a profile."""

from __future__ import annotations

import sys
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from operators.sessions import Log, Pending, profile_fields
from schemas.codec import format_ts
from schemas.events import Category, Event

DAY_MS = 86_400_000
CATEGORY_NAMES = tuple(c.name.lower() for c in Category)
# The commercial stage each subscription event leads to; the stage of the latest such event wins.
COMMERCIAL_STAGE = {
    "signed_up": "signed_up",
    "trial_started": "trial",
    "subscribed": "paying",
    "subscription_paused": "paused",
    "subscription_resumed": "paying",
    "cancellation_requested": "cancel_requested",
    "subscription_cancelled": "churned",
}
SEVERITY_WEIGHT = {"low": 0.5, "normal": 1.0, "high": 2.0, "urgent": 4.0}


class UserState:
    """Compact mutable state for one user; only ints, short lists and a small dict, cheap to pickle."""

    __slots__ = (
        "account_id",
        "account_ts",
        "active_day_count",
        "band",
        "churn_id",
        "churn_quiet_until",
        "clock",
        "commercial",
        "commercial_ts",
        "components",
        "contributions",
        "cooldown_until",
        "counts",
        "day_base",
        "day_bits",
        "engagement",
        "experiments",
        "features",
        "first_active_day",
        "first_seen",
        "journey",
        "journey_base",
        "journey_log",
        "journey_ts",
        "lapse_anchor",
        "lapse_at",
        "lapse_id",
        "last_active",
        "last_active_day",
        "last_seen",
        "nps_score",
        "nps_ts",
        "present",
        "score",
        "scored_day",
        "sessions",
        "sessions_base",
        "sessions_pending",
        "tickets",
        "timer_at",
    )

    def __init__(self, ts: int) -> None:
        self.account_id: str | None = None
        self.account_ts = -1
        self.first_seen = ts
        self.last_seen = ts
        # The user's own event time: the latest event or timer that evaluated them. Profiles are rendered
        # as of it, so nothing another user sends (a bad client clock, say) moves this user's `as_of`.
        self.clock = ts
        # Active days (epoch days, UTC) as a bitmap starting at day_base; see _add_day.
        self.day_base = 0
        self.day_bits = 0
        self.active_day_count = 0
        self.first_active_day = -1
        self.last_active_day = -1
        self.counts = [0] * len(Category)
        self.features: dict[str, int] = {}
        self.last_active = -1  # epoch ms of the latest activity event
        self.nps_score = -1  # latest NPS answer (by event time), -1 for none
        self.nps_ts = -1
        # The journey (operators.journey): stage and when it was entered; experiment -> (first exposure, variant).
        self.journey = ""
        self.journey_ts = -1
        # The journey events within the allowed lateness, (ts, event id, stage), on the fold of older ones.
        self.journey_log: list[tuple[int, str, str]] | None = None
        self.journey_base: tuple[str, int] | None = None
        self.experiments: dict[str, tuple[int, str]] | None = None
        # ticket_id -> severity weight while open, 0.0 once resolved (a resolve may arrive first).
        self.tickets: dict[str, float] | None = None
        self.sessions: Log | None = None  # recent sessions (operators.sessions), added by the shard
        # ...of which these are final, and these activity events (ts, rank) still within the lateness.
        self.sessions_base: Log | None = None
        self.sessions_pending: Pending | None = None
        self.commercial = "visitor"
        self.commercial_ts = -1
        # The last *emitted* score, band and per-component contributions, for deltas and hysteresis.
        self.score = -1.0
        self.band = ""
        self.contributions: tuple[float, ...] = ()
        self.components: tuple[float, ...] = ()  # rounded component values of the last emitted score
        self.present = 0  # which components had a signal at the last emitted score (scoring.Signals.present)
        self.scored_day = -1  # epoch day of the last evaluation
        # Lifecycle and alerts (operators.engagement): stage, open alert ids, the armed timer.
        self.engagement = ""
        self.lapse_id = ""
        self.lapse_anchor = -1  # last activity before the lapse: what the lapse alert id is derived from
        self.lapse_at = -1
        self.cooldown_until = -1
        self.churn_id = ""
        self.churn_quiet_until = -1
        self.timer_at = -1

    def __getstate__(self) -> tuple[Any, ...]:
        state: tuple[Any, ...] = _SLOTS_GETTER(self)  # one C call: snapshots pickle many users
        return state

    def __setstate__(self, values: tuple[Any, ...]) -> None:
        _set_slots(self, values)

    def apply(self, event: Event) -> None:
        """Fold one event in; the result does not depend on the order events arrive in."""
        ts = event.ts
        if ts < self.first_seen:
            self.first_seen = ts
        if ts > self.last_seen:
            self.last_seen = ts
            if ts > self.clock:
                self.clock = ts
        account = event.account_id
        # The account of the latest event wins (ties: the larger id), so arrival order does not matter.
        if account is not None and (
            ts > self.account_ts or (ts == self.account_ts and account > (self.account_id or ""))
        ):
            self.account_id = account
            self.account_ts = ts
        category = event.category
        self.counts[category] += 1
        if category is Category.ACTIVITY:
            if ts > self.last_active:
                self.last_active = ts
            self._add_day(ts // DAY_MS)
            if event.feature is not None:
                name = sys.intern(event.feature)
                self.features[name] = self.features.get(name, 0) + 1
        elif category is not Category.OTHER:
            self._apply_rare(event)

    def _apply_rare(self, event: Event) -> None:
        """Sentiment, support and commercial events; every rule keeps the result order-independent."""
        ts, props, kind = event.ts, event.properties or {}, event.type
        if event.category is Category.SENTIMENT:
            score = props.get("score")
            if isinstance(score, int) and (ts, score) > (self.nps_ts, self.nps_score):
                self.nps_ts, self.nps_score = ts, score
        elif event.category is Category.SUPPORT:
            ticket = props.get("ticket_id")
            if ticket is None:
                return
            tickets = self.tickets if self.tickets is not None else {}
            self.tickets = tickets
            key = str(ticket)
            if kind.endswith("resolved"):
                tickets[key] = 0.0
            elif key not in tickets:  # an already-resolved ticket stays resolved
                tickets[key] = SEVERITY_WEIGHT.get(str(props.get("severity", "normal")), 1.0)
        elif event.category is Category.COMMERCIAL:
            stage = COMMERCIAL_STAGE.get(kind)
            if stage is not None and (ts, stage) > (self.commercial_ts, self.commercial):
                self.commercial_ts, self.commercial = ts, stage

    def support_load(self) -> float:
        return sum(self.tickets.values()) if self.tickets else 0.0

    def open_tickets(self) -> int:
        return sum(1 for w in self.tickets.values() if w > 0) if self.tickets else 0

    def _add_day(self, day: int) -> None:
        # Every active day since the first as bits of one int (bit i = day_base + i): exact whatever the
        # arrival order, ~46 bytes a year, and a window count is a shift, a mask and a popcount.
        if self.day_bits == 0:
            self.day_base = day
        elif day < self.day_base:
            self.day_bits <<= self.day_base - day
            self.day_base = day
        mask = 1 << (day - self.day_base)
        if self.day_bits & mask:
            return
        self.day_bits |= mask
        self.active_day_count += 1
        if self.first_active_day < 0 or day < self.first_active_day:
            self.first_active_day = day
        if day > self.last_active_day:
            self.last_active_day = day

    def is_active_day(self, day: int) -> bool:
        index = day - self.day_base
        return index >= 0 and bool(self.day_bits >> index & 1)

    def active_days(self, as_of_ms: int, window: int) -> int:
        """Distinct active days in the `window` days ending with the day of `as_of_ms`."""
        low = as_of_ms // DAY_MS - window + 1 - self.day_base
        if low < 0:
            window += low
            if window <= 0:
                return 0
            low = 0
        return (self.day_bits >> low & ((1 << window) - 1)).bit_count()


def _slot_setter(names: tuple[str, ...]) -> Callable[[Any, tuple[Any, ...]], None]:
    """`(self.a, self.b, …) = values`, compiled once from the slot names: a restore sets every field of
    every user, and this is several times faster than a setattr loop (a wrong length still raises)."""
    source = f"def set_slots(self, values):\n    ({', '.join('self.' + name for name in names)},) = values\n"
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    setter: Callable[[Any, tuple[Any, ...]], None] = namespace["set_slots"]
    return setter


_SLOTS_GETTER = attrgetter(*UserState.__slots__)
_set_slots = _slot_setter(UserState.__slots__)


def render_profile(user_id: str, user: UserState, as_of_ms: int) -> dict[str, Any]:
    """The public profile as of an event time; no property values, so no PII."""
    return {
        "user_id": user_id,
        "account_id": user.account_id,
        "first_seen": format_ts(user.first_seen),
        "last_seen": format_ts(user.last_seen),
        "as_of": format_ts(as_of_ms),
        "active_days_7": user.active_days(as_of_ms, 7),
        "active_days_28": user.active_days(as_of_ms, 28),
        "active_days_total": user.active_day_count,
        "counts": dict(zip(CATEGORY_NAMES, user.counts)),  # noqa: B905 - same length by construction; hot
        "features": dict(sorted(user.features.items())) if len(user.features) > 1 else dict(user.features),
        **profile_fields(user.sessions, as_of_ms),
    }
