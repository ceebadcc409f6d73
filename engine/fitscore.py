"""`pulse fit-score`: learn the score's weights and rhythm scales from history, before the calibration end.

Method: an internal split *inside* the calibration period (never the holdout after it): replay up to
T - horizon, label each user by activity in (T - horizon, T] (or split the calibration period in half
when it is shorter than two horizons), and fit a logistic regression of that label on the six component
values with non-negative coefficients (scipy's L-BFGS-B with bounds, a small L2 penalty). Non-negative,
so every component still reads "more is healthier" and every reason keeps its sign; the coefficients,
normalised to sum to 1, become the `[score]` weights. The rhythm scales (`recency_scale`,
`frequency_window_days`) are chosen from a small grid by the AUC of the re-normalised score on the same
split. Logistic regression because the label is binary, the model is a weighted sum like the score
itself, and it is fast and stable on a few thousand users; the bounds are what keep it explainable.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.config import Settings
from engine.evaluate import active_between, auc, replay_until
from engine.sources import read_events
from operators.bgnbd import DAY_MS
from operators.health import signals
from operators.scoring import COMPONENTS, ScoreModel, components, contributions, score_of
from schemas.codec import format_ts
from schemas.events import Event

RECENCY_SCALES = (0.5, 1.0, 2.0, 4.0)
FREQUENCY_WINDOWS = (90, 365)
L2 = 1e-3


def internal_split(events: Sequence[Event], calibration_end_ms: int, horizon_days: int) -> tuple[int, int]:
    """(end, horizon in days) of the split inside the calibration period."""
    first = events[0].ts
    end = calibration_end_ms - horizon_days * DAY_MS
    if end - first < horizon_days * DAY_MS:  # too little history before it: halve the calibration period
        end = first + (calibration_end_ms - first) // 2
    return end, max(1, math.ceil((calibration_end_ms - end) / DAY_MS))


def fit_weights(rows: Sequence[tuple[float, ...]], labels: Sequence[bool]) -> tuple[float, ...]:
    """Non-negative logistic regression coefficients of the label on the component values."""
    import numpy as np
    from scipy.optimize import minimize

    x = np.asarray(rows, dtype=float)
    y = np.where(np.asarray(labels), 1.0, -1.0)
    n, m = x.shape

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = params[:m], params[m]
        margin = y * (x @ w + b)
        value = float(np.sum(np.logaddexp(0.0, -margin)) / n + L2 * float(w @ w))
        slope = -y / (1.0 + np.exp(margin)) / n
        grad = np.concatenate([x.T @ slope + 2 * L2 * w, [np.sum(slope)]])
        return value, grad

    result = minimize(loss, np.zeros(m + 1), jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * m + [(None, None)])
    return tuple(float(v) for v in result.x[:m])


def fit_score(
    events: Sequence[Event], calibration_end_ms: int, horizon_days: int, settings: Settings
) -> dict[str, Any]:
    end, horizon = internal_split(events, calibration_end_ms, horizon_days)
    shard = replay_until(events, end, settings.shard_config(live=False, until_ms=end))
    came_back = active_between(events, end, end + horizon * DAY_MS)
    labels = {user_id: user_id in came_back for user_id in shard.users}
    if len(set(labels.values())) < 2:
        raise ValueError("the internal split needs users who came back and users who did not")
    tried = []
    best: tuple[float, ScoreModel] | None = None
    for scale in RECENCY_SCALES:
        for window in FREQUENCY_WINDOWS:
            model = dataclasses.replace(settings.score, recency_scale=scale, frequency_window_days=window)
            # Component values depend on the scales, not on the weights: computed once per candidate.
            rows, masks, truth = [], [], []
            for user_id, user in shard.users.items():
                s = signals(model, user, end, settings.lapse)
                rows.append(components(model, s))
                masks.append(s.present)
                truth.append(labels[user_id])
            coefficients = fit_weights(rows, truth)
            total = sum(coefficients)
            if total > 0:
                weights = {name: round(c / total, 4) for name, c in zip(COMPONENTS, coefficients, strict=True)}
                model = dataclasses.replace(model, weights={k: v for k, v in weights.items() if v > 0})
            scores = [score_of(contributions(model, v, m)) for v, m in zip(rows, masks, strict=True)]
            score_auc = auc(scores, truth) or 0.0
            tried.append({"recency_scale": scale, "frequency_window_days": window, "auc": score_auc})
            if best is None or score_auc > best[0]:
                best = (score_auc, model)
    assert best is not None
    chosen = best[1]
    return {
        "method": "logistic regression, non-negative coefficients (scipy L-BFGS-B), L2 penalty "
        f"{L2}; rhythm scales by AUC on the internal split",
        "internal_split": {
            "end": format_ts(end),
            "horizon_days": horizon,
            "users": len(labels),
            "came_back": sum(labels.values()),
        },
        "tried": tried,
        "auc_internal": best[0],
        "score": {
            "weights": dict(chosen.weights),
            "recency_scale": chosen.recency_scale,
            "frequency_window_days": chosen.frequency_window_days,
        },
        "model": chosen.version,
        "previous_model": settings.score.version,
    }


def write_config(fitted: dict[str, Any], out: Path, base_config: Path | None) -> None:
    """The base config (if any) with its `[score]` section updated by the fitted values."""
    import tomli_w

    doc: dict[str, Any] = tomllib.loads(base_config.read_text()) if base_config is not None else {}
    doc.setdefault("score", {}).update(fitted["score"])
    out.write_text(
        f"# Written by `pulse fit-score` (model {fitted['model']}): weights and rhythm scales fitted on history\n"
        f"# before {fitted['internal_split']['end']} + {fitted['internal_split']['horizon_days']} days.\n"
        + tomli_w.dumps(doc)
    )


def fit_score_file(
    path: Path, calibration_end_ms: int, horizon_days: int, out: Path, settings: Settings, base_config: Path | None
) -> dict[str, Any]:
    if horizon_days <= 0:
        raise ValueError(f"--horizon-days must be positive, got {horizon_days}")
    events = read_events(path, settings)
    fitted = fit_score(events, calibration_end_ms, horizon_days, settings)
    write_config(fitted, out, base_config)
    fitted["out"] = str(out)
    return fitted
