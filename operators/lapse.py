"""When is a user's silence abnormal *for that user*: fixed rule, personal cadence, or BG/NBD p(alive)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from operators.bgnbd import UNIT_DAYS, BgNbd, Customer
from operators.state import DAY_MS, UserState

MODELS = ("fixed", "cadence", "bgnbd")


@dataclass(frozen=True, slots=True)
class LapseModel:
    """The `[lapse]` section. Defaults: a personal cadence with a population prior."""

    model: str = "cadence"
    unit: str = "week"
    params: dict[str, float] = field(default_factory=dict)  # r, alpha, a, b for bgnbd
    fixed_days: float = 14.0
    # Cadence: lapsed after `cadence_factor` times the user's mean gap between active days, shrunk towards
    # `prior_gap_days` with the weight of `prior_weight` gaps, and kept within [min_days, max_days].
    cadence_factor: float = 2.5
    prior_gap_days: float = 7.0
    prior_weight: float = 1.0
    min_days: float = 2.0
    max_days: float = 60.0
    p_alive_threshold: float = 0.3
    cooldown_days: float = 7.0
    # Scores are re-evaluated this often while a user is silent (passage of time), for this long at most.
    rescore_days: float = 1.0
    rescore_for_days: float = 30.0
    # BG/NBD: profiles carry the expected active days over this horizon beside p_alive.
    horizon_days: float = 28.0
    _bgnbd: BgNbd | None = field(init=False, compare=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.unit not in UNIT_DAYS:
            raise ValueError(f"unit must be day or week, got {self.unit!r}")
        positive = ("fixed_days", "cadence_factor", "prior_gap_days", "prior_weight", "min_days", "max_days",
                    "rescore_days")  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        for name in ("cooldown_days", "rescore_for_days", "horizon_days"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number, got {value}")
        if self.min_days > self.max_days:
            raise ValueError(f"min_days ({self.min_days}) must not exceed max_days ({self.max_days})")
        if not 0 < self.p_alive_threshold < 1:
            raise ValueError("p_alive_threshold must be between 0 and 1")
        if self.params or self.model == "bgnbd":
            missing = {"r", "alpha", "a", "b"} - set(self.params)
            if missing:
                raise ValueError(f"params needs r, alpha, a and b for the BG/NBD model (missing {sorted(missing)})")
            object.__setattr__(self, "_bgnbd", BgNbd(**{k: self.params[k] for k in ("r", "alpha", "a", "b")}))

    @property
    def bgnbd(self) -> BgNbd | None:
        return self._bgnbd

    def expected_gap_days(self, user: UserState) -> float:
        """The user's own mean gap between active days, shrunk towards the population prior."""
        gaps = max(user.active_day_count - 1, 0)
        span = user.last_active_day - user.first_active_day if gaps > 0 else 0
        return (span + self.prior_weight * self.prior_gap_days) / (gaps + self.prior_weight)

    def cadence_days(self, user: UserState) -> float:
        days = self.cadence_factor * self.expected_gap_days(user)
        return min(self.max_days, max(self.min_days, days))

    def customer(self, user: UserState, as_of: int) -> Customer | None:
        """The user's BG/NBD summary as of `as_of` in the model's unit: x repeat active days, t_x first to
        last active day, T first active day to now. None without activity."""
        if user.active_day_count == 0:
            return None
        size = UNIT_DAYS[self.unit]
        first = user.first_active_day
        t_x = (user.last_active_day - first) / size
        return Customer(user.active_day_count - 1, t_x, max(as_of // DAY_MS - first, 0) / size)

    def p_alive(self, user: UserState, as_of: int) -> float | None:
        model, customer = self._bgnbd, self.customer(user, as_of)
        if model is None or customer is None:
            return None
        return model.p_alive(customer.x, customer.t_x, customer.t)

    def expected_active_days(self, user: UserState, as_of: int) -> float | None:
        """BG/NBD's conditional expectation of the user's active days in the next `horizon_days`: unlike
        p_alive (1 for anyone with no repeat activity, however long the silence), it falls with silence
        for everyone. None without the BG/NBD model or without activity."""
        model, customer = self._bgnbd, self.customer(user, as_of)
        if model is None or customer is None:
            return None
        return model.expected(customer, self.horizon_days / UNIT_DAYS[self.unit])

    def deadline(self, user: UserState) -> int:
        """Epoch ms at which this user's silence becomes a lapse (if nothing happens before)."""
        last = user.last_active
        if self.model == "fixed":
            return last + int(self.fixed_days * DAY_MS)
        cadence = last + int(self.cadence_days(user) * DAY_MS)
        model = self._bgnbd
        x = user.active_day_count - 1
        if self.model == "cadence" or model is None or x <= 0:
            # BG/NBD says p(alive) = 1 with no repeat activity, however long the silence: use the cadence.
            return cadence
        return max(last + DAY_MS, self._bgnbd_deadline(model, user))

    def _bgnbd_deadline(self, model: BgNbd, user: UserState) -> int:
        """First time T (in the unit) at which p_alive < threshold, solved in closed form."""
        size = UNIT_DAYS[self.unit]
        x = user.active_day_count - 1
        t_x = (user.last_active_day - user.first_active_day) / size
        theta = self.p_alive_threshold
        # p < theta  <=>  a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x) > (1-theta)/theta
        ratio = (1 - theta) / theta * (model.b + x - 1) / model.a
        t: float = (model.alpha + t_x) * math.pow(ratio, 1.0 / (model.r + x)) - model.alpha
        day: int = user.first_active_day + math.ceil(max(t, t_x) * size)
        return day * DAY_MS + (user.last_active % DAY_MS)
