"""What every FlowStone management command shares: exit codes, input errors and run output.

Exit codes (``docs/cli.md``): 0 the run succeeded (or was enqueued); 1 the run failed or was
cancelled; 2 the input was invalid; 3 the run waits for an approval, or was still running when
``--wait`` gave up. Input errors are one line in the command line's terms (``--partition``, not
``partition=``) and leave nothing recorded.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Final, NoReturn

from django.core.management.base import BaseCommand, CommandError, CommandParser

from approvals.models import Approval
from flowstone.errors import FlowStoneError, PartitionKeyError, ValidationFailedError
from flowstone.inputs import parse_json
from flowstone.partitions import decode_partition_key
from flowstone.partitions.codec import format_partition_value
from flowstone.registry import get_registry
from flowstone.status import RunStatus

if TYPE_CHECKING:
    from flowstone.partitions import PartitionValue
    from flowstone.results import RunResult

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_INVALID: Final = 2
EXIT_WAITING: Final = 3

MAX_LISTED_APPROVALS: Final = 5
"""How many approvals a waiting run's message names before it points at ``approvals list``."""

# The Python API's parameter names as they appear in its messages, and the options that set them.
_CLI_TERMS: Final = (
    (re.compile(r"\bpass partition=\.\.\."), "pass --partition (or --partition-key)"),
    (re.compile(r"\bdo not pass a partition\b"), "do not pass --partition"),
    (re.compile(r"\bmax_parallel\b"), "--max-parallel"),
)


def in_cli_terms(message: str) -> str:
    """A message on one line, with the Python API's parameter names replaced by the options."""
    line = " ".join(message.split())
    for pattern, option in _CLI_TERMS:
        line = pattern.sub(option, line)
    return line


def invalid(message: str) -> CommandError:
    """A ``CommandError`` for bad input (exit code 2), in the command line's terms."""
    return CommandError(in_cli_terms(message), returncode=EXIT_INVALID)


def invalid_input(exc: FlowStoneError) -> CommandError:
    """The exit-2 ``CommandError`` for an error the API raised on bad input."""
    return invalid(f"[{exc.kind}] {exc.message}")


class InputParser(CommandParser):
    """A command parser whose errors exit 2 when called programmatically too.

    On the command line argparse prints the usage and exits 2; ``call_command`` gets the same
    code in the ``CommandError`` (Django's own parser would give 1).
    """

    def error(self, message: str) -> NoReturn:
        """Exit 2 with argparse's message."""
        if self.called_from_command_line:
            super().error(message)
        raise CommandError(f"Error: {message}", returncode=EXIT_INVALID)


class FlowStoneCommand(BaseCommand):
    """The base of FlowStone's commands: argument errors exit 2, like every invalid input."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        """Django's parser, made an ``InputParser`` (``add_subcommands`` makes its sub-parsers)."""
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.__class__ = InputParser
        return parser


def add_subcommands(parser: CommandParser) -> Any:
    """The sub-parsers of a command with sub-commands (``runs list``); their errors exit 2."""
    return parser.add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=InputParser
    )


def add_json_argument(parser: CommandParser) -> None:
    """``--json``: every command takes it."""
    parser.add_argument("--json", action="store_true", help="Machine-readable output.")


def add_partition_arguments(parser: CommandParser) -> None:
    """``--partition TEXT`` (as a person types it) or ``--partition-key KEY`` (encoded)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--partition", help="The partition as text, e.g. 2025-12-01 or eu.")
    group.add_argument("--partition-key", help="The encoded partition key, e.g. d:2025-12-01.")


def parse_partition(asset: str, text: str | None, key: str | None) -> PartitionValue | None:
    """Turn the command-line partition into a partition value of ``asset`` (else exit 2)."""
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
        raise invalid_input(exc) from exc


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


def pending_approvals(run_id: str) -> list[Approval]:
    """The approvals a run waits for, oldest first."""
    return list(
        Approval.objects.filter(run_id=run_id, status=Approval.Status.PENDING)
        .prefetch_related("deciders", "votes")
        .order_by("requested_at", "id")
    )


def approval_json(approval: Approval) -> dict[str, Any]:
    """An approval as the commands show it: the API's field names (``run_id`` is the run's)."""
    return {
        "id": approval.pk,
        "asset": approval.asset,
        "partition_key": approval.partition_key,
        "run_id": str(approval.run_id),
        "status": approval.status,
        "message": approval.message,
        "requested_at": approval.requested_at.isoformat(),
        "expires_at": approval.expires_at.isoformat() if approval.expires_at else None,
        "deciders": approval.decider_names,
        "quorum": approval.quorum,
        "votes": [
            {"voter": vote.voter, "voted_at": vote.voted_at.isoformat(), "reason": vote.reason}
            for vote in approval.current_votes()
        ],
        **approval_choices(approval),
    }


def approval_choices(approval: Approval) -> dict[str, Any]:
    """The checkpoint's ``form`` and ``options`` (as the API shows them), and the chosen one."""
    from approvals.services import approval_choices as choices  # noqa: PLC0415  # imports assets

    return choices(approval)


