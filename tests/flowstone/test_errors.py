"""The FlowStoneError hierarchy."""

from __future__ import annotations

import json

import pytest

from flowstone import errors
from flowstone.errors import ERROR_KINDS, FlowStoneError


def test_kinds_match_the_vocabulary() -> None:
    assert {
        "asset_not_found",
        "dependency_failed",
        "dependency_not_ready",
        "io_error",
        "execution_error",
        "timeout",
        "validation_error",
        "resource_unavailable",
        "checkpoint_rejected",
        "waiting_approval",
    } == ERROR_KINDS


@pytest.mark.parametrize(
    ("cls", "kind", "retryable"),
    [
        (errors.AssetNotFoundError, "asset_not_found", False),
        (errors.DependencyFailedError, "dependency_failed", False),
        (errors.DependencyNotReadyError, "dependency_not_ready", True),
        (errors.IOManagerError, "io_error", False),
        (errors.ExecutionError, "execution_error", False),
        (errors.StepTimeoutError, "timeout", True),
        (errors.ValidationFailedError, "validation_error", False),
        (errors.PartitionKeyError, "validation_error", False),
        (errors.ResourceUnavailableError, "resource_unavailable", False),
        (errors.CheckpointRejectedError, "checkpoint_rejected", False),
        (errors.DefinitionError, "validation_error", False),
    ],
)
def test_each_error_has_its_kind_and_default_retryability(
    cls: type[FlowStoneError], kind: str, retryable: bool
) -> None:
    error = cls("went wrong", asset="a", partition="s:x", run_id="r1")
    assert isinstance(error, FlowStoneError)
    assert (error.kind, error.retryable) == (kind, retryable)
    assert str(error) == f"[{kind}] went wrong"
    with pytest.raises(cls):
        raise error


def _lookup(table: dict[str, int]) -> int:
    return table["x"]


def _fail_with_cause() -> None:
    try:
        _lookup({})
    except KeyError as cause:
        raise errors.IOManagerError(
            "disk gone", retryable=True, asset="a", partition="i:1"
        ) from cause


def test_json_round_trip_keeps_type_and_context() -> None:
    with pytest.raises(errors.IOManagerError) as caught:
        _fail_with_cause()
    data = json.loads(json.dumps(caught.value.to_dict()))
    assert data["cause"] == "KeyError: 'x'"
    rebuilt = FlowStoneError.from_dict(data)
    assert type(rebuilt) is errors.IOManagerError
    assert (rebuilt.kind, rebuilt.retryable, rebuilt.asset, rebuilt.partition) == (
        "io_error",
        True,
        "a",
        "i:1",
    )


def test_unknown_types_and_kinds_rebuild_as_the_base_class() -> None:
    rebuilt = FlowStoneError.from_dict({"type": "os.system", "kind": "evil", "message": "m"})
    assert type(rebuilt) is FlowStoneError
    assert rebuilt.kind == "execution_error"


def test_with_context_fills_only_missing_fields() -> None:
    error = errors.ExecutionError("m", asset="a").with_context(asset="b", run_id="r")
    assert (error.asset, error.run_id) == ("a", "r")
