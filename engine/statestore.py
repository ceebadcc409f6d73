"""Incremental snapshots: at each epoch a shard writes only the entries (users, accounts) that changed.

bytewax keeps one snapshot per state key per epoch, and with 16 shard keys and uniform traffic every key
is touched every epoch: pickling whole shards costs time in proportion to *all* users, every epoch. So
the snapshot bytewax keeps is only the shard's small header (clocks, held events, partition progress, a
sequence number), and the entries changed since the previous snapshot go to this store, one directory
per shard key, as one *segment* file per snapshot: a single pickle of {key: entry, or None for a
deletion}. Now and then (when the segments hold `REWRITE_FACTOR` times more entries than the shard has,
or after `REWRITE_EVERY` segments) a snapshot writes a *base* segment with every live entry instead, so
loading stays proportional to the state and deletions (an erased person) do not linger.

A segment is written to a temporary file and renamed into place before the header is handed to bytewax,
so a header with sequence S always finds its segments complete. Resuming from S deletes segments after S
(snapshots bytewax never committed: a crash in between; the resumed shard writes those numbers again)
and replays the latest base at or before S and the segments after it, in order. Segments before a base
are deleted once that base is `KEEP` snapshots old: bytewax resumes from the last epoch every worker
committed, one or two epochs behind the newest snapshot, well inside KEEP.

With a state key (engine.crypto) each segment file is an AES-GCM envelope bound to its shard and file name,
opened (authenticated) before it is unpickled: a tampered, foreign or renamed segment stops the resume.
"""

from __future__ import annotations

import gc
import os
import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.crypto import PLAIN, SnapshotSealer, envelope_key_id, is_sealed

KEEP = 8
REWRITE_FACTOR = 2  # a resume reads at most 1 + REWRITE_FACTOR times the live entries
REWRITE_EVERY = 64
_NAME = re.compile(r"(\d{12})-(base|delta)-(\d+)\.pickle")


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pickling or loading a shard allocates an object per field of every user: without this the cyclic
    GC runs many full passes over the whole state meanwhile (half the snapshot time, measured)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True, slots=True)
class Segment:
    seq: int
    base: bool
    entries: int
    path: Path


class DeltaStore:
    """The snapshot segments of one shard key, by snapshot sequence number."""

    def __init__(self, directory: Path, sealer: SnapshotSealer = PLAIN) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._sealer = sealer
        for leftover in directory.glob(".*.tmp"):  # a write cut short by a crash; never renamed, never used
            leftover.unlink()
        # Entries written since the latest base, and segments since it: when to write a base again.
        self.stored = 0
        self.deltas = 0
        # A segment was loaded that is plain while a key is configured (allow_plain_state, a migration) or
        # sealed with a key that is no longer the current one (a rotation): the next snapshot writes a base
        # under the current key, so once compaction has run no resume needs the old segments or old key.
        self.stale = False
        # Pickled bytes per entry in the latest base written: a cheap estimate of the state's size.
        self.entry_bytes = 0.0
        self.based = False

    def segments(self) -> list[Segment]:
        """Every stored segment, oldest first."""
        found = []
        for path in self.directory.iterdir():
            match = _NAME.fullmatch(path.name)
            if match:
                found.append(Segment(int(match[1]), match[2] == "base", int(match[3]), path))
        return sorted(found, key=lambda s: s.seq)

    def discard_after(self, seq: int) -> None:
        """Forget segments after `seq` (never committed by bytewax, or from a run since started afresh)."""
        for segment in self.segments():
            if segment.seq > seq:
                segment.path.unlink()
        since = [s for s in self.segments() if s.seq > self._latest_base(seq)]
        self.stored, self.deltas = sum(s.entries for s in since), len(since)

    def needs_base(self, changed: int, live: int) -> bool:
        return self.stale or self.stored + changed > REWRITE_FACTOR * max(live, 1) or self.deltas >= REWRITE_EVERY

    def write(self, seq: int, entries: dict[str, Any], base: bool) -> None:
        """Write one snapshot's segment: the changed entries (None: deleted), or every entry (a base)."""
        with gc_paused():
            value = pickle.dumps(entries, protocol=pickle.HIGHEST_PROTOCOL)
        name = f"{seq:012d}-{'base' if base else 'delta'}-{len(entries)}.pickle"
        temporary = self.directory / f".{name}.tmp"
        temporary.write_bytes(self._sealer.seal(value, self._context(name)))
        os.replace(temporary, self.directory / name)  # atomic: a segment is there whole or not at all
        # A base holds every entry; a delta holds the busiest ones, which are the biggest (an account with many
        # members), so deltas only estimate until the first base.
        live = sum(1 for entry in entries.values() if entry is not None)
        if live and (base or not self.based):
            self.entry_bytes = len(value) / live
            self.based = self.based or base
        if base:
            self.stored, self.deltas, self.stale = 0, 0, False
        else:
            self.stored, self.deltas = self.stored + len(entries), self.deltas + 1

    def load(self, seq: int) -> dict[str, Any]:
        """Every live entry as of snapshot `seq`: its latest base, then the segments after it, in order."""
        self.discard_after(seq)
        start = self._latest_base(seq)
        entries: dict[str, Any] = {}
        with gc_paused():
            for segment in self.segments():
                if segment.seq >= start:
                    entries.update(pickle.loads(self.read(segment)))
        return {key: entry for key, entry in entries.items() if entry is not None}

    def read(self, segment: Segment) -> bytes:
        """A segment's pickle, authenticated first when snapshots are sealed (SnapshotError otherwise)."""
        data = segment.path.read_bytes()
        pickled = self._sealer.open(data, self._context(segment.path.name), str(segment.path))
        keys = self._sealer.keys
        if keys is not None and (not is_sealed(data) or envelope_key_id(data) != keys.current):
            self.stale = True
        return pickled

    def _context(self, name: str) -> str:
        # The shard key and file name: a segment copied to another shard or sequence number fails to open.
        return f"segment:{self.directory.name}/{name}"

    def compact(self, safe: int) -> None:
        """Delete the segments no resume from a snapshot at or after `safe` can need."""
        start = self._latest_base(safe)
        for segment in self.segments():
            if segment.seq < start:
                segment.path.unlink()

    def _latest_base(self, seq: int) -> int:
        return max((s.seq for s in self.segments() if s.base and s.seq <= seq), default=0)
