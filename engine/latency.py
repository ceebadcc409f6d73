"""Lists of items that remember when their input entered Kafka, for the end-to-end latency metric."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class Stamped(list[Any]):
    """Items (or outputs) that carry when their input entered Kafka (`ingest_ms`), so the sink can measure
    end-to-end latency. Live mode only; everything downstream treats it as the plain list it is."""

    __slots__ = ("ingest_ms",)

    def __init__(self, items: Iterable[Any], ingest_ms: int) -> None:
        super().__init__(items)
        self.ingest_ms = ingest_ms


def ingest_of(groups: Iterable[list[Any]]) -> int:
    """The oldest ingest time among stamped lists; 0 when none is stamped."""
    stamps = [g.ingest_ms for g in groups if g.__class__ is Stamped]
    return min(stamps) if stamps else 0


def stamp(items: list[Any], ingest_ms: int) -> list[Any]:
    return Stamped(items, ingest_ms) if ingest_ms else items
