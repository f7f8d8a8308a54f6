"""``manage.py backfill ASSET``: many partitions, with a live progress bar and ETA."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand
from tqdm import tqdm

from assets import cli, services
from flowstone import api
from flowstone.errors import FlowStoneError
from flowstone.registry import get_registry
from flowstone.status import TERMINAL_RUN_STATUSES, StepStatus

if TYPE_CHECKING:
    from django.core.management.base import CommandParser

    from flowstone.execution.step import StepOutcome
    from flowstone.partitions import PartitionValue

WATCH_INTERVAL = 0.5


class Command(BaseCommand):
    """Backfill partitions of one asset in this process, or on the workers with ``--async``."""

    help = (
        "Backfill partitions of an asset (all, a --from/--to range, or --partition ...). "
        "Exit codes: 0 ok, 1 failed, 2 invalid, 3 waiting."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """Asset, partitions and run options."""
        parser.add_argument("asset")
        parser.add_argument(
            "--partition", action="append", help="A partition as text (repeatable)."
        )
        parser.add_argument("--from", dest="start", help="First partition (as text), inclusive.")
        parser.add_argument("--to", dest="end", help="Last partition (as text), inclusive.")
        parser.add_argument("--force", action="store_true", help="Also redo succeeded partitions.")
        parser.add_argument("--async", dest="is_async", action="store_true", help="Use workers.")
        parser.add_argument("--max-parallel", type=int, help="With --async: steps at once.")
        parser.add_argument("--no-wait", action="store_true", help="With --async: just enqueue.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def _partitions(self, options: dict[str, Any]) -> list[PartitionValue | None] | None:
        asset = options["asset"]
        if options["partition"]:
            return [cli.parse_partition(asset, text, None) for text in options["partition"]]
        if not (options["start"] or options["end"]):
            return None
        definition = get_registry().get(asset)
        if definition.spec.partitions is None:
            raise cli.invalid(f"asset {asset!r} is not partitioned")
        keys = definition.spec.partitions.keys(store=services.DatabaseDynamicKeyStore())
        first = cli.parse_partition(asset, options["start"], None) if options["start"] else None
        last = cli.parse_partition(asset, options["end"], None) if options["end"] else None
        if first is not None and first not in keys:
            raise cli.invalid(f"--from {options['start']!r} is not a partition of {asset!r}")
        if last is not None and last not in keys:
            raise cli.invalid(f"--to {options['end']!r} is not a partition of {asset!r}")
        begin = keys.index(first) if first is not None else 0
        stop = keys.index(last) + 1 if last is not None else len(keys)
        return list(keys[begin:stop])

    def handle(self, *args: Any, **options: Any) -> None:
        """Start the backfill and show its progress."""
        partitions = self._partitions(options)
        show = not options["no_progress"] and not options["json"]
        try:
            if options["is_async"]:
                handle = api.backfill_async(
                    options["asset"],
                    partitions,
                    max_parallel=options["max_parallel"],
                    force=options["force"],
                    requested_by="cli",
                )
                if options["no_wait"]:
                    self.stdout.write(f"run {handle.run_id} enqueued")
                    return
                self._watch(handle.run_id, show=show)
                result = handle.result()
            else:
                bar = tqdm(desc=options["asset"], unit="step", disable=not show, file=self.stderr)

                def progress(outcome: StepOutcome, ended: int, total: int) -> None:
                    del outcome
                    bar.total = total
                    bar.n = ended
                    bar.refresh()

                result = api.backfill(
                    options["asset"],
                    partitions,
                    force=options["force"],
                    progress=progress,
                    requested_by="cli",
                )
                bar.close()
        except FlowStoneError as exc:
            raise cli.invalid(str(exc)) from exc
        if options["json"]:
            self.stdout.write(cli.result_json(result))
        else:
            failed = sum(1 for step in result.steps if step.status != StepStatus.SUCCESS)
            self.stdout.write(
                f"run {result.run_id}: {result.status} "
                f"({len(result.steps)} steps, {failed} not successful)"
            )
        cli.finish(result)

    def _watch(self, run_id: str, *, show: bool) -> None:
        """Follow a worker backfill's progress from its run row until it ends."""
        run = services.get_run(run_id)
        with tqdm(total=run.steps_total, unit="step", disable=not show, file=self.stderr) as bar:
            while True:
                run = services.get_run(run_id)
                bar.n = run.steps_total - run.steps_remaining
                bar.refresh()
                if run.status in TERMINAL_RUN_STATUSES:
                    return
                time.sleep(WATCH_INTERVAL)
