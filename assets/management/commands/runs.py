"""``manage.py runs``: list runs, show one (its steps in DAG order), or cancel one.

Each sub-command is a sub-parser (``_add_<name>``) and a handler in ``_handlers``; a new one is
one of each.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from assets import cli, services
from assets.models import Run
from flowstone.errors import FlowStoneError
from flowstone.execution.inprocess import load_run_result
from flowstone.registry import get_registry
from flowstone.status import RunStatus

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.core.management.base import CommandParser

DEFAULT_LIMIT: Final = 20


def _limit(text: str) -> int:
    """An argparse type: 1 or more."""
    value = int(text)
    if value < 1:
        msg = f"{text} is not a positive integer"
        raise ValueError(msg)
    return value


class Command(cli.FlowStoneCommand):
    """``runs list``, ``runs show RUN``, ``runs cancel RUN``."""

    help = (
        "List, show or cancel runs. Exit codes: 0 answered (or cancelled), 2 invalid input "
        "(an unknown run, a status that does not exist)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """One sub-parser per sub-command."""
        actions = cli.add_subcommands(parser)
        for add in (self._add_list, self._add_show, self._add_cancel):
            add(actions)

    @staticmethod
    def _add_list(actions: Any) -> None:
        listing = actions.add_parser("list", help="The latest runs, newest first.")
        listing.add_argument(
            "--status", choices=[str(s) for s in RunStatus], help="Only runs with this status."
        )
        listing.add_argument(
            "--limit", type=_limit, default=DEFAULT_LIMIT, help="How many (default: %(default)s)."
        )
        cli.add_json_argument(listing)

    @staticmethod
    def _add_show(actions: Any) -> None:
        show = actions.add_parser("show", help="A run and its steps in DAG order.")
        show.add_argument("run_id", metavar="RUN", help="The run's id.")
        cli.add_json_argument(show)

    @staticmethod
    def _add_cancel(actions: Any) -> None:
        cancel = actions.add_parser("cancel", help="Cancel the run's steps that have not started.")
        cancel.add_argument("run_id", metavar="RUN", help="The run's id.")
        cli.add_json_argument(cancel)

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], None]]:
        return {"list": self._list, "show": self._show, "cancel": self._cancel}

    def handle(self, *args: Any, **options: Any) -> None:
        """Dispatch to the sub-command."""
        try:
            self._handlers()[options["action"]](options)
        except FlowStoneError as exc:
            raise cli.invalid_input(exc) from exc

    def _list(self, options: dict[str, Any]) -> None:
        runs = Run.objects.order_by("-created_at", "-id")
        if options["status"]:
            runs = runs.filter(status=options["status"])
        rows = list(runs[: options["limit"]])
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    [
                        {
                            "id": str(run.pk),
                            "kind": run.kind,
                            "status": run.status,
                            "steps_total": run.steps_total,
                            "steps_remaining": run.steps_remaining,
                            "requested_by": run.requested_by,
                            "created_at": run.created_at.isoformat(),
                        }
                        for run in rows
                    ]
                )
            )
            return
        for run in rows:
            self.stdout.write(
                f"{run.pk}  {run.kind:<16} {run.status:<16} "
                f"{run.steps_total - run.steps_remaining}/{run.steps_total}  "
                f"{run.created_at:%Y-%m-%d %H:%M}"
            )

    def _show(self, options: dict[str, Any]) -> None:
        result = load_run_result(options["run_id"])
        if options["json"]:
            self.stdout.write(cli.result_json(result))
            return
        position = {name: index for index, name in enumerate(get_registry().graph.order)}
        steps = sorted(
            result.steps, key=lambda s: (position.get(s.asset, len(position)), s.partition_key)
        )
        self.stdout.write(f"run {result.run_id}: {result.status}")
        for step in steps:
            error = f"  {step.error}" if step.error else ""
            self.stdout.write(
                f"  {step.asset:<24} {step.partition_key:<24} {step.status:<16}{error}"
            )

    def _cancel(self, options: dict[str, Any]) -> None:
        run_id = options["run_id"]
        canceled = services.cancel_run(run_id, actor="cli", actor_type="user")
        self.stdout.write(
            json.dumps({"id": run_id, "canceled_steps": canceled})
            if options["json"]
            else f"run {run_id}: {canceled} step(s) canceled"
        )
