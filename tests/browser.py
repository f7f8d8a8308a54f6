"""Headless Chromium (Debian's package) driven by Playwright, for admin end-to-end tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """``FLOWSTONE_TEST_CHROMIUM`` or ``chromium`` on the PATH."""
    return os.environ.get("FLOWSTONE_TEST_CHROMIUM") or shutil.which("chromium")


@pytest.fixture
def browser_page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Playwright page in headless Chromium; skips where no Chromium is installed."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium on this machine (scripts/test.sh installs Debian's as root)")
    from playwright.sync_api import sync_playwright  # noqa: PLC0415  # only when a browser exists

    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are
    # synchronous and safe, so tell Django's async guard (test-only).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            yield page
        finally:
            browser.close()
            # Connections opened while Playwright's loop ran belong to that context; close them
            # here, or the test database cannot be dropped.
            connections.close_all()


def log_in(page: Any, base_url: str, username: str, password: str, next_url: str) -> None:
    """Log in through the admin's login form and land on ``next_url``."""
    page.goto(f"{base_url}/admin/login/?next={next_url}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(f"**{next_url}")
