"""Fencing on real workers: a pool process stopped past its lease cannot replace the value.

The first attempt of ``v_source`` is stopped (SIGSTOP) in its body for longer than its lease; the
sweeper gives the step to another pool process, which records attempt 2, and ``v_sink`` reads
it. Then the stopped process continues (SIGCONT) and finishes its stale attempt. Before fencing,
its store replaced the recorded value with attempt 1's (3 of 3 tries).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pytest_django import Settings

import flowstone
from assets.models import Materialization
from flowstone.status import RunStatus, StepStatus
from tests.pipelines.fencing import as_rows, attempt_rows
from tests.pipelines.postgres_settings import POSTGRES_DEFAULT
from tests.workers import LEASE_SECONDS, Services, worker_stack

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

FENCING = "tests.pipelines.fencing"
STOPPED_FOR = LEASE_SECONDS + 4  # past the lease and at least one sweep


@pytest.fixture(params=["filesystem", "postgres"])
def stack(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> Iterator[Services]:
    """Workers whose default IO manager versions (filesystem) or holds the fence (PostgreSQL)."""
    with worker_stack(settings, tmp_path, FENCING) as started:
        started.extra_env["FLOWSTONE_TEST_FIRST_SLEEP"] = str(STOPPED_FOR + 2)
        if request.param == "postgres":
            started.extra_env["DJANGO_SETTINGS_MODULE"] = "tests.pipelines.postgres_settings"
            io_managers = {**settings.FLOWSTONE["IO_MANAGERS"], "default": POSTGRES_DEFAULT}
            settings.FLOWSTONE = {**settings.FLOWSTONE, "IO_MANAGERS": io_managers}
        yield started


def _wait_for(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _worker_log(stack: Services) -> str:
    return (stack.data_dir / "w1.log").read_text(errors="replace")


def test_a_worker_stopped_past_its_lease_cannot_replace_the_recorded_value(
    stack: Services,
) -> None:
    stack.start_worker("w1", concurrency=2)
    stack.start_beat()
    handle = flowstone.materialize_all_async("v_sink")
    pid_file = stack.data_dir / "source-1.pid"
    _wait_for(pid_file.exists)
    stale_pid = int(pid_file.read_text())
    os.kill(stale_pid, signal.SIGSTOP)
    try:
        assert handle.wait(60).status == RunStatus.SUCCESS
    finally:
        os.kill(stale_pid, signal.SIGCONT)
    # The stale attempt now runs to its end: it finds its lease lost and records nothing.
    _wait_for(
        lambda: "lost its lease" in _worker_log(stack) or "no longer ours" in _worker_log(stack)
    )

    source = Materialization.objects.get(run_id=handle.run_id, asset="v_source")
    assert source.status == StepStatus.SUCCESS
    assert source.attempt >= 2
    assert source.metadata["version"] == f"{source.pk}.{source.attempt}"
    assert as_rows(flowstone.load_value("v_source")) == attempt_rows(source.attempt)
    assert as_rows(flowstone.load_value("v_sink")) == [{"read": source.attempt}]
    storage = stack.data_dir / "storage" / "v_source"
    if storage.exists():  # the filesystem manager: only the recorded version is kept
        stored = sorted(path.name for path in storage.iterdir())
        assert stored == [f"__unpartitioned__@{source.pk}.{source.attempt}.json"]
