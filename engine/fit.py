"""`pulse fit`: the BG/NBD lapse model fitted on a history of events (a transaction is one active day)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.config import Settings
from engine.sources import read_events
from operators.bgnbd import DAY_MS, fit, summarize
from schemas.events import Category


def fit_file(path: Path, calibration_end_ms: int, unit: str, settings: Settings) -> dict[str, Any]:
    pairs = [
        (event.user_id, event.ts // DAY_MS)
        for event in read_events(path, settings)
        if event.category is Category.ACTIVITY and event.ts <= calibration_end_ms
    ]
    result = fit(summarize(pairs, calibration_end_ms // DAY_MS, unit))
    model = result.model
    return {
        "model": "bgnbd",
        "r": model.r,
        "alpha": model.alpha,
        "a": model.a,
        "b": model.b,
        "log_likelihood": result.log_likelihood,
        "customers": result.customers,
        "unit": unit,
    }
