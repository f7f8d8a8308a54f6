"""The feeds sensors read, none skipped.

Asset sensors read successes in step order; run-status sensors read finished runs and waiting
approvals in ``(time, id)`` order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import Min, Prefetch, Q

from approvals.models import Approval
from assets.models import Materialization, Run
from flowstone.scheduling import MaterializationEvent, RunStatusEvent
from flowstone.status import TERMINAL_STEP_STATUSES, RunStatus, StepStatus

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Sequence


class DatabaseMaterializationFeed:
    """``MaterializationFeed`` over the ``Materialization`` table."""

    def successes_after(self, asset: str, after_id: int, limit: int) -> list[MaterializationEvent]:
        """Successes of ``asset`` above ``after_id`` and below its first unfinished step.

        Step ids are assigned when a run is created, not when a step finishes; stopping at the
        first unfinished step means a cursor never moves past a step that succeeds later.
        """
        unfinished = (
            Materialization.objects.filter(asset=asset, pk__gt=after_id)
            .exclude(status__in=TERMINAL_STEP_STATUSES)
            .aggregate(first=Min("pk"))["first"]
        )
        rows = Materialization.objects.filter(
            asset=asset, pk__gt=after_id, status=StepStatus.SUCCESS
        )
        if unfinished is not None:
            rows = rows.filter(pk__lt=unfinished)
        return [
            MaterializationEvent(
                id=pk,
                asset=asset,
                partition_key=partition_key,
                run_id=str(run_id),
                finished_at=finished_at,
            )
            for pk, partition_key, run_id, finished_at in rows.order_by("pk").values_list(
                "pk", "partition_key", "run_id", "finished_at"
            )[:limit]
        ]


class DatabaseRunStatusFeed:
    """``RunStatusFeed`` over the ``Run`` and ``Approval`` tables, in ``(time, id)`` order."""

    def events_after(
        self,
        status: str,
        *,
        after: tuple[dt.datetime, str] | None,
        until: dt.datetime,
        assets: Sequence[str],
        limit: int,
    ) -> list[RunStatusEvent]:
        """Runs that finished ``status`` (or approvals waiting) after the cursor, to ``until``."""
        if status == "approval_waiting":
            return self._waiting_approvals(after, until, assets, limit)
        runs = Run.objects.filter(status=status, finished_at__lte=until)
        if after is not None:
            at, position_id = after
            later = Q(finished_at__gt=at)
            runs = runs.filter(finished_at__gte=at).filter(  # the bound the run_finished index uses
                later | Q(finished_at=at, pk__gt=position_id)
                if position_id
                else later | Q(finished_at=at)
            )
        if assets:
            runs = runs.filter(
                pk__in=Materialization.objects.filter(asset__in=list(assets)).values("run_id")
            )
        if status == RunStatus.FAILED:
            runs = runs.prefetch_related(
                Prefetch(
                    "materializations",
                    queryset=Materialization.objects.filter(status=StepStatus.FAILED)
                    .order_by("pk")
                    .only("pk", "run_id", "asset"),
                    to_attr="failed_steps",
                )
            )
        return [self._run_event(run, status) for run in runs.order_by("finished_at", "pk")[:limit]]

    @staticmethod
    def _run_event(run: Run, status: str) -> RunStatusEvent:
        """One run's event; a failed run names its failed steps' assets (prefetched)."""
        assert run.finished_at is not None  # noqa: S101  # filtered on finished_at
        if status == RunStatus.FAILED:
            assets = tuple(step.asset for step in getattr(run, "failed_steps", ()))
        else:
            assets = tuple(run.selection)
        return RunStatusEvent(
            status=status,
            run_id=str(run.pk),
            at=run.finished_at,
            position_id=str(run.pk),
            assets=assets,
            requested_by=run.requested_by,
        )

    @staticmethod
    def _waiting_approvals(
        after: tuple[dt.datetime, str] | None,
        until: dt.datetime,
        assets: Sequence[str],
        limit: int,
    ) -> list[RunStatusEvent]:
        waiting = Approval.objects.filter(  # a stale approval waits to be reviewed again
            Q(status__in=(Approval.Status.PENDING, Approval.Status.ESCALATED))
            | Q(status=Approval.Status.STALE, rereviewed_at__isnull=True),
            requested_at__lte=until,
        )
        if after is not None:
            at, position_id = after
            later = Q(requested_at__gt=at)
            if position_id.isdigit():
                later |= Q(requested_at=at, pk__gt=int(position_id))
            waiting = waiting.filter(later)
        if assets:
            waiting = waiting.filter(asset__in=list(assets))
        return [
            RunStatusEvent(
                status="approval_waiting",
                run_id=str(approval.run_id),
                at=approval.requested_at,
                position_id=str(approval.pk),
                assets=(approval.asset,),
                partition_key=approval.partition_key,
                requested_by=approval.requested_by,
                approval_id=approval.pk,
                message=approval.message,
            )
            for approval in waiting.order_by("requested_at", "pk")[:limit]
        ]
