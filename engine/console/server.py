"""`pulse console`: the app under uvicorn, on a socket bound here so a port in use is a one-line error and
`--port 0` prints the port the system chose. SIGTERM and SIGINT stop it cleanly (exit 0).

Redis is not required at start: the console starts anyway, logs a warning, and its pages answer 503
"Redis unreachable" until Redis is back (each request tries again)."""

from __future__ import annotations

import dataclasses
import logging
import signal
import socket

import redis
import uvicorn

from engine import logs
from engine.config import Settings
from engine.console.app import check_access, create_app
from engine.sinks import connect_redis

log = logging.getLogger("pulse.console")


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)  # before the URL is printed: a client that reads it can connect at once
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def run_console(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    """Serve until SIGTERM or SIGINT; the exit code. Raises ConfigError (exit 2) for a console bound beyond
    loopback without a login, and OSError for an address that cannot be bound."""
    console = settings.console
    console = dataclasses.replace(console, host=console.host if host is None else host)
    console = dataclasses.replace(console, port=console.port if port is None else port)
    settings = dataclasses.replace(settings, console=console)
    check_access(console)
    client = connect_redis(settings.redis)
    try:
        client.ping()
    except redis.RedisError as exc:
        logs.warning(
            log,
            f"console: Redis unreachable at start ({type(exc).__name__}: {exc}); pages answer 503 until it is back",
        )
    app = create_app(settings, client)
    sock = _bind(console.host, console.port)
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", server_header=False, proxy_headers=False
    )
    server = uvicorn.Server(config)
    url = url_of(sock)
    logs.info(log, f"console: serving on {url} (Redis prefix {settings.redis.key_prefix!r})", url=url)
    # uvicorn re-raises the signal that stopped it once it has shut down; a no-op handler makes that a clean
    # return instead of a death by SIGTERM or a KeyboardInterrupt.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        client.close()
    logs.info(log, "console: stopped")
    return 0
