"""Deterministic synthetic SaaS product event stream (personas, accounts, bad lines) for demo, tests and benchmarks."""

from __future__ import annotations

import gzip
import random
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import accumulate
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "EXPERIMENT",
    "FEATURES",
    "MALFORMED_KINDS",
    "MAX_REORDER_MS",
    "PERSONAS",
    "STICKY_FEATURES",
    "GeneratorConfig",
    "fast_events",
    "generate",
    "persona_of",
    "write_jsonl",
]

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
# Late arrivals and duplicates never land further than this behind the newest event already emitted,
# so a consumer with a 30 min allowed lateness sees every valid line.
MAX_REORDER_MS = 30 * MINUTE_MS
_LATE_SHARE = 0.01
_EPOCH_MS_SHARE = 0.10
_TRIAL_DAYS = 14

FEATURES: tuple[str, ...] = (
    "dashboards", "reports", "alerts", "integrations", "api_keys", "sso",
    "exports", "workflows", "comments", "search", "mobile", "billing",
)  # fmt: skip
# Key features that make users stay: the regular personas wire them up more often than churners and sporadic
# users do, and trial users who have them convert more, so the drivers report shows their lift.
STICKY_FEATURES: tuple[str, ...] = ("integrations", "workflows")
_EVERYDAY_FEATURES: tuple[str, ...] = ("dashboards", "reports", "alerts", "exports")  # key, but not sticky
PERSONAS: tuple[str, ...] = ("daily", "weekly", "sporadic", "churner", "returner", "new_trial", "power")
# new_trial: prospects arriving during the window (visitors; most sign up for a trial, some never do).
_PERSONA_WEIGHTS: tuple[float, ...] = (0.22, 0.22, 0.16, 0.10, 0.10, 0.10, 0.10)
# The A/B test shown at sign-up: (experiment, variants); bucketed by a hash of the user id, as SDKs do.
EXPERIMENT: tuple[str, tuple[str, ...]] = ("onboarding_checklist", ("control", "checklist"))
_MARKETING_PAGES: tuple[str, ...] = ("/", "/pricing", "/features", "/customers", "/blog", "/docs", "/security")
_REFERRERS: tuple[str, ...] = ("search", "search", "ads", "social", "direct", "partner")
_SEVERITIES: tuple[str, ...] = ("low", "normal", "high", "urgent")
_PLANS: tuple[tuple[str, float], ...] = (
    ("starter", 49.0), ("team", 199.0), ("business", 599.0), ("enterprise", 1999.0),
)  # fmt: skip
_CANCEL_REASONS: tuple[str, ...] = (
    "too_expensive", "missing_features", "switched_competitor", "not_using", "business_closed", "support_experience",
)  # fmt: skip
# Valid events whose type the engine does not know; it must count them as "other", not reject them. (Real
# experiment_exposed events, with properties.experiment and .variant, come at sign-up: see _trial_user.)
_UNKNOWN_TYPES: tuple[str, ...] = ("feature_flag_evaluated", "webhook_delivered", "email_opened")
_ENDPOINTS: tuple[str, ...] = ("/v1/events", "/v1/reports", "/v1/users", "/v1/exports", "/v1/alerts")
_DEVICES: tuple[str, ...] = ("web", "web", "web", "desktop", "ios", "android")
# Repeated entries weight the draw toward European and US business regions.
_TZ_MINUTES: tuple[int, ...] = (0, 0, 60, 60, 120, -300, -300, -360, -480, 330, 540, -180)
_FIRST: tuple[str, ...] = (
    "Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam",
    "Maya", "Nils", "Olga", "Priya", "Quinn", "Rosa", "Sami", "Tara", "Uma", "Viktor", "Wen", "Yusuf",
)  # fmt: skip
_LAST: tuple[str, ...] = (
    "Almeida", "Brandt", "Chen", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito", "Jensen",
    "Kowalski", "Lopez", "Moreau", "Nakamura", "Okafor", "Petrov", "Rossi", "Schmidt", "Tanaka", "Weber",
)  # fmt: skip
_COMPANIES: tuple[str, ...] = (
    "acme", "globex", "initech", "umbrella", "hooli", "vandelay", "wonka", "cyberdyne", "soylent",
    "tyrell", "aperture", "piedpiper", "massive", "oscorp", "wayne", "stark",
)  # fmt: skip
_IP_NETS: tuple[str, ...] = ("192.0.2", "198.51.100", "203.0.113")  # RFC 5737 documentation ranges

Props = dict[str, object]
# (ts_ms, tz_minutes, user_id, account_id, type, feature, properties): tuples keep the hot path cheap.
_Raw = tuple[int, int, str, str | None, str, str | None, Props | None]


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    users: int = 300
    accounts: int = 40
    days: int = 60
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
    seed: int = 7
    malformed_rate: float = 0.002  # share of lines that are deliberately bad
    duplicate_rate: float = 0.003  # share of events re-sent with the same event_id

    def __post_init__(self) -> None:
        if self.users < 1 or self.accounts < 1 or self.days < 1:
            raise ValueError("users, accounts and days must be >= 1")
        if not (0.0 <= self.malformed_rate < 1.0 and 0.0 <= self.duplicate_rate < 1.0):
            raise ValueError("malformed_rate and duplicate_rate must be in [0, 1)")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")


