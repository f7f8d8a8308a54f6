"""``manage.py approvals``: list pending approvals and decide them from the command line."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from approvals import services
from approvals.models import Approval
from assets.cli import invalid
from flowstone.errors import FlowStoneError, ValidationFailedError
from flowstone.execution.resume import continue_after_decision
from flowstone.inputs import parse_json

if TYPE_CHECKING:
    from django.core.management.base import CommandParser


class Command(BaseCommand):
    """List approvals, or approve / modify / reject one as a named user."""

    help = "List approvals or decide one: approvals list | approve ID | reject ID | modify ID."

    def add_arguments(self, parser: CommandParser) -> None:
        """Sub-commands and their options."""
        parser.add_argument("action", choices=("list", "approve", "reject", "modify"))
        parser.add_argument("approval_id", nargs="?", help="The approval to decide.")
        parser.add_argument(
            "--user", help="The deciding user (must hold approvals.decide_approval)."
        )
        parser.add_argument("--reason", default="", help="Why (required to reject).")
        parser.add_argument("--value", help="The new value as JSON (to modify).")
        parser.add_argument("--status", default="pending", help="Which approvals to list.")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args: Any, **options: Any) -> None:
        """Dispatch to the sub-command."""
        if options["action"] == "list":
            self._list(options["status"], as_json=options["json"])
            return
        if not options["approval_id"]:
            raise CommandError(f"'{options['action']}' needs an approval id")
        user = self._decider(options["user"])
        value = None
        if options["action"] == "modify":
            try:
                value = parse_json(options["value"] or "", what="--value")
            except ValidationFailedError as exc:
                raise invalid(exc.message) from exc
        decision = {"approve": "approve", "reject": "reject", "modify": "modify"}[options["action"]]
        try:
            continuation = services.decide_approval(
                options["approval_id"],
                decision,
                actor=user,
                actor_type=Approval.ActorType.USER,
                reason=options["reason"],
                value=value,
            )
            continue_after_decision(continuation)
        except ValidationFailedError as exc:
            raise invalid(str(exc)) from exc
        except FlowStoneError as exc:
            raise CommandError(str(exc)) from exc
        approval = services.get_approval(options["approval_id"])
        if options["json"]:
            self.stdout.write(json.dumps({"id": approval.pk, "status": approval.status}))
        else:
            self.stdout.write(f"approval {approval.pk}: {approval.status}; run {approval.run_id}")

    def _decider(self, username: str | None) -> str:
        if not username:
            raise CommandError("--user is required to decide")
        user = get_user_model().objects.filter(username=username).first()
        if user is None or not user.has_perm("approvals.decide_approval"):
            raise CommandError(f"user {username!r} may not decide approvals")
        return str(user.get_username())

    def _list(self, wanted: str, *, as_json: bool) -> None:
        rows = Approval.objects.filter(status=wanted).order_by("requested_at", "id")
        if as_json:
            self.stdout.write(
                json.dumps(
                    [
                        {
                            "id": a.pk,
                            "asset": a.asset,
                            "partition_key": a.partition_key,
                            "run_id": str(a.run_id),
                            "status": a.status,
                            "message": a.message,
                            "requested_at": a.requested_at.isoformat(),
                            "expires_at": a.expires_at.isoformat() if a.expires_at else None,
                        }
                        for a in rows
                    ]
                )
            )
            return
        for a in rows:
            self.stdout.write(
                f"{a.pk:>6}  {a.asset}[{a.partition_key}]  run {a.run_id}  {a.message}"
            )
