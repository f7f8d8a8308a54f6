"""``manage.py backfill ASSET``: many partitions of one asset, with live progress on stderr."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from assets import cli, services
from assets.cli_progress import RunProgress, follow_run
from flowstone import api
from flowstone.errors import FlowStoneError
from flowstone.execution.inprocess import load_run_result
from flowstone.registry import get_registry
from flowstone.status import StepStatus

if TYPE_CHECKING:
    from django.core.management.base import CommandParser

    from flowstone.partitions import PartitionValue
    from flowstone.results import RunResult


class Command(cli.FlowStoneCommand):
    """Backfill partitions of one asset in this process, or on the workers with ``--async``."""

    help = (
        "Backfill partitions of an asset: --all, a --from/--to range, or --partition ... "
        "(one of them). Exit codes: 0 succeeded (or enqueued), 1 failed or cancelled, "
        "2 invalid input, 3 waits for approval."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """Asset, partitions and run options."""
        parser.add_argument("asset")
        parser.add_argument("--all", action="store_true", help="Every partition of the asset.")
        parser.add_argument(
            "--partition", action="append", help="A partition as text (repeatable)."
        )
        parser.add_argument("--from", dest="start", help="First partition (as text), inclusive.")
        parser.add_argument("--to", dest="end", help="Last partition (as text), inclusive.")
        parser.add_argument("--force", action="store_true", help="Also redo succeeded partitions.")
        parser.add_argument("--async", dest="is_async", action="store_true", help="Use workers.")
        parser.add_argument("--max-parallel", type=int, help="With --async: steps at once.")
        parser.add_argument("--no-wait", action="store_true", help="With --async: just enqueue.")
        parser.add_argument("--no-progress", action="store_true", help="No progress on stderr.")
        cli.add_json_argument(parser)

    def _check_options(self, options: dict[str, Any]) -> None:
        """Exactly one way to choose partitions; worker options only with ``--async``."""
        ways = [
            name
            for name, given in (
                ("--all", options["all"]),
                ("--partition", options["partition"]),
                ("--from/--to", options["start"] or options["end"]),
            )
            if given
        ]
        if not ways:
            raise cli.invalid("choose the partitions: --all, --from/--to, or --partition")
        if len(ways) > 1:
            raise cli.invalid(f"{' and '.join(ways)} cannot be combined; choose one")
        if not options["is_async"]:
            for option, name in (("max_parallel", "--max-parallel"), ("no_wait", "--no-wait")):
                if options[option]:
                    raise cli.invalid(f"{name} needs --async")

    def _partitions(self, options: dict[str, Any]) -> list[PartitionValue | None] | None:
        """The partitions to backfill (``None``: all of them), checked before anything runs."""
        asset = options["asset"]
        try:
            definition = get_registry().get(asset)
        except FlowStoneError as exc:
            raise cli.invalid_input(exc) from exc
        if definition.spec.partitions is None:
            raise cli.invalid(f"asset {asset!r} is not partitioned; use materialize")
        if options["all"]:
            return None
        if options["partition"]:
            return [cli.parse_partition(asset, text, None) for text in options["partition"]]
        keys = definition.spec.partitions.keys(store=services.DatabaseDynamicKeyStore())
        begin, stop = 0, len(keys)
        for option, text in (("--from", options["start"]), ("--to", options["end"])):
            if text is None:
                continue
            value = cli.parse_partition(asset, text, None)
            if value not in keys:
                raise cli.invalid(f"{option} {text} is not one of the partitions of {asset!r}")
            if option == "--from":
                begin = keys.index(value)
            else:
                stop = keys.index(value) + 1
        if begin >= stop:
            raise cli.invalid(
                f"--from {options['start']} is after --to {options['end']}; nothing to backfill"
            )
        return list(keys[begin:stop])

    def handle(self, *args: Any, **options: Any) -> None:
        """Check the input (the asset first), start the backfill and show its progress."""
        try:
            get_registry().get(options["asset"])
        except FlowStoneError as exc:
            raise cli.invalid_input(exc) from exc
        self._check_options(options)
        partitions = self._partitions(options)
        progress = RunProgress(
            self.stderr,
            label=options["asset"],
            enabled=not (options["no_progress"] or options["json"]),
        )
        try:
            if options["is_async"]:
                handle = api.backfill_async(
                    options["asset"],
                    partitions,
                    max_parallel=options["max_parallel"],
                    force=options["force"],
                    requested_by="cli",
                )
            else:
                result = api.backfill(
                    options["asset"],
                    partitions,
                    force=options["force"],
                    progress=progress.step_ended,
                    requested_by="cli",
                )
                progress.close(result.status)
        except FlowStoneError as exc:
            raise cli.invalid_input(exc) from exc
        if options["is_async"]:
            if options["no_wait"]:
                self.stdout.write(cli.enqueued(handle.run_id, as_json=options["json"]))
                return
            follow_run(handle.run_id, progress)
            result = load_run_result(handle.run_id)
        self._report(result, as_json=options["json"])
        cli.finish(result)

    def _report(self, result: RunResult, *, as_json: bool) -> None:
        if as_json:
            self.stdout.write(cli.result_json(result))
            return
        failed = sum(1 for step in result.steps if step.status != StepStatus.SUCCESS)
        self.stdout.write(
            f"run {result.run_id}: {result.status} "
            f"({len(result.steps)} steps, {failed} not successful)"
        )
