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
        self.day_bits = bytearray()
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
        # A bitmap of every active day since the first: order-independent, exact, ~46 bytes a year.
        bits = self.day_bits
        if not bits:
            self.day_base = day - day % 8
        elif day < self.day_base:
            new_base = day - day % 8
            bits[0:0] = bytes((self.day_base - new_base) // 8)
            self.day_base = new_base
        index = day - self.day_base
        byte = index >> 3
        if byte >= len(bits):
            bits.extend(bytes(byte + 1 - len(bits)))
        mask = 1 << (index & 7)
        if bits[byte] & mask:
            return
        bits[byte] |= mask
        self.active_day_count += 1
        if self.first_active_day < 0 or day < self.first_active_day:
            self.first_active_day = day
        if day > self.last_active_day:
            self.last_active_day = day

    def is_active_day(self, day: int) -> bool:
        index = day - self.day_base
        if index < 0 or (index >> 3) >= len(self.day_bits):
            return False
        return bool(self.day_bits[index >> 3] & (1 << (index & 7)))

    def active_days(self, as_of_ms: int, window: int) -> int:
        """Distinct active days in the `window` days ending with the day of `as_of_ms`."""
        today = as_of_ms // DAY_MS
        return sum(1 for d in range(today - window + 1, today + 1) if self.is_active_day(d))


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
        "counts": dict(zip(CATEGORY_NAMES, user.counts, strict=True)),
        "features": dict(sorted(user.features.items())),
    }
