"""`pulse evaluate`: a backtest of the health score — does it rank users by what they do next?

Replay the history up to the calibration end T, take every user's score and components as of T, label
each user by whether they were active in (T, T + horizon], and measure the ranking by its AUC (the
probability that a user who came back outranks one who did not; 0.5 is chance), beside baselines:
recency alone, frequency alone and the BG/NBD conditional expectation of activity over the horizon
(its parameters fitted on the calibration period only).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import Settings
from engine.sources import read_events
from operators.bgnbd import DAY_MS, UNIT_DAYS, BgNbd, Customer, fit
from operators.engagement import AccountNotice
from operators.health import score_at
from operators.lapse import LapseModel
from operators.scoring import COMPONENTS, ScoreModel
from operators.shard import Shard, ShardConfig
from schemas.codec import format_ts
from schemas.events import Category, Event

BANDS = ("healthy", "watch", "at_risk")


@dataclass(frozen=True, slots=True)
class UserAt:
    """One user as of the calibration end: what the score and the baselines see."""

    user_id: str
    score: float
    band: str
    components: tuple[float, ...]
    days_since_active: float | None
    active_days: int
    customer: Customer | None  # BG/NBD summary in the model's unit; None without activity


def replay_until(events: Sequence[Event], end_ms: int, config: ShardConfig) -> Shard:
    """The state after every event stamped at or before `end_ms`, with event time advanced to it."""
    shard = Shard()
    batch: list[Event | AccountNotice] = []
    for event in events:
        if event.ts > end_ms:
            break
        batch.append(event)
        notice = AccountNotice.of(event)  # what the decoder sends every shard
        if notice is not None:
            batch.append(notice)
        if len(batch) >= 5000:
            shard.process(batch, config)
            batch = []
    shard.process(batch, config)
    shard.drain(config)
    return shard


def users_at(shard: Shard, end_ms: int, model: ScoreModel, lapse: LapseModel) -> list[UserAt]:
    out = []
    for user_id, user in sorted(shard.users.items()):
        score, band, values = score_at(model, user, end_ms, lapse)
        out.append(
            UserAt(
                user_id,
                score,
                band,
                values,
                None if user.last_active < 0 else (end_ms - user.last_active) / DAY_MS,
                user.active_day_count,
                lapse.customer(user, end_ms),
            )
        )
    return out


def active_between(events: Iterable[Event], start_ms: int, end_ms: int) -> set[str]:
    """Users with an activity event in (start, end]."""
    return {e.user_id for e in events if start_ms < e.ts <= end_ms and e.category is Category.ACTIVITY}


def auc(values: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve: P(a positive outranks a negative), ties counting half. None if one class
    is empty. The Mann-Whitney U statistic over both groups, divided by the number of pairs."""
    from scipy.stats import mannwhitneyu  # only the backtest needs scipy, not the stream

    positive = [v for v, label in zip(values, labels, strict=True) if label]
    negative = [v for v, label in zip(values, labels, strict=True) if not label]
    if not positive or not negative:
        return None
    statistic = mannwhitneyu(positive, negative, alternative="two-sided").statistic
    return round(float(statistic) / (len(positive) * len(negative)), 4)


def bgnbd_expected(users: Sequence[UserAt], unit: str, horizon_days: int) -> tuple[BgNbd, list[float]]:
    """BG/NBD fitted on the calibration summaries; each user's expected active days over the horizon."""
    customers = [u.customer for u in users if u.customer is not None]
    model = fit(customers).model
    horizon = horizon_days / UNIT_DAYS[unit]
    expected = [0.0 if u.customer is None else model.expected(u.customer, horizon) for u in users]
    return model, expected


