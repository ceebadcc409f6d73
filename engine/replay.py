"""`pulse replay`: a file through the real dataflow, outputs written in a deterministic order."""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bytewax.dataflow import Dataflow
from bytewax.testing import cluster_main, run_main

from engine import logs
from engine.config import Settings
from engine.crypto import Keyring, dlq_envelope, dlq_keyring
from engine.flow import ShardFinal, build_flow, flow_config
from engine.sinks import Collector
from engine.sources import FileSource, open_lines
from operators.accounts import AccountShard
from operators.health import render_account, render_user
from operators.insights import InsightsShard, funnel_report
from operators.shard import Shard
from schemas.codec import decode, dumps, format_ts
from schemas.events import Event, Origin, Rejection, Vocabulary
from schemas.outputs import OutputKind, Record

log = logging.getLogger("pulse.replay")


@dataclass(frozen=True, slots=True)
class ReplayResult:
    summary: dict[str, Any]
    out_dir: Path


def run_flow(flow: Dataflow, workers: int) -> None:
    """All workers in this process: replay needs no cluster and stays deterministic after ordering."""
    if workers == 1:
        run_main(flow)  # type: ignore[no-untyped-call]
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)  # type: ignore[no-untyped-call]


def dead_letter(rejection: Rejection, keys: Keyring | None = None) -> dict[str, Any]:
    """One line of dlq.jsonl. With [dlq] encrypt (`keys`) the input bytes are an envelope instead of
    `raw`/`raw_base64`; the code, detail, source and line number hold no input data and stay readable."""
    raw = rejection.raw
    where = {"code": rejection.code.value, "detail": rejection.detail, "source": raw.origin.source}
    if keys is not None:
        return {**where, "line": raw.origin.offset, **dlq_envelope(keys, raw.value)}
    try:
        text: str | None = raw.value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        **where,
        "line": raw.origin.offset,
        # The bytes exactly as read: `raw` when they are text, always recoverable from `raw_base64`.
        "raw": text,
        "raw_base64": base64.b64encode(raw.value).decode("ascii"),
    }


def _write_jsonl(path: Path, docs: Iterable[bytes]) -> int:
    count = 0
    with path.open("wb") as f:
        for doc in docs:
            f.write(doc)
            f.write(b"\n")
            count += 1
    return count


def visitor_links(input_path: Path, vocab: Vocabulary) -> dict[str, str]:
    """Segment input: each anonymous id's link to a user id (`alias`, or an `identify` with both ids), the
    first in the file winning, as the identity stage of `pulse run` follows the first that arrives. Read
    before the replay, so a visitor's events are the user's wherever the link stands in the file."""
    links: dict[str, str] = {}
    origin = Origin(str(input_path), -1, 0)
    with open_lines(input_path) as lines:
        for line in lines:
            if b'"alias"' not in line and b'"identify"' not in line:
                continue  # a link names its call type: most lines are skipped unparsed
            event = decode(line.rstrip(b"\r\n"), origin, vocab)
            if isinstance(event, Event) and event.anonymous_id is not None and event.anonymous_id != event.user_id:
                links.setdefault(event.anonymous_id, event.user_id)
    return links


