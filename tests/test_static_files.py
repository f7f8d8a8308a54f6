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

import pytest
from django.conf import settings
from django.test import Client

from tests.workers import ROOT, database_url

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


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_documented_runserver_serves_the_admin_styles() -> None:
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
    url = f"http://127.0.0.1:{port}{settings.STATIC_URL}admin/css/base.css"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:  # http on loopback
                    assert response.status == 200
                    assert "text/css" in response.headers["Content-Type"]
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "runserver did not serve the admin's CSS"
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=30)