@dataclass(frozen=True, slots=True)
class _Account:
    account_id: str
    tz: int
    plan: str
    mrr: float
    domain: str
    trial: bool
    fade_day: int | None  # most seats go quiet from this day on


@dataclass(frozen=True, slots=True)
class _User:
    user_id: str
    persona: str
    account_id: str | None
    tz: int
    name: str
    email: str
    phone: str
    ip: str
    features: tuple[str, ...]
    quiet_from: int | None = None  # member of a fading account
    erase_day: int | None = None


class _Stream:
    """Mutable simulation state threaded through the builders: clock helpers, counters, raw events."""

    __slots__ = ("_accounts", "_tickets", "days", "events", "rng", "start_ms", "weekday0")

    def __init__(self, rng: random.Random, config: GeneratorConfig) -> None:
        self.rng = rng
        self.start_ms = int(config.start.timestamp() * 1000)
        self.days = config.days
        self.weekday0 = config.start.weekday()
        self.events: list[_Raw] = []
        self._tickets = 0
        self._accounts = config.accounts

    def at(self, day: int, tz: int, hour: float) -> int:
        """Epoch ms of `hour` local time on simulation day `day` for a user at offset `tz` minutes."""
        return self.start_ms + day * DAY_MS - tz * MINUTE_MS + int(hour * HOUR_MS)

    def weekend(self, day: int) -> bool:
        return (self.weekday0 + day) % 7 >= 5

    def next_ticket(self) -> str:
        self._tickets += 1
        return f"T{self._tickets:05d}"

    def next_account(self) -> str:
        self._accounts += 1
        return f"a{self._accounts:03d}"

    def emit(self, who: _User, ts: int, kind: str, feature: str | None = None, props: Props | None = None) -> None:
        self.events.append((ts, who.tz, who.user_id, who.account_id, kind, feature, props))


def persona_of(user_id: str) -> str:
    """The persona a generated user_id was made with ("u0042-weekly" -> "weekly")."""
    _, _, persona = user_id.partition("-")
    if persona not in PERSONAS:
        raise ValueError(f"not a generated user id: {user_id!r}")
    return persona


# ---------------------------------------------------------------- world


