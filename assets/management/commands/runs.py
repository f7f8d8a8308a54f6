"""``manage.py runs``: list, show (steps and kept attempts), cancel or re-execute runs.

Each sub-command is a sub-parser (``_add_<name>``) and a handler in ``_handlers``; a new one is
one of each.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from assets import cli, services
from assets.cli_progress import WAIT_ENDS_AT, RunProgress, follow_run
from assets.models import Run, StepAttempt
from assets.serializers import StepAttemptSerializer
from flowstone import api
from flowstone.errors import FlowStoneError
from flowstone.execution.inprocess import load_run_result
from flowstone.registry import get_registry
from flowstone.status import RunStatus

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.core.management.base import CommandParser


DEFAULT_LIMIT: Final = 20


class Command(cli.FlowStoneCommand):
    """``runs list``, ``runs show RUN``, ``runs cancel RUN``, ``runs reexecute RUN``."""

    help = (
        "List, show, cancel or re-execute runs. Exit codes: 0 answered (or cancelled, or the "
        "re-execution succeeded or was enqueued), 1 the re-execution failed or was cancelled, "
        "2 invalid input (an unknown run, a status that does not exist, a run that cannot be "
        "re-executed), 3 the re-execution waits for approval or was still running after --wait."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """One sub-parser per sub-command."""
        actions = cli.add_subcommands(parser)
        for add in (self._add_list, self._add_show, self._add_cancel, self._add_reexecute):
            add(actions)

    @staticmethod
    def _add_list(actions: Any) -> None:
        listing = actions.add_parser("list", help="The latest runs, newest first.")
        listing.add_argument(
            "--status", choices=[str(s) for s in RunStatus], help="Only runs with this status."
        )
        listing.add_argument(
            "--limit",
            type=cli.positive_int,
            default=DEFAULT_LIMIT,
            help="How many (default: %(default)s).",
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

    @staticmethod
    def _add_reexecute(actions: Any) -> None:
        again = actions.add_parser(
            "reexecute",
            help="Run a finished run's failed, upstream-failed and canceled steps again, reading "
            "its successes as their upstreams (here; --async: on the workers).",
        )
        again.add_argument("run_id", metavar="RUN", help="The finished run's id.")
        again.add_argument("--async", dest="is_async", action="store_true", help="Enqueue.")
        again.add_argument(
            "--wait", type=float, metavar="SECONDS", help="With --async: wait this long."
        )
        again.add_argument("--no-progress", action="store_true", help="No progress on stderr.")
        cli.add_json_argument(again)

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], None]]:
        return {
            "list": self._list,
            "show": self._show,
            "cancel": self._cancel,
            "reexecute": self._reexecute,
        }

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
        attempts: dict[int, list[StepAttempt]] = {}
        for attempt in StepAttempt.objects.filter(materialization__run_id=result.run_id).order_by(
            "materialization_id", "attempt"
        ):
            attempts.setdefault(attempt.materialization_id, []).append(attempt)
        if options["json"]:
            data = cli.result_data(result)
            for step in data["steps"]:
                kept = attempts.get(step["materialization_id"], [])
                # As in the API (``GET /api/materializations/{id}/``): newest first.
                step["attempts"] = StepAttemptSerializer(reversed(kept), many=True).data
            self.stdout.write(json.dumps(data))
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
            for attempt in attempts.get(step.materialization_id, []):
                self.stdout.write(_attempt_text(attempt))

    def _reexecute(self, options: dict[str, Any]) -> None:
        cli.check_wait(options)
        progress = RunProgress(
            self.stderr,
            label="reexecute",
            enabled=not (options["no_progress"] or options["json"]),
        )
        if not options["is_async"]:
            result = api.reexecute(
                options["run_id"], progress=progress.step_ended, requested_by="cli"
            )
            progress.close(result.status)
            self.stdout.write(
                cli.result_json(result) if options["json"] else cli.result_table(result)
            )
            cli.finish(result)
            return
        handle = api.reexecute_async(options["run_id"], requested_by="cli")
        if options["wait"] is None:
            self.stdout.write(cli.enqueued(handle.run_id, as_json=options["json"]))
            return
        status = follow_run(handle.run_id, progress, timeout=options["wait"])
        result = load_run_result(handle.run_id)
        self.stdout.write(cli.result_json(result) if options["json"] else cli.result_table(result))
        if status not in WAIT_ENDS_AT:
            raise cli.still_running(handle.run_id, options["wait"])
        cli.finish(result)

    def _cancel(self, options: dict[str, Any]) -> None:
        run_id = options["run_id"]
        canceled = services.cancel_run(run_id, actor="cli", actor_type="user")
        self.stdout.write(
            json.dumps({"id": run_id, "canceled_steps": canceled})
            if options["json"]
            else f"run {run_id}: {canceled} step(s) canceled"
        )


def _attempt_text(attempt: StepAttempt) -> str:
    """A kept attempt: its outcome and worker, its log and its error's traceback, indented."""
    lines = [f"    attempt {attempt.attempt} {attempt.outcome} on {attempt.worker or '?'}"]
    lines += [f"      {r['at']} {r['level']} {r['message']}" for r in attempt.log]
    if attempt.log_dropped:
        lines.append(f"      ... {attempt.log_dropped} more record(s) not kept")
    error = attempt.error or {}
    if error.get("traceback"):
        lines += [f"      {line}" for line in str(error["traceback"]).rstrip().splitlines()]
    elif error:
        lines.append(f"      {error.get('type', 'Error')}: {error.get('message', '')}")
    return "\n".join(lines)
