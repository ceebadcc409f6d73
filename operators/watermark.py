"""Event-time progress per input partition, and the low watermark: the event time every partition has passed."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Progress:
    """One input partition's event-time progress, sent by the decoder to every user shard.

    `ts` is the newest event time read from the partition so far (-1: registered, nothing read yet);
    `idle` means the partition has had nothing to read for a while, so it must not hold time back.
    """

    partition: str
    ts: int
    idle: bool = False


@dataclass(slots=True)
class LowWatermark:
    """The minimum, over input partitions that are not idle, of each partition's event-time progress.

    Flink's and Beam's watermark: a lower bound on the event time still to come from the inputs (up to
    the allowed lateness). A partition that was never heard of does not count; one that registered but
    has read nothing yet holds time at -1 until it reads or goes idle; an idle one stops counting until it
    reads again. With every partition idle there is no bound: `value` is None and `newest` tells how far
    the data went (the caller decides whether the wall clock takes over).
    """

    partitions: dict[str, tuple[int, bool]] = field(default_factory=dict)

    def observe(self, progress: Progress) -> None:
        known = self.partitions.get(progress.partition)
        ts = progress.ts if known is None else max(known[0], progress.ts)
        self.partitions[progress.partition] = (ts, progress.idle)

    @property
    def known(self) -> bool:
        return bool(self.partitions)

    @property
    def value(self) -> int | None:
        """The low watermark, or None when no partition is active (all idle, or none known)."""
        active = [ts for ts, idle in self.partitions.values() if not idle]
        return min(active) if active else None

    @property
    def newest(self) -> int:
        return max((ts for ts, _ in self.partitions.values()), default=-1)
