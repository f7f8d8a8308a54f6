"""``manage.py approvals``: list approvals, decide them (one or many), re-review stale ones.

Exit codes: 0 listed, or every decision (or quorum vote) was recorded; 1 a decision was refused
(the approval was already decided or expired, is stale, the user already voted, or the user may
not decide it: not one of its deciders, or the run's requester; in a bulk decision the others are
still decided); 2 invalid input (an unknown approval, user or option, bad JSON, a value the
checkpoint's form or validator refuses, a rejection without a reason, a reason over 2,000
characters). ``decide ID --option NAME`` picks one of the checkpoint's named options.
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
SHOWN_IDS: Final = 20
"""The most unknown ids one error line names."""
"""A well-formed decision the approval's state or the user's rights refuse."""

ACTION_HELP: Final = {
    "approve": "Approve pending approvals: IDs, or --asset X --pending.",
    "reject": "Reject pending (or stale) approvals with one reason: IDs, or --asset X --pending.",
    "modify": "Store an edited value instead of a pending approval's proposed value.",
    "decide": "Choose one of a pending approval's options.",
    "rereview": "Send a stale approval's step to compute again and ask for a fresh approval.",
}


class Command(cli.FlowStoneCommand):
    """List approvals, or approve / modify / reject one as a named user."""

    help = (
        "List approvals or decide them: approvals list | approve ID... | reject ID... | "
        "modify ID | decide ID --option NAME | rereview ID; approve and reject also take "
        "--asset X --pending. "
        "Exit codes: 0 done, 1 decision refused (already decided, stale, not allowed), "
        "2 invalid input."
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
        for action in ("approve", "reject", "modify", "decide", "rereview"):
            decide = actions.add_parser(action, help=ACTION_HELP[action])
            if action in services.BULK_DECISIONS:
                decide.add_argument("approval_ids", metavar="ID", nargs="*", help="Approvals.")
                decide.add_argument("--asset", help="Every pending approval of this asset ...")
                decide.add_argument(
                    "--pending", action="store_true", help="... that is pending (with --asset)."
                )
                decide.add_argument(
                    "--partition",
                    dest="partitions",
                    action="append",
                    help="... of this partition key (repeatable; with --asset).",
                )
            else:
                decide.add_argument("approval_id", metavar="ID", help="The approval.")
            decide.add_argument(
                "--user", required=True, help="The deciding user (holds approvals.decide_approval)."
            )
            if action != "rereview":
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
        if options["action"] in services.BULK_DECISIONS:
            ids = self._selected(options)
            if len(ids) != 1 or options["asset"]:
                self._decide_many(ids, user, options)
                return
            options["approval_id"] = ids[0]
        is_option = options["action"] == "decide"
        continuation: services.Continuation | None
        try:
            approval_id = options["approval_id"]
            if options["action"] == "rereview":
                continuation = services.rereview_approval(
                    approval_id, actor=user, actor_type=Approval.ActorType.USER
                )
            else:
                continuation = services.decide_approval(
                    approval_id,
                    services.OPTION if is_option else options["action"],
                    actor=user,
                    actor_type=Approval.ActorType.USER,
                    reason=options["reason"],
                    value=self._value(options),
                    option=options["option"] if is_option else "",
                )
        except (ApprovalDecidedError, ApprovalForbiddenError) as exc:
            raise CommandError(cli.in_cli_terms(str(exc)), returncode=EXIT_REFUSED) from exc
        except FlowStoneError as exc:
            raise cli.invalid_input(exc) from exc
        continue_after_decision(continuation)
        approval = services.get_approval(approval_id)
        if options["json"]:
            self.stdout.write(json.dumps(cli.approval_json(approval)))
        elif approval.is_pending:
            votes = len(approval.current_votes())
            self.stdout.write(
                f"approval {approval.pk}: pending; {votes} of {approval.quorum} votes"
            )
        else:
            self.stdout.write(f"approval {approval.pk}: {approval.status}; run {approval.run_id}")

    @staticmethod
    def _value(options: dict[str, Any]) -> Any:
        """``--value`` parsed as JSON (``modify``, and ``decide`` with a continue option)."""
        if options.get("value") is None:
            return None
        try:
            return parse_json(options["value"], what="--value")
        except ValidationFailedError as exc:
            raise cli.invalid(exc.message) from exc

    @staticmethod
    def _selected(options: dict[str, Any]) -> list[str]:
        """The IDs given, or the ids of ``--asset``'s pending approvals (``--partition``)."""
        ids: list[str] = options["approval_ids"]
        if options["asset"] is None:
            if options["pending"] or options["partitions"]:
                raise cli.invalid("--pending and --partition go with --asset")
            if not ids:
                raise cli.invalid("give approval IDs, or --asset X --pending")
            return ids
        if ids or not options["pending"]:
            raise cli.invalid("--asset takes --pending and no IDs")
        try:
            return [str(pk) for pk in services.pending_of(options["asset"], options["partitions"])]
        except FlowStoneError as exc:
            raise cli.invalid_input(exc) from exc

    @staticmethod
    def _existing(ids: list[str]) -> list[int]:
        """The ids as numbers, once each is ASCII digits and names an approval (else exit 2).

        Every id is checked before anything is decided: an unknown one is invalid input, as it
        is alone, and the line names all of them.
        """
        numbers = []
        for text in ids:
            number = services.approval_number(text)
            if number is None:
                raise cli.invalid(f"unknown approval {text[:40]!r}: not an approval ID")
            numbers.append(number)
        found = set(Approval.objects.filter(pk__in=numbers).values_list("pk", flat=True))
        unknown = list(dict.fromkeys(n for n in numbers if n not in found))
        if unknown:
            shown = ", ".join(str(n) for n in unknown[:SHOWN_IDS])
            shown += " ..." if len(unknown) > SHOWN_IDS else ""
            raise cli.invalid(f"unknown approval(s): {shown}; nothing was decided")
        return numbers

    def _decide_many(self, ids: list[str], user: str, options: dict[str, Any]) -> None:
        """One decision for many approvals: a line (or JSON entry) per approval."""
        numbers = self._existing(ids)
        try:
            outcomes = services.decide_many(
                numbers,
                options["action"],
                actor=user,
                actor_type=Approval.ActorType.USER,
                reason=options["reason"],
            )
        except FlowStoneError as exc:
            raise cli.invalid_input(exc) from exc
        for outcome in outcomes:
            if outcome.continuation is not None:
                continue_after_decision(outcome.continuation)
        if options["json"]:
            rows = [
                {
                    "id": o.approval_id,
                    "status": o.status,
                    "refused": o.refused,
                    "message": o.message,
                }
                for o in outcomes
            ]
            self.stdout.write(json.dumps(rows))
        else:
            for o in outcomes:
                line = o.status if not o.refused else f"refused ({o.refused}): {o.message}"
                self.stdout.write(f"approval {o.approval_id}: {cli.in_cli_terms(line)}")
        refused = sum(1 for o in outcomes if o.refused)
        if refused:
            raise CommandError(
                f"{refused} of {len(outcomes)} approval(s) refused", returncode=EXIT_REFUSED
            )

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
            offered = cli.approval_choices(a)["options"]
            self.stdout.write(
                f"{a.pk:>6}  {a.asset}[{a.partition_key}]  run {a.run_id}  {a.message}"
                + (f"  options: {', '.join(o['name'] for o in offered)}" if offered else "")
            )
