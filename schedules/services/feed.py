"""The materialization feed asset sensors read: successes in step order, none skipped."""

from __future__ import annotations

from django.db.models import Min

from assets.models import Materialization
from flowstone.scheduling import MaterializationEvent
from flowstone.status import TERMINAL_STEP_STATUSES, StepStatus


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
