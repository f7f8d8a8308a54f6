"""Re-execution from failure: a new run of what failed and what it held back, reading the
successes of the run it re-executes (not recomputing them, and not reading anything newer),
with lineage pointing at them. In-process, on PostgreSQL and on the embedded SQLite default;
the worker path, the API and the admin are tested in ``tests/assets/test_reexecution_workers.py``.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

import flowstone
from assets import services
from assets.models import Materialization, Run
from flowstone.errors import RunNotFoundError, RunStateError, ValidationFailedError
from flowstone.status import RunKind, RunStatus, StepStatus
from lineage.models import AuditEvent, LineageEdge

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture
def fail_flag(
    use_definitions: UseDefinitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    use_definitions("tests.pipelines.reexec")
    flag = tmp_path / "fail"
    monkeypatch.setenv("REEXEC_FAIL_FILE", str(flag))
    return flag


def _step(run_id: str, asset: str, key: str = "a") -> Materialization:
    return Materialization.objects.get(run_id=run_id, asset=asset, partition_key=f"s:{key}")


def test_a_reexecution_runs_the_failed_step_and_its_downstream_reading_the_first_runs_upstream(
    fail_flag: Path,
) -> None:
    fail_flag.write_text("")
    failed = flowstone.materialize_all("r_sink", "a")
    assert failed.status == RunStatus.FAILED
    source = _step(failed.run_id, "r_source")
    flowstone.materialize("r_source", "a")  # a newer success the re-execution must not read
    fail_flag.unlink()

    again = flowstone.reexecute(failed.run_id, include_values=True, requested_by="alice")

    assert again.status == RunStatus.SUCCESS
    assert sorted((s.asset, s.status) for s in again.steps) == [
        ("r_mid", StepStatus.SUCCESS),
        ("r_sink", StepStatus.SUCCESS),
    ]
    assert again.values[("r_sink", "s:a")] == f"sink(mid(a@{failed.run_id}))"
    mid = _step(again.run_id, "r_mid")
    edges = LineageEdge.objects.filter(downstream=mid).values_list("upstream_id", flat=True)
    assert list(edges) == [source.pk]
    run = Run.objects.select_related("config").get(pk=again.run_id)
    assert (run.kind, run.parent_run_id, run.requested_by) == (
        RunKind.REEXECUTE,
        uuid.UUID(failed.run_id),
        "alice",
    )
    assert run.config.tags == {"reexecution_of": failed.run_id}
    requested = AuditEvent.objects.get(run_id=run.pk, action=AuditEvent.Action.RUN_REQUESTED)
    assert requested.details["reexecution_of"] == failed.run_id


def test_a_reexecution_of_a_reexecution_reads_the_nearest_success_up_the_chain(
    fail_flag: Path,
) -> None:
    fail_flag.write_text("")
    first = flowstone.materialize_all("r_sink", "a")
    second = flowstone.reexecute(first.run_id)  # fails again: the flag is still there
    assert second.status == RunStatus.FAILED
    assert {s.asset for s in second.steps} == {"r_mid", "r_sink"}
    fail_flag.unlink()

    third = flowstone.reexecute(second.run_id, include_values=True)

    assert third.status == RunStatus.SUCCESS
    assert third.values[("r_sink", "s:a")] == f"sink(mid(a@{first.run_id}))"
    assert Run.objects.get(pk=third.run_id).config.reused_runs == [second.run_id, first.run_id]


def test_a_backfill_reexecution_holds_only_its_failed_partitions(fail_flag: Path) -> None:
    for key in ("a", "b", "c"):
        flowstone.materialize("r_source", key)
    fail_flag.write_text("b\nc")
    failed = flowstone.backfill("r_mid")
    assert sorted(s.status for s in failed.steps) == ["failed", "failed", "success"]
    fail_flag.write_text("c")

    again = flowstone.reexecute(failed.run_id)

    assert again.status == RunStatus.FAILED
    assert sorted((s.partition_key, s.status) for s in again.steps) == [
        ("s:b", StepStatus.SUCCESS),
        ("s:c", StepStatus.FAILED),
    ]
    assert Run.objects.get(pk=again.run_id).has_step_edges is False


def test_a_canceled_step_is_reexecuted_with_the_steps_it_held_back(fail_flag: Path) -> None:
    handle = flowstone.materialize_all_async("r_sink", "b")  # no worker: every step waits
    services.cancel_run(handle.run_id)
    assert Run.objects.get(pk=handle.run_id).status == RunStatus.CANCELED

    again = flowstone.reexecute(handle.run_id)

    assert again.status == RunStatus.SUCCESS
    assert sorted(s.asset for s in again.steps) == ["r_mid", "r_sink", "r_source"]


@pytest.mark.parametrize(
    ("run_id", "error"),
    [
        ("00000000-0000-0000-0000-000000000000", RunNotFoundError),
        ("not-a-run", RunNotFoundError),
        ("'; DROP TABLE assets_run; --", RunNotFoundError),
        ("x" * 100, ValidationFailedError),
    ],
)
def test_an_unknown_or_hostile_run_id_is_a_clear_error_and_records_nothing(
    fail_flag: Path, run_id: str, error: type[Exception]
) -> None:
    with pytest.raises(error) as raised:
        flowstone.reexecute(run_id)
    assert isinstance(raised.value, flowstone.FlowStoneError)
    assert Run.objects.count() == 0


def test_a_run_that_succeeded_or_is_still_going_cannot_be_reexecuted(fail_flag: Path) -> None:
    done = flowstone.materialize_all("r_sink", "c")
    going = flowstone.materialize_async("r_source", "c")  # no worker here: it stays queued
    runs = Run.objects.count()

    with pytest.raises(RunStateError, match="no failed or canceled step"):
        flowstone.reexecute(done.run_id)
    with pytest.raises(RunStateError, match="still running"):
        flowstone.reexecute(going.run_id)
    assert Run.objects.count() == runs


def test_an_upstream_kept_only_at_its_latest_value_is_read_at_that_value(
    use_definitions: UseDefinitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_definitions(
        "tests.pipelines.reexec_latest",
        io_managers={
            "default": {
                "CLASS": "flowstone.io.FilesystemIOManager",
                "OPTIONS": {"base_dir": str(tmp_path / "storage")},
            },
            "latest_only": {"CLASS": "tests.pipelines.reexec_latest.LatestOnlyIOManager"},
        },
    )
    flag = tmp_path / "fail"
    monkeypatch.setenv("REEXEC_FAIL_FILE", str(flag))
    flag.write_text("")
    failed = flowstone.materialize_all("l_report")
    newer = flowstone.materialize("l_table")  # replaces the only value the manager keeps
    flag.unlink()

    again = flowstone.reexecute(failed.run_id, include_values=True)

    assert again.status == RunStatus.SUCCESS
    assert again.values[("l_report", "")] == f"report(table@{newer.run_id})"
    report = Materialization.objects.get(run_id=again.run_id, asset="l_report")
    table = Materialization.objects.get(run_id=newer.run_id, asset="l_table")
    upstreams = LineageEdge.objects.filter(downstream=report).values_list("upstream_id", flat=True)
    assert list(upstreams) == [table.pk]  # lineage names the value it read
