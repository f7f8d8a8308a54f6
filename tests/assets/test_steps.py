"""The step state machine in the database: release, limits, cascade, cancel, recovery."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from assets import services
from assets.models import Materialization, Run
from flowstone.errors import ExecutionError
from flowstone.io.base import StoredOutput
from flowstone.status import RunKind, RunStatus, StepStatus
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

STORED = StoredOutput(uri="memory://x", size_bytes=1, row_count=None, content_hash="sha256:0")


@pytest.fixture(autouse=True)
def _limits(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.limits", resources={})


def _run(
    steps: list[services.StepRequest], *, max_parallel: int | None = None
) -> services.CreatedRun:
    return services.create_run(
        services.RunRequest(
            kind=RunKind.BACKFILL, selection=["x"], steps=steps, max_parallel=max_parallel
        )
    )


def _keys(asset: str, n: int) -> list[services.StepRequest]:
    return [services.StepRequest(asset=asset, partition_key=f"s:k{i}") for i in range(n)]


def _fan_in_steps() -> list[services.StepRequest]:
    """``unlimited[k0]`` and ``unlimited[k1]`` both feed ``limited[k0]``."""
    return [
        services.StepRequest(asset="unlimited", partition_key="s:k0"),
        services.StepRequest(asset="unlimited", partition_key="s:k1"),
        services.StepRequest(
            asset="limited",
            partition_key="s:k0",
            upstream_keys=(("unlimited", "s:k0"), ("unlimited", "s:k1")),
        ),
    ]


def _status(step_id: int) -> str:
    return Materialization.objects.get(pk=step_id).status


def _finish(step_id: int, owner: str = "w") -> services.StepEnd:
    assert services.claim_step(step_id, owner)
    step = Materialization.objects.get(pk=step_id)
    return services.complete_step(step, STORED, [], owner=owner)


def test_max_parallel_bounds_queued_and_running_steps() -> None:
    created = _run(_keys("unlimited", 10), max_parallel=3)
    assert len(created.ready) == 3
    end = _finish(created.ready[0])
    assert end.won
    assert len(end.ready) == 1  # one slot freed, one step released
    assert (
        Materialization.objects.filter(run=created.run, status__in=["queued", "running"]).count()
        == 3
    )


def test_concurrency_limit_holds_across_runs() -> None:
    first = _run(_keys("limited", 5))
    second = _run(_keys("limited", 5))
    assert len(first.ready) == 2
    assert second.ready == []
    end = _finish(first.ready[0])
    assert end.freed_assets == ("limited",)
    assert len(end.ready) == 1
    assert services.release_for_asset("limited") == []  # the freed slot is taken already
    active = Materialization.objects.filter(asset="limited", status__in=["queued", "running"])
    assert active.count() == 2


def test_fan_in_waits_for_every_upstream_and_failure_cascades() -> None:
    created = _run(
        [
            *_fan_in_steps(),
            services.StepRequest(
                asset="limited", partition_key="s:k1", upstream_keys=(("limited", "s:k0"),)
            ),
        ]
    )
    a, b = created.ready
    rows = {
        (r.asset, r.partition_key): r.pk for r in Materialization.objects.filter(run=created.run)
    }
    fan_in, after = rows[("limited", "s:k0")], rows[("limited", "s:k1")]
    assert _finish(a).ready == []
    assert _status(fan_in) == "pending"
    assert services.claim_step(b, "w")
    end = services.fail_step(Materialization.objects.get(pk=b), ExecutionError("boom"), owner="w")
    assert end.won
    assert _status(fan_in) == _status(after) == StepStatus.UPSTREAM_FAILED
    run = Run.objects.get(pk=created.run.pk)
    assert (run.status, run.steps_remaining) == (RunStatus.FAILED, 0)
    assert run.finished_at is not None


def test_failing_twice_records_one_error() -> None:
    (step_id,) = _run(_keys("unlimited", 1)).ready
    assert services.claim_step(step_id, "w")
    step = Materialization.objects.get(pk=step_id)
    assert services.fail_step(step, ExecutionError("first"), owner="w").won
    assert not services.fail_step(step, ExecutionError("second"), owner="w").won
    assert Materialization.objects.get(pk=step_id).error["message"] == "first"  # type: ignore[index]


def test_completion_by_a_worker_that_lost_its_lease_changes_nothing() -> None:
    (step_id,) = _run(_keys("unlimited", 1)).ready
    assert services.claim_step(step_id, "old-owner")
    step = Materialization.objects.get(pk=step_id)
    assert not services.complete_step(step, STORED, [], owner="someone-else").won
    assert _status(step_id) == "running"


def test_cancel_is_persistent_and_stops_releases() -> None:
    created = _run(_keys("unlimited", 6), max_parallel=2)
    running = created.ready[0]
    assert services.claim_step(running, "w")
    assert services.cancel_run(created.run.pk, actor="alice") == 5
    assert services.cancel_run(created.run.pk) == 0
    assert _finish_running(running).ready == []
    run = Run.objects.get(pk=created.run.pk)
    assert run.cancel_requested_at is not None
    assert run.status == RunStatus.CANCELED
    assert run.steps_remaining == 0
    assert Materialization.objects.filter(run=run, status="canceled").count() == 5


def _finish_running(step_id: int) -> services.StepEnd:
    step = Materialization.objects.get(pk=step_id)
    return services.complete_step(step, STORED, [], owner="w")


def test_expired_leases_are_recovered_then_a_poison_step_fails() -> None:
    (step_id,) = _run(_keys("unlimited", 1)).ready
    later = timezone.now() + dt.timedelta(hours=1)
    for recovery in range(3):
        assert services.claim_step(step_id, f"worker-{recovery}")
        assert services.recover_stale_steps(now=later) == [step_id]
        step = Materialization.objects.get(pk=step_id)
        assert (step.status, step.recoveries, step.lease_owner) == ("queued", recovery + 1, "")
    assert services.claim_step(step_id, "worker-3")
    assert services.recover_stale_steps(now=later) == []
    step = Materialization.objects.get(pk=step_id)
    assert step.status == "failed"
    assert step.error is not None
    assert "taken back from 4 workers" in step.error["message"]
    assert Run.objects.get(pk=step.run_id).status == RunStatus.FAILED


def test_retry_waits_for_not_before() -> None:
    (step_id,) = _run(_keys("unlimited", 1)).ready
    assert services.claim_step(step_id, "w")
    step = Materialization.objects.get(pk=step_id)
    assert services.retry_step(
        step, ExecutionError("later", retryable=True), owner="w", delay=dt.timedelta(hours=1)
    ).won
    assert not services.claim_step(step_id, "w2")  # not due yet
    Materialization.objects.filter(pk=step_id).update(not_before=timezone.now())
    assert services.claim_step(step_id, "w2")


def test_fan_in_is_released_when_its_last_upstream_succeeds() -> None:
    """The run's own edges decide, not today's asset graph (here the graph has no such edge)."""
    created = _run(_fan_in_steps())
    assert Run.objects.get(pk=created.run.pk).has_step_edges
    first, second = created.ready
    fan_in = Materialization.objects.get(run=created.run, asset="limited").pk

    assert _finish(first).ready == []
    assert _status(fan_in) == StepStatus.PENDING
    assert _finish(second).ready == [fan_in]
    assert _status(fan_in) == StepStatus.QUEUED
    assert _finish(fan_in).won
    assert Run.objects.get(pk=created.run.pk).status == RunStatus.SUCCESS


def test_a_completion_that_already_lost_changes_nothing() -> None:
    """The sweeper failed the step while its worker still ran it; the late success is ignored."""
    created = _run(_keys("unlimited", 1))
    assert not Run.objects.get(pk=created.run.pk).has_step_edges
    (step_id,) = created.ready
    assert services.claim_step(step_id, "w1")
    step = Materialization.objects.get(pk=step_id)
    assert services.fail_step(step, ExecutionError("taken back"), owner=None).won

    assert services.complete_step(step, STORED, [], owner="w1") == services.StepEnd(won=False)

    run = Run.objects.get(pk=created.run.pk)
    assert (run.steps_remaining, run.status) == (0, RunStatus.FAILED)
    assert _status(step_id) == StepStatus.FAILED
