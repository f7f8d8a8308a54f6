"""The step boundary: whatever a step raises ends that step ``failed``, typed and with a traceback.

Nothing escapes ``materialize()`` raw, no step is left ``running``, and the rest of the run goes
on. Runs on PostgreSQL and on the embedded SQLite default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import flowstone
from assets.models import Materialization, Run
from flowstone.status import TERMINAL_STEP_STATUSES, RunStatus, StepStatus, derive_run_status
from tests.conftest import COUNTER_RESOURCE

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture(autouse=True)
def _boundary(use_definitions: UseDefinitions, tmp_path: Path) -> None:
    use_definitions(
        "tests.pipelines.boundary",
        io_managers={
            "default": {
                "CLASS": "flowstone.io.FilesystemIOManager",
                "OPTIONS": {"base_dir": str(tmp_path / "storage")},
            },
            "failing_store": {"CLASS": "tests.pipelines.boundary.StoreFailsIOManager"},
            "failing_load": {"CLASS": "tests.pipelines.boundary.LoadFailsIOManager"},
        },
        resources={
            "fragile": {**COUNTER_RESOURCE, "OPTIONS": {"fail_teardown": True}},
        },
    )


def _assert_settled(run_id: str) -> None:
    """No step is left unfinished, and the stored run agrees with its steps."""
    run = Run.objects.get(pk=run_id)
    statuses = list(Materialization.objects.filter(run=run).values_list("status", flat=True))
    assert {StepStatus(s) for s in statuses} <= TERMINAL_STEP_STATUSES
    assert run.status == derive_run_status(statuses)
    assert run.finished_at is not None
    assert run.steps_remaining == 0


@pytest.mark.parametrize(
    ("asset", "failed_asset", "error_type", "cause"),
    [
        ("b_disk_full", "b_disk_full", "IOManagerError", "OSError: [Errno 28] No space left"),
        (
            "b_reads_unreadable",
            "b_reads_unreadable",
            "IOManagerError",
            "RuntimeError: checksum mismatch",
        ),
        ("b_after_deep", "b_deep", "IOManagerError", "RecursionError"),
        ("b_teardown", "b_teardown", "ExecutionError", "RuntimeError: the counter service hung"),
        ("b_key_error", "b_key_error", "ExecutionError", "KeyError: 'missing_key'"),
    ],
)
def test_a_foreign_exception_fails_its_step_with_type_message_and_traceback(
    asset: str, failed_asset: str, error_type: str, cause: str
) -> None:
    result = flowstone.materialize_all(asset)

    assert result.status == RunStatus.FAILED
    row = Materialization.objects.get(run_id=result.run_id, asset=failed_asset)
    assert row.status == StepStatus.FAILED
    assert row.error is not None
    assert row.error["type"] == error_type
    assert row.error["cause"].startswith(cause)
    assert "Traceback (most recent call last)" in row.error["traceback"]
    assert row.lease_expires_at is None
    _assert_settled(result.run_id)
    with pytest.raises(flowstone.errors.FlowStoneError):
        result.raise_for_status()


def test_downstream_of_a_failed_io_manager_is_upstream_failed_and_the_rest_runs() -> None:
    result = flowstone.materialize_all("b_join")

    steps = {s.asset: s.status for s in result.steps}
    assert steps == {
        "b_disk_full": StepStatus.FAILED,
        "b_independent": StepStatus.SUCCESS,
        "b_join": StepStatus.UPSTREAM_FAILED,
    }
    _assert_settled(result.run_id)


def test_a_deep_value_fails_only_its_step_and_its_run_ends() -> None:
    result = flowstone.materialize("b_deep")

    assert result.status == RunStatus.FAILED
    (step,) = result.steps
    assert step.error is not None
    assert step.error.kind == "io_error"
    _assert_settled(result.run_id)
