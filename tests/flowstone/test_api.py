"""Synchronous materialize / materialize_all on the configured database (PostgreSQL or SQLite)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import pytest

import flowstone
from assets.models import Materialization, Run, RunConfig
from flowstone.errors import (
    AssetNotFoundError,
    ExecutionError,
    PartitionKeyError,
    ValidationFailedError,
)
from flowstone.partitions import encode_partition_key
from flowstone.status import RunStatus, StepStatus
from lineage.models import AuditEvent, LineageEdge
from tests.pipelines import diamond
from tests.pipelines.resources import CountingResource

if TYPE_CHECKING:
    from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture(autouse=True)
def _diamond(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.diamond")
    diamond.CALLS.clear()
    diamond.FLAKY_ATTEMPTS.clear()
    CountingResource.journal.clear()


def test_materialize_all_runs_the_diamond_in_order_once_each() -> None:
    result = flowstone.materialize_all("sink", "eu", include_values=True)

    assert result.status == RunStatus.SUCCESS
    assert [s.asset for s in result.steps] == ["source", "left", "right", "sink"]
    assert {s.status for s in result.steps} == {StepStatus.SUCCESS}
    assert diamond.CALLS == ["source:eu", "left", "right", "sink"]  # shared upstream ran once
    assert result.value("sink", "eu") == {"left": 11, "right": 20, "total": 31}
    assert Materialization.objects.filter(run_id=result.run_id).count() == 4


def test_materialize_returns_recorded_rows_and_config(storage_dir: Path) -> None:
    result = flowstone.materialize_all(
        "source", "a|b:c", config={"note": "x"}, tags={"team": "data"}, requested_by="alice"
    )
    step = result.step("source", "a|b:c")

    assert step.partition_key == encode_partition_key("a|b:c")
    assert step.metadata["row_count"] is None
    assert step.metadata["content_hash"].startswith("sha256:")
    stored = Path(unquote(urlparse(step.metadata["uri"]).path))
    assert stored.is_relative_to(storage_dir)
    assert json.loads(stored.read_text())["region"] == "a|b:c"
    config = RunConfig.objects.get(run_id=result.run_id)
    assert (config.options, config.tags, config.requested_by) == (
        {"note": "x"},
        {"team": "data"},
        "alice",
    )
    run = Run.objects.get(pk=result.run_id)
    assert run.kind == "materialize_all"
    assert run.finished_at is not None
    assert AuditEvent.objects.filter(run_id=result.run_id, action="run.requested").count() == 1
    assert AuditEvent.objects.filter(run_id=result.run_id, action="asset.materialized").count() == 1


def test_materialize_reads_upstreams_outside_the_run_from_their_latest_success() -> None:
    first = flowstone.materialize_all("source", "us")
    second = flowstone.materialize_all("source", "us")
    result = flowstone.materialize("left", "us", include_values=True)

    assert result.status == RunStatus.SUCCESS
    assert [s.asset for s in result.steps] == ["left"]
    edge = LineageEdge.objects.get(downstream_id=result.step("left", "us").materialization_id)
    assert edge.upstream_id == second.step("source", "us").materialization_id
    assert edge.upstream_id != first.step("source", "us").materialization_id
    assert (edge.upstream_asset, edge.upstream_partition_key) == (
        "source",
        encode_partition_key("us"),
    )


def test_materialize_without_upstream_success_fails_dependency_not_ready() -> None:
    result = flowstone.materialize("left", "eu")

    step = result.step("left", "eu")
    assert result.status == RunStatus.FAILED
    assert step.status == StepStatus.FAILED
    assert step.error is not None
    assert step.error.kind == "dependency_not_ready"
    assert "source" in step.error.message


def test_lineage_records_one_edge_per_consumed_upstream() -> None:
    result = flowstone.materialize_all("sink", "eu")
    sink = result.step("sink", "eu")
    upstreams = set(
        LineageEdge.objects.filter(downstream_id=sink.materialization_id).values_list(
            "upstream_asset", flat=True
        )
    )
    assert upstreams == {"left", "right"}
    assert LineageEdge.objects.filter(downstream__run_id=result.run_id).count() == 4


def test_user_error_fails_once_and_downstream_is_upstream_failed() -> None:
    result = flowstone.materialize_all("after_broken", "eu")

    assert result.status == RunStatus.FAILED
    broken = result.step("broken", "eu")
    assert broken.status == StepStatus.FAILED
    assert isinstance(broken.error, ExecutionError)
    assert (
        str(broken.error) == "[execution_error] asset 'broken' raised ValueError: cannot process eu"
    )
    assert broken.error.to_dict()["cause"] == "ValueError: cannot process eu"
    assert result.step("after_broken", "eu").status == StepStatus.UPSTREAM_FAILED
    assert result.step("after_broken", "eu").error is not None
    with pytest.raises(ExecutionError):
        result.raise_for_status()


def test_io_failure_leaves_the_step_failed_with_one_error_and_no_success_row() -> None:
    result = flowstone.materialize_all("not_json", "eu")

    (row,) = Materialization.objects.filter(run_id=result.run_id, asset="not_json")
    assert row.status == "failed"
    assert row.error is not None
    assert row.error["kind"] == "io_error"
    assert "not JSON-serializable" in row.error["message"]
    assert not Materialization.objects.filter(asset="not_json", status="success").exists()
    assert not AuditEvent.objects.filter(asset="not_json", action="asset.materialized").exists()
    assert not LineageEdge.objects.filter(downstream_asset="not_json").exists()


def test_retryable_errors_retry_up_to_the_policy() -> None:
    result = flowstone.materialize("flaky", "us")

    assert result.status == RunStatus.SUCCESS
    assert diamond.FLAKY_ATTEMPTS == [1, 2, 3]
    assert result.step("flaky", "us").attempt == 3


def test_default_resources_load_when_no_override_is_given() -> None:
    flowstone.materialize_all("source", "eu", resources={"counter": None}, include_values=True)
    result = flowstone.materialize_all("source", "us", include_values=True)

    assert result.value("source", "us")["label"] == "default"
    assert CountingResource.journal == ["setup:default", "teardown:default"] * 2


def test_resource_override_by_name_replaces_options() -> None:
    result = flowstone.materialize_all(
        "source", "eu", resources={"counter": {"label": "override"}}, include_values=True
    )
    assert result.value("source", "eu")["label"] == "override"
    assert RunConfig.objects.get(run_id=result.run_id).resource_overrides == {
        "counter": {"label": "override"}
    }


def test_resource_setup_failure_is_a_resource_error() -> None:
    result = flowstone.materialize_all("source", "eu", resources={"counter": {"fail_setup": True}})
    error = result.step("source", "eu").error
    assert error is not None
    assert error.kind == "resource_unavailable"


def test_unknown_asset_raises_asset_not_found_without_importing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    materialize = flowstone.materialize
    flowstone.materialize_all("source", "eu")  # registry built
    modules_before = set(sys.modules)

    def refuse_import(name: str, *args: object) -> None:
        raise AssertionError(f"tried to import {name}")

    monkeypatch.setattr("importlib.import_module", refuse_import)
    for hostile in ["os.system", "tests.pipelines.diamond.source", "__import__", "../etc", ""]:
        with pytest.raises(AssetNotFoundError) as caught:
            materialize(hostile)
        assert caught.value.kind == "asset_not_found"
        assert str(caught.value).startswith("[asset_not_found] unknown asset")
    assert set(sys.modules) == modules_before
    assert Run.objects.count() == 1


@pytest.mark.parametrize(
    ("asset", "partition", "error"),
    [
        ("source", None, PartitionKeyError),
        ("source", "mars", PartitionKeyError),
        ("source", 3.5, PartitionKeyError),
        ("source", ("eu",), PartitionKeyError),
    ],
)
def test_bad_partitions_are_rejected_before_a_run_exists(
    asset: str, partition: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        flowstone.materialize(asset, partition)
    assert Run.objects.count() == 0


def test_non_json_options_are_rejected_before_a_run_exists() -> None:
    with pytest.raises(ValidationFailedError, match=r'config\["when"\]: object is not a JSON'):
        flowstone.materialize("source", "eu", config={"when": object()})
    with pytest.raises(ValidationFailedError, match="unknown resource"):
        flowstone.materialize("source", "eu", resources={"nope": {}})
    assert Run.objects.count() == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"config": {"s": "a\x00b"}}, 'config["s"]: string contains a NUL character'),
        ({"config": "abc"}, "config: must be a JSON object (a mapping), not str"),
        ({"config": 5}, "config: must be a JSON object (a mapping), not int"),
        ({"config": {1: "one"}}, "config: key 1 is not a string (int)"),
        ({"tags": {"t": ("a", "b")}}, 'tags["t"]: tuple is not a JSON value'),
        ({"io_overrides": {"source": "x"}}, 'io_overrides["source"]: must be a JSON object'),
        ({"io_overrides": ["source"]}, "io_overrides: must be a JSON object"),
        ({"resources": {"counter": "x"}}, 'resources["counter"]: must be a JSON object or None'),
        ({"resources": {"counter": {"label": "\x00"}}}, "NUL character"),
        ({"requested_by": "al\x00ice"}, "requested_by: string contains a NUL character"),
        ({"requested_by": "a" * 151}, "requested_by: longer than 150 characters"),
        ({"idempotency_key": 7}, "idempotency_key: must be a string"),
    ],
)
@pytest.mark.parametrize(
    "start",
    [flowstone.materialize, flowstone.materialize_all, flowstone.materialize_async],
)
def test_bad_option_shapes_are_a_validation_error_before_a_run_exists(
    start: Callable[..., object], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationFailedError) as caught:
        start("source", "eu", **options)
    assert message in caught.value.message
    assert Run.objects.count() == 0
    assert RunConfig.objects.count() == 0


def test_bad_backfill_options_are_a_validation_error_before_a_run_exists() -> None:
    for start in (flowstone.backfill, flowstone.backfill_async):
        with pytest.raises(ValidationFailedError, match="NUL character"):
            start("source", ["eu", "us"], config={"s": "a\x00b"})
        with pytest.raises(ValidationFailedError, match="must be a JSON object"):
            start("source", None, io_overrides={"source": "x"})
    assert Run.objects.count() == 0


def test_none_means_not_given_and_the_stored_options_are_plain_copies() -> None:
    config: dict[str, Any] = {"nested": {"n": [1, 2]}}
    result = flowstone.materialize(
        "source", "eu", config=config, io_overrides=None, resources={"counter": None}, tags=None
    )
    config["nested"]["n"].append(3)
    stored = RunConfig.objects.get(run_id=result.run_id)
    assert (stored.options, stored.io_overrides, stored.resource_overrides, stored.tags) == (
        {"nested": {"n": [1, 2]}},
        {},
        {},
        {},
    )


def test_asset_function_is_accepted_in_place_of_its_name() -> None:
    result = flowstone.materialize_all(diamond.source, "eu")
    assert result.is_success
