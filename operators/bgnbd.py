"""The BG/NBD model (Fader, Hardie & Lee 2005): probability a user is still alive, and fitting it on history."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

DAY_MS = 86_400_000
UNIT_DAYS = {"day": 1, "week": 7}


@dataclass(frozen=True, slots=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float

    def __post_init__(self) -> None:
        for name in ("r", "alpha", "a", "b"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"BG/NBD parameter {name} must be a positive number, got {value}")

    def p_alive(self, x: int, t_x: float, t: float) -> float:
        """P(alive | x repeat transactions, last at t_x, observed for T), all in the model's unit.

        With no repeat transaction the model says 1.0 whatever the silence: callers must not read that
        as "surely active" (see operators.lapse, which falls back to a cadence rule then).
        """
        if x <= 0:
            return 1.0
        # 1 / (1 + a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x)), in logs to stay finite for large x.
        log_ratio = math.log(self.a / (self.b + x - 1)) + (self.r + x) * (
            math.log(self.alpha + t) - math.log(self.alpha + t_x)
        )
        if log_ratio > 700:
            return 0.0
        return 1.0 / (1.0 + math.exp(log_ratio))

    def expected(self, customer: Customer, horizon: float) -> float:
        """E[transactions in (T, T + horizon] | x, t_x, T], all in the model's unit (Fader, Hardie & Lee
        2005, eq. 10). Unlike p_alive it falls with silence for someone with no repeat yet, too."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        x, t_x, t = customer.x, customer.t_x, customer.t
        if horizon <= 0:
            return 0.0
        if a == 1:  # the formula's removable singularity: its value a hair away, continuous there
            a = 1 + 1e-9
        z = horizon / (alpha + t + horizon)
        hyp = hyp2f1(r + x, b + x, a + b + x - 1, z)
        decay = math.exp((r + x) * (math.log(alpha + t) - math.log(alpha + t + horizon)))
        numerator = (a + b + x - 1) / (a - 1) * (1 - hyp * decay)
        denominator = 1.0
        if x > 0:
            denominator += a / (b + x - 1) * math.exp((r + x) * (math.log(alpha + t) - math.log(alpha + t_x)))
        return max(0.0, numerator / denominator)


def hyp2f1(a: float, b: float, c: float, z: float) -> float:
    """Gauss's hypergeometric function 2F1(a, b; c; z) for 0 <= z < 1, by its power series (the terms'
    ratio tends to z, so it converges geometrically; BG/NBD horizons keep z well below 1)."""
    if not 0 <= z < 1:
        raise ValueError(f"hyp2f1 needs 0 <= z < 1, got {z}")
    total = term = 1.0
    k = 0
    while True:
        term *= (a + k) * (b + k) / ((c + k) * (k + 1)) * z
        total += term
        k += 1
        if abs(term) <= 1e-15 * abs(total) or k > 100_000:
            return total


@dataclass(frozen=True, slots=True)
class Customer:
    """Summary of one user's calibration history: x repeat active days, t_x and T in the unit."""

    x: int
    t_x: float
    t: float


def summarize(active_days: Iterable[tuple[str, int]], end_day: int, unit: str) -> list[Customer]:
    """(user, epoch day) pairs of activity on or before `end_day` → one Customer per user."""
    size = UNIT_DAYS[unit]
    days: dict[str, set[int]] = {}
    for user, day in active_days:
        if day <= end_day:
            days.setdefault(user, set()).add(day)
    customers = []
    for user_days in days.values():
        first, last = min(user_days), max(user_days)
        customers.append(Customer(len(user_days) - 1, (last - first) / size, (end_day - first) / size))
    return customers


@dataclass(frozen=True, slots=True)
class Fit:
    model: BgNbd
    log_likelihood: float
    customers: int


def fit(customers: list[Customer]) -> Fit:
    """Maximum likelihood with scipy (imported here: only `pulse fit` needs it, not the stream)."""
    import numpy as np
    from scipy.optimize import minimize
    from scipy.special import gammaln

    if len(customers) < 2:
        raise ValueError("need at least two customers to fit the BG/NBD model")
    x = np.array([c.x for c in customers], dtype=float)
    t_x = np.array([c.t_x for c in customers], dtype=float)
    big_t = np.array([c.t for c in customers], dtype=float)
    repeat = x > 0

    def log_likelihood(log_params: np.ndarray) -> float:
        r, alpha, a, b = np.exp(log_params)
        part_1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
        part_2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
        part_3 = -(r + x) * np.log(alpha + big_t)
        part_4 = np.where(
            repeat, np.log(a) - np.log(np.where(repeat, b + x - 1, 1.0)) - (r + x) * np.log(alpha + t_x), -np.inf
        )
        top = np.maximum(part_3, part_4)
        return float(np.sum(part_1 + part_2 + top + np.log(np.exp(part_3 - top) + np.exp(part_4 - top))))

    best = None
    for start in (np.zeros(4), np.log([0.5, 5.0, 1.0, 2.0])):
        result = minimize(lambda p: -log_likelihood(p), start, method="Nelder-Mead",
                          options={"xatol": 1e-10, "fatol": 1e-10, "maxiter": 20_000, "maxfev": 20_000})  # fmt: skip
        if best is None or result.fun < best.fun:
            best = result
    assert best is not None
    r, alpha, a, b = (float(v) for v in np.exp(best.x))
    return Fit(BgNbd(r, alpha, a, b), -float(best.fun), len(customers))
