"""`pulse evaluate` and `pulse fit-score` end to end: the targets on CDNOW and on the demo stream."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from demo.cdnow import WHEEL as CDNOW_WHEEL
from demo.cdnow import write_cdnow
from demo.generator import GeneratorConfig, write_jsonl
from engine.cli import main
from schemas.codec import loads

CDNOW_END = "1997-09-30T00:00:00Z"  # the published 39-week calibration period; the holdout is the next 39
CDNOW_HORIZON = "273"


@pytest.fixture(scope="module")
def cdnow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CDNOW_WHEEL.is_file():
        pytest.fail(f"{CDNOW_WHEEL} is missing: run `make testdata` (make test does it)")
    return write_cdnow(tmp_path_factory.mktemp("cdnow") / "cdnow.jsonl")


def _evaluate(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["evaluate", *args]) == 0
    result: dict[str, Any] = loads(capsys.readouterr().out)
    return result


def test_default_score_ranks_at_least_as_well_as_recency_on_cdnow(
    cdnow: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plot = tmp_path / "roc.png"
    result = _evaluate(
        capsys, str(cdnow), "--calibration-end", CDNOW_END, "--horizon-days", CDNOW_HORIZON, "--plot", str(plot)
    )
    assert (result["users"], result["retained"]) == (2357, 684)  # who bought again in the 39 weeks after
    auc = result["auc"]
    assert auc["score"] >= auc["baselines"]["recency"]
    assert auc["baselines"]["recency"] > 0.7  # the baselines are the published-quality ones, not a strawman
    assert result["bgnbd"]["r"] == pytest.approx(0.243, rel=0.01)  # fitted on the calibration period only
    bands = result["retention_by_band"]
    assert bands["healthy"]["retained"] > bands["watch"]["retained"] > bands["at_risk"]["retained"]
    deciles = [d["retained"] for d in result["retention_by_decile"]]
    assert deciles[-1] > deciles[0]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fitted_score_ranks_at_least_as_well_as_bgnbd_on_cdnow(
    cdnow: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fitted = tmp_path / "fitted.toml"
    code = main(
        ["fit-score", str(cdnow), "--calibration-end", CDNOW_END, "--horizon-days", CDNOW_HORIZON, "--out", str(fitted)]
    )
    assert code == 0
    fit = loads(capsys.readouterr().out)
    assert fit["internal_split"]["end"] < CDNOW_END  # learnt inside the calibration period only
    assert fit["model"] != fit["previous_model"]
    assert all(w >= 0 for w in fit["score"]["weights"].values())
    result = _evaluate(
        capsys, str(cdnow), "--calibration-end", CDNOW_END, "--horizon-days", CDNOW_HORIZON, "--config", str(fitted)
    )
    assert result["model"] == fit["model"]
    assert result["auc"]["score"] >= result["auc"]["baselines"]["bgnbd_expected"]


def test_demo_stream_retention_follows_the_bands(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The demo's 60 days (seed 7, as `make demo`), scored at day 45, labelled by the next 14 days."""
    events = tmp_path / "demo.jsonl"
    write_jsonl(events, GeneratorConfig(users=300, days=60, seed=7))
    result = _evaluate(capsys, str(events), "--calibration-end", "2026-02-19T00:00:00Z", "--horizon-days", "14")
    bands = result["retention_by_band"]
    # Healthy users come back far more often than the rest. Between watch and at_risk the default weights
    # do not order the demo reliably (its sporadic users, rated at_risk, are about due to return: the order
    # flips from seed to seed); the fitted score does, see README "Does the score predict?".
    assert bands["healthy"]["retained"] > max(bands["watch"]["retained"], bands["at_risk"]["retained"]) + 0.3
    assert result["auc"]["score"] > result["auc"]["baselines"]["recency"]
    fitted = tmp_path / "fitted.toml"
    window = ["--calibration-end", "2026-02-19T00:00:00Z", "--horizon-days", "14"]
    assert main(["fit-score", str(events), *window, "--out", str(fitted)]) == 0
    capsys.readouterr()
    result = _evaluate(capsys, str(events), *window, "--config", str(fitted))
    bands = result["retention_by_band"]
    assert bands["healthy"]["retained"] > bands["watch"]["retained"] > bands["at_risk"]["retained"]
    assert result["auc"]["score"] > result["auc"]["baselines"]["bgnbd_expected"]


def test_plot_without_matplotlib_is_a_one_line_error(
    cdnow: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    args = [
        "evaluate",
        str(cdnow),
        "--calibration-end",
        CDNOW_END,
        "--horizon-days",
        "7",
        "--plot",
        str(tmp_path / "x"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pulse: error: --plot needs matplotlib")
    assert "\n" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--calibration-end", "1990-01-01T00:00:00Z", "--horizon-days", "7"], "is before the first event"),
        (["--calibration-end", CDNOW_END, "--horizon-days", "0"], "--horizon-days must be positive"),
    ],
)
def test_bad_backtest_arguments_fail_fast(
    cdnow: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["evaluate", str(cdnow), *args]) == 2
    assert message in capsys.readouterr().err
