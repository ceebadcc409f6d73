"""The console's ASGI app: `create_app(settings)` serves server-rendered HTML pages and their JSON twins.

Why server-rendered HTML (Jinja2, inline CSS, charts as inline SVG) and not a single-page app: every page
works without JavaScript (and under a Content-Security-Policy that allows none), each page is one request
that reads Redis in a few bounded round trips, and there is nothing to build, bundle or keep patched: the
templates ship inside the Python package. The JSON API returns the very dicts the pages render.

Access: on a loopback host nobody else can connect, so no login is asked; bound elsewhere the console
refuses to start (`check_access`) unless `[console]` has a password (basic auth, with `username`) or a bearer
token, and then every route but /healthz requires one of them (compared in constant time).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import jinja2
import orjson
import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.config import ConfigError, ConsoleSettings, Settings
from engine.console.charts import score_chart
from engine.console.store import ConsoleStore, Page
from engine.sinks import connect_redis

log = logging.getLogger("pulse.console")
TEMPLATES = Path(__file__).resolve().parent / "templates"
MAX_LIMIT = 1000
T = TypeVar("T")

# Personal data: never cached; no script, frame or foreign resource (the pages need none).
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class ConsoleAccessError(ConfigError):
    """The console would be reachable by others without a login."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_required(console: ConsoleSettings) -> bool:
    return bool(console.password or console.token)


def check_access(console: ConsoleSettings) -> None:
    """Refuse a console bound beyond loopback without a password or token."""
    if not is_loopback(console.host) and not auth_required(console):
        raise ConsoleAccessError(
            f"[console] host {console.host!r} is not loopback: set console.username with PULSE_CONSOLE_PASSWORD "
            "(or password_file), or PULSE_CONSOLE_TOKEN (or token_file), or bind 127.0.0.1"
        )


