"""TLS, SASL and Redis ACL settings: where secrets may come from, what reaches the clients, what never shows.
(Against real servers: tests/integration/test_secure.py.)"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import redis

from engine.config import ConfigError, KafkaSettings, RedisSettings, load_settings
from engine.sinks import connect_redis, redis_access_refused

SASL_SSL = {
    "PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "PULSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "PULSE_KAFKA_SASL_USERNAME": "pulse",
}


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pulse.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[kafka]\nsasl_password = 'x'\n", "[kafka] sasl_password is a secret"),
        ("[kafka]\nssl_key_password = 'x'\n", "[kafka] ssl_key_password is a secret"),
        ("[redis]\npassword = 'x'\n", "[redis] password is a secret"),
        ("[redis]\nurl = 'rediss://pulse:hunter2@redis.internal:6380/0'\n", "[redis] url holds a password"),
        ("[redis]\nurl = 'redis://:hunter2@127.0.0.1:6379/0'\n", "[redis] url holds a password"),
    ],
)
def test_a_secret_in_the_config_file_is_refused(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(_toml(tmp_path, toml), env={})
    assert message in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_secrets_come_from_the_environment_or_from_files(tmp_path: Path) -> None:
    (tmp_path / "sasl").write_text("from-a-file\n", encoding="utf-8")  # the newline is not part of it
    (tmp_path / "redis").write_text("redis-secret", encoding="utf-8")
    config = _toml(
        tmp_path,
        f"""
