"""The health score model: components in 0-1, weighted to 0-100, bands with hysteresis, reasons as deltas."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, fields
from enum import StrEnum

from schemas.codec import dumps

DAY_MS = 86_400_000
COMPONENTS = ("recency", "frequency", "adoption", "sentiment", "support", "commercial", "time_in_product")
ALL_PRESENT = (1 << len(COMPONENTS)) - 1
# Bits of a `present` mask: which components have a signal for a user (adoption always counts).
_RECENCY, _FREQUENCY, _ADOPTION, _SENTIMENT, _SUPPORT, _COMMERCIAL, _TIME = (1 << i for i in range(len(COMPONENTS)))


class Band(StrEnum):
    HEALTHY = "healthy"
    WATCH = "watch"
    AT_RISK = "at_risk"


# How much a subscription stage is worth to health; a churned customer is not healthy however active.
COMMERCIAL_VALUE = {
    "visitor": 0.5,
    "signed_up": 0.6,
    "trial": 0.7,
    "paying": 1.0,
    "paused": 0.4,
    "cancel_requested": 0.15,
    "churned": 0.0,
}


@dataclass(frozen=True, slots=True)
class ScoreModel:
    """Every knob of the score; its hash is the model version stamped on each output."""

    weights: dict[str, float] = field(
        default_factory=lambda: {
            "recency": 0.25,
            "frequency": 0.25,
            "adoption": 0.15,
            "sentiment": 0.15,
            "support": 0.10,
            "commercial": 0.10,
            "time_in_product": 0.05,
        }
    )
    key_features: tuple[str, ...] = ("dashboards", "reports", "alerts", "integrations", "workflows", "exports")
    # Recency halves once a user is silent this many of *their own* expected gaps beyond the first.
    recency_scale: float = 1.0
    # Frequency: active days against what the user's own rhythm predicts, over this many days (or since
    # their first activity, if later), with `frequency_prior` pseudo-days at a share of 1/2.
    frequency_window_days: int = 365
    frequency_prior: float = 1.0
    depth_target: int = 50  # feature uses that count as deep adoption
    nps_half_life_days: float = 90.0
    neutral_sentiment: float = 0.6  # no answer yet, or an old answer decayed away
    support_load_scale: float = 2.0  # severity-weighted open tickets at which support is worth 1/2
    time_half_minutes: float = 120.0  # session minutes in 28 days at which time_in_product is worth 1/2
    healthy_enter: float = 70.0
    healthy_leave: float = 65.0
    at_risk_enter: float = 40.0
    at_risk_leave: float = 45.0
    min_delta: float = 2.0
    # Derived once: each component's share of the 0-100 score, and the version hash.
    _shares: tuple[tuple[float, ...], ...] = field(init=False, compare=False, repr=False, default=())
    _version: str = field(init=False, compare=False, repr=False, default="")

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown score component(s) {sorted(unknown)}; known: {', '.join(COMPONENTS)}")
        weights = list(self.weights.values())
        if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("score weights must be finite, non-negative and not all zero")
        positive = ("recency_scale", "frequency_window_days", "depth_target", "nps_half_life_days",
                    "support_load_scale", "time_half_minutes")  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value}")
        thresholds = (self.at_risk_enter, self.at_risk_leave, self.healthy_leave, self.healthy_enter)
        if not all(math.isfinite(t) for t in thresholds) or list(thresholds) != sorted(thresholds):
            raise ValueError("bands need at_risk_enter <= at_risk_leave <= healthy_leave <= healthy_enter")
        if not math.isfinite(self.min_delta) or self.min_delta < 0 or not 0 <= self.neutral_sentiment <= 1:
            raise ValueError("min_delta must be >= 0 and neutral_sentiment within 0-1")
        if not math.isfinite(self.frequency_prior) or self.frequency_prior < 0:
            raise ValueError(f"frequency_prior must be a non-negative number, got {self.frequency_prior}")
        object.__setattr__(self, "_shares", tuple(self._shares_for(mask) for mask in range(1 << len(COMPONENTS))))
        object.__setattr__(self, "_version", self._hash())

    def _shares_for(self, present: int) -> tuple[float, ...]:
        """Each component's share of the 0-100 score when only the components in `present` (a bit per
        component) have a signal: their weights re-normalised to sum to 1. If none of them has a weight,
        every component keeps its configured share (never a division by zero)."""
        weights = [self.weights.get(name, 0.0) if present >> i & 1 else 0.0 for i, name in enumerate(COMPONENTS)]
        total = sum(weights)
        if total <= 0:
            weights = [self.weights.get(name, 0.0) for name in COMPONENTS]
            total = sum(weights)
        return tuple(100.0 * (w / total) for w in weights)  # w / total first: exact even for tiny weights

    def _hash(self) -> str:
        def canonical(value: object) -> object:
            # Numbers as floats, so 70 and 70.0 (equal models) hash alike.
            if isinstance(value, dict):
                return {k: canonical(v) for k, v in sorted(value.items()) if v != 0}
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            return value

        doc = {f.name: canonical(getattr(self, f.name)) for f in fields(self) if not f.name.startswith("_")}
        return "score-" + hashlib.sha256(dumps(doc)).hexdigest()[:10]

    @property
    def version(self) -> str:
        return self._version

    def shares(self, present: int = ALL_PRESENT) -> tuple[float, ...]:
        """Each component's share of the 0-100 score, in COMPONENTS order, given which have a signal."""
        return self._shares[present]


