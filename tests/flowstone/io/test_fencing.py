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
from django.db import connection, transaction
from django.utils import timezone

import flowstone
from approvals import services as approval_services
from approvals.models import Approval
from assets import services
from assets.models import Materialization
from flowstone.errors import IOManagerError, LeaseLostError
from flowstone.execution.step import execute_step
from flowstone.io.base import IOTarget
from flowstone.io.postgres import PostgresIOManager
from flowstone.registry import get_registry
from flowstone.status import RunKind, StepStatus
from lineage.models import AuditEvent, LineageEdge
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


def test_an_automated_decision_is_made_again_by_the_next_attempt(
    use_definitions: UseDefinitions, tmp_path: Path
) -> None:
    """Attempt 1 is approved automatically, then its store fails (retryable): attempt 2 must
    compute, decide and store its own value, with its lineage (it stored attempt 1's value with
    no lineage when any decided approval resumed the step).
    """
    use_definitions(
        FENCING,
        "tests.pipelines.fencing_gate",
        resources={},
        io_managers={
            "default": {
                "CLASS": "flowstone.io.FilesystemIOManager",
                "OPTIONS": {"base_dir": str(tmp_path / "storage")},
            },
            "flaky": {"CLASS": "tests.pipelines.fencing_gate.FailsFirstStoreIOManager"},
        },
    )
    result = flowstone.materialize_all("v_gated")
    result.raise_for_status()
    gated = next(step for step in result.steps if step.asset == "v_gated")
    assert gated.attempt == 2
    assert flowstone.load_value("v_gated") == [{"attempt": 2, "read": 1}]
    approval = Approval.objects.get(materialization_id=gated.materialization_id)
    assert (approval.status, approval.decided_by, approval.proposed_value) == (
        "approved",
        "automated",
        [{"attempt": 2, "read": 1}],
    )
    decisions = AuditEvent.objects.filter(
        action="checkpoint.approved", partition_key="", asset="v_gated"
    )
    assert sorted(e.details["attempt"] for e in decisions) == [1, 2]
    edges = LineageEdge.objects.filter(downstream_id=gated.materialization_id)
    assert [e.upstream_asset for e in edges] == ["v_source"]


def test_a_stale_attempt_records_no_automated_decision(use_definitions: UseDefinitions) -> None:
    use_definitions(
        FENCING,
        resources={},
        io_managers={"default": {"CLASS": "flowstone.io.MemoryIOManager"}},
    )
    source, _sink = _worker_run("memory")
    step = _claim(source, "stale-worker")
    _take_back(source)
    _claim(source, "new-worker")
    recorded = approval_services.record_automated_decision(
        step,
        owner="stale-worker",
        message="m",
        value=1,
        decided_value=None,
        status="approved",
        reason="",
    )
    assert recorded is None
    assert not Approval.objects.filter(materialization_id=source).exists()


def test_a_step_reads_an_upstream_where_its_run_stored_it(
    use_definitions: UseDefinitions, moto_server: MotoServer, bucket: str
) -> None:
    """The upstream was stored under another run's IO overrides (an S3 prefix): a later run
    without them reads it where it is, as ``load_value`` does.
    """
    use_definitions(
        FENCING,
        resources={},
        io_managers={"default": MANAGERS["s3"](Path(), moto_server, bucket)},
    )
    flowstone.materialize("v_source", io_overrides={"v_source": {"prefix": "elsewhere"}})
    result = flowstone.materialize("v_sink")
    result.raise_for_status()
    assert flowstone.load_value("v_source") == attempt_rows(1)
    assert flowstone.load_value("v_sink") == [{"read": 1}]


@pytest.mark.postgres
def test_the_fence_renews_the_lease_at_the_end_of_the_write(
    use_definitions: UseDefinitions,
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (this is the embedded SQLite run)")
    use_definitions(FENCING, resources={})
    source, _sink = _worker_run("postgres-json")
    step = _claim(source, "w")
    Materialization.objects.filter(pk=source).update(
        lease_expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    fence = services.AttemptFence(step_id=source, attempt=step.attempt, owner="w")
    with transaction.atomic():
        assert fence.hold("default")
    renewed = Materialization.objects.get(pk=source).lease_expires_at
    assert renewed is not None
    assert renewed > timezone.now()
    assert fence.hold("elsewhere") is False


@pytest.mark.postgres
def test_a_postgres_value_replaced_by_a_later_store_is_an_error_not_a_silent_read(
    use_definitions: UseDefinitions,
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (this is the embedded SQLite run)")
    use_definitions(FENCING, resources={})
    manager = PostgresIOManager()
    first = IOTarget(asset="v_source", partition_key="", version="1.1")
    later = IOTarget(asset="v_source", partition_key="", version="2.1")
    manager.store(first, attempt_rows(1))
    assert manager.load(first) == attempt_rows(1)
    manager.store(later, attempt_rows(2))
    assert manager.load(later) == attempt_rows(2)
    assert manager.load(IOTarget(asset="v_source", partition_key="")) == attempt_rows(2)
    with pytest.raises(IOManagerError, match=r"holds the value of attempt 2\.1, not of the"):
        manager.load(first)


@pytest.mark.postgres
def test_a_store_table_from_before_versions_gets_its_column(
    use_definitions: UseDefinitions,
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (this is the embedded SQLite run)")
    use_definitions(FENCING, resources={})
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE public.old_store (asset text NOT NULL, partition_key text NOT NULL, "
            "value jsonb, rows_table text, partition_column text, row_count bigint, "
            "size_bytes bigint NOT NULL, content_hash text NOT NULL, "
            "stored_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (asset, partition_key))"
        )
        cursor.execute(
            "INSERT INTO public.old_store (asset, partition_key, value, size_bytes, "
            "content_hash) VALUES ('v_source', 'old', '[1]', 3, 'sha256:x')"
        )
    manager = PostgresIOManager(table="public.old_store")
    old = IOTarget(asset="v_source", partition_key="old")
    assert manager.load(old) == [1]
    target = IOTarget(asset="v_source", partition_key="", version="7.1")
    manager.store(target, attempt_rows(1))
    assert manager.load(target) == attempt_rows(1)
    assert manager.load(old) == [1]