class Guard:
    """ASGI middleware: the security headers on every response, and the login on every route but /healthz
    when a password or token is configured. Basic auth or `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, console: ConsoleSettings) -> None:
        self.app = app
        self.username = console.username.encode()
        self.password = console.password.encode()
        self.token = console.token.encode()
        self.required = auth_required(console)

    def allowed(self, header: str) -> bool:
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and self.token:
            return hmac.compare_digest(value.encode(), self.token)
        if scheme.lower() == "basic" and self.password:
            try:
                user, colon, password = base64.b64decode(value, validate=True).partition(b":")
            except (binascii.Error, ValueError):
                return False
            # Both compared, whatever the first gives: the time does not tell which one was wrong.
            user_ok = hmac.compare_digest(user, self.username)
            password_ok = hmac.compare_digest(password, self.password)
            return bool(colon) and user_ok and password_ok
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secure(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        if self.required and scope["path"] != "/healthz":
            if not self.allowed(Headers(scope=scope).get("authorization", "")):
                challenge = {"WWW-Authenticate": 'Basic realm="pulse console", charset="UTF-8"'}
                if scope["path"].startswith("/api/"):
                    response: Response = _json({"error": "unauthorized"}, 401, challenge)
                else:
                    response = PlainTextResponse("unauthorized\n", 401, challenge)
                await response(scope, receive, send_secure)
                return
        await self.app(scope, receive, send_secure)


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


NONE = "\u2013"  # an en dash: no value


def _arrow(trend: str | None) -> str:
    return {"up": "▲", "down": "▼", "flat": "▶"}.get(trend or "", NONE)


def _when(value: Any) -> str:
    """2026-03-05T22:21:20.975Z -> 2026-03-05 22:21 UTC (the full time is in the title attribute)."""
    if not isinstance(value, str) or len(value) < 16:
        return NONE if value is None else str(value)
    return f"{value[:10]} {value[11:16]} UTC"


# Internal names (bands, stages, components, alert kinds, reasons) as a CS manager reads them; any other name
# has its underscores turned into spaces. The JSON API keeps the raw names.
LABELS = {"nps": "NPS", "p_alive": "p(alive)", "adopt_feature": "adopt a feature"}


def _label(value: Any) -> str:
    """at_risk -> at risk, cancel_requested -> cancel requested, time_in_product -> time in product."""
    if value is None or value == "":
        return NONE
    text = str(value)
    return LABELS.get(text, text.replace("_", " "))


def _day(value: Any) -> str:
    """2026-03-05T22:21:20.975Z -> 2026-03-05."""
    return value[:10] if isinstance(value, str) and len(value) >= 10 else NONE


def _num(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return NONE
    return f"{value:.{digits}f}"


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True
    )
    env.filters.update(
        arrow=_arrow, when=_when, day=_day, num=_num, label=_label, urlid=lambda v: quote(str(v), safe="")
    )
    return Jinja2Templates(env=env)


def _page(request: Request, page_size: int) -> Page:
    def number(name: str, default: int, low: int, high: int) -> int:
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise HTTPException(400, f"{name} must be an integer") from None
        if not low <= value <= high:
            raise HTTPException(400, f"{name} must be between {low} and {high}")
        return value

    return Page(number("offset", 0, 0, 10**9), number("limit", page_size, 1, max(page_size, MAX_LIMIT)))


def create_app(settings: Settings, client: redis.Redis | None = None, now: Callable[[], float] = time.time) -> ASGIApp:
    """The console for `settings` (Redis connection and key prefix, `[console]`, the score model's key
    features and band thresholds). Raises ConsoleAccessError for a non-loopback host without a login.
    Connects lazily: a Redis that is down gives 503 pages, not a failed start. `now` (seconds since the
    epoch, the wall clock by default) is the time users' days of silence are counted to."""
    console = settings.console
    check_access(console)
    store = ConsoleStore(client if client is not None else connect_redis(settings.redis), settings.redis.key_prefix)
    templates = _templates()
    model = settings.score
    key_features = tuple(model.key_features)
    thresholds = {"at_risk": model.at_risk_enter, "healthy": model.healthy_enter}

    async def read(operation: Callable[..., T], *args: Any) -> T:
        return await run_in_threadpool(operation, *args, now_ms=int(now() * 1000))

    def html(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        return templates.TemplateResponse(request, name, {"prefix": settings.redis.key_prefix, **context}, status)

    def not_found(request: Request, what: str, ident: str) -> Response:
        message = f"no {what} {ident!r}: unknown, or erased"
        if request.url.path.startswith("/api/"):
            return _json({"error": "not_found", what: ident, "message": message}, 404)
        return html(request, "error.html", {"title": "Not found", "message": message}, 404)

    async def at_risk_data(request: Request) -> tuple[dict[str, Any] | None, str | None]:
        account = request.query_params.get("account") or None
        return await read(store.at_risk, _page(request, console.page_size), account), account

    async def at_risk_page(request: Request) -> Response:
        data, account = await at_risk_data(request)
        if data is None:
            return not_found(request, "account", str(account))
        return html(request, "at_risk.html", {"data": data, "title": "At risk now"})

    async def at_risk_api(request: Request) -> Response:
        data, account = await at_risk_data(request)
        return not_found(request, "account", str(account)) if data is None else _json(data)

    async def account_page(request: Request) -> Response:
        account_id = request.path_params["account_id"]
        data = await read(store.account, account_id)
        if data is None:
            return not_found(request, "account", account_id)
        chart = score_chart(data["history"], thresholds["at_risk"], thresholds["healthy"])
        return html(request, "account.html", {"data": data, "chart": chart, "title": f"Account {account_id}"})

    async def account_api(request: Request) -> Response:
        account_id = request.path_params["account_id"]
        data = await read(store.account, account_id)
        return not_found(request, "account", account_id) if data is None else _json(data)

    async def user_page(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        data = await read(store.user, user_id, key_features)
        if data is None:
            return not_found(request, "user", user_id)
        chart = score_chart(data["history"], thresholds["at_risk"], thresholds["healthy"])
        return html(request, "user.html", {"data": data, "chart": chart, "title": f"User {user_id}"})

    async def user_api(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        data = await read(store.user, user_id, key_features)
        return not_found(request, "user", user_id) if data is None else _json(data)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    def failure(request: Request, status: int, error: str, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return _json({"error": error, "message": message}, status)
        return html(request, "error.html", {"title": message, "message": message}, status)

    async def redis_down(request: Request, exc: Exception) -> Response:
        log.warning("console: Redis unreachable: %s: %s", type(exc).__name__, exc)
        return failure(request, 503, "redis_unreachable", "Redis unreachable: the console cannot read profiles now")

    async def redis_login_refused(request: Request, exc: Exception) -> Response:
        log.warning("console: Redis refused the login: %s", exc)
        return failure(request, 503, "redis_login_refused", "Redis refused the console's login ([redis] username)")

    async def redis_error(request: Request, exc: Exception) -> Response:
        log.warning("console: Redis error: %s: %s", type(exc).__name__, exc)
        return failure(request, 503, "redis_error", "Redis refused a read (see the console's log)")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return failure(request, exc.status_code, "bad_request" if exc.status_code == 400 else "error", exc.detail)

    app = Starlette(
        routes=[
            Route("/", at_risk_page),
            Route("/accounts/{account_id:path}", account_page),
            Route("/users/{user_id:path}", user_page),
            Route("/api/at-risk", at_risk_api),
            Route("/api/accounts/{account_id:path}", account_api),
            Route("/api/users/{user_id:path}", user_api),
            Route("/healthz", healthz),
        ],
        exception_handlers={
            redis.AuthenticationError: redis_login_refused,
            redis.ConnectionError: redis_down,
            redis.TimeoutError: redis_down,
            redis.RedisError: redis_error,
            HTTPException: http_error,
        },
    )
    app.state.store = store
    return Guard(app, console)
