"""The browser tier: Debian's Chromium (``/usr/bin/chromium``, installed by scripts/setup) driven headless by
Playwright's Python API. Playwright's own browser download (``playwright install``) is never used: the
launch names the system browser with ``executable_path``.

Fixtures:

- ``browser`` (session): one headless Chromium for the whole session. Each test gets fresh state from
  ``new_page`` (a new browser context: its own cookies, storage and downloads), so a login never leaks from
  one test, or one user, to another.
- ``new_page()`` (function): factory of pages, each in its own context; closed after the test.
- ``screenshot(page, name)`` (function): writes ``<screenshot dir>/<name>.png`` (full page) and returns its
  path. The directory is ``$JDR_TEST_OUTPUT/screenshots`` when ``JDR_TEST_OUTPUT`` is set, else
  ``test-output/screenshots/`` at the repository root (git-ignored); CI keeps it as the test output.

Every test under tests/browser/ carries the ``browser`` marker (``pytest -m browser`` runs this tier only,
``-m "not browser"`` skips it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# The flags the machine notes give for Chromium on a closed network: without the background-networking ones,
# Chromium opens (refused) connections to Google's hosts at every start.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]

# Generous for a loaded 2-core machine, still far below pytest's timeout: a page that never shows what we
# wait for fails the test with Playwright's message (which names the selector) instead of hanging.
DEFAULT_TIMEOUT_MS = 30_000


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.browser)


def chromium_path() -> str:
    """The system Chromium: ``$JDR_CHROMIUM`` or ``chromium`` on PATH. Fails (never skips) when absent, so a
    CI machine that lost the package reports it instead of silently dropping the tier."""
    path = os.environ.get("JDR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("no Chromium: run scripts/setup (installs Debian's chromium) or set JDR_CHROMIUM")
    return path


def screenshot_dir() -> Path:
    base = Path(os.environ["JDR_TEST_OUTPUT"]) if os.environ.get("JDR_TEST_OUTPUT") else REPO_ROOT / "test-output"
    out = base / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="jdr-chromium-") as tmp:
        # A fresh profile directory per session (Playwright's contexts are incognito-like inside it).
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True,
                                     args=[*CHROMIUM_ARGS, f"--disk-cache-dir={tmp}/cache"],
                                     downloads_path=tmp)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    contexts: list[Any] = []

    def make(**context_args: Any) -> Any:
        context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 800},
                                      **context_args)
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def screenshot() -> Callable[[Any, str], Path]:
    def take(page: Any, name: str) -> Path:
        path = screenshot_dir() / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 1000, f"screenshot {path} is (nearly) empty"
        return path

    return take


def hub_login(page: Any, base_url: str, username: str, password: str = "", next_url: str = "/hub/home") -> None:
    """Log in through JupyterHub's own login form (any password passes the DummyAuthenticator), the way a
    person does: type the name, click "Sign in", and wait for the hub to land on ``next_url``."""
    from urllib.parse import quote

    page.goto(f"{base_url}/hub/login?next={quote(next_url, safe='')}")
    page.fill("#username_input", username)
    page.fill("#password_input", password or f"pw-{username}")
    with page.expect_navigation():
        page.click("#login_submit")
    page.wait_for_url(f"{base_url}{next_url}*")
