"""A throwaway public-key infrastructure made with openssl, for tests of TLS connections (Kafka, Redis and
the metrics endpoint) that must not touch any real certificate."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        pytest.fail(f"openssl {' '.join(args[:2])} failed:\n{result.stderr}")


@dataclass(frozen=True)
class Pki:
    """A throwaway CA; a server certificate for 127.0.0.1/localhost and a client certificate signed by it
    (the client key encrypted, its password in a file); and a second CA that signed neither."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_key_password: Path
    other_ca: Path

    @classmethod
    def make(cls, directory: Path) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        pki = cls(*(directory / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key",
                                                  "client-key-password", "other-ca.pem")))  # fmt: skip
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc", "-days", "2")
        for name in ("ca", "other-ca"):
            _openssl("req", "-x509", "-new", *ec, "-keyout", str(directory / f"{name}.key"),
                     "-out", str(directory / f"{name}.pem"), "-subj", f"/CN=Pulse test {name}",
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
        signed_by_ca = ("-CA", str(pki.ca), "-CAkey", str(directory / "ca.key"))
        # The server certificate also allows clientAuth: Redis's readiness check may present it.
        _openssl("req", "-x509", "-new", *ec, *signed_by_ca, "-keyout", str(pki.server_key),
                 "-out", str(pki.server_cert), "-subj", "/CN=localhost",
                 "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                 "-addext", "extendedKeyUsage=serverAuth,clientAuth")  # fmt: skip
        plain_key = directory / "client-plain.key"
        _openssl("req", "-x509", "-new", *ec, *signed_by_ca, "-keyout", str(plain_key),
                 "-out", str(pki.client_cert), "-subj", "/CN=pulse-client",
                 "-addext", "extendedKeyUsage=clientAuth")  # fmt: skip
        pki.client_key_password.write_text(secrets.token_hex(12) + "\n", encoding="utf-8")
        _openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", str(plain_key), "-out", str(pki.client_key),
                 "-passout", f"file:{pki.client_key_password}")  # fmt: skip
        plain_key.unlink()
        return pki
