"""Business-wide figures from every user shard: the journey funnel by cohort day (and by experiment
variant), and what drives retention. User shards send the items below; one insights shard folds them in
event-time order.

Definitions (README, "Insights"):

* Funnel: a user *entered* a stage on the UTC day of the JourneyStep into it (its cohort day); a later step
  whose `previous` is that stage *converts* them, counted in the cohort of `previous_ts`, after
  `ts - previous_ts`. Users are counted once per stage and cohort day.
* A user's life starts on their first active day f. The *early window* is days f..f+22, the *retention
  window* days f+23..f+30: a user is *retained* when active on at least one day of it. A drivers report for
  day D (computed when event time reaches D) counts the users with f <= D - 31, whose retention window
  ended before D.
* Drivers: a feature or signal is compared between the users who have it (in the early window) and those who
  do not, only when both groups hold at least MIN_GROUP users: retention of each group with its 95% Wilson
  interval, and the lift (retention with / retention without).
* next_step of a lapse or churn-risk alert: the key feature the user has not used with the best lift above 1
  in the latest report, among the figures of the user's own account when that account has at least
  MIN_ACCOUNT_USERS eligible users, else among the global figures; None when no feature qualifies.
"""

from __future__ import annotations

import heapq
import math
from bisect import insort
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import TYPE_CHECKING, Any

from operators.state import DAY_MS, UserState
from schemas.codec import dumps, format_ts, loads
from schemas.events import Category, Event
from schemas.outputs import OutputKind, Record, record_id

if TYPE_CHECKING:
    from operators.shard import ShardConfig

INSIGHTS_KEY = "insights"
# A user's facts cover days 0..FACT_DAYS-1 of their life (day 0: their first active day).
FACT_DAYS = 31
EARLY_DAYS = 23  # the early window: days 0..22, before the retention window
RETENTION_DAYS = (23, 30)  # the retention window: active on at least one of days 23..30
FACT_MASK = (1 << FACT_DAYS) - 1
EARLY_MASK = (1 << EARLY_DAYS) - 1
RETENTION_MASK = FACT_MASK & ~EARLY_MASK
MIN_GROUP = 30  # both groups of a comparison need this many users
MIN_ACCOUNT_USERS = 60  # an account's own figures drive its next_step from this many eligible users
FREQUENT_DAYS = 3  # the frequency signal: at least 3 active days in the early window
ADOPTED_FEATURES = 2  # the adoption signal: at least 2 key features used in the early window
COMMERCIAL_STAGES = frozenset({"trial", "paying"})
SIGNALS = ("frequency", "adoption", "support", "commercial")
NPS_SEGMENTS = ("promoter", "passive", "detractor")
Z95 = 1.959963984540054
# The placeholder next_step a user shard writes into an alert that the insights stage completes.
DRAFT = "__insights__"
Variants = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class JourneyStep:
    """A user entered a journey stage (user shard → insights): what the funnel counts."""

    user_id: str
    stage: str
    ts: int  # when the user entered `stage` (event time, epoch ms)
    previous: str | None  # the stage the user left by entering this one; None for the first stage
    previous_ts: int  # when the user had entered `previous`; -1 when `previous` is None
    # The (experiment, variant) pairs the user had been exposed to by `ts`, sorted: the A/B split.
    variants: tuple[tuple[str, str], ...]
    seq: int  # the user's events applied so far: orders two steps with the same ts
    cause: str  # the event id that caused the step


@dataclass(frozen=True, slots=True)
class UserFacts:
    """What the drivers report needs of one user, absolute (user shard → insights; the latest one wins)."""

    user_id: str
    account_id: str | None
    ts: int
    seq: int
    first_active_day: int  # epoch day (UTC), -1 before any activity
    active_bits: int  # bit i: active on first_active_day + i, for i < FACT_DAYS
    features: tuple[str, ...]  # key features used in the early window
    signals: tuple[str, ...]  # the SIGNALS the user shows in the early window
    nps: str  # promoter | passive | detractor | "" (no answer)
    erased: bool = False

    @property
    def retained(self) -> bool:
        return bool(self.active_bits & RETENTION_MASK)


