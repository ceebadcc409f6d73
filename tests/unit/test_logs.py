"""stderr as text (`pulse: ...`, as always) or JSON lines (--log-format json), and the start banner: the
effective configuration with every secret masked."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from demo.generator import GeneratorConfig, write_jsonl
from engine import logs
from engine.cli import main
from engine.config import MASK, load_settings, mask_url
from engine.crypto import new_key
from engine.sources import Progress

ROOT = Path(__file__).resolve().parents[2]
LOG = logging.getLogger("pulse.test")
# Secrets, each a canary that must appear nowhere on stderr.
CANARIES = {
    "PULSE_REDIS_PASSWORD": "canary-redis-7f3a",
    "PULSE_METRICS_PASSWORD": "canary-metrics-91bc",
    "PULSE_KAFKA_SASL_PASSWORD": "canary-sasl-2d4e",
    "PULSE_KAFKA_SSL_KEY_PASSWORD": "canary-sslkey-55aa",
}
# What the secrets above need beside them to be a valid configuration.
COMPANIONS = {
    "PULSE_METRICS_USERNAME": "scraper",
    "PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "PULSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "PULSE_KAFKA_SASL_USERNAME": "pulse",
    "PULSE_KAFKA_SSL_CERTIFICATE_LOCATION": "/etc/pulse/client.pem",
    "PULSE_KAFKA_SSL_KEY_LOCATION": "/etc/pulse/client.key",
}


@pytest.fixture(autouse=True)
def _text_afterwards() -> Iterator[None]:
    yield
    logs.configure()  # back to the default: json mode also hooks sys.excepthook and warnings


@pytest.fixture(autouse=True)
def _no_log_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULSE_LOG_FORMAT", raising=False)
    monkeypatch.delenv("PULSE_LOG_LEVEL", raising=False)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("logs") / "events.jsonl"
    write_jsonl(path, GeneratorConfig(users=12, accounts=3, days=8, seed=5, malformed_rate=0.05))
    return path


def _json_lines(err: str) -> list[dict[str, Any]]:
    lines = err.splitlines()
    assert lines, "nothing on stderr"
    docs = []
    for line in lines:
        doc = orjson.loads(line)
        assert isinstance(doc, dict), line
        docs.append(doc)
    return docs


def _assert_envelope(doc: dict[str, Any]) -> None:
    assert {"ts", "level", "logger", "event"} <= doc.keys(), doc
    ts = datetime.fromisoformat(doc["ts"])
    assert ts.utcoffset() is not None
    assert ts.utcoffset() == UTC.utcoffset(None)
    assert doc["ts"].endswith("Z")
    assert doc["level"] in ("debug", "info", "warning", "error", "critical")
    assert doc["logger"].startswith("pulse")


def test_json_lines_carry_the_envelope_and_the_fields(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("json")
    logs.info(LOG, "consuming pulse-events", topic="pulse-events", partition=3, count=1200)
    logs.warning(LOG, "partition lagging\nbadly", topic="t", partition=0)
    logs.error(LOG, "pulse: Kafka down", event="not the message", ts="not the time")
    LOG.warning("plain %s record", "logger")
    docs = _json_lines(capsys.readouterr().err)
    assert len(docs) == 4
    for doc in docs:
        _assert_envelope(doc)
    first, second, third, fourth = docs
    assert first["level"] == "info"
    assert first["logger"] == "pulse.test"
    assert first["event"] == "consuming pulse-events"
    assert (first["topic"], first["partition"], first["count"]) == ("pulse-events", 3, 1200)
    assert (second["level"], second["event"]) == ("warning", "partition lagging\nbadly")
    # The prefix of the text lines is not part of the event, and fields never replace the envelope.
    assert (third["level"], third["event"]) == ("error", "Kafka down")
    assert third["ts"] != "not the time"
    assert fourth["event"] == "plain logger record"


def test_json_exceptions_are_one_line_with_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        LOG.exception("failed")
        sys.excepthook(*sys.exc_info())  # what an uncaught exception does
    docs = _json_lines(capsys.readouterr().err)
    assert [d["level"] for d in docs] == ["error", "critical"]
    assert all("RuntimeError: boom" in d["exc"] for d in docs)


def test_text_keeps_the_pulse_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("text")
    logs.info(LOG, "created topics a, b", topics=["a", "b"])
    logs.warning(LOG, "recovery snapshots are not encrypted")
    logs.error(LOG, "Kafka at 127.0.0.1:9092: down")
    logs.error(LOG, "pulse: recovery snapshot x failed authentication", tag=False)
    LOG.warning("kafka producer: %s", "queue full")
    assert capsys.readouterr().err.splitlines() == [
        "pulse: created topics a, b",
        "pulse: warning: recovery snapshots are not encrypted",
        "pulse: error: Kafka at 127.0.0.1:9092: down",
        "pulse: recovery snapshot x failed authentication",
        "pulse: WARNING pulse.test: kafka producer: queue full",
    ]


def test_level_filters_pulse_messages(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("text", "WARNING")
    logs.info(LOG, "progress")
    logs.warning(LOG, "trouble")
    assert capsys.readouterr().err == "pulse: warning: trouble\n"


def test_progress_lines_are_structured(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("json")
    now = [0.0]
    progress = Progress("events.jsonl", every=5.0, clock=lambda: now[0])
    progress.update(10)
    now[0] = 10.0
    progress.update(20_000)
    (doc,) = _json_lines(capsys.readouterr().err)
    assert doc["event"] == "events.jsonl: 20,000 lines read (2,000/s)"
    assert (doc["label"], doc["count"], doc["what"], doc["rate"]) == ("events.jsonl", 20_000, "lines read", 2000)


def test_options_and_environment_resolve() -> None:
    assert logs.resolve(None, None, {}) == ("text", "INFO")
    assert logs.resolve(None, None, {"PULSE_LOG_FORMAT": "JSON", "PULSE_LOG_LEVEL": "debug"}) == ("json", "DEBUG")
    assert logs.resolve("text", "ERROR", {"PULSE_LOG_FORMAT": "json"}) == ("text", "ERROR")
    with pytest.raises(ValueError, match="PULSE_LOG_FORMAT"):
        logs.resolve(None, None, {"PULSE_LOG_FORMAT": "xml"})
    with pytest.raises(ValueError, match="PULSE_LOG_LEVEL"):
        logs.resolve(None, None, {"PULSE_LOG_LEVEL": "loud"})


def test_bad_log_format_in_the_environment_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PULSE_LOG_FORMAT", "xml")
    assert main(["replay", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "pulse: error: PULSE_LOG_FORMAT must be text or json, got 'xml'\n"


def test_usage_errors_are_json_in_json_mode(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--log-format", "json", "replay"])
    assert exit_.value.code == 2
    (doc,) = _json_lines(capsys.readouterr().err)
    _assert_envelope(doc)
    assert doc["level"] == "error"
    assert "required" in doc["event"]


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@127.0.0.1:6379/0", f"redis://:{MASK}@127.0.0.1:6379/0"),
        ("rediss://pulse:s3/c@r?t@127.0.0.1:6380/1", f"rediss://pulse:{MASK}@127.0.0.1:6380/1"),
        ("redis://s3cret@127.0.0.1/0", f"redis://{MASK}@127.0.0.1/0"),
        ("redis://127.0.0.1/0?password=s3cret&db=2", f"redis://127.0.0.1/0?password={MASK}&db=2"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def _secret_env(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every secret set to a canary (and both keys): returns the values that must not be printed."""
    state_key, dlq_key = new_key(), new_key()
    env = {
        **CANARIES,
        **COMPANIONS,
        "PULSE_STATE_KEY": state_key,
        "PULSE_STATE_KEY_ID": "state-1",
        "PULSE_DLQ_KEY": dlq_key,
        "PULSE_DLQ_KEY_ID": "dlq-1",
        "PULSE_DLQ_ENCRYPT": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return [*CANARIES.values(), state_key, dlq_key]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_replay_banner_shows_every_section_and_no_secret(
    log_format: str,
    events: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secrets = _secret_env(monkeypatch)
    assert main(["replay", str(events), "--out", str(tmp_path / "out"), "--log-format", log_format]) == 0
    err = capsys.readouterr().err
    for secret in secrets:
        assert secret not in err
    assert MASK in err
    banners = [line for line in err.splitlines() if "replay starting" in line]
    assert len(banners) == 1
    if log_format == "text":
        assert all(line.startswith("pulse: ") for line in err.splitlines())
        config = orjson.loads(banners[0].partition("; config ")[2])
    else:
        (banner,) = (d for d in _json_lines(err) if d["event"].startswith("replay starting"))
        assert banner["command"] == "replay"
        config = banner["config"]
    assert set(config) == set(load_settings(None, env={}).__dataclass_fields__)
    assert config["redis"]["password"] == MASK
    assert config["metrics"]["password"] == MASK
    assert config["kafka"]["sasl_password"] == MASK
    assert config["kafka"]["ssl_key_password"] == MASK
    assert config["kafka"]["sasl_username"] == "pulse"  # not a secret: shown
    assert config["dlq"]["encrypt"] is True


def test_banner_masks_the_password_in_the_redis_url(capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings(None, env={"PULSE_REDIS_URL": "redis://pulse:canary-url-c0ffee@127.0.0.1:6379/0"})
    logs.configure("json")
    logs.banner(LOG, "run", settings)
    err = capsys.readouterr().err
    assert "canary-url-c0ffee" not in err
    (doc,) = _json_lines(err)
    assert doc["config"]["redis"]["url"] == f"redis://pulse:{MASK}@127.0.0.1:6379/0"
    assert doc["config"]["redis"]["password"] == ""  # unset secrets read empty


@pytest.mark.parametrize("how", ["option", "environment"])
def test_replay_end_to_end_every_stderr_line_is_json(how: str, events: Path, tmp_path: Path) -> None:
    args = ["--log-format", "json"] if how == "option" else []
    env = {**os.environ, **CANARIES, **COMPANIONS}
    env.pop("PULSE_LOG_LEVEL", None)
    env["PULSE_LOG_FORMAT"] = "json" if how == "environment" else "text"  # the option wins over it
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", "replay", str(events), "--out", str(tmp_path / "out"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    docs = _json_lines(result.stderr)
    for doc in docs:
        _assert_envelope(doc)
    for secret in CANARIES.values():
        assert secret not in result.stderr
    banner, summary = docs[0], docs[-1]
    assert banner["event"].startswith("replay starting")
    assert banner["config"]["redis"]["password"] == MASK
    written = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert {k: summary[k] for k in ("events_in", "applied", "rejected", "users")} == {
        k: written[k] for k in ("events_in", "applied", "rejected", "users")
    }
    assert result.stdout == ""  # stdout stays for a command's own output
