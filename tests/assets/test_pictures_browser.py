"""The admin's pictures in headless Chromium: a live run's timeline on a real worker, the
partition grid of a 100,000-partition asset, the asset graph with status and links.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from pytest_django import Settings

import flowstone
from assets.models import Materialization, Run
from assets.palette import STATUS_COLOURS
from flowstone.status import RunKind, RunStatus, StepStatus
from tests.browser import browser_page, log_in
from tests.conftest import UseDefinitions
from tests.workers import Services, worker_stack

__all__ = ["browser_page"]

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PASSWORD = "test-only-password"  # noqa: S105  # a throwaway user in the test database
PARTITIONS = ("k0", "k1", "k2", "k3")
WAIT_MS = 60_000


def _rgb(hex_colour: str) -> str:
    """``#3182bd`` as the browser's computed style writes it: ``rgb(49, 130, 189)``."""
    red, green, blue = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({red}, {green}, {blue})"


def _wait_for(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    with worker_stack(settings, tmp_path, "tests.pipelines.engine_flow") as started:
        yield started


def test_the_timeline_of_a_live_run_refreshes_until_the_run_ends(
    stack: Services, live_server: Any, browser_page: Any
) -> None:
    User.objects.create_superuser("root", password=PASSWORD)
    handle = flowstone.backfill_async("e_slow", list(PARTITIONS), max_parallel=1)
    stack.start_worker("w1", concurrency=1)
    _wait_for(
        lambda: Materialization.objects.filter(
            run_id=handle.run_id, status=StepStatus.RUNNING
        ).exists()
    )

    page = browser_page
    log_in(page, live_server.url, "root", PASSWORD, f"/admin/assets/run/{handle.run_id}/change/")
    assert page.get_attribute("#run-timeline", "data-live") == "1"
    running = page.locator(".timeline-bar[data-status=running]")
    assert running.count() == 1
    colour = running.evaluate("bar => getComputedStyle(bar).backgroundColor")
    assert colour == _rgb(STATUS_COLOURS["running"])
    assert "not started" in page.inner_text("#run-timeline")
    page.evaluate("() => { window.loadedOnce = true; }")

    # The fragment is fetched again while the run is live: a success appears, no reload.
    page.wait_for_function(
        "() => document.querySelectorAll('.timeline-bar[data-status=success]').length >= 1",
        timeout=WAIT_MS,
    )
    assert page.evaluate("() => window.loadedOnce === true")
    success = page.locator(".timeline-bar[data-status=success]").first
    colour = success.evaluate("bar => getComputedStyle(bar).backgroundColor")
    assert colour == _rgb(STATUS_COLOURS["success"])

    # When the run ends, the page reloads once and shows the end state.
    page.wait_for_function(
        """() => window.loadedOnce !== true
            && document.querySelector('#run-timeline')?.dataset.live === '0'""",
        timeout=WAIT_MS,
    )
    page.wait_for_load_state()
    statuses = page.locator(".timeline-bar").evaluate_all("bars => bars.map(b => b.dataset.status)")
    assert statuses == ["success"] * len(PARTITIONS)
    assert page.locator("#run-steps tbody tr.step-success").count() == len(PARTITIONS)
    assert Run.objects.get(pk=handle.run_id).status == RunStatus.SUCCESS


INSERT_STEPS = """
INSERT INTO assets_materialization
    (run_id, asset, partition_key, status, attempt, code_version, remaining_upstreams,
     recoveries, lease_owner, created_at, started_at, finished_at, metadata)
SELECT %(run)s, 'p_daily', 'd:' || to_char(date '1800-01-01' + n, 'YYYY-MM-DD'),
       CASE WHEN n BETWEEN 50000 AND 50099 THEN 'failed'
            WHEN n >= %(running_from)s THEN 'running'
            ELSE %(status)s END,
       1, '', 0, 0, '', now(), %(started)s::timestamptz,
       CASE WHEN n >= %(running_from)s THEN NULL ELSE %(finished)s::timestamptz END, '{}'
FROM generate_series(0, %(last)s) AS n
"""


def test_the_partition_grid_of_a_100k_partition_asset(
    use_definitions: UseDefinitions, live_server: Any, browser_page: Any
) -> None:
    use_definitions("tests.pipelines.pictures")
    User.objects.create_superuser("root", password=PASSWORD)
    older = Run.objects.create(kind=RunKind.BACKFILL)
    newer = Run.objects.create(kind=RunKind.BACKFILL)
    with connection.cursor() as cursor:
        # An older run failed the first 1,000 days; the newer one is the latest everywhere.
        cursor.execute(
            INSERT_STEPS,
            {
                "run": older.pk.hex,
                "status": "failed",
                "started": "2024-01-01T00:00:00Z",
                "finished": "2024-01-01T00:01:00Z",
                "last": 999,
                "running_from": 1000,
            },
        )
        cursor.execute(
            INSERT_STEPS,
            {
                "run": newer.pk.hex,
                "status": "success",
                "started": "2024-02-01T00:00:00Z",
                "finished": "2024-02-01T00:01:00Z",
                "last": 94_999,
                "running_from": 90_000,
            },
        )

    page = browser_page
    log_in(page, live_server.url, "root", PASSWORD, "/admin/")
    began = time.perf_counter()
    page.goto(f"{live_server.url}/admin/assets/run/asset/p_daily/")
    seconds = time.perf_counter() - began
    print(f"\npartition grid of 100,000 partitions: page loaded in {seconds:.2f} s")  # noqa: T201

    cells = page.locator("#partition-grid .partition-range").evaluate_all(
        "cells => cells.map(c => [c.dataset.status, Number(c.dataset.count)])"
    )
    assert cells == [
        ["success", 50_000],
        ["failed", 100],
        ["success", 39_900],
        ["running", 5_000],
        ["missing", 5_000],
    ]
    assert page.inner_text("#partition-counts") == (
        "100000 partitions in 5 ranges: 89900 success, 100 failed, 5000 running, 5000 missing."
    )
    failed = page.locator("#partition-grid .partition-range[data-status=failed]")
    assert failed.get_attribute("title") == "1936-11-24 … 1937-03-03: failed (100 partitions)"
    colour = failed.evaluate("cell => getComputedStyle(cell).backgroundColor")
    assert colour == _rgb(STATUS_COLOURS["failed"])
    assert page.locator("#latest-materializations tbody tr").count() == 20


def test_the_graph_shows_status_and_links_to_asset_pages(
    use_definitions: UseDefinitions, live_server: Any, browser_page: Any
) -> None:
    use_definitions("tests.pipelines.diamond")
    User.objects.create_superuser("root", password=PASSWORD)
    flowstone.materialize_all("sink", "eu")
    flowstone.materialize_all("broken", "us")
    flowstone.materialize("source", "eu")  # left, right and sink are now stale

    page = browser_page
    log_in(page, live_server.url, "root", PASSWORD, "/admin/")
    page.click("#flowstone-pictures >> text=Asset graph")
    page.wait_for_url("**/admin/assets/run/asset-graph/")
    fills = page.locator("#asset-graph svg g.node").evaluate_all(
        """nodes => Object.fromEntries(nodes.map(n => [
            n.querySelector('title').textContent, n.querySelector('polygon').getAttribute('fill')
        ]))"""
    )
    assert fills["source"] == STATUS_COLOURS["success"]
    assert fills["broken"] == STATUS_COLOURS["failed"]
    assert fills["not_json"] == STATUS_COLOURS["missing"]
    sink_text = page.locator("#asset-graph svg g.node", has_text="sink").first.text_content()
    assert "stale" in sink_text

    page.locator("#asset-graph svg g.node", has_text="sink").first.locator("a").click()
    page.wait_for_url("**/admin/assets/run/asset/sink/")
    assert page.locator("#partition-grid .partition-range").count() == 2
    assert "stale:" in page.inner_text("#asset-facts")

    page.click("text=View site")
    page.wait_for_url("**/admin/assets/run/asset-graph/")
