"""`pulse run` over SASL_SSL Kafka (SCRAM-SHA-512 and mutual TLS) and TLS Redis with an ACL user, and the
one-line reasons it stops with when a password or a certificate is wrong.

The broker and Redis are this module's own (scripts/kafka-local and scripts/redis-local in their secure
modes, in temporary directories, on free loopback ports), with certificates from a throwaway CA made here
with openssl: the shared plain-text servers are not touched."""

from __future__ import annotations

import base64
import os
import re
import secrets
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import Producer

from engine.config import KafkaSettings
from schemas.codec import loads
from tests.integration.conftest import ROOT, Names, PulseProcess, consume_all, free_port, wait_for
from tests.integration.servers import KafkaBroker
from tests.pki import Pki

pytestmark = pytest.mark.integration

USER = "pulse"  # the SCRAM user on the broker and the ACL user on Redis
PREFIX = "pulse"  # the only keys the Redis ACL user may touch; Pulse's redis.key_prefix here
FAIL_FAST_S = 30.0  # a refused login or certificate must end `pulse run` within this


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


@dataclass(frozen=True)
class SecureKafka:
    bootstrap: str
    password: str

    def settings(self, pki: Pki, **changes: Any) -> KafkaSettings:
        values: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": USER,
            "sasl_password": self.password,
            "ssl_ca_location": str(pki.ca),
            "ssl_certificate_location": str(pki.client_cert),
            "ssl_key_location": str(pki.client_key),
            "ssl_key_password": pki.client_key_password.read_text(encoding="utf-8").strip(),
        }
        return KafkaSettings(**{**values, **changes})


@pytest.fixture(scope="module")
def secure_kafka(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """A broker whose only client listener is SASL_SSL, asking for client certificates too."""
    workdir = tmp_path_factory.mktemp("secure-kafka")
    password = secrets.token_hex(16)
    password_file = workdir / "scram-password"
    password_file.write_text(password, encoding="utf-8")
    broker = KafkaBroker(
        workdir,
        {
            "PULSE_KAFKA_SCRAM_USER": USER,
            "PULSE_KAFKA_SCRAM_PASSWORD_FILE": str(password_file),
            "PULSE_KAFKA_TLS_CERT": str(pki.server_cert),
            "PULSE_KAFKA_TLS_KEY": str(pki.server_key),
            "PULSE_KAFKA_TLS_CA": str(pki.ca),
            "PULSE_KAFKA_TLS_CLIENT_AUTH": "required",
            "PULSE_KAFKA_HEAP": "-Xms128m -Xmx384m",
        },
    )
    broker.start()
    try:
        yield SecureKafka(broker.bootstrap, password)
    finally:
        broker.stop()


class SecureRedis:
    """redis-server through scripts/redis-local with TLS only and ACLs: the `pulse` user limited to the
    prefix and to what Pulse sends; `default` is the admin these tests read with, behind a password."""

    def __init__(self, workdir: Path, pki: Pki) -> None:
        self.port = free_port()
        self.url = f"rediss://127.0.0.1:{self.port}/0"
        self.password_file = workdir / "pulse-password"
        self.password_file.write_text(secrets.token_hex(16), encoding="utf-8")
        admin_password_file = workdir / "admin-password"
        admin_password_file.write_text(secrets.token_hex(16), encoding="utf-8")
        self._env = {
            **os.environ,
            "PULSE_REDIS_DIR": str(workdir / "redis"),
            "PULSE_REDIS_PORT": str(self.port),
            "PULSE_REDIS_TLS_CERT": str(pki.server_cert),
            "PULSE_REDIS_TLS_KEY": str(pki.server_key),
            "PULSE_REDIS_TLS_CA": str(pki.ca),
            "PULSE_REDIS_ACL_USER": USER,
            "PULSE_REDIS_ACL_PASSWORD_FILE": str(self.password_file),
            "PULSE_REDIS_ACL_PREFIX": PREFIX,
            "PULSE_REDIS_ADMIN_PASSWORD_FILE": str(admin_password_file),
        }
        self.admin = self.client(password=admin_password_file.read_text(encoding="utf-8"))

    @property
    def password(self) -> str:
        return self.password_file.read_text(encoding="utf-8")

    def client(self, username: str | None = None, password: str | None = None) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            ssl=True,
            ssl_ca_certs=self._env["PULSE_REDIS_TLS_CA"],
            username=username,
            password=password,
            socket_timeout=5,
        )

    def script(self, command: str) -> None:
        result = subprocess.run(
            [str(ROOT / "scripts" / "redis-local"), command], env=self._env, capture_output=True, timeout=120
        )
        if result.returncode != 0:
            pytest.fail(f"redis-local {command} failed:\n{result.stderr.decode()[-3000:]}")


