"""``manage.py runs``: list runs, show one (its steps in DAG order), or cancel one."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand

from assets import cli, services
from assets.models import Run
from flowstone.errors import FlowStoneError
from flowstone.execution.inprocess import load_run_result
from flowstone.registry import get_registry

if TYPE_CHECKING:
    from django.core.management.base import CommandParser

DEFAULT_LIMIT = 20


class Command(BaseCommand):
    """``runs list``, ``runs show RUN_ID``, ``runs cancel RUN_ID``."""

    help = "List, show or cancel runs."

    def add_arguments(self, parser: CommandParser) -> None:
        """Sub-command and options."""
        parser.add_argument("action", choices=("list", "show", "cancel"))
        parser.add_argument("run_id", nargs="?")
        parser.add_argument("--status", help="list: only runs with this status.")
        parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="list: how many.")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args: Any, **options: Any) -> None:
        """Dispatch to the sub-command."""
        if options["action"] == "list":
            self._list(options["status"], options["limit"], as_json=options["json"])
            return
        if not options["run_id"]:
            raise cli.invalid(f"'runs {options['action']}' needs a run id")
        try:
            if options["action"] == "cancel":
                canceled = services.cancel_run(options["run_id"], actor="cli", actor_type="user")
                self.stdout.write(
                    json.dumps({"run_id": options["run_id"], "canceled_steps": canceled})
                    if options["json"]
                    else f"run {options['run_id']}: {canceled} step(s) canceled"
                )
                return
            result = load_run_result(options["run_id"])
        except FlowStoneError as exc:
            raise cli.invalid(str(exc)) from exc
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

    def _list(self, status: str | None, limit: int, *, as_json: bool) -> None:
        runs = Run.objects.order_by("-created_at", "-id")
        if status:
            runs = runs.filter(status=status)
        rows = list(runs[: max(limit, 0)])
        if as_json:
            self.stdout.write(
                json.dumps(
                    [
                        {
                            "run_id": str(run.pk),
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
