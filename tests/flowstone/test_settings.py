"""Production security settings come from the documented environment variables."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management.utils import get_random_secret_key

pytestmark = [pytest.mark.embedded]

ROOT = Path(__file__).resolve().parents[2]

# The variables README.md's "Deploying" section documents, with production values.
PRODUCTION_ENV = {
    "DJANGO_DEBUG": "0",
    "DJANGO_ALLOWED_HOSTS": "flowstone.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://flowstone.example.com",
    "DJANGO_SECURE_SSL_REDIRECT": "1",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https",
    "DJANGO_SESSION_COOKIE_SECURE": "1",
    "DJANGO_CSRF_COOKIE_SECURE": "1",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "DJANGO_SECURE_HSTS_PRELOAD": "1",
}


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DJANGO_") or k == "DJANGO_SETTINGS_MODULE"
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={
            **base,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "FLOWSTONE_DATA_DIR": str(tmp_path),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _issue_ids(output: str) -> set[str]:
    return set(re.findall(r"\(([a-z_]+\.[EW]\d{3})\)", output))


def test_check_deploy_is_clean_with_the_documented_variables(tmp_path: Path) -> None:
    completed = _run(
        tmp_path,
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_SECRET_KEY=get_random_secret_key(),
        **PRODUCTION_ENV,
    )
    output = completed.stdout + completed.stderr
    assert _issue_ids(output) == set(), output
    assert completed.returncode == 0, output
    assert "System check identified no issues" in output


def test_check_deploy_warns_without_them(tmp_path: Path) -> None:
    completed = _run(tmp_path, "check", "--deploy", "--fail-level", "WARNING")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output
    assert _issue_ids(output) >= {
        "security.W004",  # SECURE_HSTS_SECONDS
        "security.W008",  # SECURE_SSL_REDIRECT
        "security.W009",  # SECRET_KEY
        "security.W012",  # SESSION_COOKIE_SECURE
        "security.W016",  # CSRF_COOKIE_SECURE
    }


SETTINGS_PROBE = (
    "from django.conf import settings as s; "
    "print(s.SECURE_PROXY_SSL_HEADER, s.CSRF_TRUSTED_ORIGINS, s.SECURE_HSTS_SECONDS, "
    "s.SECURE_REDIRECT_EXEMPT)"
)


def test_the_variables_set_the_settings(tmp_path: Path) -> None:
    completed = _run(tmp_path, "shell", "-c", SETTINGS_PROBE, **PRODUCTION_ENV)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == (
        "('HTTP_X_FORWARDED_PROTO', 'https') ['https://flowstone.example.com'] 31536000 "
        "['^health/$', '^metrics$']"
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "DJANGO_SECURE_SSL_REDIRECT",
            "yes",
            "DJANGO_SECURE_SSL_REDIRECT must be 0 or 1, not 'yes'",
        ),
        (
            "DJANGO_SECURE_HSTS_SECONDS",
            "1y",
            "DJANGO_SECURE_HSTS_SECONDS must be a whole number of seconds, not '1y'",
        ),
        (
            "DJANGO_SECURE_PROXY_SSL_HEADER",
            "X-Forwarded-Proto",
            (
                "DJANGO_SECURE_PROXY_SSL_HEADER must look like 'X-Forwarded-Proto: https', "
                "not 'X-Forwarded-Proto'"
            ),
        ),
    ],
)
def test_a_malformed_variable_is_a_clear_error(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    completed = _run(tmp_path, "check", **{variable: value})
    assert completed.returncode == 1
    assert f"ImproperlyConfigured: {message}" in completed.stderr
