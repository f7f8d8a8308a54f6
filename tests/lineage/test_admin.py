"""The admin: the audit log is append-only, lineage edges are read-only without N+1 queries."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import flowstone
from assets.models import Materialization
from lineage.models import AuditEvent, LineageEdge

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django.test import Client

    from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture(autouse=True)
def _lineage_graph(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.lineage_graph")


@pytest.fixture
def staff(client: Client, admin_user: User) -> Client:
    client.force_login(admin_user)
    return client


def test_the_audit_log_is_listed_searched_and_filtered_but_never_edited(staff: Client) -> None:
    flowstone.materialize_all("sink", "eu", requested_by="alice")
    event = AuditEvent.objects.get(action="run.requested")
    base = "/admin/lineage/auditevent/"

    assert staff.get(base).status_code == 200
    listed = staff.get(base, {"q": "alice"})
    assert listed.status_code == 200
    assert listed.context["cl"].result_count == 1
    filtered = staff.get(base, {"action__exact": "asset.materialized"})
    assert filtered.context["cl"].result_count == 4
    assert staff.get(f"{base}{event.pk}/change/").status_code == 200  # view only
    assert staff.get(f"{base}add/").status_code == 403
    assert staff.post(f"{base}{event.pk}/change/", {"actor": "mallory"}).status_code == 403
    assert staff.post(f"{base}{event.pk}/delete/", {"post": "yes"}).status_code == 403
    bulk = staff.post(base, {"action": "delete_selected", "_selected_action": [event.pk]})
    assert bulk.status_code in (200, 302)
    assert AuditEvent.objects.filter(pk=event.pk, actor="alice").exists()


def _changelist_queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def test_lineage_edges_are_read_only_and_listed_without_n_plus_one(staff: Client) -> None:
    flowstone.materialize_all("sink", "eu")
    url = "/admin/lineage/lineageedge/"
    few = _changelist_queries(staff, url)

    flowstone.materialize_all("weekly_summary", dt.date(2025, 12, 1))
    flowstone.materialize_all("sink", "us")
    assert LineageEdge.objects.count() == 22
    assert _changelist_queries(staff, url) == few
    edge = LineageEdge.objects.first()
    assert edge is not None
    assert staff.get(f"{url}{edge.pk}/change/").status_code == 200
    assert staff.get(f"{url}add/").status_code == 403
    assert staff.post(f"{url}{edge.pk}/delete/", {"post": "yes"}).status_code == 403


def test_the_materialization_page_shows_its_staleness(staff: Client) -> None:
    flowstone.materialize_all("sink", "eu")
    sink = Materialization.objects.get(asset="sink", status="success")

    page = staff.get(f"/admin/assets/materialization/{sink.pk}/change/")
    assert page.status_code == 200
    assert "up to date" in page.content.decode()

    flowstone.materialize("source", "eu")
    page = staff.get(f"/admin/assets/materialization/{sink.pk}/change/")
    assert "stale: input source[s:eu]" in page.content.decode()
