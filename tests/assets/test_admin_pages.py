"""The admin's pictures: a run's paged steps and timeline, an asset's page, the asset graph."""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from urllib.parse import quote

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client, override_settings

import flowstone
from assets import services
from assets.admin_pages import STEPS_PER_PAGE
from flowstone.status import RunKind
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

HOSTILE_NAMES = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "SOURCE",
    "\u0455ource",  # a Cyrillic letter that looks like "s"
    "source ",
    "source\x00",
    "..",
    "source;DROP TABLE assets_run",
    "x" * 2000,
    "__class__",
]


@pytest.fixture
def admin_client(use_definitions: UseDefinitions) -> Client:
    use_definitions("tests.pipelines.diamond", "tests.pipelines.pictures")
    client = Client()
    client.force_login(User.objects.create_superuser("root", password=None))
    return client


def _big_run(days: int) -> services.CreatedRun:
    return services.create_run(
        services.RunRequest(
            kind=RunKind.BACKFILL,
            selection=["p_daily"],
            steps=[
                services.StepRequest(
                    asset="p_daily",
                    partition_key=f"d:{dt.date(1800, 1, 1) + dt.timedelta(days=n):%Y-%m-%d}",
                )
                for n in range(days)
            ],
            max_parallel=5,
        )
    )


def test_a_run_page_shows_a_timeline_and_one_page_of_steps(admin_client: Client) -> None:
    created = _big_run(STEPS_PER_PAGE * 2 + 50)
    url = f"/admin/assets/run/{created.run.pk}/change/"

    page = admin_client.get(url).content.decode()

    assert page.count('<tr class="step-') == STEPS_PER_PAGE
    assert "Page 1 of 3 (250 steps)" in page
    assert 'id="run-timeline"' in page
    assert 'data-live="1"' in page
    assert "assets/live_timeline.js" in page
    last = admin_client.get(f"{url}?steps_page=3").content.decode()
    assert last.count('<tr class="step-') == 50
    assert "Page 3 of 3" in last
    assert "Page 1 of 3" in admin_client.get(f"{url}?steps_page=bogus").content.decode()
    queued = admin_client.get(f"{url}?steps_status=queued").content.decode()
    assert queued.count('<tr class="step-queued">') == 5
    assert "Page 1 of 1 (5 steps queued)" in queued
    bogus = admin_client.get(f"{url}?steps_status=%3Cb%3Ebogus").content.decode()
    assert "There is no step status &#x27;&lt;b&gt;bogus&#x27;; showing every step." in bogus
    assert "<b>bogus" not in bogus


def test_the_timeline_fragment_of_a_run(admin_client: Client) -> None:
    result = flowstone.materialize_all("sink", "eu")

    response = admin_client.get(f"/admin/assets/run/{result.run_id}/timeline/")

    assert response.status_code == 200
    fragment = response.content.decode()
    assert fragment.lstrip().startswith('<div id="run-timeline"')
    assert 'data-live="0"' in fragment
    assert fragment.count('class="timeline-bar status-success"') == 4
    assert "Run success: 4 steps, 4 succeeded" in fragment
    missing = admin_client.get(f"/admin/assets/run/{uuid.uuid4()}/timeline/")
    assert missing.status_code == 404


def test_an_asset_page_shows_partition_health_and_latest_materializations(
    admin_client: Client,
) -> None:
    flowstone.materialize_all("sink", "eu")
    flowstone.materialize_all("broken", "us")

    page = admin_client.get("/admin/assets/run/asset/source/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "3 partitions in 2 ranges: 2 success, 1 missing." in html
    assert html.count('class="partition-range status-success"') == 1
    assert 'data-count="2"' in html
    assert "eu … us" in html
    assert html.count('<tr class="step-success">') == 2
    assert 'href="/admin/assets/run/asset/left/"' in html  # read by
    assert "Every materialization of source" in html
    broken = admin_client.get("/admin/assets/run/asset/broken/").content.decode()
    assert "<tr><td>us</td><td>1</td><td>failed</td></tr>" in broken


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("debug", [False, True])
def test_an_unknown_or_hostile_asset_name_is_a_404_and_never_reflected(
    admin_client: Client, name: str, debug: bool
) -> None:
    with override_settings(DEBUG=debug):
        response = admin_client.get(f"/admin/assets/run/asset/{quote(name, safe='')}/")
    assert response.status_code == 404
    body = response.content.decode()
    assert "<script>alert" not in body
    assert "<img src=x" not in body


def test_pages_need_the_view_permission(admin_client: Client) -> None:
    result = flowstone.materialize_all("sink", "eu")
    pages = (
        "/admin/assets/run/asset-graph/",
        "/admin/assets/run/asset/sink/",
        f"/admin/assets/run/{result.run_id}/timeline/",
    )
    nobody = Client()
    nobody.force_login(User.objects.create_user("nobody", is_staff=True))
    assert [nobody.get(url).status_code for url in pages] == [403, 403, 403]
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_run"))
    client = Client()
    client.force_login(viewer)
    assert [client.get(url).status_code for url in pages] == [200, 200, 200]
    assert Client().get(pages[0]).status_code == 302  # to the login page


def test_the_graph_shows_each_assets_status_and_staleness_and_links_to_it(
    admin_client: Client,
) -> None:
    flowstone.materialize_all("sink", "eu")
    flowstone.materialize_all("broken", "us")
    flowstone.materialize("source", "eu")  # newer than what left, right and sink were made from

    html = admin_client.get("/admin/assets/run/asset-graph/").content.decode()

    table = html[html.index('id="asset-states"') :]
    rows = {
        row.split("</a>")[0].rsplit(">", 1)[-1]: row
        for row in table.split("<tr>")[2:]  # after the header
    }
    assert 'status-success">success' in rows["source"]
    assert "up to date" in rows["source"]
    assert 'status-failed">failed' in rows["broken"]
    assert 'status-missing">missing' in rows["p_daily"]
    assert "stale:" in rows["sink"]
    assert 'href="/admin/assets/run/asset/sink/"' in rows["sink"]
    if shutil.which("dot"):
        graph = html[html.index('id="asset-graph"') :]
        svg = graph[: graph.index("</svg>")]
        assert 'xlink:href="/admin/assets/run/asset/sink/"' in svg
        assert "stale" in svg
        assert "#de2d26" in svg  # broken's fill: the failed colour


def test_view_site_opens_the_asset_graph_and_the_index_links_to_it(admin_client: Client) -> None:
    index = admin_client.get("/admin/").content.decode()
    assert '<a href="/admin/assets/run/asset-graph/">View site</a>' in index
    assert 'id="flowstone-pictures"' in index
    assert admin_client.get("/admin/assets/run/asset-graph/").status_code == 200
    nobody = Client()
    nobody.force_login(User.objects.create_user("nobody", is_staff=True))
    assert 'id="flowstone-pictures"' not in nobody.get("/admin/").content.decode()