def _persona_list(rng: random.Random, n: int) -> list[str]:
    # Largest-remainder counts instead of independent draws: every persona shows up once n >= 7,
    # and shares are exact, which keeps small test configs representative.
    quotas = [w * n for w in _PERSONA_WEIGHTS]
    counts = [int(q) for q in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: (counts[i] - quotas[i], i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    out = [p for p, c in zip(PERSONAS, counts, strict=True) for _ in range(c)]
    rng.shuffle(out)
    return out


def _build_accounts(rng: random.Random, n: int, days: int) -> list[_Account]:
    fading = set(rng.sample(range(n), max(1, round(n * 0.1)))) if n >= 3 else set()
    out = []
    for i in range(n):
        plan, mrr = _PLANS[min(int(rng.random() ** 1.5 * len(_PLANS)), len(_PLANS) - 1)]
        fade = rng.randint(int(days * 0.35), max(int(days * 0.35), int(days * 0.65))) if i in fading else None
        out.append(
            _Account(
                account_id=f"a{i + 1:03d}",
                tz=rng.choice(_TZ_MINUTES),
                plan=plan,
                mrr=mrr,
                domain=f"{_COMPANIES[i % len(_COMPANIES)]}-{i + 1}.example",
                trial=rng.random() < 0.2,
                fade_day=fade,
            )
        )
    return out


def _make_user(rng: random.Random, idx: int, persona: str, account: _Account | None, adopt: random.Random) -> _User:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    domain = account.domain if account else rng.choice(("mail.example", "inbox.example", "post.example"))
    tz = account.tz if account and rng.random() < 0.9 else rng.choice(_TZ_MINUTES)
    wide = persona == "power"
    quiet = account.fade_day if account and account.fade_day is not None and rng.random() < 0.75 else None
    return _User(
        user_id=f"u{idx:04d}-{persona}",
        persona=persona,
        account_id=account.account_id if account else None,
        tz=tz,
        name=f"{first} {last}",
        email=f"{first}.{last}{idx}@{domain}".lower(),
        phone=f"+1-{rng.randint(201, 989)}-555-01{rng.randint(0, 99):02d}",
        ip=f"{rng.choice(_IP_NETS)}.{rng.randint(1, 254)}",
        features=_adopted(adopt, persona, rng.sample(FEATURES, rng.randint(9, 12) if wide else rng.randint(3, 5))),
        quiet_from=quiet,
    )


def _adopted(rng: random.Random, persona: str, features: list[str]) -> tuple[str, ...]:
    """The features a user will use: churners and sporadic users rarely get as far as the sticky ones, the
    regular personas often add one (trial users' adoption depends on their onboarding, see _trial_user)."""
    if persona in ("churner", "sporadic"):
        if rng.random() < 0.85:
            # Swapped for everyday key features: as broad an adoption (and score), only not the sticky kind.
            kept = [f for f in features if f not in STICKY_FEATURES]
            missing = len(features) - len(kept)
            everyday = [f for f in _EVERYDAY_FEATURES if f not in kept]
            others = [f for f in FEATURES if f not in STICKY_FEATURES and f not in kept and f not in everyday]
            swapped = rng.sample(everyday, min(missing, len(everyday)))
            features = kept + swapped + rng.sample(others, missing - len(swapped))
    elif persona in ("daily", "weekly", "returner") and not set(features) & set(STICKY_FEATURES):
        if rng.random() < 0.6:
            features = [*features, rng.choice(STICKY_FEATURES)]
    return tuple(features)


def _build_users(rng: random.Random, config: GeneratorConfig, accounts: Sequence[_Account]) -> list[_User]:
    users: list[_User] = []
    placed = 0
    # Feature adoption draws from its own generator, so the world (accounts, members, their subscription
    # events) is the same as before adoption was skewed by persona.
    adopt = random.Random(f"adoption-{config.seed}")
    for idx, persona in enumerate(_persona_list(rng, config.users), start=1):
        account = None
        if persona != "new_trial":
            # Round-robin first so no account is empty, then skew toward low indices for a few big accounts.
            pick = placed if placed < len(accounts) else int(rng.random() ** 2 * len(accounts))
            account = accounts[pick]
            placed += 1
        users.append(_make_user(rng, idx, persona, account, adopt))
    return _mark_erasures(rng, users, config.days)


def _mark_erasures(rng: random.Random, users: list[_User], days: int) -> list[_User]:
    candidates = [i for i, u in enumerate(users) if u.persona != "new_trial"]
    count = min(len(candidates), max(1, len(users) // 150)) if len(users) >= 20 and days >= 4 else 0
    for i in rng.sample(candidates, count):
        users[i] = replace(users[i], erase_day=rng.randint(days // 2, days - 2))
    return users


# ---------------------------------------------------------------- activity


def _business_hour(rng: random.Random) -> float:
    # Mostly office hours peaking late morning, with a tail of evening sessions.
    return rng.triangular(8.0, 18.0, 10.5) if rng.random() < 0.9 else rng.uniform(18.0, 22.5)


def _activity(rng: random.Random, user: _User) -> tuple[str, str | None, Props | None]:
    r = rng.random()
    api_share = 0.2 if user.persona == "power" else 0.03
    if r < 0.001:
        return rng.choice(_UNKNOWN_TYPES), None, {"source": "sdk"}
    if r < 0.003:
        item, amount = rng.choice((("extra_seats", 49.0), ("storage_pack", 19.0), ("premium_support", 299.0)))
        return "purchase", None, {"item": item, "amount": amount, "currency": "USD"}
    if r < 0.003 + api_share:
        status = 200 if rng.random() < 0.97 else rng.choice((429, 500))
        return "api_call", None, {"endpoint": rng.choice(_ENDPOINTS), "status": status}
    if r < 0.55:
        return "feature_used", rng.choice(user.features), None
    return "page_view", None, {"path": "/" + rng.choice(user.features)}


# (sessions lo, hi, events per session lo, hi)
_SHAPE: dict[str, tuple[int, int, int, int]] = {
    "daily": (1, 2, 2, 6),
    "weekly": (1, 2, 3, 7),
    "sporadic": (1, 1, 2, 5),
    "churner": (1, 2, 2, 5),
    "returner": (1, 2, 2, 6),
    "new_trial": (1, 2, 3, 7),
    "power": (1, 3, 4, 9),
}


# Share of sessions closed by an explicit session_end (logout, tab closed); the others just stop and the
# engine infers their end from the 30 min gap.
_END_SHARE = 0.6
# Share of a day's later sessions that resume an open tab: no session_start, only the gap separates them.
_RESUMED_SHARE = 0.25
_END_TRIGGERS: tuple[str, ...] = ("logout", "tab_closed", "tab_closed", "app_backgrounded")


def _session(st: _Stream, user: _User, day: int, not_before: int = 0) -> int:
    rng = st.rng
    s_lo, s_hi, e_lo, e_hi = _SHAPE[user.persona]
    ts = max(st.at(day, user.tz, _business_hour(rng)), not_before)
    for n in range(rng.randint(s_lo, s_hi)):
        if n == 0 or rng.random() >= _RESUMED_SHARE:
            props: Props = {"ip": user.ip, "device": rng.choice(_DEVICES)}
            if rng.random() < 0.2:
                props["email"] = user.email
            st.emit(user, ts, "session_start", None, props)
        for _ in range(rng.randint(e_lo, e_hi)):
            ts += 1000 + int(rng.expovariate(1 / 40_000))
            kind, feature, eprops = _activity(rng, user)
            st.emit(user, ts, kind, feature, eprops)
        if rng.random() < _END_SHARE:
            # Reading the last screen before leaving: the explicit end lengthens the session.
            ts += rng.randint(5_000, 10 * MINUTE_MS)
            st.emit(user, ts, "session_end", None, {"trigger": rng.choice(_END_TRIGGERS)})
        # Always more than the 30 min session gap, so a resumed session is a new one without its start.
        ts += int(rng.uniform(0.6, 3.0) * HOUR_MS)
    return ts


def _visit(st: _Stream, user: _User, day: int, signal: str | None = None) -> int:
    """A prospect on the marketing site: a short session of page views, maybe ending in a newsletter
    subscription or a demo request (`signal`). Returns the time of the last event."""
    rng = st.rng
    ts = st.at(day, user.tz, _business_hour(rng))
    st.emit(
        user,
        ts,
        "session_start",
        None,
        {"ip": user.ip, "device": rng.choice(_DEVICES), "referrer": rng.choice(_REFERRERS)},
    )
    for _ in range(rng.randint(1, 5)):
        ts += 2000 + int(rng.expovariate(1 / 50_000))
        st.emit(user, ts, "page_view", None, {"path": rng.choice(_MARKETING_PAGES)})
    if signal == "newsletter_subscribed":
        ts += rng.randint(5_000, 60_000)
        st.emit(user, ts, signal, None, {"email": user.email, "list": rng.choice(("product_updates", "blog"))})
    elif signal == "demo_requested":
        ts += rng.randint(30_000, 180_000)
        props: Props = {"email": user.email, "name": user.name, "company_size": rng.choice(("1-10", "11-50", "51-200"))}
        st.emit(user, ts, signal, None, props)
    if rng.random() < 0.4:
        ts += rng.randint(5_000, 3 * MINUTE_MS)
        st.emit(user, ts, "session_end", None, {"trigger": "tab_closed"})
    return ts


def _weekdays(st: _Stream, p_weekday: float, p_weekend: float) -> list[int]:
    rng = st.rng
    return [d for d in range(st.days) if rng.random() < (p_weekend if st.weekend(d) else p_weekday)]


def _days_weekly(st: _Stream) -> list[int]:
    dow = st.rng.randrange(5)
    return [d for d in range(st.days) if (st.weekday0 + d) % 7 == dow and st.rng.random() < 0.9]


def _days_sporadic(st: _Stream) -> list[int]:
    out: list[int] = []
    day = st.rng.randrange(14)
    while day < st.days:
        out.append(day)
        day += st.rng.randint(14, 42)
    return out


def _days_returner(st: _Stream) -> list[int]:
    gap_start = st.rng.randint(7, max(7, st.days - 28))
    gap_end = gap_start + st.rng.randint(14, 21)
    return [d for d in _weekdays(st, 0.6, 0.05) if not gap_start <= d < gap_end]


_ACTIVE_DAYS: dict[str, Callable[[_Stream], list[int]]] = {
    "daily": lambda st: _weekdays(st, 0.8, 0.08),
    "power": lambda st: _weekdays(st, 0.95, 0.35),
    "churner": lambda st: _weekdays(st, 0.8, 0.08),
    "weekly": _days_weekly,
    "sporadic": _days_sporadic,
    "returner": _days_returner,
}
_NPS_RANGE: dict[str, tuple[int, int]] = {
    "daily": (8, 10), "power": (8, 10), "weekly": (6, 9), "sporadic": (3, 8),
    "returner": (5, 9), "new_trial": (6, 10), "churner": (0, 6),
}  # fmt: skip


def _nps(st: _Stream, user: _User, day: int) -> None:
    lo, hi = _NPS_RANGE[user.persona]
    score = st.rng.randint(lo, hi)
    props: Props = {"score": score}
    if st.rng.random() < 0.3:
        props["comment"] = "love it" if score >= 9 else ("ok" if score >= 7 else "too slow and buggy")
    st.emit(user, st.at(day, user.tz, _business_hour(st.rng)), "nps_response", None, props)


def _ticket(st: _Stream, user: _User, day: int, severity: str) -> None:
    rng = st.rng
    ts = st.at(day, user.tz, _business_hour(rng))
    ticket = st.next_ticket()
    subject = rng.choice(("login issue", "export failed", "billing question", "slow dashboard", "sso setup"))
    st.emit(
        user,
        ts,
        "support_ticket_opened",
        None,
        {"ticket_id": ticket, "severity": severity, "subject": subject},
    )
    if rng.random() < 0.85:
        st.emit(
            user,
            ts + rng.randint(HOUR_MS, 72 * HOUR_MS),
            "support_ticket_resolved",
            None,
            {"ticket_id": ticket},
        )


def _random_severity(rng: random.Random) -> str:
    return rng.choices(_SEVERITIES, weights=(0.40, 0.45, 0.12, 0.03))[0]


def _regular_user(st: _Stream, user: _User) -> None:
    rng = st.rng
    days = _ACTIVE_DAYS[user.persona](st)
    churn_day = None
    if user.persona == "churner":
        churn_day = rng.randint(int(st.days * 0.3), max(int(st.days * 0.3), int(st.days * 0.7)))
        # Activity thins out in the last week before the user disappears.
        days = [d for d in days if d < churn_day - 7 or (d < churn_day and rng.random() < 0.5)]
    for day in days:
        _session(st, user, day)
        if rng.random() < 0.012:
            _ticket(st, user, day, _random_severity(rng))
    if days and user.persona != "churner" and rng.random() < 0.6:
        _nps(st, user, rng.choice(days))
    if churn_day is not None:
        _churn(st, user, churn_day)


def _churn(st: _Stream, user: _User, churn_day: int) -> None:
    rng = st.rng
    window = range(max(0, churn_day - 10), max(1, churn_day))
    if rng.random() < 0.7:
        _nps(st, user, rng.choice(window))
    for _ in range(rng.randint(0, 2)):
        _ticket(st, user, rng.choice(window), "urgent" if rng.random() < 0.7 else "high")
    if user.account_id is None or rng.random() >= 0.4:
        return
    reason = rng.choice(_CANCEL_REASONS)
    ts = st.at(max(0, churn_day - rng.randint(0, 2)), user.tz, _business_hour(rng))
    st.emit(user, ts, "cancellation_requested", None, {"reason": reason})
    regrettable = reason not in ("not_using", "business_closed") and rng.random() < 0.7
    ts += rng.randint(1, 7) * DAY_MS
    st.emit(user, ts, "subscription_cancelled", None, {"reason": reason, "regrettable": regrettable})


_NEVER_SIGN_UP = 0.2  # share of prospects who browse (maybe subscribe or ask for a demo) and never sign up


def _prospect_visits(st: _Stream, user: _User, signup: int) -> None:
    """The marketing-site visits of a prospect in the days before `signup`: the newsletter subscription at the
    first visit, a demo request at the last one. Prospects who never sign up stop there (or come back once)."""
    rng = st.rng
    first = max(0, signup - rng.randint(1, 10))
    r = rng.random()
    signal = "newsletter_subscribed" if r < 0.35 else "demo_requested" if r < 0.65 else None
    days = sorted({first, *rng.sample(range(first, signup), min(signup - first, rng.randint(0, 2)))})
    days = [d for d in days if d < signup]
    at = -1 if not days else days[0] if signal == "newsletter_subscribed" else days[-1]
    for day in days:
        _visit(st, user, day, signal if day == at else None)


def _trial_user(st: _Stream, user: _User) -> None:
    rng = st.rng
    signup = rng.randint(int(st.days * 0.15), max(int(st.days * 0.15), int(st.days * 0.75)))
    _prospect_visits(st, user, signup)
    if rng.random() < _NEVER_SIGN_UP:
        if rng.random() < 0.35:  # one more look at the site, weeks later
            _visit(st, user, signup + rng.randint(0, 21), "newsletter_subscribed" if rng.random() < 0.3 else None)
        return
    ts = st.at(signup, user.tz, _business_hour(rng))
    pii: Props = {"email": user.email, "name": user.name, "phone": user.phone, "ip": user.ip}
    st.emit(user, ts, "signed_up", None, {**pii, "source": rng.choice(("organic", "ads", "referral", "partner"))})
    experiment, variants = EXPERIMENT
    variant = variants[zlib.crc32(user.user_id.encode()) % len(variants)]
    exposure: Props = {"experiment": experiment, "variant": variant, "surface": "onboarding"}
    st.emit(user, ts + 1000, "experiment_exposed", None, exposure)
    st.emit(user, ts + 90_000, "trial_started", None, {"plan": "team", "trial_days": _TRIAL_DAYS})
    if variant == "checklist":
        # The checklist walks them through connecting an integration and building a dashboard.
        guided = tuple(f for f in ("integrations", "dashboards") if f not in user.features)
        user = replace(user, features=user.features + guided)
    trial_end = signup + _TRIAL_DAYS
    for day in range(signup, min(trial_end, st.days)):
        if rng.random() < (0.15 if st.weekend(day) else 0.65):
            _session(st, user, day, not_before=ts + 2 * MINUTE_MS)  # the product only after signing up
    # Trials that wired up an integration convert more, and the checklist gets more of them there.
    p_convert = 0.25 + (0.25 if variant == "checklist" else 0.0) + (0.1 if "integrations" in user.features else 0.0)
    if rng.random() < p_convert:
        _convert(st, user, trial_end)
    else:
        for day in range(trial_end, min(trial_end + 7, st.days)):
            if rng.random() < 0.15:
                _session(st, user, day)


def _convert(st: _Stream, user: _User, day: int) -> None:
    rng = st.rng
    paid = replace(user, account_id=st.next_account())
    plan, mrr = rng.choice(_PLANS[:3])
    ts = st.at(day, user.tz, _business_hour(rng))
    st.emit(paid, ts, "subscribed", None, {"plan": plan, "mrr": mrr, "seats": 1})
    st.emit(paid, ts + MINUTE_MS, "seat_added", None, {"added_by": paid.user_id})
    for d in range(day, st.days):
        if rng.random() < (0.08 if st.weekend(d) else 0.7):
            _session(st, paid, d)
    if rng.random() < 0.5:
        _nps(st, paid, rng.randint(day, day + 10))


def _simulate_user(st: _Stream, user: _User) -> None:
    first = len(st.events)
    if user.persona == "new_trial":
        _trial_user(st, user)
    else:
        _regular_user(st, user)
    cutoff = None
    if user.quiet_from is not None:
        cutoff = st.at(user.quiet_from, user.tz, 0.0)
    if user.erase_day is not None:
        erase_ts = st.at(user.erase_day, user.tz, _business_hour(st.rng))
        cutoff = erase_ts if cutoff is None else min(cutoff, erase_ts)
        st.emit(user, erase_ts, "erasure_requested", None, {"email": user.email, "channel": "privacy_form"})
    if cutoff is not None:
        # Trim after generation so quiet/erased users keep identical earlier history regardless of cutoff.
        st.events[first:] = [e for e in st.events[first:] if e[0] <= cutoff]


# ---------------------------------------------------------------- accounts


def _account_start(st: _Stream, acct: _Account, admin: _User, seats: int) -> int:
    rng = st.rng
    ts = st.at(rng.randint(0, 1), acct.tz, _business_hour(rng))
    sub: Props = {"plan": acct.plan, "mrr": acct.mrr, "seats": seats}
    if not acct.trial:
        st.emit(admin, ts, "subscribed", None, sub)
    else:
        st.emit(admin, ts, "trial_started", None, {"plan": acct.plan, "trial_days": _TRIAL_DAYS})
        if rng.random() < 0.75:
            st.emit(admin, ts + _TRIAL_DAYS * DAY_MS, "subscribed", None, sub)
    return ts


def _account_changes(st: _Stream, acct: _Account, members: Sequence[_User]) -> None:
    rng, admin = st.rng, members[0]
    if len(members) > 1 and rng.random() < 0.25:
        new_admin = members[rng.randrange(1, len(members))]
        props: Props = {"previous_admin": admin.user_id, "new_admin": new_admin.user_id}
        st.emit(admin, st.at(rng.randrange(st.days), acct.tz, _business_hour(rng)), "admin_changed", None, props)
    if rng.random() < 0.15:
        idx = next(i for i, (p, _) in enumerate(_PLANS) if p == acct.plan)
        up = idx == 0 or (idx < len(_PLANS) - 1 and rng.random() < 0.6)
        plan, mrr = _PLANS[idx + 1 if up else idx - 1]
        props = {"direction": "up" if up else "down", "plan": plan, "mrr": mrr}
        st.emit(admin, st.at(rng.randrange(st.days), acct.tz, _business_hour(rng)), "plan_changed", None, props)
    if rng.random() < 0.06 and st.days > 25:
        day = rng.randrange(3, st.days - 22)
        st.emit(
            admin,
            st.at(day, acct.tz, _business_hour(rng)),
            "subscription_paused",
            None,
            {"reason": "seasonal"},
        )
        back = day + rng.randint(7, 21)
        st.emit(admin, st.at(back, acct.tz, _business_hour(rng)), "subscription_resumed", None, None)


def _simulate_account(st: _Stream, acct: _Account, members: Sequence[_User]) -> None:
    rng, admin = st.rng, members[0]
    start_ts = _account_start(st, acct, admin, len(members))
    for member in members:
        st.emit(
            member,
            start_ts + rng.randint(MINUTE_MS, 3 * DAY_MS),
            "seat_added",
            None,
            {"added_by": admin.user_id},
        )
    _account_changes(st, acct, members)
    for member in members:
        if member.quiet_from is not None and rng.random() < 0.6:
            ts = st.at(member.quiet_from + rng.randint(3, 14), acct.tz, _business_hour(rng))
            st.emit(member, ts, "seat_removed", None, {"removed_by": admin.user_id, "reason": "inactive"})


# ---------------------------------------------------------------- output


@cache
def _offset_suffix(tz: int) -> str:
    if tz == 0:
        return "Z"
    sign = "+" if tz > 0 else "-"
    hours, minutes = divmod(abs(tz), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


_NAIVE_EPOCH = datetime(1970, 1, 1)


def _format_ts(ts_ms: int, tz: int) -> str:
    local = _NAIVE_EPOCH + timedelta(milliseconds=ts_ms + tz * MINUTE_MS)
    return local.isoformat(timespec="milliseconds") + _offset_suffix(tz)


def _render(event_id: str, raw: _Raw, epoch_ms: bool) -> bytes:
    ts, tz, user_id, account_id, kind, feature, props = raw
    doc = {
        "event_id": event_id,
        "user_id": user_id,
        "account_id": account_id,
        "type": kind,
        "ts": ts if epoch_ms else _format_ts(ts, tz),
        "feature": feature,
        "properties": props,
    }
    return orjson.dumps(doc)


def _simulate(rng: random.Random, config: GeneratorConfig) -> list[_Raw]:
    st = _Stream(rng, config)
    accounts = _build_accounts(rng, config.accounts, config.days)
    users = _build_users(rng, config, accounts)
    for acct in accounts:
        members = [u for u in users if u.account_id == acct.account_id]
        if members:
            _simulate_account(st, acct, members)
    for user in users:
        _simulate_user(st, user)
    end_ms = st.start_ms + config.days * DAY_MS
    events = [e for e in st.events if st.start_ms <= e[0] < end_ms]
    events.sort(key=itemgetter(0))  # stable: ties keep generation order, so output stays deterministic
    return events


def _arrival_order(rng: random.Random, raws: Sequence[_Raw], lines: Sequence[bytes], dup_rate: float) -> list[bytes]:
    # Arrival key >= event time and <= event time + MAX_REORDER_MS; sorting by it bounds every
    # line's lag behind the newest event before it by MAX_REORDER_MS.
    keyed = [(raw[0], i, line) for i, (raw, line) in enumerate(zip(raws, lines, strict=True))]
    for i in range(len(keyed)):
        if rng.random() < _LATE_SHARE:
            keyed[i] = (keyed[i][0] + rng.randint(1000, MAX_REORDER_MS), i, keyed[i][2])
    originals = list(keyed)
    for j, i in enumerate(sorted(rng.sample(range(len(raws)), round(len(raws) * dup_rate)))):
        key = min(originals[i][0] + rng.randint(1000, MAX_REORDER_MS), raws[i][0] + MAX_REORDER_MS)
        keyed.append((key, len(raws) + j, originals[i][2]))  # order > i: a duplicate follows its original
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [line for _, _, line in keyed]


MALFORMED_KINDS: tuple[str, ...] = (
    "not_json", "truncated", "array", "missing_user_id", "ts_bool", "user_id_number", "nps_11",
    "bad_severity", "empty_event_id", "long_id", "feb_30", "year_99999", "bad_utf8",
)  # fmt: skip
_YEAR_99999_MS = 3_093_527_980_800_000  # 99999-01-01T00:00:00Z: parseable int, impossible date


def _malformed(kind: str, n: int, prefix: str, near: bytes) -> bytes:
    if kind == "not_json":
        return (b"GET /healthz HTTP/1.1 200", b"not json at all", b"<html>oops</html>")[n % 3]
    if kind == "truncated":
        return near[: len(near) // 2]
    if kind == "array":
        return b"[" + near + b"]"
    doc = orjson.loads(near)
    doc["event_id"] = f"{prefix}x{n:06d}"  # never collides with a valid id
    if kind == "bad_utf8":
        return b"\xff\xfe" + orjson.dumps(doc)[:-1] + b',"note":"\xc3\x28"}'
    _break(kind, doc)
    return orjson.dumps(doc)


def _break(kind: str, doc: dict[str, object]) -> None:
    if kind == "missing_user_id":
        del doc["user_id"]
    elif kind == "ts_bool":
        doc["ts"] = True
    elif kind == "user_id_number":
        doc["user_id"] = 4242
    elif kind == "nps_11":
        doc.update(type="nps_response", feature=None, properties={"score": 11})
    elif kind == "bad_severity":
        doc.update(
            type="support_ticket_opened",
            feature=None,
            properties={"ticket_id": "T99999", "severity": "blocker"},
        )
    elif kind == "empty_event_id":
        doc["event_id"] = ""
    elif kind == "long_id":
        doc["event_id"] = "e" * 300
    elif kind == "feb_30":
        doc["ts"] = "2026-02-30T10:00:00Z"
    elif kind == "year_99999":
        doc["ts"] = _YEAR_99999_MS


def _with_malformed(rng: random.Random, lines: list[bytes], rate: float, prefix: str) -> Iterator[bytes]:
    if not lines:
        return
    bad = round(len(lines) * rate / (1.0 - rate))  # so bad / (good + bad) ~= rate
    kinds = [MALFORMED_KINDS[i % len(MALFORMED_KINDS)] for i in range(bad)]
    rng.shuffle(kinds)
    total = len(lines) + bad
    positions = sorted(rng.sample(range(total), bad))
    good = iter(lines)
    last = lines[0]
    cursor = 0
    for n, pos in enumerate(positions):
        for _ in range(pos - cursor):
            last = next(good)
            yield last
        yield _malformed(kinds[n], n, prefix, last)
        cursor = pos + 1
    yield from good


def generate(config: GeneratorConfig) -> Iterator[bytes]:
    """Yield one JSON document per event (bytes, no trailing newline), sorted by event time
    except for the deliberate duplicates/malformed lines and a small bounded reordering (<= 30 min)."""
    rng = random.Random(config.seed)
    prefix = f"e{rng.getrandbits(16):04x}-"
    raws = _simulate(rng, config)
    # One draw per event in a fixed order keeps the epoch-ms mix deterministic.
    lines = [_render(f"{prefix}{i:08d}", raw, rng.random() < _EPOCH_MS_SHARE) for i, raw in enumerate(raws)]
    ordered = _arrival_order(rng, raws, lines, config.duplicate_rate)
    yield from _with_malformed(rng, ordered, config.malformed_rate, prefix)


def write_jsonl(path: Path, config: GeneratorConfig) -> int:
    """Write the stream as JSON lines (gzip if the name ends in .gz); return the number of lines."""
    count = 0
    with path.open("wb") as raw:
        # mtime=0 and no embedded filename keep .gz output byte-identical across runs.
        out = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if path.suffix == ".gz" else raw
        try:
            for line in generate(config):
                out.write(line + b"\n")
                count += 1
        finally:
            if out is not raw:
                out.close()
    return count


# ---------------------------------------------------------------- benchmark feed

_FastEntry = tuple[bytes, bytes, int]  # (type, tail after ts, ticket mode: 0 none / 1 open / 2 resolve)


def _fast_table(rng: random.Random) -> list[_FastEntry]:
    table: list[_FastEntry] = []
    for _ in range(15):
        table.append((b"session_start", b',"feature":null,"properties":{"device":"web","ip":"192.0.2.10"}}', 0))
    for i in range(40):
        path = FEATURES[i % len(FEATURES)].encode()
        table.append((b"page_view", b',"feature":null,"properties":{"path":"/' + path + b'"}}', 0))
    for i in range(38):
        table.append(
            (
                b"feature_used",
                b',"feature":"' + FEATURES[i % len(FEATURES)].encode() + b'","properties":null}',
                0,
            )
        )
    for _ in range(3):
        table.append((b"api_call", b',"feature":null,"properties":{"endpoint":"/v1/events","status":200}}', 0))
    for score in (3, 9, 10):
        table.append((b"nps_response", b',"feature":null,"properties":{"score":%d}}' % score, 0))
    table.append(
        (
            b"support_ticket_opened",
            b',"feature":null,"properties":{"ticket_id":"F%07d","severity":"normal"}}',
            1,
        )
    )
    table.append((b"support_ticket_resolved", b',"feature":null,"properties":{"ticket_id":"F%07d"}}', 2))
    rng.shuffle(table)
    return table


def _fast_ts(ts: int, epoch: bool) -> bytes:
    if epoch:
        return b"%d" % ts
    day, ms = divmod(ts, DAY_MS)
    secs, milli = divmod(ms, 1000)
    mins, sec = divmod(secs, 60)
    hour, minute = divmod(mins, 60)
    return b'"%s%02d:%02d:%02d.%03dZ"' % (_fast_day(day), hour, minute, sec, milli)


@cache
def _fast_day(day: int) -> bytes:
    return (_NAIVE_EPOCH + timedelta(days=day)).strftime("%Y-%m-%dT").encode()


def fast_events(n: int, users: int, seed: int) -> Iterator[bytes]:
    """Yield `n` simple valid events over `users` users with increasing timestamps, built from templates."""
    if users < 1:
        raise ValueError("users must be >= 1")
    rng = random.Random(seed)
    prefix = b"f%04x-" % rng.getrandbits(16)
    heads = [
        b'","user_id":"u%04d-%s","account_id":"a%03d","type":"' % (i + 1, PERSONAS[i % 7].encode(), i // 8 + 1)
        for i in range(users)
    ]
    table = _fast_table(rng)
    size = len(table)
    ts = int(datetime(2026, 1, 5, 8, tzinfo=UTC).timestamp() * 1000)
    open_tickets: list[int] = []
    rand = rng.random
    for seq in range(n):
        ts += 1 + int(rand() * 400)
        kind, tail, mode = table[int(rand() * size)]
        if mode:
            tail, kind = _fast_ticket(mode, tail, kind, seq, open_tickets)
        head = heads[int(rand() * users)]
        yield b'{"event_id":"%s%09d%s%s","ts":%s%s' % (
            prefix,
            seq,
            head,
            kind,
            _fast_ts(ts, rand() < 0.1),
            tail,
        )


def _fast_ticket(mode: int, tail: bytes, kind: bytes, seq: int, open_tickets: list[int]) -> tuple[bytes, bytes]:
    if mode == 1:
        open_tickets.append(seq)
        return tail % seq, kind
    if open_tickets:
        return tail % open_tickets.pop(0), kind
    # Nothing to resolve yet: a plain page view keeps the count exact and every event valid.
    return b',"feature":null,"properties":{"path":"/support"}}', b"page_view"


_SESSION_RARE: tuple[_FastEntry, ...] = (
    (b"nps_response", b',"feature":null,"properties":{"score":3}}', 0),
    (b"nps_response", b',"feature":null,"properties":{"score":9}}', 0),
    (b"support_ticket_opened", b',"feature":null,"properties":{"ticket_id":"F%07d","severity":"high"}}', 1),
    (b"support_ticket_resolved", b',"feature":null,"properties":{"ticket_id":"F%07d"}}', 2),
    (b"trial_started", b',"feature":null,"properties":{"plan":"pro"}}', 0),
    (b"subscribed", b',"feature":null,"properties":{"plan":"pro","mrr":99}}', 0),
)


def session_events(n: int, users: int, seed: int, zipf: float = 1.0, concurrent: int = 256) -> Iterator[bytes]:
    """Yield `n` valid events shaped like product analytics streams: users' activity Zipf-skewed (user i
    starts sessions with weight 1/(i+1)^zipf), events in sessions of 3-60 within minutes (a
    session_start, then page views and feature uses), about 1% NPS answers, ticket events and subscription
    changes. `concurrent` sessions interleave; timestamps increase; the same seed gives the same stream."""
    if users < 1:
        raise ValueError("users must be >= 1")
    rng = random.Random(seed)
    rand = rng.random
    prefix = b"s%04x-" % rng.getrandbits(16)
    heads = [b'","user_id":"u%06d","account_id":"a%05d","type":"' % (i + 1, i // 8 + 1) for i in range(users)]
    weights = list(accumulate(1.0 / (i + 1) ** zipf for i in range(users)))
    total = weights[-1]
    features = [f.encode() for f in FEATURES]
    views = [b',"feature":null,"properties":{"path":"/' + f + b'"}}' for f in features]
    uses = [b',"feature":"' + f + b'","properties":null}' for f in features]
    start_tail = b',"feature":null,"properties":{"device":"web"}}'
    ts = int(datetime(2026, 1, 5, 8, tzinfo=UTC).timestamp() * 1000)
    open_tickets: list[int] = []
    # Each open session: [user head, events left]; a finished one is replaced by a new user's session.
    sessions: list[list[Any]] = []
    for seq in range(n):
        ts += 1 + int(rand() * 40)
        if len(sessions) < concurrent:
            user = min(bisect_left(weights, rand() * total), users - 1)
            sessions.append([heads[user], 3 + int(rand() * 58)])
            index = len(sessions) - 1
            kind, tail = b"session_start", start_tail
        else:
            index = int(rand() * len(sessions))
            roll = rand()
            if roll < 0.01:
                kind, tail, mode = _SESSION_RARE[int(rand() * len(_SESSION_RARE))]
                if mode:
                    tail, kind = _fast_ticket(mode, tail, kind, seq, open_tickets)
            elif roll < 0.56:
                kind, tail = b"page_view", views[int(rand() * len(views))]
            else:
                kind, tail = b"feature_used", uses[int(rand() * len(uses))]
        session = sessions[index]
        yield b'{"event_id":"%s%09d%s%s","ts":%s%s' % (prefix, seq, session[0], kind, _fast_ts(ts, False), tail)
        session[1] -= 1
        if session[1] <= 0:
            sessions[index] = sessions[-1]
            sessions.pop()
