"""Private servers for outage tests: a redis-server and a Kafka broker of the test's own, on free loopback
ports, so stopping them never disturbs the shared ones (6379, 9092) other tests use."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
import redis

from tests.integration.conftest import ROOT, free_port, stop_process, wait_for


class RedisServer:
    """`redis-server`, started with subprocess and stopped by its own pid. Without persistence it comes back
    empty after a restart; `durable` keeps an append-only file synced on every write, so a restart brings
    back exactly what was acknowledged."""

    def __init__(self, workdir: Path, durable: bool = False) -> None:
        self.durable = durable
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not on PATH: run `make services` (scripts/redis-local start)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir = workdir
        self._workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5)

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = (self._workdir / "redis.log").open("ab")
        # The port is this test's: a restart reuses it, which is what a client sees when Redis comes back.
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
             "--daemonize", "no", "--dir", str(self._workdir)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server on port {self.port} exited: {(self._workdir / 'redis.log').read_text()}")
            try:
                return bool(self.client.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, 30, f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.client.close()  # its pooled connections point at the old process


class KafkaBroker:
    """A real broker of its own through scripts/kafka-local (own data dir, ports, pid file)."""

    def __init__(self, workdir: Path, extra_env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._env = {
            **os.environ,
            "PULSE_KAFKA_DIR": str(workdir / "kafka"),
            "PULSE_KAFKA_PORT": str(self.port),
            "PULSE_KAFKA_CONTROLLER_PORT": str(free_port()),
            **(extra_env or {}),  # e.g. the SASL_SSL listener's settings (see scripts/kafka-local)
        }

    def _script(self, command: str) -> float:
        started = time.monotonic()
        result = subprocess.run(
            [str(ROOT / "scripts" / "kafka-local"), command], env=self._env, capture_output=True, timeout=300
        )
        if result.returncode != 0:
            pytest.fail(f"kafka-local {command} failed:\n{result.stderr.decode()[-3000:]}")
        return time.monotonic() - started

    def start(self) -> float:
        return self._script("start")

    def stop(self) -> float:
        return self._script("stop")
