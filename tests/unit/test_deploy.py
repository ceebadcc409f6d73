"""deploy/: the Docker Compose file and the Kubernetes manifests, checked without a container engine.

The Compose file and the manifests are parsed; what they hand to Pulse (environment, pulse.toml) is
loaded as configuration; the files they mount exist; the ids, ports and probe paths agree with the
Dockerfile and with each other; and the StatefulSet's entrypoint script runs (with stub `pulse` and
`getent`) to show the process index, address list and one-time recovery initialisation. The Kubernetes
schemas themselves are checked by kubeconform in `make lint-kube`."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.config import ConfigError, Settings, load_settings
from engine.crypto import state_sealer

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
METRICS_PORT = 9464
# Environment names Pulse reads that are not PULSE_<SECTION>_<KEY> settings (engine/crypto.py).
KEY_VARS = {"PULSE_STATE_KEY", "PULSE_STATE_KEY_ID", "PULSE_DLQ_KEY", "PULSE_DLQ_KEY_ID"}


def known_env_names() -> set[str]:
    names = set(KEY_VARS)
    for section, cls in typing.get_type_hints(Settings).items():
        names |= {f"PULSE_{section.upper()}_{f.name.upper()}" for f in dataclasses.fields(cls) if f.init}
    return names


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def dockerfile_user() -> tuple[int, int]:
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.MULTILINE)
    uid, _, gid = users[-1].partition(":")
    return int(uid), int(gid or uid)


# ---- Docker Compose ----


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(DEPLOY / "docker-compose.yml")
    assert isinstance(data, dict)
    return data


def test_compose_has_the_five_services_with_pinned_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", "redis", "pulse", "prometheus", "grafana"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    for name, service in services.items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo, f"{name}: image {image!r} has no tag"
        assert tag not in ("", "latest"), f"{name}: image {image!r} is not pinned to a tag"
    assert (DEPLOY / services["pulse"]["build"]["context"] / services["pulse"]["build"]["dockerfile"]).is_file()


def test_compose_kafka_runs_kraft_without_zookeeper(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert not any("ZOOKEEPER" in key for key in env)
    pulse_env = compose["services"]["pulse"]["environment"]
    assert f"INTERNAL://{pulse_env['PULSE_KAFKA_BOOTSTRAP_SERVERS']}" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_compose_healthchecks_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    pulse_check = " ".join(services["pulse"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{METRICS_PORT}/healthz" in pulse_check
    waits = {
        name: {dep: how["condition"] for dep, how in service.get("depends_on", {}).items()}
        for name, service in services.items()
    }
    assert waits["pulse"] == {"kafka": "service_healthy", "redis": "service_healthy"}
    assert waits["prometheus"] == {"pulse": "service_healthy"}
    assert waits["grafana"] == {"prometheus": "service_healthy"}


def test_compose_publishes_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_compose_mounts_files_that_exist(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes", {}))
    mounts: dict[str, str] = {}
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is not in the repository"
                mounts[target] = source
            else:
                assert source in named, f"{name}: volume {source} is not declared"
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    assert mounts["/etc/prometheus/pulse-rules.yml"] == "./prometheus/pulse-rules.yml"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    assert mounts["/var/lib/grafana/dashboards/pulse.json"] == "./grafana/pulse.json"


def test_compose_pulse_environment_is_valid_configuration(compose: dict[str, Any]) -> None:
    env = {key: str(value) for key, value in compose["services"]["pulse"]["environment"].items()}
    unknown = sorted(set(env) - known_env_names())
    assert not unknown, f"not Pulse settings: {unknown}"
    settings = load_settings(None, env=env)
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.redis.url == "redis://redis:6379/0"
    assert (settings.metrics.host, settings.metrics.port) == ("0.0.0.0", METRICS_PORT)
    assert f"127.0.0.1:{METRICS_PORT}:{METRICS_PORT}" in compose["services"]["pulse"]["ports"]
    # The recovery directory is inside the named volume, so a restart resumes.
    volume_target = compose["services"]["pulse"]["volumes"][0].split(":")[1]
    assert settings.engine.recovery_dir.startswith(volume_target + "/")


def test_compose_grafana_provisioning_points_at_the_compose_services(compose: dict[str, Any]) -> None:
    datasources = DEPLOY / "grafana" / "provisioning" / "datasources"
    urls = [
        source["url"]
        for path in sorted(datasources.glob("*.y*ml"))
        for source in load_yaml(path).get("datasources", [])
        if source.get("type") == "prometheus"
    ]
    assert urls == ["http://prometheus:9090"]
    providers = DEPLOY / "grafana" / "provisioning" / "dashboards"
    paths = [p["options"]["path"] for path in sorted(providers.glob("*.y*ml")) for p in load_yaml(path)["providers"]]
    assert "/var/lib/grafana/dashboards" in paths


# ---- Kubernetes ----


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    return k8s_objects()


def container(k8s: Mapping[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    containers = k8s[("StatefulSet", "pulse")]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def literal_env(c: Mapping[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c["env"] if "value" in e}


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secret.example.yaml"}


def test_statefulset_cluster_shape(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    sts = k8s[("StatefulSet", "pulse")]["spec"]
    env = literal_env(container(k8s))
    assert sts["podManagementPolicy"] == "Parallel"
    assert int(env["CLUSTER_SIZE"]) == sts["replicas"]
    service = k8s[("Service", sts["serviceName"])]["spec"]
    assert env["CLUSTER_SERVICE"] == sts["serviceName"]
    assert service["clusterIP"] == "None"
    assert service["publishNotReadyAddresses"] is True
    assert service["selector"] == sts["selector"]["matchLabels"] == sts["template"]["metadata"]["labels"]
    ports = {p["name"]: p["containerPort"] for p in container(k8s)["ports"]}
    assert ports == {"cluster": int(env["CLUSTER_PORT"]), "metrics": METRICS_PORT}
    policy = k8s[("NetworkPolicy", "pulse")]["spec"]
    cluster_rule = next(r for r in policy["ingress"] if r["ports"][0]["port"] == ports["cluster"])
    assert cluster_rule["from"] == [{"podSelector": {"matchLabels": sts["selector"]["matchLabels"]}}]


def test_statefulset_shares_one_readwritemany_recovery_volume(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    pod = k8s[("StatefulSet", "pulse")]["spec"]["template"]["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    assert k8s[("PersistentVolumeClaim", claims["recovery"])]["spec"]["accessModes"] == ["ReadWriteMany"]
    mount = next(m["mountPath"] for m in container(k8s)["volumeMounts"] if m["name"] == "recovery")
    assert literal_env(container(k8s))["PULSE_ENGINE_RECOVERY_DIR"].startswith(mount + "/")


def test_statefulset_probes_metrics_and_security(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    template = k8s[("StatefulSet", "pulse")]["spec"]["template"]
    c = container(k8s)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert set(c["resources"]["requests"]) == set(c["resources"]["limits"]) == {"cpu", "memory"}
    pod_security = template["spec"]["securityContext"]
    uid, gid = dockerfile_user()
    assert pod_security["runAsNonRoot"] is True
    assert (pod_security["runAsUser"], pod_security["runAsGroup"], pod_security["fsGroup"]) == (uid, gid, gid)
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_statefulset_configuration_loads(k8s: dict[tuple[str, str], dict[str, Any]], tmp_path: Path) -> None:
    """pulse.toml from the ConfigMap plus the StatefulSet's environment, with stand-ins for the Secret."""
    c = container(k8s)
    config_mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "config")
    config_map = next(
        v["configMap"]["name"]
        for v in k8s[("StatefulSet", "pulse")]["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "config"
    )
    assert c["args"] == ["--config", f"{config_mount}/pulse.toml"]
    toml = tmp_path / "pulse.toml"
    toml.write_text(k8s[("ConfigMap", config_map)]["data"]["pulse.toml"], encoding="utf-8")

    secret = k8s[("Secret", "pulse-secrets")]["stringData"]
    from_secret = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in c["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert {ref["name"] for ref in from_secret.values()} == {"pulse-secrets"}
    assert {ref["key"] for ref in from_secret.values()} == set(secret)
    pulse_env = {name for name in (e["name"] for e in c["env"]) if name.startswith("PULSE_")}
    assert not pulse_env - known_env_names(), f"not Pulse settings: {sorted(pulse_env - known_env_names())}"

    env = {**literal_env(c), **{name: "stand-in-password" for name in from_secret}}
    env.pop("PULSE_STATE_KEY")
    settings = load_settings(toml, env=env)
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.redis.url.startswith("rediss://")
    assert settings.metrics.username
    assert settings.metrics.password == "stand-in-password"
    assert (settings.metrics.host, settings.metrics.port) == ("0.0.0.0", METRICS_PORT)
    assert settings.kafka.input_partitions >= k8s[("StatefulSet", "pulse")]["spec"]["replicas"]
    # The example Secret's placeholders fail closed: that state key is refused at start.
    with pytest.raises(ConfigError):
        state_sealer(settings, env={**env, **secret})


# ---- the StatefulSet's entrypoint, run for real with stub `pulse` and `getent` ----


def start_cluster_script(
    k8s: Mapping[tuple[str, str], dict[str, Any]], tmp_path: Path, pod: str, recovery: Path
) -> subprocess.Popen[str]:
    script = tmp_path / "pulse-cluster.sh"
    script.write_text(k8s[("ConfigMap", "pulse-cluster")]["data"]["pulse-cluster.sh"], encoding="utf-8")
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    (stubs / "pulse").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$PULSE_ARGS_OUT"\n', encoding="utf-8")
    (stubs / "getent").write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    env = {
        **literal_env(container(k8s)),
        "POD_NAME": pod,
        "POD_NAMESPACE": "ns",
        "PULSE_ENGINE_RECOVERY_DIR": str(recovery),
        "PULSE_ARGS_OUT": str(tmp_path / f"{pod}.args"),
        # stubs first, then this interpreter's bin (python with bytewax), then the system's sh, ls, ...
        "PATH": os.pathsep.join([str(stubs), str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    return subprocess.Popen(
        ["/bin/sh", str(script), *container(k8s)["args"]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cluster_script(
    k8s: Mapping[tuple[str, str], dict[str, Any]], tmp_path: Path, pod: str, recovery: Path
) -> tuple[int, str]:
    process = start_cluster_script(k8s, tmp_path, pod, recovery)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


def test_cluster_script_derives_index_and_addresses(k8s: dict[tuple[str, str], dict[str, Any]], tmp_path: Path) -> None:
    recovery = tmp_path / "recovery"
    size = int(literal_env(container(k8s))["CLUSTER_SIZE"])
    addresses = ";".join(f"pulse-{i}.pulse.ns.svc.cluster.local:2101" for i in range(size))
    last = f"pulse-{size - 1}"

    # The last process starts first: it waits until process 0 has initialised the shared directory.
    waiting = start_cluster_script(k8s, tmp_path, last, recovery)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(timeout=1)
        assert not (tmp_path / f"{last}.args").exists()

        code, stderr = run_cluster_script(k8s, tmp_path, "pulse-0", recovery)
        assert code == 0, stderr
        assert (tmp_path / "pulse-0.args").read_text().splitlines() == [
            *("run", "-i", "0", "-a", addresses),
            *("--config", "/etc/pulse/pulse.toml"),
        ]
        assert len(list(recovery.glob("part-*.sqlite3"))) == size
        assert (recovery / ".pulse-cluster-initialised").exists()

        _, stderr = waiting.communicate(timeout=30)
        assert waiting.returncode == 0, stderr
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert (tmp_path / f"{last}.args").read_text().splitlines()[:5] == ["run", "-i", str(size - 1), "-a", addresses]


def test_cluster_script_refuses_an_ordinal_beyond_the_cluster(
    k8s: dict[tuple[str, str], dict[str, Any]], tmp_path: Path
) -> None:
    size = int(literal_env(container(k8s))["CLUSTER_SIZE"])
    code, stderr = run_cluster_script(k8s, tmp_path, f"pulse-{size}", tmp_path / "recovery")
    assert code == 1
    assert "CLUSTER_SIZE" in stderr
    code, stderr = run_cluster_script(k8s, tmp_path, "pulse", tmp_path / "recovery")
    assert code == 1
    assert "no ordinal" in stderr
    assert not (tmp_path / "recovery").exists()


def test_compose_prometheus_scrapes_the_pulse_service_on_its_metrics_port(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "pulse"]
    targets = [t for static in job["static_configs"] for t in static["targets"]]
    env = {key: str(value) for key, value in compose["services"]["pulse"]["environment"].items()}
    port = load_settings(None, env=env).metrics.port
    assert targets == [f"pulse:{port}"], "inside the compose network, 127.0.0.1 is Prometheus itself"
