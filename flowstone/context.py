"""What an asset function receives as its ``context`` parameter."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping

    from flowstone.partitions import PartitionValue
    from flowstone.resources import ResourceSet
    from flowstone.step_log import StepLog

logger = logging.getLogger("flowstone.asset")


class StepLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that adds ``run_id``, ``asset`` and ``partition`` to every record.

    With a ``StepLog``, each record is also kept with the attempt (whatever the process's
    logging config does with it).
    """

    def __init__(
        self, logger: logging.Logger, extra: Mapping[str, object], kept: StepLog | None = None
    ) -> None:
        super().__init__(logger, extra)
        self.kept = kept

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        """Keep the record with the attempt, then log it as usual."""
        if self.kept is not None:
            self.kept.add(level, msg, args, kwargs.get("exc_info"))
        super().log(level, msg, *args, **kwargs)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Merge the step's identifiers into the record's ``extra``."""
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


@dataclass(frozen=True, kw_only=True, slots=True)
class AssetContext:
    """The step being computed: asset, partition, run, resources, run options and a logger."""

    asset: str
    partition: PartitionValue | None
    partition_key: str
    run_id: str
    attempt: int
    resources: ResourceSet
    config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    log: StepLogger = field(compare=False, repr=False, default=None)  # type: ignore[assignment]
    kept_log: StepLog | None = field(compare=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if self.log is None:
            step_logger = StepLogger(
                logger,
                {"run_id": self.run_id, "asset": self.asset, "partition": self.partition_key},
                self.kept_log,
            )
            object.__setattr__(self, "log", step_logger)
