"""How fast the CS console answers with a realistic Redis behind it: `--users` users (100k) in `--accounts`
accounts, written through the live sink's own writer (engine.serving + ProfileStore: profiles, band
indexes, members, histories, open alerts), then `pulse console` started as its own process and a load
generator of `--clients` keep-alive HTTP clients (one run per count given) asking for each page in turn for
`--seconds`.

    python -m bench.console --users 100000 --out bench/results/console.json

Reports p50/p95/p99/max latency and requests/s per page to the results file (and prints the README table
rows). The figures include the client's share of the 2 cores: the load generator runs on the same machine.
Uses Redis of `make services` (database 14 by default, `PULSE_BENCH_REDIS`); its keys are its own prefix,
deleted at the end; the console process is stopped by pid.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis

from engine.config import RedisSettings
from engine.serving import Writer
from engine.sinks import ProfileStore, WriteUnit, redis_fields
from schemas.codec import format_ts
from schemas.outputs import Entity

ROOT = Path(__file__).resolve().parents[1]
REDIS = os.environ.get("PULSE_BENCH_REDIS", "redis://127.0.0.1:6379/14")
DAY_MS = 86_400_000
NOW = 1_772_452_800_000  # 2026-03-02T12:00:00Z: the synthetic users' clock
COMPONENTS = ("recency", "frequency", "adoption", "sentiment", "support", "commercial", "time_in_product")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _band(score: float) -> str:
    return "at_risk" if score < 40 else "watch" if score < 60 else "healthy"


def populate(settings: RedisSettings, users: int, accounts: int, history: int, seed: int = 7) -> dict[str, int]:
    """Synthetic users and accounts written as `pulse run` writes them; returns counts by band."""
    rng = random.Random(seed)
    writer = Writer(settings.key_prefix, history_size=history)
    store = ProfileStore(settings)
    members: dict[str, list[str]] = {}
    bands: dict[str, int] = {}
    units: list[WriteUnit] = []

    def flush() -> None:
        store.write(units)
        units.clear()

    for n in range(users):
        user_id, account_id = f"u{n:06d}", f"acct{n % accounts:05d}"
        members.setdefault(account_id, []).append(user_id)
        score = round(min(100.0, max(0.0, rng.gauss(68, 20))), 2)
        band = _band(score)
        bands[band] = bands.get(band, 0) + 1
        last_seen = NOW - int(rng.expovariate(1 / 5) * DAY_MS)
        components = {c: round(rng.random(), 4) for c in COMPONENTS}
        profile = {
            "user_id": user_id,
            "account_id": account_id,
            "first_seen": format_ts(NOW - 200 * DAY_MS),
            "last_seen": format_ts(last_seen),
            "as_of": format_ts(NOW),
            "score": score,
            "band": band,
            "components": components,
            "engagement": "at_risk" if band == "at_risk" else "active",
            "commercial": "paying",
            "features": {"reports": rng.randint(0, 40), "dashboards": rng.randint(0, 10)},
            "active_days_7": rng.randint(0, 7),
            "active_days_28": rng.randint(0, 28),
            "nps": rng.randint(0, 10),
        }
        units.append(writer.profile(Entity.USER, user_id, redis_fields(profile)))
        previous = score
        for h in range(history):
            ts = NOW - (history - h) * DAY_MS
            before, previous = previous, round(min(100.0, max(0.0, previous + rng.uniform(-8, 8))), 2)
            record = {
                "ts": format_ts(ts),
                "score": previous if h < history - 1 else score,
                "previous_score": before,
                "band": _band(previous),
                "previous_band": _band(before),
                "reasons": [{"component": rng.choice(COMPONENTS), "delta": round(previous - before, 2)}],
                "cause_event_id": f"e-{user_id}-{h}",
            }
            units.append(writer.history(Entity.USER, user_id, ts, orjson.dumps(record)))
        if band == "at_risk":
            alert = {"alert_id": f"lapse-{user_id}", "kind": "lapse", "status": "firing", "user_id": user_id}
            units.append(writer.alert(orjson.dumps(alert)))
        if len(units) >= 5000:
            flush()
    for account_id, ids in members.items():
        score = round(rng.uniform(20, 95), 2)
        fields = {"account_id": account_id, "as_of": format_ts(NOW), "score": score, "band": _band(score)}
        fields |= {"users": len(ids), "active_users_7d": len(ids) // 2, "commercial": "paying"}
        units.append(writer.profile(Entity.ACCOUNT, account_id, redis_fields(fields), tuple(ids)))
        if len(units) >= 5000:
            flush()
    flush()
    store.close()
    return bands


class Load:
    """`clients` threads, each with one keep-alive connection, asking for `paths` in turn."""

    def __init__(self, port: int, paths: list[str], clients: int) -> None:
        self.port, self.paths, self.clients = port, paths, clients
        self.latencies: dict[str, list[float]] = {p: [] for p in paths}
        self.errors = 0
        self._lock = threading.Lock()

    def _client(self, stop_at: float, offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        n = offset
        mine: dict[str, list[float]] = {p: [] for p in self.paths}
        errors = 0
        while time.monotonic() < stop_at:
            path = self.paths[n % len(self.paths)]
            n += 1
            started = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            took = time.perf_counter() - started
            if response.status == 200:
                mine[path].append(took)
            else:
                errors += 1
        conn.close()
        with self._lock:
            for path, values in mine.items():
                self.latencies[path].extend(values)
            self.errors += errors

    def run(self, seconds: float) -> float:
        stop_at = time.monotonic() + seconds
        threads = [threading.Thread(target=self._client, args=(stop_at, i)) for i in range(self.clients)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.monotonic() - started


def _summary(values: list[float], seconds: float) -> dict[str, Any]:
    ms = sorted(v * 1000 for v in values)
    cut = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {
        "requests": len(ms),
        "per_second": round(len(ms) / seconds, 1),
        "p50_ms": round(cut[49], 2),
        "p95_ms": round(cut[94], 2),
        "p99_ms": round(cut[98], 2),
        "max_ms": round(ms[-1], 2),
    }


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"pulse console exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("pulse console did not answer /healthz within 30 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=5_000)
    parser.add_argument("--history", type=int, default=5, help="score changes written per user")
    parser.add_argument("--clients", default="1,4", help="concurrent keep-alive HTTP clients, one run per count")
    parser.add_argument("--seconds", type=float, default=20.0, help="load time per run")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "console.json"))
    args = parser.parse_args()

    prefix = f"bench-console-{uuid.uuid4().hex[:8]}"
    settings = RedisSettings(url=REDIS, key_prefix=prefix)
    client = redis.Redis.from_url(REDIS)
    started = time.monotonic()
    print(f"bench.console: writing {args.users} users in {args.accounts} accounts under {prefix}", file=sys.stderr)
    bands = populate(settings, args.users, args.accounts, args.history)
    populate_s = time.monotonic() - started
    print(f"bench.console: written in {populate_s:.1f}s; bands {bands}", file=sys.stderr)
    port = free_port()
    env = {**os.environ, "PULSE_REDIS_URL": REDIS, "PULSE_REDIS_KEY_PREFIX": prefix}
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "console", "--port", str(port), "--log-level", "warning"],
        env=env,
        cwd=ROOT,
    )
    try:
        _wait_healthy(port, proc)
        filtered = f"/?account=acct{args.accounts // 2:05d}"
        paths = ["/", "/api/at-risk", filtered, "/accounts/acct00001", "/users/u000001"]
        Load(port, paths, 1).run(2.0)  # warm-up: connections, templates, the Redis pool
        runs: dict[int, tuple[Load, float]] = {}
        for clients in (int(c) for c in args.clients.split(",")):
            load = Load(port, paths, clients)
            runs[clients] = (load, load.run(args.seconds))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        keys = list(client.scan_iter(f"{prefix}:*", count=10_000))
        for start in range(0, len(keys), 10_000):
            client.unlink(*keys[start : start + 10_000])
        client.close()
    report = {
        "users": args.users,
        "accounts": args.accounts,
        "bands": bands,
        "history_per_user": args.history,
        "seconds_per_run": args.seconds,
        "populate_seconds": round(populate_s, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "runs": [
            {
                "clients": clients,
                "errors": load.errors,
                "pages": {path: _summary(values, seconds) for path, values in load.latencies.items()},
            }
            for clients, (load, seconds) in runs.items()
        ],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    print("| clients | page | requests/s | p50 ms | p95 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|---|")
    for run in report["runs"]:
        for path, s in run["pages"].items():
            print(
                f"| {run['clients']} | `{path}` | {s['per_second']} | {s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} "
                f"| {s['max_ms']} |"
            )
    errors = sum(load.errors for load, _ in runs.values())
    if errors:
        raise SystemExit(f"bench.console: {errors} request(s) did not answer 200")


if __name__ == "__main__":
    main()
