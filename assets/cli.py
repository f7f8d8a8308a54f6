"""Helpers shared by the ``materialize``, ``backfill`` and ``runs`` commands.

Exit codes: 0 the run succeeded (or was enqueued); 1 the run failed or was cancelled; 2 the input
was invalid; 3 the run waits for an approval, or was still running when ``--wait`` gave up.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from django.core.management.base import CommandError

from flowstone.errors import FlowStoneError, PartitionKeyError, ValidationFailedError
from flowstone.inputs import parse_json
from flowstone.partitions import decode_partition_key
from flowstone.registry import get_registry
from flowstone.status import RunStatus

if TYPE_CHECKING:
    from django.core.management.base import CommandParser

    from flowstone.partitions import PartitionValue
    from flowstone.results import RunResult

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_INVALID: Final = 2
EXIT_WAITING: Final = 3


def invalid(message: str) -> CommandError:
    """A ``CommandError`` for bad input (exit code 2)."""
    return CommandError(message, returncode=EXIT_INVALID)


def add_partition_arguments(parser: CommandParser) -> None:
    """``--partition TEXT`` (as a person types it) or ``--partition-key KEY`` (encoded)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--partition", help="The partition as text, e.g. 2025-12-01 or eu.")
    group.add_argument("--partition-key", help="The encoded partition key, e.g. d:2025-12-01.")


def parse_partition(asset: str, text: str | None, key: str | None) -> PartitionValue | None:
    """Turn the command-line partition into a partition value of ``asset``."""
    try:
        definition = get_registry().get(asset)
        if key is not None:
            return decode_partition_key(key)
        if text is None:
            return None
        if definition.spec.partitions is None:
            raise PartitionKeyError(f"asset {asset!r} is not partitioned")
        return definition.spec.partitions.parse(text)
    except FlowStoneError as exc:
        raise invalid(str(exc)) from exc


def parse_json_option(value: str | None, name: str) -> dict[str, Any]:
    """A JSON object given on the command line, checked by ``flowstone.inputs`` (else exit 2)."""
    if not value:
        return {}
    try:
        data = parse_json(value, what=name)
    except ValidationFailedError as exc:
        raise invalid(exc.message) from exc
    if not isinstance(data, dict):
        raise invalid(f"{name}: must be a JSON object, not {type(data).__name__}")
    return data


def result_json(result: RunResult) -> str:
    """A run result as JSON."""
    return json.dumps(
        {
            "run_id": result.run_id,
            "status": str(result.status),
            "steps": [
                {
                    "materialization_id": step.materialization_id,
                    "asset": step.asset,
                    "partition_key": step.partition_key,
                    "status": str(step.status),
                    "attempt": step.attempt,
                    "error": step.error.to_dict() if step.error else None,
                    "metadata": dict(step.metadata),
                }
                for step in result.steps
            ],
        }
    )


def exit_code_for(status: RunStatus) -> int:
    """The documented exit code of a run's status."""
    if status == RunStatus.SUCCESS:
        return EXIT_OK
    if status in (RunStatus.FAILED, RunStatus.CANCELED):
        return EXIT_FAILED
    return EXIT_WAITING


def finish(result: RunResult) -> None:
    """Raise the ``CommandError`` that carries a run's exit code, unless it succeeded."""
    code = exit_code_for(result.status)
    if code != EXIT_OK:
        errors = "; ".join(str(error) for error in result.errors)
        raise CommandError(
            f"run {result.run_id} is {result.status}. {errors}".strip(), returncode=code
        )
