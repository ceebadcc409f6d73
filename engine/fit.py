"""`pulse fit`: the BG/NBD lapse model fitted on a history of events (a transaction is one active day)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.config import Settings
from engine.sources import open_lines
from operators.bgnbd import DAY_MS, fit, summarize
from schemas.codec import decode
from schemas.events import Category, Event, Origin


def fit_file(path: Path, calibration_end_ms: int, unit: str, settings: Settings) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    vocab = settings.vocab()
    pairs: list[tuple[str, int]] = []
    with open_lines(path) as lines:
        for number, line in enumerate(lines, 1):
            item = decode(line.rstrip(b"\r\n"), Origin(str(path), -1, number), vocab)
            if isinstance(item, Event) and item.category is Category.ACTIVITY and item.ts <= calibration_end_ms:
                pairs.append((item.user_id, item.ts // DAY_MS))
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