@dataclass(frozen=True, slots=True)
class Signals:
    """What the score reads from a user's state at one event time."""

    days_since_active: float | None  # None: never active
    # The user's own rhythm: their mean gap between active days, shrunk towards the population prior
    # (LapseModel.expected_gap_days, the same the cadence lapse rule uses), and how many gaps that rests
    # on (observed gaps + the prior's weight): the more, the surer the rhythm.
    expected_gap_days: float
    rhythm_evidence: float
    # Active days in the frequency window, and that window's length in days (0: active today only).
    active_days_window: int
    window_days: int
    key_features_used: int
    feature_uses: int
    nps_score: int | None
    nps_age_days: float
    support_load: float
    commercial: str
    has_tickets: bool = False  # ever had a support ticket
    has_commercial: bool = False  # ever sent a subscription event
    minutes_28: float = 0.0  # session minutes in the 28 complete days before the day of as_of (operators.sessions)
    has_time: bool = False  # ever had a session longer than 0 min

    @property
    def present(self) -> int:
        """Which components have a signal for this user: recency and frequency once they were active,
        sentiment once they answered NPS, support once they had a ticket, commercial once a subscription
        event came, time in product once they had a session longer than 0 min; adoption always (no key
        feature used is a signal). The rest do not dilute the score."""
        mask = _ADOPTION
        if self.days_since_active is not None:
            mask |= _RECENCY | _FREQUENCY
        if self.nps_score is not None:
            mask |= _SENTIMENT
        if self.has_tickets:
            mask |= _SUPPORT
        if self.has_commercial:
            mask |= _COMMERCIAL
        if self.has_time:
            mask |= _TIME
        return mask


def recency_of(model: ScoreModel, days_since_active: float | None, gap: float, evidence: float) -> float:
    """1 while the silence is within the user's own expected gap, then falling with the gaps they are late
    by: (1 + late / (scale * k))^-k with k the gaps their rhythm rests on. That is how likely so long a
    silence is for a user whose rate is only known from k gaps (the negative-binomial predictive): with
    one active day, 1 / (1 + late), gentle; with a long regular history, close to e^-late, sharp. So a
    weekly user quiet for 5 days is as healthy as a daily user active today, a daily user quiet for 5
    days is not, and long silences still rank (no tail collapses to a tie at 0)."""
    if days_since_active is None:
        return 0.0
    late = max(0.0, days_since_active - gap) / (gap * model.recency_scale)
    k = max(evidence, 1e-9)
    return float((1.0 + late / k) ** -k)


def frequency_of(model: ScoreModel, active_days: int, window_days: int, gap: float) -> float:
    """Active days in the window against the 1 + window / gap the user's own rhythm predicts, smoothed
    by `frequency_prior` pseudo-days at 1/2 (a user's first day is promising, not proof), capped at 1."""
    expected = 1.0 + window_days / gap
    prior = model.frequency_prior
    return min(1.0, (active_days + 0.5 * prior) / (expected + prior))


