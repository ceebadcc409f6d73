"""`pulse demo` without the demo package (the service image): one clear line and exit 2, no traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine.cli import main


def test_demo_without_the_demo_package_is_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "demo", None)
    monkeypatch.setitem(sys.modules, "demo.runner", None)
    assert main(["demo", "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "pulse: `pulse demo` needs a source checkout (the demo package is not in this installation): "
        "run `make demo` from the repository\n"
    )
    assert not (tmp_path / "out").exists()
