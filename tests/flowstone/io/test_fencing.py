"""Fencing: only the attempt that holds a step's lease decides the value downstream reads.

A stale attempt (its lease expired, the sweeper handed the step to another attempt) still runs
to the end in these tests, before or after the attempt that took over. With every built-in IO
manager, the recorded success must name the winner's value, loading it must return that value,
the downstream step must read it, and nothing the stale attempt stored may be left behind. The
managers get there two ways (ADR 0023): file and object stores write each attempt's version to a
location of its own; the PostgreSQL manager refuses a stale attempt's write in its transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

import flowstone
from assets import services
from assets.models import Materialization
from flowstone.errors import LeaseLostError
from flowstone.execution.step import execute_step
from flowstone.io.base import IOTarget
from flowstone.registry import get_registry
from flowstone.status import RunKind, StepStatus
from tests.conftest import UseDefinitions
from tests.pipelines.fencing import as_rows, attempt_rows
from tests.s3 import MotoServer

pytestmark = [pytest.mark.django_db]

FENCING = "tests.pipelines.fencing"
ROWS_TABLE = "public.fencing_rows"
LATER = dt.timedelta(hours=1)

# name -> IO_MANAGERS["default"] for it (tmp_path, moto server, bucket); PostgreSQL ones need it.
Managers = Callable[[Path, MotoServer, str], dict[str, Any]]
MANAGERS: dict[str, Managers] = {
    "memory": lambda _tmp, _s3, _bucket: {"CLASS": "flowstone.io.MemoryIOManager"},
    "filesystem": lambda tmp, _s3, _bucket: {
        "CLASS": "flowstone.io.FilesystemIOManager",
        "OPTIONS": {"base_dir": str(tmp / "storage")},
    },
    "parquet": lambda tmp, _s3, _bucket: {
        "CLASS": "flowstone.io.parquet.ParquetIOManager",
        "OPTIONS": {"path": str(tmp / "parquet")},
    },
    "parquet-s3": lambda _tmp, s3, bucket: {
        "CLASS": "flowstone.io.parquet.ParquetIOManager",
        "OPTIONS": {"path": f"s3://{bucket}/parquet", "s3": s3.client_options()},
    },
    "s3": lambda _tmp, s3, bucket: {
        "CLASS": "flowstone.io.s3.S3IOManager",
        "OPTIONS": {"bucket": bucket, **s3.client_options()},
    },
    "postgres-json": lambda _tmp, _s3, _bucket: {
        "CLASS": "flowstone.io.postgres.PostgresIOManager"
    },
    "postgres-rows": lambda _tmp, _s3, _bucket: {
        "CLASS": "flowstone.io.postgres.PostgresIOManager"
    },
}
IO_OVERRIDES = {"postgres-rows": {"v_source": {"table": ROWS_TABLE}}}


@pytest.fixture(params=sorted(MANAGERS))
def manager_name(
    request: pytest.FixtureRequest,
    use_definitions: UseDefinitions,
    tmp_path: Path,
) -> str:
    name = str(request.param)
    if name.startswith("postgres") and connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (this is the embedded SQLite run)")
    s3: Any = None
    bucket = ""
    if "s3" in name:
        s3 = request.getfixturevalue("moto_server")
        bucket = request.getfixturevalue("bucket")
    use_definitions(
        FENCING, resources={}, io_managers={"default": MANAGERS[name](tmp_path, s3, bucket)}
    )
    return name


def _worker_run(manager_name: str) -> tuple[int, int]:
    """A worker (not in-process) run of ``v_source -> v_sink``: the ids of its two steps."""
    created = services.create_run(
        services.RunRequest(
            kind=RunKind.MATERIALIZE,
            selection=["v_sink"],
            steps=[
                services.StepRequest(asset="v_source", partition_key=""),
                services.StepRequest(
                    asset="v_sink", partition_key="", upstream_keys=(("v_source", ""),)
                ),
            ],
            io_overrides=IO_OVERRIDES.get(manager_name, {}),
        )
    )
    (source,) = created.ready
    sink = Materialization.objects.get(run=created.run, asset="v_sink").pk
    return source, sink


def _claim(step_id: int, owner: str) -> Materialization:
    claimed = services.claim_step(step_id, owner)
    assert claimed is not None
    return claimed


def _take_back(step_id: int) -> None:
    """The sweeper's view an hour later: the lease expired, the step is queued again."""
    assert services.recover_stale_steps(now=timezone.now() + LATER) == [step_id]


def _execute(step: Materialization, owner: str) -> Any:
    config = Materialization.objects.select_related("run__config").get(pk=step.pk).run.config
    return execute_step(get_registry(), step, config, owner=owner)