def _retention(users: Sequence[UserAt], labels: Sequence[bool]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    by_band: dict[str, Any] = {}
    for band in BANDS:
        members = [label for user, label in zip(users, labels, strict=True) if user.band == band]
        by_band[band] = {"users": len(members), "retained": _share(members)}
    ranked = sorted(zip(users, labels, strict=True), key=lambda pair: (pair[0].score, pair[0].user_id))
    deciles = []
    for decile in range(10):
        part = ranked[decile * len(ranked) // 10 : (decile + 1) * len(ranked) // 10]
        if part:
            deciles.append(
                {
                    "decile": decile + 1,
                    "users": len(part),
                    "score_min": part[0][0].score,
                    "score_max": part[-1][0].score,
                    "retained": _share([label for _, label in part]),
                }
            )
    return by_band, deciles


def _share(labels: Sequence[bool]) -> float | None:
    return round(sum(labels) / len(labels), 4) if labels else None


def evaluate_file(
    path: Path, calibration_end_ms: int, horizon_days: int, settings: Settings, plot_path: Path | None = None
) -> dict[str, Any]:
    if horizon_days <= 0:
        raise ValueError(f"--horizon-days must be positive, got {horizon_days}")
    if plot_path is not None:
        _require_matplotlib()
    events = read_events(path, settings)
    if calibration_end_ms < events[0].ts:
        raise ValueError(f"--calibration-end {format_ts(calibration_end_ms)} is before the first event")
    return evaluate_events(events, calibration_end_ms, horizon_days, settings, plot_path)


def evaluate_events(
    events: Sequence[Event],
    calibration_end_ms: int,
    horizon_days: int,
    settings: Settings,
    plot_path: Path | None = None,
) -> dict[str, Any]:
    model, unit = settings.score, settings.lapse.unit
    config = settings.shard_config(live=False, until_ms=calibration_end_ms)
    shard = replay_until(events, calibration_end_ms, config)
    users = users_at(shard, calibration_end_ms, model, settings.lapse)
    if len(users) < 2:
        raise ValueError("need at least two users active before --calibration-end")
    horizon_end = calibration_end_ms + horizon_days * DAY_MS
    came_back = active_between(events, calibration_end_ms, horizon_end)
    labels = [u.user_id in came_back for u in users]
    fitted, expected = bgnbd_expected(users, unit, horizon_days)
    # A user never active ranks below every active one on recency.
    recency = [-(u.days_since_active if u.days_since_active is not None else 1e9) for u in users]
    by_band, deciles = _retention(users, labels)
    if plot_path is not None:
        curves = {
            "score": [u.score for u in users],
            "recency": recency,
            "frequency": [float(u.active_days) for u in users],
            "BG/NBD expected": expected,
        }
        _plot(curves, labels, deciles, plot_path)
    return {
        "input_events": len(events),
        "calibration_end": format_ts(calibration_end_ms),
        "horizon_days": horizon_days,
        "horizon_end": format_ts(horizon_end),
        "users": len(users),
        "retained": sum(labels),
        "model": model.version,
        "auc": {
            "score": auc([u.score for u in users], labels),
            "components": {name: auc([u.components[i] for u in users], labels) for i, name in enumerate(COMPONENTS)},
            "baselines": {
                "recency": auc(recency, labels),
                "frequency": auc([float(u.active_days) for u in users], labels),
                "bgnbd_expected": auc(expected, labels),
            },
        },
        "bgnbd": {"unit": unit, "r": fitted.r, "alpha": fitted.alpha, "a": fitted.a, "b": fitted.b},
        "retention_by_band": by_band,
        "retention_by_decile": deciles,
    }


def roc_points(values: Sequence[float], labels: Sequence[bool]) -> list[tuple[float, float]]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0) to (1, 1)."""
    positives = sum(labels)
    negatives = len(labels) - positives
    ranked = sorted(zip(values, labels, strict=True), key=lambda pair: -pair[0])
    points = [(0.0, 0.0)]
    tp = fp = 0
    for i, (value, label) in enumerate(ranked):
        tp += label
        fp += not label
        if i + 1 == len(ranked) or ranked[i + 1][0] != value:
            points.append((fp / max(negatives, 1), tp / max(positives, 1)))
    return points


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError(
            "--plot needs matplotlib, which this installation lacks: pip install 'pulse-engine[plot]'"
        ) from None


def _plot(curves: dict[str, list[float]], labels: Sequence[bool], deciles: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, (roc, bars) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, values in curves.items():
        xs, ys = zip(*roc_points(values, labels), strict=True)
        roc.plot(xs, ys, label=f"{name} (AUC {auc(values, labels)})")
    roc.plot([0, 1], [0, 1], linestyle=":", color="grey")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="Who comes back: ROC")
    roc.legend(loc="lower right", fontsize="small")
    bars.bar([d["decile"] for d in deciles], [d["retained"] or 0.0 for d in deciles])
    bars.set(xlabel="score decile (10 = highest)", ylabel="share active in the horizon", title="Retention by decile")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
