"""The bench's pure parts: the live stamp on generated events, percentiles, the report's layout and targets,
the two-process combination and the README table. No timing is asserted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from bench import latency, table
from bench.throughput import EPS_KEYS, combine_processes, targets, workload_block
from demo.generator import fast_events, session_events
from schemas.codec import parse_ts

MS = 1_767_643_200_123  # 2026-01-05T20:00:00.123Z


@pytest.mark.parametrize("events", [list(fast_events(40, 10, 1)), list(session_events(40, 10, 1))])
def test_the_live_stamp_replaces_ts_only_and_keeps_its_form(events: list[bytes]) -> None:
    forms = set()
    for value in events:
        before = orjson.loads(value)
        after = orjson.loads(latency.with_ts(value, MS))
        assert parse_ts(after["ts"]) == MS
        assert type(after["ts"]) is type(before["ts"])
        forms.add(type(after["ts"]))
        assert {k: v for k, v in after.items() if k != "ts"} == {k: v for k, v in before.items() if k != "ts"}
    assert str in forms


def test_the_live_stamp_writes_milliseconds_as_the_generator_does() -> None:
    assert b'"ts":"2026-01-05T20:00:00.123Z"' in latency.with_ts(b'{"a":1,"ts":"2026-01-05T08:00:00.068Z","b":2}', MS)
    assert latency.with_ts(b'{"ts":1767600002755,"feature":null}', MS) == b'{"ts":%d,"feature":null}' % MS
    with pytest.raises(ValueError, match="without ts"):
        latency.with_ts(b'{"user_id":"u1"}', MS)


def test_percentiles_are_nearest_rank_values_that_were_measured() -> None:
    ordered = [float(v) for v in range(1, 101)]
    assert latency.percentile(ordered, 50) == 50.0
    assert latency.percentile(ordered, 99) == 99.0
    assert latency.percentile(ordered, 100) == 100.0
    assert latency.percentile([7.0], 99) == 7.0
    assert latency.latency_summary([3.0, 1.0, 2.0]) == {"samples": 3, "p50_ms": 2.0, "p99_ms": 3.0, "max_ms": 3.0}
    assert latency.latency_summary([])["p99_ms"] is None
    with pytest.raises(ValueError, match="no samples"):
        latency.percentile([], 50)


def _phase(eps: float) -> dict[str, Any]:
    return {"events_per_s_median": eps, "peak_rss_kib_max": 1024, "what": "x"}


def _latency_run(p50: float, p99: float) -> dict[str, Any]:
    return {"p50_ms": p50, "p99_ms": p99, "samples": 10, "achieved_rate": 100.0, "floor_p50_ms": 1.0}


def test_a_workload_block_has_every_key_and_says_which_targets_are_met() -> None:
    phases = {"ceiling": _phase(100_000.0), "pulse-live": _phase(40_000.0), "quix": _phase(20_000.0)}
    runs = {10: _latency_run(5.0, 9.0), 50: _latency_run(20.0, 60.0)}
    block = workload_block("uniform", phases, runs, {"bytes_per_user": 500, "resume_s": 31.0})
    assert set(EPS_KEYS.values()) <= set(block)
    assert block["pulse_eps"] is None
    assert (block["latency_p50_ms"], block["latency_p99_ms"]) == (20.0, 60.0)
    assert block["latency_vs_load"]["10"]["p99_ms"] == 9.0
    assert block["ratios"]["live_over_ceiling"] == 0.4
    met = {name: t["met"] for name, t in block["targets"].items()}
    assert met == {
        "live_over_ceiling": True,  # uniform: >= 0.3
        "live_over_quix": True,
        "twoproc_over_live": None,  # (d) not run
        "latency_p99_ms": False,
        "bytes_per_user": True,
        "resume_s": False,
    }
    assert set(block["phases"]) == {"ceiling", "pulse_live", "quix", "latency"}


def test_the_sessions_workload_has_the_higher_ceiling_target() -> None:
    block: dict[str, Any] = {"ratios": {"live_over_ceiling": 0.4, "live_over_quix": None, "twoproc_over_live": None}}
    block |= {"latency_p99_ms": None, "bytes_per_user": None, "resume_s": None}
    assert targets("sessions", block)["live_over_ceiling"]["met"] is False
    assert targets("uniform", block)["live_over_ceiling"]["met"] is True
    assert targets("sessions", block)["live_over_ceiling"]["target"] == ">= 0.5"


def _process(pid: int, first: float | None, end: float, applied: int) -> dict[str, Any]:
    return {
        "process_id": pid,
        "events": applied,
        "first": first,
        "end": end,
        "applied": applied,
        "duplicates": 0,
        "shards": 8,
        "user_ids": [f"u{pid}"],
        "outputs": {"Record": 3},
        "peak_rss_kib": 100 + pid,
    }


def test_two_processes_are_timed_from_the_first_batch_of_either_to_the_end_of_both() -> None:
    combined = combine_processes(1000, [_process(1, 10.5, 12.0, 400), _process(0, 10.0, 11.0, 600)])
    assert combined["elapsed_s"] == 2.0
    assert combined["events_per_s"] == 500.0
    assert combined["outputs"] == {"Record": 6}
    assert [p["process_id"] for p in combined["processes"]] == [0, 1]
    assert combined["problems"] == []
    short = combine_processes(1000, [_process(0, 10.0, 11.0, 600), _process(1, None, 11.0, 0)])
    assert short["problems"] == ["source read 600 of 1000", "applied 600 of 1000 (0 duplicates)"]


def _report() -> dict[str, Any]:
    phases = {"ceiling": _phase(150_000.0), "pulse-live": _phase(30_000.0)}
    sessions = workload_block("sessions", phases, {50: _latency_run(30.0, 45.0)}, None)
    return {
        "timestamp": "2026-01-05T20:00:00+00:00",
        "complete": True,
        "N": 1_000_000,
        "users": 100_000,
        **sessions,
        "config": {"repeat": 3, "partitions": {"sessions": 4}},
        "machine": {"nproc": 2, "cpu_model": "cpu", "python": "3.11"},
    }


def test_the_table_shows_the_figures_and_leaves_what_was_not_run_empty() -> None:
    text = table.render(_report())
    assert "1,000,000 events over 100,000 users per workload, 4 partitions, medians of 3 runs" in text
    assert "| (a) ceiling: consume, `orjson.loads`, a dict update per event | 150,000 ev/s | — |  |" in text
    assert "| c / a | 0.20 (**missed**) | — | ≥ 0.5 |" in text
    assert "| latency p50 / p99, input at 50% of (c) | 30 / 45 ms (met) | — | p99 ≤ 50 ms |" in text
    assert "| (b) Pulse, outputs counted and dropped | — | — |  |" in text


def test_the_readme_block_between_the_markers_is_replaced(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{table.START}\nold table\n{table.END}\nafter\n", encoding="utf-8")
    assert table.update_readme(_report(), tmp_path / "latest.json", readme)
    text = readme.read_text(encoding="utf-8")
    assert text.startswith(f"before\n{table.START}\nGenerated by")
    assert text.endswith(f"|\n{table.END}\nafter\n")
    assert "old table" not in text
    assert not table.update_readme(_report(), tmp_path / "latest.json", readme)
    with pytest.raises(ValueError, match="markers"):
        table.replace_block("no markers here", "table")


def test_the_project_readme_has_one_figures_block() -> None:
    text = table.README.read_text(encoding="utf-8")
    assert text.count(table.START) == 1
    assert text.count(table.END) == 1
    assert text.index(table.START) < text.index(table.END)