def replay(input_path: Path, out_dir: Path, settings: Settings, until_ms: int | None = None) -> ReplayResult:
    if not input_path.is_file():
        raise FileNotFoundError(f"input file not found: {input_path}")
    dlq_keys = dlq_keyring(settings)  # before the run: a missing key stops it at once
    logs.banner(log, "replay", settings, input=str(input_path), out_dir=str(out_dir))
    collector = Collector()
    config = flow_config(settings, live=False, until_ms=until_ms if until_ms is not None else -1)
    if config.vocab.segment:
        config = dataclasses.replace(config, links=visitor_links(input_path, config.vocab))
    source = FileSource([input_path], settings.engine.replay_batch_size)
    run_flow(build_flow(source, collector, config), settings.engine.workers)

    records: list[Record] = []
    rejections: list[Rejection] = []
    user_shards: list[Shard] = []
    account_shards: list[AccountShard] = []
    insight_shards: list[InsightsShard] = []
    for out in collector.outputs:
        if isinstance(out, Record):
            records.append(out)
        elif isinstance(out, Rejection):
            rejections.append(out)
        elif isinstance(out, ShardFinal):
            state = out.shard_state
            if isinstance(state, Shard):
                user_shards.append(state)
            elif isinstance(state, InsightsShard):
                insight_shards.append(state)
            elif isinstance(state, AccountShard):
                account_shards.append(state)

    event_time = max((s.event_time for s in user_shards), default=-1)
    as_of = max(event_time, until_ms if until_ms is not None else -1)
    model = config.shard.model
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    rejections.sort(key=lambda r: (r.raw.origin.source, r.raw.origin.offset))
    counts[OutputKind.DLQ] = _write_jsonl(out_dir / "dlq.jsonl", (dumps(dead_letter(r, dlq_keys)) for r in rejections))
    # A stable sort by (event time, key): workers interleave differently, each key's own order is fixed.
    records.sort(key=lambda r: (r.ts, r.key))
    for kind in (
        OutputKind.SCORES,
        OutputKind.ALERTS,
        OutputKind.LIFECYCLE,
        OutputKind.ACCOUNTS,
        OutputKind.ACCESS,
        OutputKind.FUNNEL,
        OutputKind.INSIGHTS,
    ):
        of_kind = [r for r in records if r.kind is kind]
        counts[kind] = _write_jsonl(out_dir / f"{kind.value}.jsonl", (r.value for r in of_kind))
    users = sorted((uid, state) for s in user_shards for uid, state in s.users.items())
    counts[OutputKind.PROFILES] = _write_jsonl(
        out_dir / "profiles.jsonl",
        (dumps(render_user(uid, state, model, config.shard.lapse)) for uid, state in users),
    )
    accounts = sorted((aid, state) for s in account_shards for aid, state in s.accounts.items())
    counts["account_profiles"] = _write_jsonl(
        out_dir / "account_profiles.jsonl",
        (dumps(render_account(aid, state, model)) for aid, state in accounts),
    )
    # The insights stage's end state: every cohort's funnel with totals, and the latest drivers report.
    cohorts = [cohort for s in insight_shards for cohort in s.cohorts.values()]
    (out_dir / "funnel.json").write_bytes(dumps(funnel_report(cohorts)) + b"\n")
    report = next((s.report for s in insight_shards if s.report is not None), None)
    (out_dir / "drivers.json").write_bytes(dumps(report) + b"\n")
    totals: Counter[str] = Counter()
    for shard in user_shards:
        totals.update(asdict(shard.counters))
    summary = {
        "input": str(input_path),
        "events_in": totals["applied"] + totals["duplicates"] + len(rejections),
        "applied": totals["applied"],
        "duplicates": totals["duplicates"],
        "rejected": len(rejections),
        "rejected_by_code": dict(sorted(Counter(r.code.value for r in rejections).items())),
        "erasures": totals["erasures"],
        "suppressed_after_erasure": totals["suppressed_after_erasure"],
        "beyond_dedup_horizon": totals["beyond_dedup_horizon"],
        "late": totals["late"],
        "beyond_backfill": totals["beyond_backfill"],
        "merged": totals["merged"],
        "visitors_merged": totals["visitors_merged"],
        "accounts": len(accounts),
        "users": len(users),
        "as_of": format_ts(as_of) if as_of >= 0 else None,
        "outputs": {k.value if isinstance(k, OutputKind) else k: v for k, v in sorted(counts.items())},
    }
    (out_dir / "summary.json").write_bytes(dumps(summary) + b"\n")
    return ReplayResult(summary, out_dir)
