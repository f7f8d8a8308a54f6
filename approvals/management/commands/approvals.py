"""``manage.py approvals``: list approvals and decide them from the command line.

Exit codes: 0 listed, or the decision was recorded; 1 the decision was refused (the approval was
already decided or expired, or the user may not decide it); 2 invalid input (an unknown approval,
user or option, bad JSON, a value the checkpoint's form or validator refuses, a rejection without
a reason). ``decide ID --option NAME`` picks one of the checkpoint's named options.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from approvals import services
from approvals.models import Approval
from assets import cli
from flowstone.errors import (
    ApprovalDecidedError,
    ApprovalForbiddenError,
    FlowStoneError,
    ValidationFailedError,
)
from flowstone.execution.resume import continue_after_decision
from flowstone.inputs import parse_json

if TYPE_CHECKING:
    from django.core.management.base import CommandParser

EXIT_REFUSED: Final = cli.EXIT_FAILED
"""A well-formed decision the approval's state or the user's rights refuse."""


class Command(cli.FlowStoneCommand):
    """List approvals, or approve / modify / reject one as a named user."""

    help = (
        "List approvals or decide one: approvals list | approve ID | reject ID | modify ID | "
        "decide ID --option NAME. "
        "Exit codes: 0 done, 1 decision refused (already decided, not allowed), 2 invalid input."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """One sub-parser per sub-command."""
        actions = cli.add_subcommands(parser)
        listing = actions.add_parser("list", help="Approvals with one status, oldest first.")
        listing.add_argument(
            "--status",
            default=Approval.Status.PENDING,
            choices=Approval.Status.values,
            help="Which approvals to list (default: %(default)s).",
        )
        cli.add_json_argument(listing)
        for action in ("approve", "reject", "modify", "decide"):
            decide = actions.add_parser(
                action,
                help="Choose one of a pending approval's options."
                if action == "decide"
                else f"{action.capitalize()} a pending approval.",
            )
            decide.add_argument("approval_id", metavar="ID", help="The approval to decide.")
            decide.add_argument(
                "--user", required=True, help="The deciding user (holds approvals.decide_approval)."
            )
            decide.add_argument(
                "--reason", default="", required=action == "reject", help="Why (to reject)."
            )
            if action == "modify":
                decide.add_argument("--value", required=True, help="The new value as JSON.")
            if action == "decide":
                decide.add_argument(
                    "--option", required=True, help="The option's name (see list --json)."
                )
                decide.add_argument(
                    "--value", help="The value to store, as JSON (a 'continue' option only)."
                )
            cli.add_json_argument(decide)

    def handle(self, *args: Any, **options: Any) -> None:
        """Dispatch to the sub-command."""
        if options["action"] == "list":
            self._list(options["status"], as_json=options["json"])
            return
        user = self._decider(options["user"])
        value = None
        if options.get("value") is not None:
            try:
                value = parse_json(options["value"], what="--value")
            except ValidationFailedError as exc:
                raise cli.invalid(exc.message) from exc
        is_option = options["action"] == "decide"
        try:
            continuation = services.decide_approval(
                options["approval_id"],
                services.OPTION if is_option else options["action"],
                actor=user,
                actor_type=Approval.ActorType.USER,
                reason=options["reason"],
                value=value,
                option=options["option"] if is_option else "",
            )
        except (ApprovalDecidedError, ApprovalForbiddenError) as exc:
            raise CommandError(cli.in_cli_terms(str(exc)), returncode=EXIT_REFUSED) from exc
        except FlowStoneError as exc:
            raise cli.invalid_input(exc) from exc
        continue_after_decision(continuation)
        approval = services.get_approval(options["approval_id"])
        if options["json"]:
            self.stdout.write(json.dumps(cli.approval_json(approval)))
        else:
            self.stdout.write(f"approval {approval.pk}: {approval.status}; run {approval.run_id}")

    def _decider(self, username: str) -> str:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise cli.invalid(f"unknown user {username!r}")
        if not user.has_perm("approvals.decide_approval"):
            raise CommandError(
                f"user {username!r} may not decide approvals "
                "(needs the approvals.decide_approval permission)",
                returncode=EXIT_REFUSED,
            )
        return str(user.get_username())

    def _list(self, wanted: str, *, as_json: bool) -> None:
        rows = Approval.objects.filter(status=wanted).order_by("requested_at", "id")
        if as_json:
            self.stdout.write(json.dumps([cli.approval_json(a) for a in rows]))
            return
        for a in rows:
            offered = cli.approval_choices(a)["options"]
            self.stdout.write(
                f"{a.pk:>6}  {a.asset}[{a.partition_key}]  run {a.run_id}  {a.message}"
                + (f"  options: {', '.join(o['name'] for o in offered)}" if offered else "")
            )
