"""Errors Django answers before DRF sees the request are JSON ``Error`` bodies under ``/api/``."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture
def client() -> APIClient:
    api = APIClient()
    api.force_authenticate(User.objects.create_superuser("admin", password=None))
    return api


@pytest.mark.parametrize(
    "url", ["/api/approvals/1.5/", "/api/nothing-here/", "/api/assets/a.b/", "/api/runs/x/y/z/"]
)
def test_a_url_no_api_route_matches_is_a_json_404(client: APIClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_a_url_outside_the_api_keeps_djangos_html_404() -> None:
    response = Client().get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_a_form_body_django_refuses_is_a_json_400(client: APIClient) -> None:
    fields = {f"f{i}": "x" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)}
    response = client.post("/api/runs/", fields)  # multipart, one field too many
    assert response.status_code == 400
    assert response.json() == {
        "detail": "Bad request: a body too large or with too many fields, or a bad Host header."
    }


def test_outside_the_api_django_keeps_its_html_400() -> None:
    fields = {f"f{i}": "x" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)}
    response = Client().post("/admin/login/", fields)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