[kafka]
security_protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "pulse"
sasl_password_file = "{tmp_path / "sasl"}"
[redis]
url = "rediss://redis.internal:6380/0"
username = "pulse"
password_file = "{tmp_path / "redis"}"
""",
    )
    settings = load_settings(config, env={})
    assert settings.kafka.sasl_password == "from-a-file"
    assert settings.redis.password == "redis-secret"
    from_env = load_settings(None, env={**SASL_SSL, "PULSE_KAFKA_SASL_PASSWORD": "from-env"})
    assert from_env.kafka.sasl_password == "from-env"
    with pytest.raises(ConfigError, match="set twice"):
        load_settings(config, env={"PULSE_KAFKA_SASL_PASSWORD": "from-env"})
    with pytest.raises(ConfigError, match=r"sasl_password_file: cannot read .*missing"):
        load_settings(None, env={**SASL_SSL, "PULSE_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is empty"):
        load_settings(None, env={"PULSE_REDIS_PASSWORD_FILE": str(tmp_path / "empty")})
    # The environment is where a URL with a password may come from (as before); not twice, though.
    url = "rediss://pulse:from-url@redis.internal:6380/0"
    assert load_settings(None, env={"PULSE_REDIS_URL": url}).redis.url == url
    with pytest.raises(ConfigError, match=r"both in PULSE_REDIS_URL and as redis\.password"):
        load_settings(None, env={"PULSE_REDIS_URL": url, "PULSE_REDIS_PASSWORD": "x"})


def test_secrets_never_show_in_a_repr(tmp_path: Path) -> None:
    env = {
        **SASL_SSL,
        "PULSE_KAFKA_SASL_PASSWORD": "kafka-secret",
        "PULSE_KAFKA_SSL_CERTIFICATE_LOCATION": "/etc/pulse/client.pem",
        "PULSE_KAFKA_SSL_KEY_LOCATION": "/etc/pulse/client.key",
        "PULSE_KAFKA_SSL_KEY_PASSWORD": "key-secret",
        "PULSE_REDIS_URL": "rediss://pulse:url-secret@redis.internal:6380/0",
    }
    shown = repr(load_settings(None, env=env))
    assert "pulse" in shown  # the repr is there, only the secrets are not
    for secret in ("kafka-secret", "key-secret", "url-secret"):
        assert secret not in shown


def test_tls_and_sasl_reach_librdkafka_under_its_names() -> None:
    kafka = KafkaSettings(
        bootstrap_servers="kafka.internal:9094",
        security_protocol="SASL_SSL",
        ssl_ca_location="/etc/pulse/ca.pem",
        ssl_certificate_location="/etc/pulse/client.pem",
        ssl_key_location="/etc/pulse/client.key",
        ssl_key_password="key-secret",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="pulse",
        sasl_password="kafka-secret",
    )
    expected = {
        "bootstrap.servers": "kafka.internal:9094",
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": "/etc/pulse/ca.pem",
        "ssl.certificate.location": "/etc/pulse/client.pem",
        "ssl.key.location": "/etc/pulse/client.key",
        "ssl.key.password": "key-secret",
        "ssl.endpoint.identification.algorithm": "https",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "pulse",
        "sasl.password": "kafka-secret",
    }
    assert kafka.client_config() == expected
    for config in (kafka.consumer_config(), kafka.producer_config()):
        assert {k: config[k] for k in expected} == expected
    # Plain text stays exactly as it was.
    assert KafkaSettings().client_config() == {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "PLAINTEXT"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PULSE_KAFKA_SSL_CA_LOCATION": "/ca.pem"}, "ssl_ca_location is set but security_protocol is PLAINTEXT"),
        ({"PULSE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "security_protocol must be"),
        (
            {"PULSE_KAFKA_SECURITY_PROTOCOL": "SSL", "PULSE_KAFKA_SSL_CERTIFICATE_LOCATION": "/c.pem"},
            "go together",
        ),
        ({"PULSE_KAFKA_SECURITY_PROTOCOL": "SSL", "PULSE_KAFKA_SSL_ENDPOINT_IDENTIFICATION": "off"}, "https or none"),
        ({"PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "PULSE_KAFKA_SASL_PASSWORD": "x"}, "needs sasl_mechanism"),
        (SASL_SSL, "needs sasl_username and a password"),
        (
            {**SASL_SSL, "PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "PULSE_KAFKA_SASL_MECHANISM": "PLAIN"},
            "with SASL_SSL only",
        ),
        ({"PULSE_KAFKA_SASL_USERNAME": "pulse"}, "SASL settings are set but security_protocol is PLAINTEXT"),
        ({"PULSE_REDIS_SSL_CA_CERTS": "/ca.pem"}, "url is not rediss://"),
        ({"PULSE_REDIS_USERNAME": "pulse"}, "needs PULSE_REDIS_PASSWORD"),
    ],
)
def test_contradictory_security_settings_fail_at_load(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, env=env)


def test_a_rediss_url_gets_the_ca_client_certificate_and_acl_login() -> None:
    settings = RedisSettings(
        url="rediss://redis.internal:6380/0",
        ssl_ca_certs="/etc/pulse/ca.pem",
        ssl_certfile="/etc/pulse/client.pem",
        ssl_keyfile="/etc/pulse/client.key",
        username="pulse",
        password="redis-secret",
    )
    client = connect_redis(settings)  # builds the pool; connects on first use only
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class is redis.SSLConnection
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_certfile"], kwargs["ssl_keyfile"]) == (
        "/etc/pulse/ca.pem",
        "/etc/pulse/client.pem",
        "/etc/pulse/client.key",
    )
    assert (kwargs["username"], kwargs["password"]) == ("pulse", "redis-secret")
    assert kwargs["ssl_cert_reqs"] == "required"
    plain = connect_redis(RedisSettings()).connection_pool.connection_kwargs
    assert "ssl_ca_certs" not in plain
    assert plain.get("password") is None


def test_a_refusal_is_told_apart_from_an_outage() -> None:
    assert redis_access_refused(redis.AuthenticationError("invalid username-password pair"))
    # redis-py raises its ConnectionError while handling the ssl error, which so becomes its context.
    untrusted = redis.ConnectionError("Error 1 connecting to 127.0.0.1:6380. certificate verify failed")
    untrusted.__context__ = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert redis_access_refused(untrusted)
    assert not redis_access_refused(redis.ConnectionError("Connection refused"))
    assert not redis_access_refused(redis.TimeoutError("Timeout reading from socket"))
