"""Per-user state kept in event time, updated one event at a time, and rendered as a profile."""

from __future__ import annotations

import sys
from typing import Any

from schemas.codec import format_ts
from schemas.events import Category, Event

DAY_MS = 86_400_000
CATEGORY_NAMES = tuple(c.name.lower() for c in Category)


class UserState:
    """Compact mutable state for one user; only ints, short lists and a small dict, cheap to pickle."""

    __slots__ = (
        "account_id",
        "account_ts",
        "active_day_count",
        "counts",
        "day_base",
        "day_bits",
        "features",
        "first_active_day",
        "first_seen",
        "last_active_day",
        "last_seen",
    )

    def __init__(self, ts: int) -> None:
        self.account_id: str | None = None
        self.account_ts = -1
        self.first_seen = ts
        self.last_seen = ts
        # Active days (epoch days, UTC) as a bitmap starting at day_base; see _add_day.
        self.day_base = 0
        self.day_bits = 0
        self.active_day_count = 0
        self.first_active_day = -1
        self.last_active_day = -1
        self.counts = [0] * len(Category)
        self.features: dict[str, int] = {}

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, values: tuple[Any, ...]) -> None:
        for name, value in zip(self.__slots__, values, strict=True):
            setattr(self, name, value)

    def apply(self, event: Event) -> None:
        """Fold one event in; the result does not depend on the order events arrive in."""
        ts = event.ts
        if ts < self.first_seen:
            self.first_seen = ts
        if ts > self.last_seen:
            self.last_seen = ts
        account = event.account_id
        # The account of the latest event wins (ties: the larger id), so arrival order does not matter.
        if account is not None and (
            ts > self.account_ts or (ts == self.account_ts and account > (self.account_id or ""))
        ):
            self.account_id = account
            self.account_ts = ts
        self.counts[event.category] += 1
        if event.category is Category.ACTIVITY:
            self._add_day(ts // DAY_MS)
            if event.feature is not None:
                name = sys.intern(event.feature)
                self.features[name] = self.features.get(name, 0) + 1

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


def render_profile(user_id: str, user: UserState, as_of_ms: int) -> dict[str, Any]:
    """The public profile (CONTRACT §3) as of an event time; no property values, so no PII."""
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
    }