def _stored_versions(step_id: int, attempts: range) -> list[int]:
    """The attempts of ``step_id`` whose version holds a value (versioning managers only)."""
    registry = get_registry()
    manager = registry.io_manager_for(registry.get("v_source"))
    return [
        attempt
        for attempt in attempts
        if manager.exists(
            IOTarget(asset="v_source", partition_key="", version=f"{step_id}.{attempt}")
        )
    ]


def _assert_winner(source: int, sink: int, winner: int, manager_name: str) -> None:
    step = Materialization.objects.get(pk=source)
    assert step.status == StepStatus.SUCCESS
    assert step.attempt == winner
    assert step.metadata["version"] == f"{source}.{winner}"
    assert as_rows(flowstone.load_value("v_source")) == attempt_rows(winner)
    # The downstream step reads the recorded value.
    end = _execute(_claim(sink, "sink-worker"), "sink-worker")
    assert end.status == StepStatus.SUCCESS
    assert as_rows(flowstone.load_value("v_sink")) == [{"read": winner}]
    if not manager_name.startswith("postgres"):
        assert _stored_versions(source, range(1, winner + 1)) == [winner]


def test_a_stale_attempt_that_ends_after_the_winner_changes_nothing(manager_name: str) -> None:
    source, sink = _worker_run(manager_name)
    stale = _claim(source, "stale-worker")
    _take_back(source)
    winner = _claim(source, "new-worker")
    assert _execute(winner, "new-worker").status == StepStatus.SUCCESS

    outcome = _execute(stale, "stale-worker")

    assert outcome.end.won is False
    _assert_winner(source, sink, winner=2, manager_name=manager_name)


def test_a_stale_attempt_that_ends_before_the_winner_changes_nothing(manager_name: str) -> None:
    source, sink = _worker_run(manager_name)
    stale = _claim(source, "stale-worker")
    _take_back(source)
    winner = _claim(source, "new-worker")

    outcome = _execute(stale, "stale-worker")
    assert outcome.end.won is False
    assert Materialization.objects.get(pk=source).status == StepStatus.RUNNING
    assert _execute(winner, "new-worker").status == StepStatus.SUCCESS

    _assert_winner(source, sink, winner=2, manager_name=manager_name)


def test_three_attempts_only_the_last_claim_is_recorded(manager_name: str) -> None:
    source, sink = _worker_run(manager_name)
    first = _claim(source, "w1")
    _take_back(source)
    second = _claim(source, "w2")
    _take_back(source)
    third = _claim(source, "w3")
    for stale, owner in ((second, "w2"), (first, "w1")):
        assert _execute(stale, owner).end.won is False
    assert _execute(third, "w3").status == StepStatus.SUCCESS
    _assert_winner(source, sink, winner=3, manager_name=manager_name)


@pytest.mark.postgres
def test_the_postgres_fence_refuses_a_stale_write_and_keeps_the_value(
    use_definitions: UseDefinitions,
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (this is the embedded SQLite run)")
    use_definitions(
        FENCING,
        resources={},
        io_managers={"default": {"CLASS": "flowstone.io.postgres.PostgresIOManager"}},
    )
    source, _sink = _worker_run("postgres-json")
    stale = _claim(source, "stale-worker")
    _take_back(source)
    assert _execute(_claim(source, "new-worker"), "new-worker").status == StepStatus.SUCCESS
    registry = get_registry()
    manager = registry.io_manager_for(registry.get("v_source"))
    fence = services.AttemptFence(step_id=source, attempt=stale.attempt, owner="stale-worker")
    target = IOTarget(asset="v_source", partition_key="", version="x", fence=fence)

    with pytest.raises(LeaseLostError, match="lost its lease"):
        manager.store(target, attempt_rows(99))
    assert manager.load(IOTarget(asset="v_source", partition_key="")) == attempt_rows(2)


def test_the_recorded_version_is_what_load_value_reads(use_definitions: UseDefinitions) -> None:
    use_definitions(FENCING, resources={})
    result = flowstone.materialize_all("v_sink")
    result.raise_for_status()
    source = next(step for step in result.steps if step.asset == "v_source")
    assert source.metadata["version"] == f"{source.materialization_id}.1"
    stem = f"__unpartitioned__%40{source.metadata['version']}.json"  # '@' in a file: URI
    assert source.metadata["uri"].endswith(stem)
    assert flowstone.load_value("v_sink") == [{"read": 1}]


def test_load_value_of_a_partition_that_never_succeeded_is_a_clear_error(
    use_definitions: UseDefinitions,
) -> None:
    use_definitions(FENCING, resources={})
    with pytest.raises(flowstone.errors.MaterializationNotFoundError, match="no successful"):
        flowstone.load_value("v_source")
    with pytest.raises(flowstone.errors.AssetNotFoundError):
        flowstone.load_value("no_such_asset")
    with pytest.raises(flowstone.errors.PartitionKeyError, match="not partitioned"):
        flowstone.load_value("v_source", "2024-01-01")
