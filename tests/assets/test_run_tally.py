"""A batch counts its successes in a tally and settles them together (ADR 0034), on PostgreSQL.

The run's row is not locked by each success of a backfill's batch; the tally is settled at least
every second and when the batch ends; a tally lost with its worker is made good by the sweeper's
recount, and a tally that comes after that recount changes nothing.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from assets import services
from assets.models import Materialization, Run
from flowstone.io.base import StoredOutput
from flowstone.status import RunKind, RunStatus, StepStatus
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

STORED = StoredOutput(uri="memory://x", size_bytes=1, row_count=None, content_hash="sha256:0")
LATER = dt.timedelta(hours=1)


@pytest.fixture(autouse=True)
def _definitions(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.limits", resources={})


def _run(asset: str, n: int, *, edges: bool = False, max_parallel: int | None = None) -> Run:
    """A worker run of ``n`` steps of ``asset``, edge-less unless ``edges`` chains them."""
    steps = [
        services.StepRequest(
            asset=asset,
            partition_key=f"s:k{i}",
            upstream_keys=((asset, f"s:k{i - 1}"),) if edges and i else (),
        )
        for i in range(n)
    ]
    request = services.RunRequest(
        kind=RunKind.BACKFILL, selection=[asset], steps=steps, max_parallel=max_parallel
    )
    return services.create_run(request).run


def _claimed(run: Run) -> list[Materialization]:
    """Every queued step of ``run``, claimed by a worker of its own."""
    queued = Materialization.objects.filter(run=run, status=StepStatus.QUEUED).order_by("id")
    claimed = [services.claim_step(step.pk, f"w{step.pk}") for step in queued]
    assert all(step is not None for step in claimed)
    return [step for step in claimed if step is not None]


def _counts(run: Run) -> tuple[str, int, int, bool]:
    run.refresh_from_db()
    return (run.status, run.steps_active, run.steps_succeeded, run.finished_at is not None)


def test_only_a_run_whose_successes_release_nothing_is_counted_per_batch() -> None:
    plain = _run("unlimited", 2)
    assert services.tally_for(plain, "unlimited") is not None
    assert services.tally_for(plain, "limited") is None  # a freed slot releases other steps
    assert services.tally_for(_run("unlimited", 2, edges=True), "unlimited") is None
    assert services.tally_for(_run("unlimited", 2, max_parallel=1), "unlimited") is None
    plain.is_in_process = True
    assert services.tally_for(plain, "unlimited") is None


def test_successes_leave_the_run_row_alone_until_the_tally_settles_them() -> None:
    run = _run("unlimited", 3)
    tally = services.tally_for(run, "unlimited")
    assert tally is not None
    first, second, third = _claimed(run)

    with CaptureQueriesContext(connection) as queries:
        assert services.complete_step(
            first, STORED, [], owner=first.lease_owner, batch=services.Batch(owner="w", tally=tally)
        ).won
    assert not [q for q in queries if '"assets_run"' in q["sql"]]  # the run row: not touched
    assert services.complete_step(
        second, STORED, [], owner=second.lease_owner, batch=services.Batch(owner="w", tally=tally)
    ).won
    assert _counts(run) == (RunStatus.RUNNING, 3, 0, False)
    late = services.complete_step(
        second, STORED, [], owner="someone else", batch=services.Batch(owner="w", tally=tally)
    )
    assert not late.won  # a success that lost counts nothing

    tally.flush()
    assert _counts(run) == (RunStatus.RUNNING, 1, 2, False)
    tally.flush()  # nothing left to settle
    assert _counts(run) == (RunStatus.RUNNING, 1, 2, False)
    assert services.complete_step(
        third, STORED, [], owner=third.lease_owner, batch=services.Batch(owner="w", tally=tally)
    ).won
    tally.flush(when_due=True)  # within the second: held
    assert _counts(run) == (RunStatus.RUNNING, 1, 2, False)
    tally.flush()  # the batch ends: the last settle finishes the run
    assert _counts(run) == (RunStatus.SUCCESS, 0, 3, True)


def test_a_tally_lost_with_its_worker_is_recounted_and_a_late_one_changes_nothing() -> None:
    run = _run("unlimited", 2)
    lost = services.tally_for(run, "unlimited")
    frozen = services.tally_for(run, "unlimited")
    assert lost is not None
    assert frozen is not None
    first, second = _claimed(run)
    assert services.complete_step(
        first, STORED, [], owner=first.lease_owner, batch=services.Batch(owner="w", tally=lost)
    ).won
    assert services.complete_step(
        second, STORED, [], owner=second.lease_owner, batch=services.Batch(owner="w", tally=frozen)
    ).won
    # kill -9 takes ``lost`` with it; ``frozen``'s worker is stopped past the grace.

    assert services.settle_stranded_runs() == 0  # within the grace: a live batch may settle
    assert _counts(run) == (RunStatus.RUNNING, 2, 0, False)
    assert services.settle_stranded_runs(now=timezone.now() + LATER) == 1
    assert _counts(run) == (RunStatus.SUCCESS, 0, 2, True)

    frozen.flush()  # wakes up after the recount: the run is finished and exact
    assert _counts(run) == (RunStatus.SUCCESS, 0, 2, True)
    assert services.settle_stranded_runs(now=timezone.now() + LATER) == 0


def test_the_recount_leaves_runs_with_a_step_left_and_finished_runs_alone() -> None:
    waiting = _run("unlimited", 2)
    tally = services.tally_for(waiting, "unlimited")
    assert tally is not None
    first, _ = _claimed(waiting)
    assert services.complete_step(
        first, STORED, [], owner=first.lease_owner, batch=services.Batch(owner="w", tally=tally)
    ).won
    done = _run("unlimited", 1)
    (only,) = _claimed(done)
    assert services.complete_step(only, STORED, [], owner=only.lease_owner).won

    assert services.settle_stranded_runs(now=timezone.now() + LATER) == 0
    assert _counts(waiting) == (RunStatus.RUNNING, 2, 0, False)  # the tally is still to come
    assert _counts(done) == (RunStatus.SUCCESS, 0, 1, True)


def test_a_success_claims_the_batchs_next_step_in_its_own_transaction() -> None:
    run = _run("unlimited", 3)
    queued = list(Materialization.objects.filter(run=run).order_by("id"))
    first = services.claim_step(queued[0].pk, "w")
    assert first is not None
    batch = services.Batch(owner="w", tally=services.tally_for(run, "unlimited"))
    batch.next_step = queued[1].pk

    assert services.complete_step(first, STORED, [], owner="w", batch=batch).won
    assert batch.take_claimed(queued[2].pk) is None  # not the step it claimed
    claimed = batch.take_claimed(queued[1].pk)
    assert claimed is not None
    assert (claimed.status, claimed.lease_owner, claimed.attempt) == (StepStatus.RUNNING, "w", 1)
    assert batch.take_claimed(queued[1].pk) is None  # handed out once

    batch.next_step = queued[2].pk
    services.cancel_run(run.pk, actor="carol")  # the next step is canceled meanwhile
    assert services.complete_step(claimed, STORED, [], owner="w", batch=batch).won
    assert batch.claimed is None
    lost = services.complete_step(claimed, STORED, [], owner="w", batch=batch)
    assert not lost.won  # a lost success claims nothing either
    assert batch.claimed is None


def test_no_next_step_is_claimed_once_the_batch_may_start_no_more() -> None:
    run = _run("unlimited", 2)
    first, second = Materialization.objects.filter(run=run).order_by("id")
    claimed = services.claim_step(first.pk, "w")
    assert claimed is not None
    batch = services.Batch(owner="w", deadline=0.0, next_step=second.pk)  # the time is over

    assert services.complete_step(claimed, STORED, [], owner="w", batch=batch).won
    assert batch.claimed is None
    assert Materialization.objects.get(pk=second.pk).status == StepStatus.QUEUED
