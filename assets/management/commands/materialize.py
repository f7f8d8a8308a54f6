"""``manage.py materialize ASSET``: run one asset partition (and, with ``--all``, its upstreams)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from assets import cli
from assets.cli_progress import WAIT_ENDS_AT, RunProgress, follow_run
from flowstone import api
from flowstone.errors import FlowStoneError
from flowstone.execution.inprocess import load_run_result

if TYPE_CHECKING:
    from django.core.management.base import CommandParser

    from flowstone.results import RunResult


class Command(cli.FlowStoneCommand):
    """Materialize in this process, or enqueue for the workers with ``--async``."""

    help = (
        "Materialize an asset partition. Exit codes: 0 succeeded (or enqueued), 1 failed or "
        "cancelled, 2 invalid input, 3 waits for approval or still running after --wait."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """Asset, partition and run options."""
        parser.add_argument("asset")
        cli.add_partition_arguments(parser)
        parser.add_argument("--all", action="store_true", help="Include every upstream step.")
        parser.add_argument("--async", dest="is_async", action="store_true", help="Enqueue.")
        parser.add_argument(
            "--wait", type=float, metavar="SECONDS", help="With --async: wait this long."
        )
        parser.add_argument("--config", help="Run config as a JSON object.")
        parser.add_argument("--tags", help="Tags as a JSON object.")
        parser.add_argument("--no-progress", action="store_true", help="No progress on stderr.")
        cli.add_json_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        """Start the run, then report it."""
        asset = options["asset"]
        cli.check_wait(options)
        partition = cli.parse_partition(asset, options["partition"], options["partition_key"])
        run_options: dict[str, Any] = {
            "config": cli.parse_json_option(options["config"], "--config"),
            "tags": cli.parse_json_option(options["tags"], "--tags"),
            "requested_by": "cli",
        }
        progress = RunProgress(
            self.stderr, label=asset, enabled=not (options["no_progress"] or options["json"])
        )
        try:
            if options["is_async"]:
                start = api.materialize_all_async if options["all"] else api.materialize_async
                handle = start(asset, partition, **run_options)
            else:
                run = api.materialize_all if options["all"] else api.materialize
                result = run(asset, partition, progress=progress.step_ended, **run_options)
                progress.close(result.status)
        except FlowStoneError as exc:
            raise cli.invalid_input(exc) from exc
        if options["is_async"]:
            if options["wait"] is None:
                self.stdout.write(cli.enqueued(handle.run_id, as_json=options["json"]))
                return
            status = follow_run(handle.run_id, progress, timeout=options["wait"])
            result = load_run_result(handle.run_id)
            self._report(result, as_json=options["json"])
            if status not in WAIT_ENDS_AT:
                raise cli.still_running(handle.run_id, options["wait"])
        else:
            self._report(result, as_json=options["json"])
        cli.finish(result)

    def _report(self, result: RunResult, *, as_json: bool) -> None:
        self.stdout.write(cli.result_json(result) if as_json else cli.result_table(result))
