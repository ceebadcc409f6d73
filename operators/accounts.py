"""One shard of accounts: member updates from user shards, in event-time order, into account health."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from operators.health import DEPARTURES, AccountState, MemberUpdate, evaluate_account, render_account
from operators.shard import Output, ShardConfig
from schemas.outputs import Entity, ProfileWrite


@dataclass(slots=True)
class AccountShard:
    accounts: dict[str, AccountState] = field(default_factory=dict)
    # (ts, user_id, seq, cause, arrival, update): updates from several user shards meet here, so they are
    # ordered too; `arrival` only separates identical re-sent updates.
    pending: list[tuple[int, str, int, str, int, MemberUpdate]] = field(default_factory=list)
    arrivals: int = 0
    newest: int = -1  # the newest update time seen: what releases held updates in live reordering
    released: int = -1
    dirty: set[str] = field(default_factory=set)
    # Accounts changed since the last snapshot, when ShardConfig.track_changes (see engine.statestore).
    changed: set[str] = field(default_factory=set)

    def header(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__ if f not in ("accounts", "changed")}

    def take_changed(self) -> dict[str, AccountState | None]:
        entries = {key: self.accounts.get(key) for key in self.changed}
        self.changed = set()
        return entries

    def size(self) -> int:
        return len(self.accounts)

    def entries(self) -> dict[str, AccountState]:
        return dict(self.accounts)

    @classmethod
    def restore(cls, header: dict[str, Any], entries: Iterable[tuple[str, AccountState]]) -> AccountShard:
        shard = cls(**header)
        shard.accounts.update(entries)
        return shard

    def process(self, updates: Iterable[MemberUpdate], config: ShardConfig) -> list[Output]:
        outputs: list[Output] = []
        reorder = config.account_reorder_ms
        for update in updates:
            if update.ts > self.newest:
                self.newest = update.ts
            if reorder <= 0 or update.ts <= self.released:
                self._apply(update, config, outputs)
            else:
                self.arrivals += 1
                entry = (update.ts, update.user_id, update.seq, update.cause, self.arrivals, update)
                heapq.heappush(self.pending, entry)
                self._release(self.newest - reorder, config, outputs)
        return outputs

    def drain(self, config: ShardConfig) -> list[Output]:
        outputs: list[Output] = []
        self._release(self.newest, config, outputs)
        return outputs

    def _release(self, frontier: int, config: ShardConfig, outputs: list[Output]) -> None:
        pending = self.pending
        while pending and pending[0][0] <= frontier:
            self._apply(heapq.heappop(pending)[5], config, outputs)
        if frontier > self.released:
            self.released = frontier

    def _apply(self, update: MemberUpdate, config: ShardConfig, outputs: list[Output]) -> None:
        account = self.accounts.get(update.account_id)
        if account is None:
            account = self.accounts[update.account_id] = AccountState()
        membership = account.apply(update)
        if update.change in DEPARTURES:
            account.prune_departed(account.clock - config.erased_horizon_ms)
        record = evaluate_account(
            config.model, update.account_id, account, update.cause, config.model_version, membership
        )
        if record is not None:
            outputs.append(record)
        if config.live_profiles:
            self.dirty.add(update.account_id)
        if config.track_changes:
            self.changed.add(update.account_id)

    def flush_profiles(self, config: ShardConfig) -> list[Output]:
        if not self.dirty:
            return []
        accounts = self.accounts
        writes: list[Output] = [
            ProfileWrite(
                Entity.ACCOUNT,
                key,
                render_account(key, accounts[key], config.model),
                tuple(sorted(accounts[key].members)),
            )
            for key in sorted(self.dirty)
        ]
        self.dirty = set()
        return writes
