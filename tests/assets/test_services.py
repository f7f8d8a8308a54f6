"""Service-layer invariants: upserts, conditional transitions, deterministic latest."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from assets import services
from assets.models import Materialization, Run
from flowstone.errors import RunNotFoundError
from flowstone.partitions import MAX_PARTITION_KEY_LENGTH, encode_partition_key
from flowstone.status import RunKind
from tests.workers import database_url

ROOT = Path(__file__).resolve().parents[2]


def _new_run() -> Run:
    return services.create_run(
        services.RunRequest(
            kind=RunKind.MATERIALIZE,
            selection=["a"],
            steps=[services.StepRequest(asset="a", partition_key="s:x")],
        )
    ).run


@pytest.mark.django_db
@pytest.mark.embedded
def test_create_run_writes_run_config_steps_and_audit_together() -> None:
    run = _new_run()
    assert run.config.requested_by == ""
    # A step with no upstream in the run is released (queued) by the same transaction.
    assert list(Materialization.objects.filter(run=run).values_list("asset", "status")) == [
        ("a", "queued")
    ]
    assert (run.steps_total, run.steps_remaining) == (1, 1)


@pytest.mark.django_db
@pytest.mark.embedded
def test_transitions_are_conditional_and_report_who_won() -> None:
    run = _new_run()
    step = Materialization.objects.get(run=run)
    assert services.claim_step(step.pk, "worker-1")
    assert not services.claim_step(step.pk, "worker-2")
    step.refresh_from_db()
    assert (step.status, step.attempt, step.lease_owner) == ("running", 1, "worker-1")
    assert step.lease_expires_at is not None
    assert services.renew_lease(step.pk, "worker-1")
    assert services.renew_lease(step.pk, "worker-1", step.attempt)
    assert not services.renew_lease(step.pk, "worker-1", step.attempt + 1)
    assert not services.renew_lease(step.pk, "worker-2")


@pytest.mark.django_db
@pytest.mark.embedded
def test_upsert_updates_the_existing_step_row() -> None:
    run = _new_run()
    first = services.upsert_materialization(
        run_id=run.id, asset="a", partition_key="s:x", metadata={"n": 1}
    )
    second = services.upsert_materialization(
        run_id=run.id, asset="a", partition_key="s:x", metadata={"n": 2}
    )
    assert first.pk == second.pk
    assert Materialization.objects.filter(run=run).count() == 1
    assert second.metadata == {"n": 2}


@pytest.mark.django_db
@pytest.mark.embedded
def test_latest_successful_is_deterministic_with_equal_timestamps() -> None:
    moment = dt.datetime(2025, 12, 14, 12, 0, tzinfo=dt.UTC)
    ids = []
    for _ in range(3):
        run = _new_run()
        step = services.upsert_materialization(
            run_id=run.id, asset="a", partition_key="s:x", status="success", finished_at=moment
        )
        ids.append(step.pk)
    later_failure = _new_run()
    services.upsert_materialization(
        run_id=later_failure.id,
        asset="a",
        partition_key="s:x",
        status="failed",
        finished_at=moment + dt.timedelta(hours=1),
    )
    for _ in range(5):
        latest = services.latest_successful("a", "s:x")
        assert latest is not None
        assert latest.pk == max(ids)
    assert services.latest_successful("a", "s:y") is None


@pytest.mark.django_db
@pytest.mark.embedded
@pytest.mark.parametrize(
    "run_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000", "'; drop"]
)
def test_unknown_run_ids_raise_run_not_found(run_id: str) -> None:
    with pytest.raises(RunNotFoundError, match="unknown run id"):
        services.get_run(run_id)


RACER = textwrap.dedent(
    """
    import os, sys, time
    import django
    django.setup()
    from assets import services
    start = float(sys.argv[2])
    while time.time() < start:
        pass
    for n in range(40):
        services.upsert_materialization(
            run_id=sys.argv[1], asset="raced", partition_key="s:k",
            metadata={"pid": os.getpid(), "n": n},
        )
    """
)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_processes_racing_the_same_upsert_leave_exactly_one_row() -> None:
    run = _new_run()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "flowstone.settings",
    }
    start = time.time() + 3
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(run.id), str(start)],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for racer in racers:
        _, stderr = racer.communicate(timeout=120)
        assert racer.returncode == 0, stderr
    rows = Materialization.objects.filter(run=run, asset="raced")
    assert rows.count() == 1
    assert rows.get().metadata["n"] == 39


@pytest.mark.django_db
@pytest.mark.embedded
def test_the_longest_partition_key_of_four_byte_characters_fits_the_indexes() -> None:
    key = encode_partition_key("😀" * (MAX_PARTITION_KEY_LENGTH - 2))
    run = _new_run()
    step = services.upsert_materialization(
        run_id=run.id, asset="a" * 128, partition_key=key, status="success"
    )
    assert services.latest_successful("a" * 128, key) == step
