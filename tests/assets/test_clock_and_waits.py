"""The shared clock and bounded waits, on PostgreSQL (and a real worker whose clock is off).

- Leases, retry times and sweeps use the database's clock: a worker ten seconds behind keeps
  its steps (before, its leases had expired when it took them, and the sweeper took them back).
- A frozen transaction holding a run's row stalls nobody for long: the sweeper skips that run
  (``SKIP LOCKED``), engine statements give up after ``lock_timeout``, and the session is ended
  after ``idle_in_transaction_session_timeout``.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import OperationalError, connection
from django.utils import timezone
from pytest_django import Settings

import flowstone
from assets import services
from assets.models import Materialization
from flowstone.errors import ExecutionError
from flowstone.io.base import StoredOutput
from flowstone.status import RunKind, RunStatus, StepStatus
from tests.workers import Services, database_url, worker_stack

pytestmark = [pytest.mark.postgres]

STORED = StoredOutput(uri="memory://x", size_bytes=1, row_count=None, content_hash="sha256:0")


def _setting(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {name}")
        (value,) = cursor.fetchone() or ("",)
    return str(value)


@pytest.mark.django_db
def test_engine_connections_bound_their_waits() -> None:
    assert _setting("lock_timeout") == "10s"
    assert _setting("idle_in_transaction_session_timeout") == "30s"
    assert connection.get_connection_params()["keepalives"] == 1


def _backfill(n: int) -> list[int]:
    return services.create_run(
        services.RunRequest(
            kind=RunKind.BACKFILL,
            selection=["unlimited"],
            steps=[
                services.StepRequest(asset="unlimited", partition_key=f"s:k{i}") for i in range(n)
            ],
        )
    ).ready


@pytest.fixture
def _limits(settings: Settings, tmp_path: Path) -> None:
    settings.FLOWSTONE = {
        "DEFINITIONS": ["tests.pipelines.limits"],
        "IO_MANAGERS": {
            "default": {
                "CLASS": "flowstone.io.FilesystemIOManager",
                "OPTIONS": {"base_dir": str(tmp_path)},
            }
        },
        "RESOURCES": {},
    }


@pytest.fixture
def frozen() -> Iterator[psycopg.Connection[Any]]:
    """A second session, as a process frozen inside a transaction would hold one."""
    with psycopg.connect(database_url()) as holder:
        yield holder
        holder.rollback()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_limits")
def test_the_sweeper_skips_a_run_a_frozen_transaction_holds(
    frozen: psycopg.Connection[Any],
) -> None:
    (held,) = _backfill(1)
    (free,) = _backfill(1)
    for step_id in (held, free):
        assert services.claim_step(step_id, "dead-worker")
    past = timezone.now() - dt.timedelta(minutes=1)
    Materialization.objects.filter(pk__in=[held, free]).update(lease_expires_at=past)
    held_run = Materialization.objects.get(pk=held).run_id
    frozen.execute("SELECT 1 FROM assets_run WHERE id = %s FOR UPDATE", (held_run,))

    started = timezone.now()
    assert services.recover_stale_steps() == [free]

    assert (timezone.now() - started).total_seconds() < 5  # it did not wait for the lock
    assert Materialization.objects.get(pk=held).status == StepStatus.RUNNING
    frozen.rollback()
    assert services.recover_stale_steps() == [held]  # the next sweep takes it


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_limits")
def test_an_ending_behind_a_frozen_transaction_gives_up_and_records_nothing(
    frozen: psycopg.Connection[Any],
) -> None:
    (step_id,) = _backfill(1)
    step = services.claim_step(step_id, "w")
    assert step is not None
    frozen.execute("SELECT 1 FROM assets_run WHERE id = %s FOR UPDATE", (step.run_id,))
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '300ms'")
    try:
        with pytest.raises(OperationalError, match="lock timeout"):
            services.fail_step(step, ExecutionError("boom"), owner="w")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")

    frozen.rollback()
    step.refresh_from_db()
    assert (step.status, step.error) == (StepStatus.RUNNING, None)  # the lease decides later
    assert services.complete_step(step, STORED, [], owner="w").won


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    with worker_stack(settings, tmp_path) as started:
        yield started


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(shutil.which("faketime") is None, reason="needs faketime (Debian: faketime)")
def test_a_worker_whose_clock_is_behind_keeps_its_leases(stack: Services) -> None:
    """Lease 3 s, the worker's clock 10 s behind, the sweeper every second on the right clock."""
    stack.start_beat()
    stack.start_worker("w-behind", concurrency=2, clock_offset="-10s")

    result = flowstone.backfill_async("c_sleepy", ["s00", "s01", "s02", "s03"]).wait(90)

    assert result.status == RunStatus.SUCCESS
    rows = Materialization.objects.filter(run_id=result.run_id)
    assert [(r.attempt, r.recoveries) for r in rows] == [(1, 0)] * 4
    assert len(stack.executions()) == 4
