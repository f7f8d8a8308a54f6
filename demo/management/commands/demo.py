"""``manage.py demo``: materialize the demo pipeline for one week and show what was written."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from django.core.management.base import CommandParser

from approvals.models import Approval
from assets import cli
from flowstone import FlowStoneError, materialize_all
from flowstone.status import RunStatus

if TYPE_CHECKING:
    from django.core.management.base import CommandParser

    from flowstone.results import RunResult

DEFAULT_WEEK = dt.date(2025, 12, 1)


def _location(uri: str | None) -> str:
    """Show file URIs as paths relative to the working directory when possible."""
    if not uri:
        return "-"
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return uri
    path = Path(unquote(parsed.path))
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def render_table(result: RunResult) -> list[str]:
    """Render one line per step: asset, partition, status, attempts, rows and location."""
    header = ("asset", "partition", "status", "try", "rows", "location")
    rows = [
        (
            step.asset,
            "-" if step.partition is None else str(step.partition),
            str(step.status),
            str(step.attempt),
            "-" if step.metadata.get("row_count") is None else str(step.metadata["row_count"]),
            _location(step.metadata.get("uri")),
        )
        for step in result.steps
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


APPROVAL_HELP = """
weekly_report waits for approval {approval_id}:
  {message}
Decide it in the admin at /admin/approvals/approval/{approval_id}/decide/
(python manage.py createsuperuser, then python manage.py runserver), or here:
  python manage.py approvals approve {approval_id} --user <a user with approvals.decide_approval>
The run continues in the process that records the decision."""


class Command(cli.FlowStoneCommand):
    """Run the demo pipeline's weekly report and everything upstream of it."""

    help = (
        "Materialize the demo pipeline (weekly_report and its upstreams) for one week. "
        "Exit codes: 0 succeeded, 1 failed, 2 invalid input, 3 waits for approval."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """Accept the week to materialize."""
        parser.add_argument(
            "--week",
            type=dt.date.fromisoformat,
            default=DEFAULT_WEEK,
            help="Monday of the week to materialize (default: %(default)s).",
        )
        cli.add_json_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        """Materialize and print the table of materializations and the report."""
        try:
            result = materialize_all(
                "weekly_report", options["week"], requested_by="demo", include_values=True
            )
        except FlowStoneError as exc:
            raise cli.invalid_input(exc) from exc
        report = result.value("weekly_report", options["week"]) if result.is_success else None
        if options["json"]:
            self.stdout.write(json.dumps({**cli.result_data(result), "report": report}))
        else:
            self._print(result, options["week"], report)
        cli.finish(result)

    def _print(self, result: RunResult, week: dt.date, report: dict[str, Any] | None) -> None:
        self.stdout.write(f"run {result.run_id}: {result.status} ({len(result.steps)} steps)\n")
        for line in render_table(result):
            self.stdout.write(line)
        if result.status == RunStatus.WAITING_APPROVAL:
            self._explain_approval(result.run_id)
        if report is not None:
            self._print_report(week, report)

    def _explain_approval(self, run_id: str) -> None:
        approval = Approval.objects.get(run_id=run_id)
        self.stdout.write(APPROVAL_HELP.format(approval_id=approval.pk, message=approval.message))

    def _print_report(self, week: dt.date, report: dict[str, Any]) -> None:
        self.stdout.write(f"\nweekly_report for the week of {week}:")
        for region, revenue in report["revenue"].items():
            self.stdout.write(f"  {region:<6} {revenue:>10.2f}")
