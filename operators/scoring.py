"""The health score model: components in 0-1, weighted to 0-100, bands with hysteresis, reasons as deltas."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, fields
from enum import StrEnum

from schemas.codec import dumps

DAY_MS = 86_400_000
COMPONENTS = ("recency", "frequency", "adoption", "sentiment", "support", "commercial")


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
        }
    )
    key_features: tuple[str, ...] = ("dashboards", "reports", "alerts", "integrations", "workflows", "exports")
    recency_half_life_days: float = 7.0
    frequency_target_days: int = 12  # active days in 28 that count as fully engaged
    depth_target: int = 50  # feature uses that count as deep adoption
    nps_half_life_days: float = 90.0
    neutral_sentiment: float = 0.6  # no answer yet, or an old answer decayed away
    support_load_scale: float = 2.0  # severity-weighted open tickets at which support is worth 1/2
    healthy_enter: float = 70.0
    healthy_leave: float = 65.0
    at_risk_enter: float = 40.0
    at_risk_leave: float = 45.0
    min_delta: float = 2.0
    # Derived once: each component's share of the 0-100 score, and the version hash.
    _shares: tuple[float, ...] = field(init=False, compare=False, repr=False, default=())
    _version: str = field(init=False, compare=False, repr=False, default="")

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown score component(s) {sorted(unknown)}; known: {', '.join(COMPONENTS)}")
        weights = list(self.weights.values())
        if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("score weights must be finite, non-negative and not all zero")
        positive = ("recency_half_life_days", "frequency_target_days", "depth_target", "nps_half_life_days",
                    "support_load_scale")  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value}")
        thresholds = (self.at_risk_enter, self.at_risk_leave, self.healthy_leave, self.healthy_enter)
        if not all(math.isfinite(t) for t in thresholds) or list(thresholds) != sorted(thresholds):
            raise ValueError("bands need at_risk_enter <= at_risk_leave <= healthy_leave <= healthy_enter")
        if not math.isfinite(self.min_delta) or self.min_delta < 0 or not 0 <= self.neutral_sentiment <= 1:
            raise ValueError("min_delta must be >= 0 and neutral_sentiment within 0-1")
        total = sum(weights)
        shares = tuple(100.0 * self.weights.get(name, 0.0) / total for name in COMPONENTS)
        object.__setattr__(self, "_shares", shares)
        object.__setattr__(self, "_version", self._hash())

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

    def shares(self) -> tuple[float, ...]:
        """Each component's share of the 0-100 score, in COMPONENTS order."""
        return self._shares


@dataclass(frozen=True, slots=True)
class Signals:
    """What the score reads from a user's state at one event time."""

    days_since_active: float | None  # None: never active
    active_days_28: int
    key_features_used: int
    feature_uses: int
    nps_score: int | None
    nps_age_days: float
    support_load: float
    commercial: str


def components(model: ScoreModel, s: Signals) -> tuple[float, ...]:
    """Component values in 0-1, in COMPONENTS order."""
    recency = 0.0 if s.days_since_active is None else 0.5 ** (s.days_since_active / model.recency_half_life_days)
    frequency = min(1.0, s.active_days_28 / model.frequency_target_days)
    breadth = s.key_features_used / len(model.key_features) if model.key_features else 0.0
    adoption = 0.7 * breadth + 0.3 * min(1.0, s.feature_uses / model.depth_target)
    if s.nps_score is None:
        sentiment = model.neutral_sentiment
    else:
        decay = 0.5 ** (s.nps_age_days / model.nps_half_life_days)
        sentiment = model.neutral_sentiment + (s.nps_score / 10.0 - model.neutral_sentiment) * decay
    support = 1.0 / (1.0 + s.support_load / model.support_load_scale)
    commercial = COMMERCIAL_VALUE.get(s.commercial, 0.5)
    return (recency, frequency, adoption, sentiment, support, commercial)


def contributions(model: ScoreModel, values: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(share * v for share, v in zip(model._shares, values))  # noqa: B905 - both COMPONENTS long


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


def reasons(
    before: tuple[float, ...] | None, after: tuple[float, ...], names: tuple[str, ...] = COMPONENTS
) -> list[dict[str, object]]:
    """Components whose contribution moved, largest |delta| first (ties by name, for determinism)."""
    moved = []
    for i, name in enumerate(names):
        delta = after[i] - (before[i] if before is not None else 0.0)
        if abs(delta) >= 0.005:
            moved.append((-abs(delta), name, delta, after[i]))
    moved.sort()
    return [
        {"component": name, "delta": round(delta, 2), "contribution": round(now, 2)} for _, name, delta, now in moved
    ]
