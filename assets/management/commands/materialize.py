"""``manage.py materialize ASSET``: run one asset partition (and, with ``--all``, its upstreams)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand

from assets import cli
from flowstone import api
from flowstone.errors import FlowStoneError

if TYPE_CHECKING:
    from django.core.management.base import CommandParser


class Command(BaseCommand):
    """Materialize in this process, or enqueue for the workers with ``--async``."""

    help = "Materialize an asset partition. Exit codes: 0 ok, 1 failed, 2 invalid, 3 waiting."

    def add_arguments(self, parser: CommandParser) -> None:
        """Asset, partition and run options."""
        parser.add_argument("asset")
        cli.add_partition_arguments(parser)
        parser.add_argument("--all", action="store_true", help="Include every upstream step.")
        parser.add_argument("--async", dest="is_async", action="store_true", help="Enqueue.")
        parser.add_argument("--wait", type=float, help="With --async: wait this many seconds.")
        parser.add_argument("--config", help="Run config as a JSON object.")
        parser.add_argument("--tags", help="Tags as a JSON object.")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args: Any, **options: Any) -> None:
        """Start the run, then report it."""
        asset = options["asset"]
        partition = cli.parse_partition(asset, options["partition"], options["partition_key"])
        run_options: dict[str, Any] = {
            "config": cli.parse_json_option(options["config"], "--config"),
            "tags": cli.parse_json_option(options["tags"], "--tags"),
            "requested_by": "cli",
        }
        try:
            if options["is_async"]:
                start = api.materialize_all_async if options["all"] else api.materialize_async
                handle = start(asset, partition, **run_options)
                if options["wait"] is None:
                    self._report_enqueued(handle.run_id, as_json=options["json"])
                    return
                result = handle.wait(options["wait"])
            else:
                run = api.materialize_all if options["all"] else api.materialize
                result = run(asset, partition, **run_options)
        except FlowStoneError as exc:
            raise cli.invalid(str(exc)) from exc
        self.stdout.write(cli.result_json(result) if options["json"] else self._table(result))
        cli.finish(result)

    def _report_enqueued(self, run_id: str, *, as_json: bool) -> None:
        self.stdout.write(
            f'{{"run_id": "{run_id}", "status": "enqueued"}}'
            if as_json
            else f"run {run_id} enqueued"
        )

    @staticmethod
    def _table(result: Any) -> str:
        lines = [f"run {result.run_id}: {result.status}"]
        lines += [
            f"  {step.asset}[{step.partition_key}] {step.status} (attempt {step.attempt})"
            + (f": {step.error}" if step.error else "")
            for step in result.steps
        ]
        return "\n".join(lines)