@dataclass(frozen=True, slots=True)
class AlertDraft:
    """An alert on its way through the insights stage, which keeps every user's alerts in event-time order
    and fills in next_step where `used` is set."""

    user_id: str
    account_id: str | None
    ts: int
    seq: int  # the user's events applied when the alert was made (-1 when unknown): orders same-ts alerts
    kind: str
    status: str
    alert_id: str
    value: bytes  # the alert as written, with next_step null when it is to be filled in
    used: tuple[str, ...] | None  # key features the user had used; None: nothing to fill in


Item = JourneyStep | UserFacts | AlertDraft


@dataclass(frozen=True, slots=True)
class ShardFrontier:
    """Live: the event time up to which a user shard has fired its timers (its inputs' low watermark minus
    the lateness). What the user shards send later is at or after it (bar late events), so the insights
    shard releases its held items up to the slowest user shard's frontier: the order a replay applies."""

    shard: str
    ts: int


def nps_segment(score: int) -> str:
    """promoter 9-10, passive 7-8, detractor 0-6; "" without an answer (-1)."""
    if score < 0:
        return ""
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


# --- the user shard's side ----------------------------------------------------------------------------------


def tracks(user: UserState | None, event: Event) -> bool:
    """Whether an event may change the user's facts: only in the first FACT_DAYS days of their life, or an
    NPS answer (erasure is handled by the shard)."""
    if user is None or user.first_active_day < 0 or event.category is Category.SENTIMENT:
        return True
    return event.ts // DAY_MS < user.first_active_day + FACT_DAYS


def describe(user: UserState, key_features: Sequence[str]) -> tuple[Any, ...]:
    """The content of the user's facts (what is compared to tell whether they changed)."""
    first = user.first_active_day
    bits = (user.day_bits >> max(first - user.day_base, 0)) & FACT_MASK if first >= 0 else 0
    used = user.features
    features = tuple(sorted(f for f in key_features if f in used))
    signals = []
    if (bits & EARLY_MASK).bit_count() >= FREQUENT_DAYS:
        signals.append("frequency")
    if len(features) >= ADOPTED_FEATURES:
        signals.append("adoption")
    if user.tickets:
        signals.append("support")
    if user.commercial in COMMERCIAL_STAGES:
        signals.append("commercial")
    return (user.account_id, first, bits, features, tuple(signals), nps_segment(user.nps_score))


def facts_if_changed(
    user_id: str, user: UserState, ts: int, before: tuple[Any, ...], key_features: Sequence[str]
) -> UserFacts | None:
    after = describe(user, key_features)
    if after == before:
        return None
    return UserFacts(user_id, after[0], ts, sum(user.counts), *after[1:])


def erased_facts(user_id: str, ts: int, seq: int) -> UserFacts:
    return UserFacts(user_id, None, ts, seq, -1, 0, (), (), "", erased=True)


def draft_marker(user: UserState, key_features: Sequence[str]) -> dict[str, Any]:
    """What a user shard writes as next_step: the user's used key features, for the insights stage."""
    used = user.features
    return {"action": DRAFT, "used": sorted(f for f in key_features if f in used), "seq": sum(user.counts)}


def draft(record: Record) -> AlertDraft:
    """An alert record of a user shard as a draft for the insights stage (the marker taken out)."""
    doc = loads(record.value)
    step = doc.get("next_step")
    value, used, seq = record.value, None, -1
    if isinstance(step, dict) and step.get("action") == DRAFT:
        used, seq = tuple(step["used"]), int(step["seq"])
        doc["next_step"] = None
        value = dumps(doc)
    return AlertDraft(
        record.key, doc.get("account_id"), record.ts, seq, str(doc["kind"]), str(doc["status"]),
        str(doc["alert_id"]), value, used,
    )  # fmt: skip


# --- statistics ---------------------------------------------------------------------------------------------


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def _group(retained: int, n: int) -> dict[str, Any]:
    low, high = wilson(retained, n)
    return {
        "users": n,
        "retained": retained,
        "retention": round(retained / n, 4) if n else None,
        "ci95": [round(low, 4), round(high, 4)],
    }


