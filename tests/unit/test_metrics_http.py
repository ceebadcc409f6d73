"""The metrics endpoint on a real loopback socket: basic auth, HTTPS, mutual TLS, and the probes.

Certificates come from a throwaway CA (tests/pki.py); nothing here needs Kafka or Redis."""

from __future__ import annotations

import base64
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import metrics
from engine.config import ConfigError, MetricsSettings, load_settings
from engine.service import serve_metrics
from tests.integration.conftest import free_port
from tests.pki import Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def served() -> Iterator[Any]:
    servers: list[Any] = []

    def start(**changes: Any) -> str:
        ready = changes.pop("ready", None)
        settings = MetricsSettings(port=free_port(), **changes)
        servers.append(metrics.serve(settings, ready) if ready else metrics.serve(settings))
        return f"{settings.scheme}://127.0.0.1:{settings.port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _get(url: str, auth: tuple[str, str] | None = None, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_without_a_username_metrics_and_probes_are_open(served: Any) -> None:
    base = served()
    status, body = _get(f"{base}/metrics")
    assert status == 200
    assert "pulse_events_in_total" in body
    assert _get(f"{base}/healthz") == (200, "ok\n")
    assert _get(f"{base}/readyz") == (200, "ok\n")
    assert _get(f"{base}/other")[0] == 404


def test_basic_auth_guards_metrics_and_leaves_the_probes_open(served: Any) -> None:
    base = served(username="prometheus", password="s3cret-scrape")
    assert _get(f"{base}/metrics")[0] == 401
    assert _get(f"{base}/metrics", ("prometheus", "wrong"))[0] == 401
    assert _get(f"{base}/metrics", ("someone", "s3cret-scrape"))[0] == 401
    status, body = _get(f"{base}/metrics", ("prometheus", "s3cret-scrape"))
    assert status == 200
    assert "pulse_events_applied_total" in body
    assert _get(f"{base}/healthz")[0] == 200


def test_readyz_says_why_it_is_not_ready(served: Any) -> None:
    base = served(ready=lambda: (False, "consumer lag 5000 > 1000 on partition 2"))
    assert _get(f"{base}/readyz") == (503, "consumer lag 5000 > 1000 on partition 2\n")


def test_https_serves_only_clients_that_trust_the_certificate(served: Any, pki: Pki) -> None:
    base = served(tls_certfile=str(pki.server_cert), tls_keyfile=str(pki.server_key))
    assert base.startswith("https://")
    status, body = _get(f"{base}/metrics", context=ssl.create_default_context(cafile=str(pki.ca)))
    assert status == 200
    assert "pulse_events_in_total" in body
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(f"{base}/metrics", context=ssl.create_default_context(cafile=str(pki.other_ca)))
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        _get(base.replace("https://", "http://") + "/metrics")


def test_mutual_tls_refuses_a_scraper_without_a_client_certificate(served: Any, pki: Pki) -> None:
    base = served(tls_certfile=str(pki.server_cert), tls_keyfile=str(pki.server_key), tls_client_cafile=str(pki.ca))
    anonymous = ssl.create_default_context(cafile=str(pki.ca))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        _get(f"{base}/metrics", context=anonymous)
    with_cert = ssl.create_default_context(cafile=str(pki.ca))
    password = pki.client_key_password.read_text(encoding="utf-8").strip()
    with_cert.load_cert_chain(str(pki.client_cert), str(pki.client_key), password=password)
    assert _get(f"{base}/metrics", context=with_cert)[0] == 200


def test_the_password_comes_from_the_environment_or_a_file_never_the_config(tmp_path: Path) -> None:
    config = tmp_path / "pulse.toml"
    config.write_text('[metrics]\nusername = "prometheus"\npassword = "inline"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[metrics\] password is a secret: set PULSE_METRICS_PASSWORD"):
        load_settings(config, env={})
    config.write_text('[metrics]\nusername = "prometheus"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"needs PULSE_METRICS_PASSWORD or metrics\.password_file"):
        load_settings(config, env={})
    assert load_settings(config, env={"PULSE_METRICS_PASSWORD": "from-env"}).metrics.password == "from-env"
    secret = tmp_path / "metrics-password"
    secret.write_text("from-file\n", encoding="utf-8")
    config.write_text(f'[metrics]\nusername = "prometheus"\npassword_file = "{secret}"\n', encoding="utf-8")
    settings = load_settings(config, env={})
    assert settings.metrics.password == "from-file"
    assert "from-file" not in repr(settings)


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        ('tls_certfile = "c.pem"', "tls_certfile and tls_keyfile go together"),
        ('tls_client_cafile = "ca.pem"', "tls_client_cafile needs tls_certfile"),
    ],
)
def test_half_a_tls_setup_is_refused_at_load(tmp_path: Path, table: str, reason: str) -> None:
    config = tmp_path / "pulse.toml"
    config.write_text(f"[metrics]\n{table}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=reason):
        load_settings(config, env={})


def test_a_missing_certificate_stops_the_service_with_the_file_named(tmp_path: Path) -> None:
    missing = tmp_path / "absent.pem"
    settings = MetricsSettings(port=free_port(), tls_certfile=str(missing), tls_keyfile=str(missing))
    with pytest.raises(ConfigError, match=r"\[metrics\] cannot serve on 127.0.0.1:\d+: .*No such file"):
        serve_metrics(settings)


def test_readiness_waits_for_partitions_and_for_the_lag_to_fall() -> None:
    progress = metrics.PartitionProgress(clock=lambda: 1000.0)
    saved = metrics.PARTITION_PROGRESS
    metrics.PARTITION_PROGRESS = progress
    try:
        ready = metrics.readiness(max_lag=100)
        assert ready() == (False, "no input partition assigned yet")
        progress.consumer_lag("0", 5)
        progress.consumer_lag("1", 250)
        assert ready() == (False, "catching up: partition 1 is 250 messages behind (ready at <= 100)")
        progress.consumer_lag("1", 100)
        assert ready() == (True, "ok: 2 partition(s), max lag 100")
    finally:
        metrics.PARTITION_PROGRESS = saved
        for partition in ("0", "1"):
            metrics.CONSUMER_LAG.remove(partition)


def test_event_time_lag_is_the_wall_clock_behind_each_partition_and_zero_when_idle() -> None:
    progress = metrics.PartitionProgress(clock=lambda: 1000.0)
    progress.event_time("0", 940.0, idle=False)
    progress.event_time("1", 400.0, idle=True)
    progress.event_time("2", -0.001, idle=False)  # registered, nothing read yet
    (family,) = progress.collect()
    assert {s.labels["partition"]: s.value for s in family.samples} == {"0": 60.0, "1": 0.0, "2": 0.0}
    progress.forget("1")
    (family,) = progress.collect()
    assert [s.labels["partition"] for s in family.samples] == ["0", "2"]