@pytest.fixture(scope="module")
def secure_redis(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRedis]:
    server = SecureRedis(tmp_path_factory.mktemp("secure-redis"), pki)
    server.script("start")
    try:
        yield server
    finally:
        server.admin.close()
        server.script("stop")


def _config(path: Path, pki: Pki, kafka: SecureKafka, redis_server: SecureRedis, redis_password_file: bool) -> Path:
    """A config file as an operator would write it: paths and user names, secrets only by file."""
    password_file = f'password_file = "{redis_server.password_file}"' if redis_password_file else ""
    path.write_text(
        f"""
[kafka]
bootstrap_servers = "{kafka.bootstrap}"
security_protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "{USER}"
ssl_ca_location = "{pki.ca}"
ssl_certificate_location = "{pki.client_cert}"
ssl_key_location = "{pki.client_key}"
ssl_key_password_file = "{pki.client_key_password}"

[redis]
url = "{redis_server.url}"
ssl_ca_certs = "{pki.ca}"
username = "{USER}"
{password_file}
key_prefix = "{PREFIX}"

[metrics]
username = "prometheus"
password_file = "{pki.client_key_password}"
tls_certfile = "{pki.server_cert}"
tls_keyfile = "{pki.server_key}"
""",
        encoding="utf-8",
    )
    return path


def _topics_env(run: str) -> dict[str, str]:
    """Topic names of this run; servers, key prefix and credentials come from the config file."""
    return {k: v for k, v in Names(run).env.items() if k.startswith(("PULSE_TOPICS_", "PULSE_KAFKA_INPUT"))}


def _event(event_id: str, user: str, event_type: str, ts: str, **extra: object) -> bytes:
    return orjson.dumps({"event_id": event_id, "user_id": user, "account_id": "acme", "type": event_type,
                         "ts": ts, **extra})  # fmt: skip


def _produce(config: dict[str, Any], topic: str, values: Sequence[bytes]) -> None:
    producer = Producer({**config, "enable.idempotence": True, "acks": "all"})
    for value in values:
        producer.produce(topic, value, b"k")
    assert producer.flush(60) == 0