def result_data(result: RunResult) -> dict[str, Any]:
    """A run result as JSON data: its ``id`` (as in the API), steps and awaited approvals."""
    return {
        "id": result.run_id,
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
        "approvals": [approval_json(a) for a in pending_approvals(result.run_id)],
    }


def result_table(result: RunResult) -> str:
    """A run result as text: the run, then one line per step."""
    lines = [f"run {result.run_id}: {result.status}"]
    lines += [
        f"  {step.asset}[{step.partition_key}] {step.status} (attempt {step.attempt})"
        + (f": {step.error}" if step.error else "")
        for step in result.steps
    ]
    return "\n".join(lines)


def positive_int(text: str) -> int:
    """An argparse type: an integer of 1 or more."""
    value = int(text)
    if value < 1:
        msg = f"{text} is not a positive integer"
        raise ValueError(msg)
    return value


def check_wait(options: dict[str, Any]) -> None:
    """``--wait SECONDS`` goes with ``--async`` only, and is 0 or more."""
    if options["wait"] is not None and not options["is_async"]:
        raise invalid("--wait needs --async (a run here always runs to its end)")
    if options["wait"] is not None and options["wait"] < 0:
        raise invalid(f"--wait must be 0 or more seconds, got {options['wait']:g}")


def result_json(result: RunResult) -> str:
    """``result_data`` as a JSON text."""
    return json.dumps(result_data(result))


def enqueued(run_id: str, *, as_json: bool) -> str:
    """What a command prints for a run it only enqueued."""
    return json.dumps({"id": run_id, "status": "enqueued"}) if as_json else f"run {run_id} enqueued"


def exit_code_for(status: RunStatus) -> int:
    """The documented exit code of a run's status."""
    if status == RunStatus.SUCCESS:
        return EXIT_OK
    if status in (RunStatus.FAILED, RunStatus.CANCELED):
        return EXIT_FAILED
    return EXIT_WAITING


def waiting_message(run_id: str) -> str:
    """One line: the approvals a run waits for and how to decide them."""
    approvals = pending_approvals(run_id)
    named = ", ".join(
        f"{a.pk} ({a.asset}, partition "
        f"{format_partition_value(decode_partition_key(a.partition_key))})"
        for a in approvals[:MAX_LISTED_APPROVALS]
    )
    more = len(approvals) - MAX_LISTED_APPROVALS
    if more > 0:
        named += f" and {more} more (python manage.py approvals list)"
    noun = "approval" if len(approvals) == 1 else "approvals"
    example = approvals[0].pk if len(approvals) == 1 else "ID"
    return (
        f"run {run_id} waits for {noun} {named}; decide with: python manage.py approvals "
        f"approve {example} --user USER (or reject {example} --user USER --reason TEXT)"
    )


def finish(result: RunResult) -> None:
    """Raise the ``CommandError`` that carries a run's exit code, unless it succeeded."""
    code = exit_code_for(result.status)
    if code == EXIT_OK:
        return
    if result.status == RunStatus.WAITING_APPROVAL:
        raise CommandError(waiting_message(result.run_id), returncode=code)
    errors = "; ".join(in_cli_terms(str(error)) for error in result.errors)
    raise CommandError(f"run {result.run_id} is {result.status}. {errors}".strip(), returncode=code)


def still_running(run_id: str, timeout: float) -> CommandError:
    """The exit-3 ``CommandError`` of a wait that gave up (the run goes on)."""
    return CommandError(
        f"run {run_id} is still running after {timeout:g} s; follow it with: "
        f"python manage.py runs show {run_id}",
        returncode=EXIT_WAITING,
    )
