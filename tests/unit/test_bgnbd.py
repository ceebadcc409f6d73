"""BG/NBD: p_alive edge cases, and `pulse fit` reproducing the published CDNOW estimates."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from demo.cdnow import WHEEL as CDNOW_WHEEL
from demo.cdnow import write_cdnow
from engine.cli import main
from operators.bgnbd import BgNbd, Customer, summarize
from schemas.codec import loads

# Fader, Hardie & Lee (2005), table 1, fitted on the 2357-customer CDNOW sample, 39-week calibration.
PUBLISHED = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
MODEL = BgNbd(**PUBLISHED)


@pytest.fixture(scope="module")
def cdnow_events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CDNOW_WHEEL.is_file():
        pytest.fail(f"{CDNOW_WHEEL} is missing: run `make testdata` (make test does it)")
    return write_cdnow(tmp_path_factory.mktemp("cdnow") / "cdnow.jsonl")


def test_fit_reproduces_the_published_cdnow_parameters(cdnow_events: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["fit", str(cdnow_events), "--calibration-end", "1997-09-30T00:00:00Z", "--unit", "week"])
    assert code == 0
    result = loads(capsys.readouterr().out)
    assert (result["model"], result["unit"], result["customers"]) == ("bgnbd", "week", 2357)
    for name, published in PUBLISHED.items():
        assert result[name] == pytest.approx(published, rel=0.01), name
    assert result["log_likelihood"] == pytest.approx(-9582.4, abs=0.5)


def test_summary_counts_active_days_not_events() -> None:
    day = (date(2026, 1, 5) - date(1970, 1, 1)).days
    pairs = [("u", day), ("u", day), ("u", day + 7), ("u", day + 14), ("v", day + 20), ("u", day + 60)]
    customers = sorted(summarize(pairs, day + 21, "week"), key=lambda c: c.x)
    assert customers == [Customer(0, 0.0, 1 / 7), Customer(2, 2.0, 3.0)]


@pytest.mark.parametrize(
    ("x", "t_x", "t", "expected"),
    [
        pytest.param(0, 0.0, 30.0, 1.0, id="no-repeat-is-1-by-the-model"),
        pytest.param(5, 30.0, 30.0, None, id="just-seen-is-likely-alive"),
        pytest.param(5, 2.0, 30.0, None, id="long-silence-is-likely-dead"),
    ],
)
def test_p_alive(x: int, t_x: float, t: float, expected: float | None) -> None:
    p = MODEL.p_alive(x, t_x, t)
    assert 0.0 <= p <= 1.0
    if expected is not None:
        assert p == expected
    elif t_x == t:
        assert p > 0.8
    else:
        assert p < 0.2


def test_p_alive_falls_with_silence_and_rises_with_frequency() -> None:
    silences = [MODEL.p_alive(4, 10.0, t) for t in (10.0, 15.0, 20.0, 30.0)]
    assert silences == sorted(silences, reverse=True)
    assert MODEL.p_alive(10, 20.0, 30.0) < MODEL.p_alive(2, 20.0, 30.0)  # a frequent buyer's silence means more


@pytest.mark.parametrize("bad", [{"r": 0.0}, {"alpha": -1.0}, {"a": float("nan")}])
def test_invalid_parameters_are_rejected(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be a positive number"):
        BgNbd(**{**PUBLISHED, **bad})


def test_fit_with_missing_file_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", str(tmp_path / "none.jsonl"), "--calibration-end", "1997-09-30T00:00:00Z"]) == 2
    assert "input file not found" in capsys.readouterr().err