def test_pulse_runs_over_sasl_ssl_kafka_and_tls_redis_with_an_acl_user(
    pki: Pki,
    secure_kafka: SecureKafka,
    secure_redis: SecureRedis,
    tmp_path: Path,
    pulse_run: Callable[..., PulseProcess],
) -> None:
    run = f"t{uuid.uuid4().hex[:10]}"
    config = _config(tmp_path / "pulse.toml", pki, secure_kafka, secure_redis, redis_password_file=True)
    # The SCRAM password from the environment, the Redis and key passwords from files (named in the config).
    env = {**_topics_env(run), "PULSE_KAFKA_SASL_PASSWORD": secure_kafka.password}
    pulse = pulse_run(env, ["--config", str(config)])
    client = dict(secure_kafka.settings(pki).client_config())
    _produce(client, f"{run}-events", [
        _event("e1", "alice", "session_start", "2026-01-05T09:00:00Z", properties={"email": "alice@example.com"}),
        _event("e2", "alice", "feature_used", "2026-01-05T09:05:00Z", feature="reports"),
        _event("e3", "bob", "page_view", "2026-01-06T12:00:00Z"),
    ])  # fmt: skip

    profile = wait_for(lambda: secure_redis.admin.hgetall(f"{PREFIX}:user:alice"), 90, "alice's profile in Redis")
    assert loads(profile[b"features"]) == {"reports": 1}
    scores = consume_all(secure_kafka.bootstrap, f"{run}-scores", 1, 60, config=client)
    assert loads(scores[0].value() or b"")["kind"] == "score_changed"
    # The metrics endpoint of the same run: HTTPS with basic auth (the password file reused from the PKI).
    https = ssl.create_default_context(cafile=str(pki.ca))
    url = f"https://127.0.0.1:{pulse.metrics_port}/metrics"
    with pytest.raises(urllib.error.HTTPError, match="401"):
        urllib.request.urlopen(url, timeout=5, context=https)
    login = base64.b64encode(f"prometheus:{pki.client_key_password.read_text().strip()}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {login}"})
    with urllib.request.urlopen(request, timeout=5, context=https) as response:
        assert re.search(r"^pulse_events_applied_total [1-9]", response.read().decode(), re.MULTILINE)
    pulse.assert_alive()
    assert pulse.stop() in (0, -15)

    # The ACL user may write its own prefix and nothing else, and read nothing.
    as_pulse = secure_redis.client(USER, secure_redis.password)
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_pulse.hset("elsewhere:user:alice", "x", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_pulse.hgetall(f"{PREFIX}:user:alice")
    as_pulse.close()
    log = pulse.log.read_text(encoding="utf-8", errors="replace")
    for secret in (secure_kafka.password, secure_redis.password, pki.client_key_password.read_text().strip()):
        assert secret not in log


def _pulse_exits(env: dict[str, str], config: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "--config", str(config)],
        env={**os.environ, **env, "PULSE_METRICS_ENABLED": "false",
             "PULSE_ENGINE_RECOVERY_DIR": str(tmp_path / "recovery")},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,  # subprocess.run kills it then: a hang fails below instead of blocking the suite
        check=False,
    )  # fmt: skip
    return result, time.monotonic() - started


def _assert_one_line_reason(result: subprocess.CompletedProcess[str], seconds: float, reason: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr[-3000:]
    assert seconds < FAIL_FAST_S, f"took {seconds:.1f}s:\n{result.stderr[-3000:]}"
    assert lines, "nothing on stderr"
    assert lines[-1].startswith("pulse: error: "), result.stderr[-3000:]
    assert re.search(reason, lines[-1]), lines[-1]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param("wrong_password", r"(?i)authentication failed|invalid credentials", id="wrong-scram-password"),
        pytest.param("untrusted_ca", r"(?i)certificate verify failed", id="untrusted-ca"),
    ],
)
def test_a_refused_kafka_login_or_certificate_stops_pulse_run_with_the_reason(
    pki: Pki,
    secure_kafka: SecureKafka,
    secure_redis: SecureRedis,
    tmp_path: Path,
    change: str,
    reason: str,
) -> None:
    config = _config(tmp_path / "pulse.toml", pki, secure_kafka, secure_redis, redis_password_file=True)
    wrong = f"wrong-{secrets.token_hex(8)}"
    env = {**_topics_env(f"t{uuid.uuid4().hex[:10]}"), "PULSE_KAFKA_SASL_PASSWORD": secure_kafka.password}
    if change == "wrong_password":
        env["PULSE_KAFKA_SASL_PASSWORD"] = wrong
    else:
        env["PULSE_KAFKA_SSL_CA_LOCATION"] = str(pki.other_ca)  # a CA that did not sign the broker's certificate
    result, seconds = _pulse_exits(env, config, tmp_path)
    _assert_one_line_reason(result, seconds, reason)
    assert wrong not in result.stderr
    assert secure_kafka.password not in result.stderr


def test_a_wrong_redis_password_stops_pulse_run_with_the_reason(
    pki: Pki, secure_kafka: SecureKafka, secure_redis: SecureRedis, tmp_path: Path
) -> None:
    config = _config(tmp_path / "pulse.toml", pki, secure_kafka, secure_redis, redis_password_file=False)
    wrong = f"wrong-{secrets.token_hex(8)}"
    env = {
        **_topics_env(f"t{uuid.uuid4().hex[:10]}"),
        "PULSE_KAFKA_SASL_PASSWORD": secure_kafka.password,
        "PULSE_REDIS_PASSWORD": wrong,
    }
    result, seconds = _pulse_exits(env, config, tmp_path)
    _assert_one_line_reason(result, seconds, r"Redis at 127\.0\.0\.1:\d+/0 refused the connection: .*password")
    assert wrong not in result.stderr
