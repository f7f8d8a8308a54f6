"""A run's timeline: one bar per step, or per asset and status for a large run."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

import flowstone
from assets import services
from assets.models import Materialization, Run
from assets.timeline import MAX_TIMELINE_STEPS, MIN_BAR_WIDTH, run_timeline
from flowstone.status import RunKind, StepStatus
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


def test_a_finished_run_has_one_bar_per_step_in_start_order(
    use_definitions: UseDefinitions,
) -> None:
    use_definitions("tests.pipelines.diamond")
    result = flowstone.materialize_all("sink", "eu")

    timeline = run_timeline(Run.objects.get(pk=result.run_id))

    assert not timeline.is_live
    assert not timeline.is_aggregated
    assert timeline.bars[0].label == "source [eu]"
    assert {bar.label.split()[0] for bar in timeline.bars} == {"source", "left", "right", "sink"}
    assert all(bar.label.endswith("[eu]") for bar in timeline.bars)
    assert {bar.status for bar in timeline.bars} == {StepStatus.SUCCESS}
    assert not any(bar.is_open for bar in timeline.bars)
    starts = [bar.start for bar in timeline.bars]
    assert starts == sorted(starts)  # type: ignore[type-var]
    assert timeline.origin == starts[0]
    for bar in timeline.bars:
        assert 0 <= bar.left <= 100 - MIN_BAR_WIDTH
        assert MIN_BAR_WIDTH <= bar.width <= 100 - bar.left
        assert bar.style == f"left: {bar.left:.3f}%; width: {bar.width:.3f}%"


def test_a_live_run_draws_running_steps_up_to_now_and_waiting_ones_without_a_bar(
    use_definitions: UseDefinitions,
) -> None:
    use_definitions("tests.pipelines.diamond")
    created = services.create_run(
        services.RunRequest(
            kind=RunKind.MATERIALIZE_ALL,
            selection=["left"],
            steps=[
                services.StepRequest(asset="source", partition_key="s:eu"),
                services.StepRequest(
                    asset="left", partition_key="s:eu", upstream_keys=(("source", "s:eu"),)
                ),
            ],
        )
    )
    now = timezone.now()
    started = now - dt.timedelta(seconds=30)
    Materialization.objects.filter(run=created.run, asset="source").update(
        status=StepStatus.RUNNING, started_at=started
    )

    timeline = run_timeline(Run.objects.get(pk=created.run.pk), now=now)

    assert timeline.is_live
    source, left = timeline.bars
    assert (source.status, source.is_open, source.start, source.end) == (
        "running",
        True,
        started,
        now,
    )
    assert (source.left, source.width, source.seconds) == (0.0, 100.0, 30.0)
    assert (left.status, left.start, left.end, left.seconds) == ("pending", None, None, None)
    assert (timeline.origin, timeline.until, timeline.seconds) == (started, now, 30.0)


def test_a_large_run_has_one_bar_per_asset_and_status(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.pictures")
    days = MAX_TIMELINE_STEPS + 50
    created = services.create_run(
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
            max_parallel=10,
        )
    )
    now = timezone.now()
    first = Materialization.objects.filter(run=created.run).order_by("id")
    ids = list(first.values_list("id", flat=True))
    Materialization.objects.filter(id__in=ids[-20:]).update(
        status=StepStatus.SUCCESS,
        started_at=now - dt.timedelta(seconds=60),
        finished_at=now - dt.timedelta(seconds=40),
    )
    Materialization.objects.filter(id__in=ids[-25:-20]).update(
        status=StepStatus.FAILED,
        started_at=now - dt.timedelta(seconds=50),
        finished_at=now - dt.timedelta(seconds=45),
    )
    run = Run.objects.get(pk=created.run.pk)

    timeline = run_timeline(run, now=now)

    assert timeline.is_aggregated
    assert timeline.steps == days
    by_status = {bar.status: bar for bar in timeline.bars}
    assert set(by_status) == {"success", "failed", "queued", "pending"}
    assert by_status["success"].label == "p_daily (20 success)"
    assert (by_status["success"].left, by_status["failed"].count) == (0.0, 5)
    queued = by_status["queued"]
    assert queued.is_open
    assert queued.end == now
    assert by_status["pending"].start is None
    assert sum(bar.count for bar in timeline.bars) == days