def components(model: ScoreModel, s: Signals) -> tuple[float, ...]:
    """Component values in 0-1, in COMPONENTS order."""
    recency = recency_of(model, s.days_since_active, s.expected_gap_days, s.rhythm_evidence)
    if s.days_since_active is None:
        frequency = 0.0
    else:
        frequency = frequency_of(model, s.active_days_window, s.window_days, s.expected_gap_days)
    breadth = s.key_features_used / len(model.key_features) if model.key_features else 0.0
    adoption = 0.7 * breadth + 0.3 * min(1.0, s.feature_uses / model.depth_target)
    if s.nps_score is None:
        sentiment = model.neutral_sentiment
    else:
        decay = 0.5 ** (s.nps_age_days / model.nps_half_life_days)
        sentiment = model.neutral_sentiment + (s.nps_score / 10.0 - model.neutral_sentiment) * decay
    support = 1.0 / (1.0 + s.support_load / model.support_load_scale)
    commercial = COMMERCIAL_VALUE.get(s.commercial, 0.5)
    time_in_product = s.minutes_28 / (s.minutes_28 + model.time_half_minutes)
    return (recency, frequency, adoption, sentiment, support, commercial, time_in_product)


def contributions(model: ScoreModel, values: tuple[float, ...], present: int = ALL_PRESENT) -> tuple[float, ...]:
    """Points of the 0-100 score per component; a component without a signal contributes nothing and
    the others' weights are re-normalised (ScoreModel._shares_for)."""
    return tuple(share * v for share, v in zip(model._shares[present], values))  # noqa: B905 - both COMPONENTS long


def score_of(contribs: tuple[float, ...]) -> float:
    return round(max(0.0, min(100.0, math.fsum(contribs))), 2)


def next_band(model: ScoreModel, current: Band | None, score: float) -> Band:
    """Separate enter and leave thresholds, so a score hovering at a boundary does not flap."""
    if current is Band.HEALTHY:
        if score >= model.healthy_leave:
            return Band.HEALTHY
        return Band.AT_RISK if score < model.at_risk_enter else Band.WATCH
    if current is Band.AT_RISK:
        if score < model.at_risk_leave:
            return Band.AT_RISK
        return Band.HEALTHY if score >= model.healthy_enter else Band.WATCH
    if score >= model.healthy_enter:
        return Band.HEALTHY
    if score < model.at_risk_enter:
        return Band.AT_RISK
    return Band.WATCH


def renormalisation_shift(
    model: ScoreModel, before: int, after: int, values_before: tuple[float, ...]
) -> tuple[float, ...]:
    """When components gain or lose their signal, the others' weights are re-normalised and their points
    move although their values did not. That move is the doing of the components whose signal changed
    (a first NPS answer, a first ticket): per component, the points to take off a remaining component's
    delta (positive entries) and to give to the changed ones in proportion to their weights (negative
    entries), so reasons name the cause and still add up to the score's change."""
    shift = [0.0] * len(COMPONENTS)
    if before == after or not values_before:
        return tuple(shift)
    old, new = model.shares(before), model.shares(after)
    both, changed = before & after, before ^ after
    moved = 0.0
    for i in range(len(COMPONENTS)):
        if both >> i & 1:
            shift[i] = values_before[i] * (new[i] - old[i])
            moved += shift[i]
    weights = [model.weights.get(name, 0.0) if changed >> i & 1 else 0.0 for i, name in enumerate(COMPONENTS)]
    total = sum(weights)
    if total <= 0:
        return tuple(0.0 for _ in COMPONENTS)
    for i, weight in enumerate(weights):
        if weight:
            shift[i] = -moved * weight / total
    return tuple(shift)


def reasons(
    before: tuple[float, ...] | None,
    after: tuple[float, ...],
    names: tuple[str, ...] = COMPONENTS,
    shift: tuple[float, ...] | None = None,
) -> list[dict[str, object]]:
    """Components whose contribution moved, largest |delta| first (ties by name, for determinism); `shift`
    re-attributes points moved by re-normalisation (renormalisation_shift)."""
    moved = []
    for i, name in enumerate(names):
        delta = after[i] - (before[i] if before is not None else 0.0) - (shift[i] if shift is not None else 0.0)
        if abs(delta) >= 0.005:
            moved.append((-abs(delta), name, delta, after[i]))
    moved.sort()
    return [
        {"component": name, "delta": round(delta, 2), "contribution": round(now, 2)} for _, name, delta, now in moved
    ]
