"""What the run API returns: a ``RunResult`` with one ``StepResult`` per step."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from flowstone.errors import FlowStoneError, ValidationFailedError
from flowstone.partitions import PartitionValue, encode_partition_key
from flowstone.status import RunStatus, StepStatus

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True, kw_only=True, slots=True)
class StepResult:
    """One step of a run as recorded in its materialization row."""

    materialization_id: int
    asset: str
    partition: PartitionValue | None
    partition_key: str
    status: StepStatus
    attempt: int
    error: FlowStoneError | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, kw_only=True, slots=True)
class RunResult:
    """A run's id, status and steps; ``values`` holds asset values when they were requested."""

    run_id: str
    status: RunStatus
    steps: tuple[StepResult, ...]
    values: Mapping[tuple[str, str], Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def is_success(self) -> bool:
        """Whether every step succeeded."""
        return self.status == RunStatus.SUCCESS

    def step(self, asset: str, partition: PartitionValue | None = None) -> StepResult:
        """Return the step of ``asset`` for ``partition``."""
        key = encode_partition_key(partition)
        for step in self.steps:
            if step.asset == asset and step.partition_key == key:
                return step
        raise ValidationFailedError(
            f"run {self.run_id} has no step {asset}[{key}]", asset=asset, run_id=self.run_id
        )

    def value(self, asset: str, partition: PartitionValue | None = None) -> Any:
        """Return the value a step produced (only when the run was asked to keep values)."""
        key = (asset, encode_partition_key(partition))
        if key not in self.values:
            raise ValidationFailedError(
                f"no value kept for {asset}[{key[1]}]; pass include_values=True and check that "
                "the step succeeded",
                asset=asset,
                run_id=self.run_id,
            )
        return self.values[key]

    @property
    def errors(self) -> tuple[FlowStoneError, ...]:
        """The errors of failed steps, in step order."""
        return tuple(s.error for s in self.steps if s.error is not None)

    def raise_for_status(self) -> RunResult:
        """Raise the first step error unless the run succeeded; return ``self`` otherwise."""
        if self.status in (RunStatus.FAILED, RunStatus.CANCELED) and self.errors:
            raise self.errors[0]
        return self
