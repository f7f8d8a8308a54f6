"""``manage.py approvals``: list approvals and decide them from the command line.

Exit codes: 0 listed, or the decision (or quorum vote) was recorded; 1 the decision was refused
(the approval was already decided or expired, the user already voted, or the user may not decide
it: not one of its deciders, or the run's requester); 2 invalid input (an unknown approval
or user, bad JSON, a value the checkpoint refuses, a rejection without a reason).
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
        "List approvals or decide one: approvals list | approve ID | reject ID | modify ID. "
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
        for action in ("approve", "reject", "modify"):
            decide = actions.add_parser(action, help=f"{action.capitalize()} a pending approval.")
            decide.add_argument("approval_id", metavar="ID", help="The approval to decide.")
            decide.add_argument(
                "--user", required=True, help="The deciding user (holds approvals.decide_approval)."
            )
            decide.add_argument(
                "--reason", default="", required=action == "reject", help="Why (to reject)."
            )
            if action == "modify":
                decide.add_argument("--value", required=True, help="The new value as JSON.")
            cli.add_json_argument(decide)

    def handle(self, *args: Any, **options: Any) -> None:
        """Dispatch to the sub-command."""
        if options["action"] == "list":
            self._list(options["status"], as_json=options["json"])
            return
        user = self._decider(options["user"])
        value = None
        if options["action"] == "modify":
            try:
                value = parse_json(options["value"], what="--value")
            except ValidationFailedError as exc:
                raise cli.invalid(exc.message) from exc
        try:
            continuation = services.decide_approval(
                options["approval_id"],
                options["action"],
                actor=user,
                actor_type=Approval.ActorType.USER,
                reason=options["reason"],
                value=value,
            )
        except (ApprovalDecidedError, ApprovalForbiddenError) as exc:
            raise CommandError(cli.in_cli_terms(str(exc)), returncode=EXIT_REFUSED) from exc
        except FlowStoneError as exc:
            raise cli.invalid_input(exc) from exc
        continue_after_decision(continuation)
        approval = services.get_approval(options["approval_id"])
        if options["json"]:
            self.stdout.write(json.dumps(cli.approval_json(approval)))
        elif approval.is_pending:
            votes = len(approval.current_votes())
            self.stdout.write(
                f"approval {approval.pk}: pending; {votes} of {approval.quorum} votes"
            )
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
        rows = (
            Approval.objects.filter(status=wanted)
            .prefetch_related("deciders", "votes")
            .order_by("requested_at", "id")
        )
        if as_json:
            self.stdout.write(json.dumps([cli.approval_json(a) for a in rows]))
            return
        for a in rows:
            self.stdout.write(
                f"{a.pk:>6}  {a.asset}[{a.partition_key}]  run {a.run_id}  {a.message}"
            )
