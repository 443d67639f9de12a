"""A real headless Chromium, driven by Playwright, for the tests of what the Airflow web UI shows a user.

Playwright's own browser download cannot work on a machine without internet access, so the browser is
Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it when it is missing), or the
executable named by ``DUNE_CHROMIUM``. :func:`missing_browser` says why the browser tests cannot run here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Where screenshots go; ``make screenshots`` points this at ``docs/images`` to refresh the documentation's pictures.
SCREENSHOT_DIR = Path(os.environ.get("DUNE_SCREENSHOT_DIR") or REPO_ROOT / "build" / "screenshots")
#: Without the background-networking flags Chromium keeps trying to reach Google's hosts on a closed network.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_path() -> str | None:
    """The Chromium executable to drive: ``DUNE_CHROMIUM``, else Debian's ``chromium`` on the PATH."""
    configured = os.environ.get("DUNE_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing_browser() -> str | None:
    """Why the browser tests cannot run on this machine, or ``None`` when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install -e '.[dev]')"
    if chromium_path() is None:
        return "no Chromium executable: install Debian's chromium (apt-get install chromium) or set DUNE_CHROMIUM"
    return None


@contextlib.contextmanager
def browser_page(base_url: str, username: str, password: str) -> Iterator[Any]:
    """A logged-in page of the Airflow UI at ``base_url`` (1400x1000), closed with its browser afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(20_000)
            page.goto(base_url + "/")
            page.get_by_label("Username").fill(username)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "/auth/login" not in url)
            yield page
        finally:
            browser.close()


def screenshot(page: Any, name: str, locator: Any = None) -> Path:
    """Save a PNG of the page (or of one element) under :data:`SCREENSHOT_DIR`."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    (locator or page).screenshot(path=str(path))
    return path
