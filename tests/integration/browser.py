"""A real headless Chromium for browser tests: Debian's `chromium` (scripts/browser-local install), driven by
Playwright's sync API through `executable_path` (Playwright's own browser download is not used)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

INSTALL_HINT = "run scripts/browser-local install (or set PULSE_CHROMIUM to a Chromium executable)"


def chromium_executable() -> str:
    """$PULSE_CHROMIUM, else `chromium` on PATH; fails the test (never skips it) when there is none."""
    configured = os.environ.get("PULSE_CHROMIUM")
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.fail(f"PULSE_CHROMIUM={configured} is not an executable file: {INSTALL_HINT}")
        return str(path)
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(f"no chromium on PATH: {INSTALL_HINT}")
    return found


def launch_args() -> list[str]:
    """Chromium's sandbox refuses to run as root (containers, CI): only then is it switched off."""
    return ["--no-sandbox"] if os.geteuid() == 0 else []


@contextmanager
def chromium(executable: str | None = None) -> Iterator[Browser]:
    """A headless Chromium (`executable`, else chromium_executable()), closed with Playwright's driver on exit."""
    executable = executable or chromium_executable()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=launch_args())
        try:
            yield browser
        finally:
            browser.close()
