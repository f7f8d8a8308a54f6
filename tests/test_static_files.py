"""Static files are served with DEBUG off: the admin is styled and Swagger UI loads.

Before, ``runserver`` (the documented command) served no static files unless ``DJANGO_DEBUG=1``:
the admin had no styles and Swagger UI was a blank page. WhiteNoise serves them now, from the
apps' static directories until ``collectstatic`` fills ``STATIC_ROOT``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from tests.browser import browser_page, log_in
from tests.workers import ROOT, database_url

__all__ = ["browser_page"]  # the fixture, used by name

PASSWORD = "test-only-password"  # noqa: S105  # a throwaway user in the test database

ASSETS = (
    ("admin/css/base.css", "text/css"),
    ("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js", "javascript"),
)


@pytest.mark.embedded
@pytest.mark.django_db  # closing the response ends the request, which checks the connections
@pytest.mark.parametrize(("path", "content_type"), ASSETS)
def test_static_files_are_served_with_debug_off(path: str, content_type: str) -> None:
    assert settings.DEBUG is False
    response = Client().get(f"{settings.STATIC_URL}{path}")
    response.close()  # a file response: its file stays open until closed
    assert response.status_code == 200
    assert content_type in response["Content-Type"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def documented_runserver() -> Iterator[str]:
    """``manage.py runserver`` as the README starts it (DEBUG off); yields its base URL."""
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_DEBUG"}
    env["DATABASE_URL"] = database_url()  # runserver checks the migrations at start
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    url = f"{base}{settings.STATIC_URL}admin/css/base.css"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310  # http, loopback
                    assert response.status == 200
                    assert "text/css" in response.headers["Content-Type"]
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "runserver did not serve the admin's CSS"
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_documented_runserver_serves_the_admin_styles(documented_runserver: str) -> None:
    with urllib.request.urlopen(f"{documented_runserver}/admin/login/", timeout=10) as page:  # noqa: S310
        assert "admin/css/base.css" in page.read().decode()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)  # the server process must see the user
def test_the_admin_is_styled_and_swagger_ui_draws_in_a_browser(
    documented_runserver: str, browser_page: Any
) -> None:
    User.objects.create_superuser("root", password=PASSWORD)
    page = browser_page
    page.goto(f"{documented_runserver}/admin/login/")
    header = page.eval_on_selector("#header", "e => getComputedStyle(e).backgroundColor")
    assert header not in ("", "rgba(0, 0, 0, 0)", "transparent")  # base.css applied
    log_in(page, documented_runserver, "root", PASSWORD, "/admin/")
    page.goto(f"{documented_runserver}/api/docs/")
    page.wait_for_selector("#swagger-ui .swagger-ui")  # the bundle loaded and drew the page
    page.wait_for_selector("text=/api/runs/{id}/reexecute/")  # ... from the schema
