"""A progress line on stderr every few seconds, so long bench runs show they are alive."""

from __future__ import annotations

import os
import sys
import time


def _rss_mib() -> float:
    """Current resident set size (Linux /proc); 0 where it cannot be read."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class Progress:
    def __init__(self, label: str, total: int, every: float = 3.0) -> None:
        self._label = label
        self._total = total
        self._every = every
        self._start = time.monotonic()
        self._next = self._start + every

    def restart(self) -> None:
        """Measure the rate from now (e.g. from the first message rather than from start-up)."""
        self._start = time.monotonic()
        self._next = self._start + self._every

    def update(self, count: int) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self._every
            self._print(count, now)

    def done(self, count: int) -> None:
        self._print(count, time.monotonic())

    def _print(self, count: int, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        share = f" ({100 * count / self._total:.0f}%)" if self._total else ""
        print(
            f"bench: {self._label}: {count:,}/{self._total:,}{share} in {elapsed:.1f}s, {count / elapsed:,.0f}/s, "
            f"RSS {_rss_mib():,.0f} MiB",
            file=sys.stderr,
            flush=True,
        )