def compare(
    name: str, users: Iterable[UserFacts], has: Callable[[UserFacts], bool]
) -> tuple[dict[str, Any], float | None] | None:
    """Retention of the users who have something vs those who do not; None unless both groups hold at least
    MIN_GROUP users. Returns the report row and the lift (None when nobody without it was retained)."""
    n = [0, 0]
    kept = [0, 0]
    for user in users:
        side = 1 if has(user) else 0
        n[side] += 1
        if user.retained:
            kept[side] += 1
    if n[0] < MIN_GROUP or n[1] < MIN_GROUP:
        return None
    rate_with, rate_without = kept[1] / n[1], kept[0] / n[0]
    lift = rate_with / rate_without if rate_without > 0 else None
    row = {
        "name": name,
        "with": _group(kept[1], n[1]),
        "without": _group(kept[0], n[0]),
        "lift": None if lift is None else round(lift, 4),
    }
    return row, lift


def feature_lifts(
    users: Sequence[UserFacts], key_features: Sequence[str]
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    rows: list[dict[str, Any]] = []
    lifts: dict[str, float] = {}
    for feature in key_features:
        result = compare(feature, users, lambda u, f=feature: f in u.features)  # type: ignore[misc]
        if result is not None:
            rows.append(result[0])
            if result[1] is not None:
                lifts[feature] = result[1]
    return rows, lifts


def drivers_report(
    day: int, facts: Iterable[UserFacts], key_features: Sequence[str]
) -> tuple[dict[str, Any], dict[str, float], dict[str, dict[str, float]]]:
    """The report for day `day` (epoch day), the global lifts of key features, and each account's own where
    it has at least MIN_ACCOUNT_USERS eligible users."""
    eligible = sorted(
        (f for f in facts if not f.erased and 0 <= f.first_active_day <= day - FACT_DAYS),
        key=lambda f: f.user_id,
    )
    rows, lifts = feature_lifts(eligible, key_features)
    signals = [r[0] for s in SIGNALS if (r := compare(s, eligible, lambda u, s=s: s in u.signals)) is not None]  # type: ignore[misc]
    nps = [r[0] for s in NPS_SEGMENTS if (r := compare(s, eligible, lambda u, s=s: u.nps == s)) is not None]  # type: ignore[misc]
    by_account: dict[str, list[UserFacts]] = {}
    for user in eligible:
        if user.account_id is not None:
            by_account.setdefault(user.account_id, []).append(user)
    accounts = {
        account: feature_lifts(members, key_features)[1]
        for account, members in sorted(by_account.items())
        if len(members) >= MIN_ACCOUNT_USERS
    }
    retained = sum(1 for u in eligible if u.retained)
    doc = {
        "kind": "drivers",
        "record_id": record_id("drivers", day),
        "report_day": format_ts(day * DAY_MS)[:10],
        "as_of": format_ts(day * DAY_MS),
        "retention": {
            "definition": "active on at least one day of days 23-30 after the first active day (day 0)",
            "window_days": list(RETENTION_DAYS),
            "early_window_days": [0, EARLY_DAYS - 1],
            "eligible": f"first active day at least {FACT_DAYS} days before the report day",
            "min_group": MIN_GROUP,
        },
        "eligible_users": len(eligible),
        "retained_users": retained,
        "retention_rate": round(retained / len(eligible), 4) if eligible else None,
        "features": rows,
        "signals": signals,
        "nps": nps,
        "accounts_with_own_figures": len(accounts),
    }
    return doc, lifts, accounts


def choose_next_step(
    used: Iterable[str],
    account_id: str | None,
    key_features: Sequence[str],
    global_lifts: dict[str, float],
    account_lifts: dict[str, dict[str, float]],
) -> dict[str, Any] | None:
    """The unused key feature with the best lift above 1: the account's own figures when it has enough
    eligible users (account_lifts holds exactly those), else the global ones. Ties: the feature name."""
    if account_id is not None and account_id in account_lifts:
        lifts, scope = account_lifts[account_id], "account"
    else:
        lifts, scope = global_lifts, "global"
    taken = set(used)
    candidates = [(-lifts[f], f) for f in key_features if f not in taken and f in lifts and lifts[f] > 1.0]
    if not candidates:
        return None
    lift, feature = min(candidates)
    return {"action": "adopt_feature", "feature": feature, "lift": round(-lift, 4), "scope": scope}


# --- the funnel ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Figures:
    entered: int = 0
    converted: int = 0
    durations: list[int] = field(default_factory=list)  # ms from entering to converting, sorted

    def render(self) -> dict[str, Any]:
        return {
            "entered": self.entered,
            "converted": self.converted,
            "conversion_rate": round(self.converted / self.entered, 4) if self.entered else None,
            "median_seconds_to_convert": round(median(self.durations) / 1000, 3) if self.durations else None,
        }

    def add(self, other: Figures) -> None:
        self.entered += other.entered
        self.converted += other.converted
        self.durations = sorted(self.durations + other.durations)


@dataclass(slots=True)
class Cohort:
    """The users who entered each stage on one UTC day, and which of them converted."""

    day: int
    updated: int = -1  # the latest step time folded in
    # stage -> user -> the variants they had when entering it (what the A/B split of a conversion uses)
    entered: dict[str, dict[str, Variants]] = field(default_factory=dict)
    converted: dict[str, set[str]] = field(default_factory=dict)
    # (stage, experiment, variant) -> figures; ("stage", "", "") is the whole cohort
    figures: dict[tuple[str, str, str], Figures] = field(default_factory=dict)

    def _figures(self, stage: str, variants: Variants) -> Iterable[Figures]:
        for key in ((stage, "", ""), *((stage, e, v) for e, v in variants)):
            figures = self.figures.get(key)
            if figures is None:
                figures = self.figures[key] = Figures()
            yield figures

    def enter(self, stage: str, user_id: str, variants: Variants) -> bool:
        users = self.entered.setdefault(stage, {})
        if user_id in users:
            return False
        users[user_id] = variants
        for figures in self._figures(stage, variants):
            figures.entered += 1
        return True

    def convert(self, stage: str, user_id: str, duration_ms: int) -> bool:
        users = self.converted.setdefault(stage, set())
        if user_id in users:
            return False
        users.add(user_id)
        for figures in self._figures(stage, self.entered.get(stage, {}).get(user_id, ())):
            figures.converted += 1
            insort(figures.durations, duration_ms)
        return True

    def forget(self, user_id: str) -> bool:
        """An erasure: the person's id goes, the counts they are part of stay."""
        found = False
        for users in self.entered.values():
            found = users.pop(user_id, None) is not None or found
        for converted in self.converted.values():
            if user_id in converted:
                converted.discard(user_id)
                found = True
        return found


def render_figures(figures: dict[tuple[str, str, str], Figures]) -> dict[str, Any]:
    stages = {stage: f.render() for (stage, e, _), f in sorted(figures.items()) if not e}
    variants: dict[str, dict[str, dict[str, Any]]] = {}
    for (stage, experiment, variant), f in sorted(figures.items()):
        if experiment:
            variants.setdefault(experiment, {}).setdefault(variant, {})[stage] = f.render()
    return {"stages": stages, "variants": variants}


def render_cohort(cohort: Cohort) -> dict[str, Any]:
    return {
        "kind": "funnel",
        "record_id": record_id("funnel", cohort.day, cohort.updated),
        "cohort_day": format_ts(cohort.day * DAY_MS)[:10],
        "as_of": format_ts(cohort.updated),
        **render_figures(cohort.figures),
    }


def funnel_report(cohorts: Iterable[Cohort]) -> dict[str, Any]:
    """funnel.json: every cohort, and the totals over all of them per stage and per experiment variant."""
    ordered = sorted(cohorts, key=lambda c: c.day)
    totals: dict[tuple[str, str, str], Figures] = {}
    for cohort in ordered:
        for key, figures in cohort.figures.items():
            totals.setdefault(key, Figures()).add(figures)
    return {"cohorts": [render_cohort(c) for c in ordered], "totals": render_figures(totals)}


# --- the insights shard -------------------------------------------------------------------------------------


def _order(item: Item) -> tuple[int, str, int, int, str]:
    """A total order of what one user sends, whatever the arrival order (the user's own seq within a ts)."""
    if isinstance(item, JourneyStep):
        return (item.ts, item.user_id, 0, item.seq, item.stage)
    if isinstance(item, UserFacts):
        return (item.ts, item.user_id, 1, item.seq, "")
    return (item.ts, item.user_id, 2, item.seq, f"{item.kind}|{item.status}|{item.alert_id}")


_NOT_IN_HEADER = frozenset({"facts", "cohorts", "changed", "moved"})


@dataclass(slots=True)
class InsightsShard:
    """The one insights shard: items held and applied in event-time order like AccountShard's updates."""

    facts: dict[str, UserFacts] = field(default_factory=dict)
    cohorts: dict[int, Cohort] = field(default_factory=dict)
    pending: list[tuple[int, str, int, int, str, int, Item]] = field(default_factory=list)
    arrivals: int = 0
    newest: int = -1
    released: int = -1
    day: int = -1  # the UTC day of the latest item applied: a later day's item makes the next report
    report: dict[str, Any] | None = None  # the latest drivers report
    global_lifts: dict[str, float] = field(default_factory=dict)
    account_lifts: dict[str, dict[str, float]] = field(default_factory=dict)
    # Cohort days whose figures changed since the last flush.
    dirty: set[int] = field(default_factory=set)
    # Entries changed since the last snapshot ("u:<user>", "c:<day>"), when ShardConfig.track_changes.
    changed: set[str] = field(default_factory=set)
    # (counter, stage) -> increments not yet added to the Prometheus counters (engine.flow takes them).
    moved: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Live: each user shard's frontier (ShardFrontier): items are released up to the slowest one (and held
    # until the first arrives), never by the newest item, which a fast partition pushes far ahead.
    frontiers: dict[str, int] = field(default_factory=dict)
    # Live: users with an alert held, so a later alert of theirs waits behind it.
    held_alerts: Counter[str] = field(default_factory=Counter)

    def header(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__ if f not in _NOT_IN_HEADER}

    def take_changed(self) -> dict[str, UserFacts | Cohort | None]:
        entries: dict[str, UserFacts | Cohort | None] = {}
        for key in self.changed:
            if key.startswith("u:"):
                entries[key] = self.facts.get(key[2:])
            else:
                entries[key] = self.cohorts.get(int(key[2:]))
        self.changed = set()
        return entries

    def size(self) -> int:
        return len(self.facts) + len(self.cohorts)

    def entries(self) -> dict[str, UserFacts | Cohort]:
        entries: dict[str, UserFacts | Cohort] = {f"u:{k}": v for k, v in self.facts.items()}
        entries.update((f"c:{day}", cohort) for day, cohort in self.cohorts.items())
        return entries

    @classmethod
    def restore(cls, header: dict[str, Any], entries: Iterable[tuple[str, Any]]) -> InsightsShard:
        shard = cls(**header)
        for key, value in entries:
            if key.startswith("u:"):
                shard.facts[key[2:]] = value
            else:
                shard.cohorts[int(key[2:])] = value
        return shard

    def take_moved(self) -> Counter[tuple[str, str]]:
        moved, self.moved = self.moved, Counter()
        return moved

    def process(self, items: Iterable[Item | ShardFrontier], config: ShardConfig) -> list[Any]:
        outputs: list[Any] = []
        reorder = config.account_reorder_ms
        for item in items:
            if isinstance(item, ShardFrontier):
                if item.ts > self.frontiers.get(item.shard, -1):
                    self.frontiers[item.shard] = item.ts
                    self._release(min(self.frontiers.values()), config, outputs)
                continue
            if item.ts > self.newest:
                self.newest = item.ts
            if config.live_profiles and config.insights:
                self._hold_live(item, config, outputs)
            elif reorder <= 0 or item.ts <= self.released:
                self._apply(item, config, outputs)
            else:
                self._hold(item)
                self._release(self.newest - reorder, config, outputs)
        return outputs

    def _hold(self, item: Item) -> None:
        self.arrivals += 1
        heapq.heappush(self.pending, (*_order(item), self.arrivals, item))
        if isinstance(item, AlertDraft):
            self.held_alerts[item.user_id] += 1

    def _hold_live(self, item: Item, config: ShardConfig, outputs: list[Any]) -> None:
        """Held until every user shard has passed it. An alert ahead of the frontier (a resolution caused by
        an event) goes out at once unless an earlier alert of the same user is held: nothing waits the
        lateness for it, and the order of a user's alerts is kept."""
        if isinstance(item, AlertDraft) and item.used is None and not self.held_alerts[item.user_id]:
            outputs.append(self._alert(item, config))  # out of order: it must not cut the day's report
        elif item.ts <= self.released:
            self._apply(item, config, outputs)
        else:
            self._hold(item)

    def drain(self, config: ShardConfig) -> list[Any]:
        outputs: list[Any] = []
        self._release(self.newest, config, outputs)
        return outputs

    def _release(self, frontier: int, config: ShardConfig, outputs: list[Any]) -> None:
        pending = self.pending
        while pending and pending[0][0] <= frontier:
            item = heapq.heappop(pending)[6]
            if isinstance(item, AlertDraft):
                self.held_alerts[item.user_id] -= 1
                if not self.held_alerts[item.user_id]:
                    del self.held_alerts[item.user_id]
            self._apply(item, config, outputs)
        if frontier > self.released:
            self.released = frontier

    def _apply(self, item: Item, config: ShardConfig, outputs: list[Any]) -> None:
        day = item.ts // DAY_MS
        if day > self.day:
            if self.day >= 0:
                self._report(day, config, outputs)
            self.day = day
        if isinstance(item, JourneyStep):
            self._step(item, config)
        elif isinstance(item, UserFacts):
            self._facts(item, config)
        else:
            outputs.append(self._alert(item, config))

    def _report(self, day: int, config: ShardConfig, outputs: list[Any]) -> None:
        doc, self.global_lifts, self.account_lifts = drivers_report(day, self.facts.values(), config.model.key_features)
        self.report = doc
        outputs.append(Record(OutputKind.INSIGHTS, doc["report_day"], dumps(doc), day * DAY_MS))

    def _cohort(self, day: int, ts: int, config: ShardConfig) -> Cohort:
        cohort = self.cohorts.get(day)
        if cohort is None:
            cohort = self.cohorts[day] = Cohort(day)
        if ts > cohort.updated:
            cohort.updated = ts
        self.dirty.add(day)
        if config.track_changes:
            self.changed.add(f"c:{day}")
        return cohort

    def _step(self, step: JourneyStep, config: ShardConfig) -> None:
        user_id, ts = step.user_id, step.ts
        if self._cohort(ts // DAY_MS, ts, config).enter(step.stage, user_id, step.variants):
            self.moved["entered", step.stage] += 1
        previous = step.previous
        if previous is None or step.previous_ts < 0:
            return
        cohort = self._cohort(step.previous_ts // DAY_MS, ts, config)
        # An entry not seen (from before the funnel was tracked, say) counts with the conversion.
        if cohort.enter(previous, user_id, step.variants):
            self.moved["entered", previous] += 1
        if cohort.convert(previous, user_id, max(0, ts - step.previous_ts)):
            self.moved["converted", previous] += 1

    def _facts(self, facts: UserFacts, config: ShardConfig) -> None:
        user_id = facts.user_id
        if config.track_changes:
            self.changed.add(f"u:{user_id}")
        if facts.erased:
            self.facts.pop(user_id, None)
            for day, cohort in self.cohorts.items():
                if cohort.forget(user_id) and config.track_changes:
                    self.changed.add(f"c:{day}")
            return
        before = self.facts.get(user_id)
        first = facts.first_active_day
        if (
            before is not None
            and before.first_active_day == first
            and first >= 0
            and facts.ts // DAY_MS >= first + EARLY_DAYS
        ):
            # After the early window what the user did in it is settled: later uses do not count.
            facts = UserFacts(
                user_id, facts.account_id, facts.ts, facts.seq, first, facts.active_bits, before.features,
                before.signals, facts.nps,
            )  # fmt: skip
        self.facts[user_id] = facts

    def _alert(self, alert: AlertDraft, config: ShardConfig) -> Record:
        if alert.used is None:
            return Record(OutputKind.ALERTS, alert.user_id, alert.value, alert.ts)
        doc = loads(alert.value)
        doc["next_step"] = choose_next_step(
            alert.used, alert.account_id, config.model.key_features, self.global_lifts, self.account_lifts
        )
        return Record(OutputKind.ALERTS, alert.user_id, dumps(doc), alert.ts)

    def flush_profiles(self, config: ShardConfig) -> list[Any]:
        """The funnel record of every cohort day whose figures changed, once per flush."""
        if not self.dirty:
            return []
        cohorts = self.cohorts
        records: list[Any] = [
            Record(
                OutputKind.FUNNEL,
                format_ts(day * DAY_MS)[:10],
                dumps(render_cohort(cohorts[day])),
                cohorts[day].updated,
            )
            for day in sorted(self.dirty)
        ]
        self.dirty = set()
        return records
