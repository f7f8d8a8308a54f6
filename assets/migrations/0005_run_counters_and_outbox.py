"""Run counters per step state (the engine's), and the outbox column ``dispatched_at``.

Existing runs get their counters counted from their steps; queued steps that were already
published keep that time as ``dispatched_at`` (before, ``queued_at`` meant "published at").
"""

from typing import Any

from django.db import migrations, models
from django.db.models import Count
from django.utils import timezone

COUNTER_OF = {
    "pending": "steps_pending",
    "queued": "steps_active",
    "running": "steps_active",
    "waiting_approval": "steps_waiting",
    "success": "steps_succeeded",
    "failed": "steps_failed",
    "upstream_failed": "steps_failed",
    "canceled": "steps_canceled",
}


def count_steps(apps: Any, schema_editor: Any) -> None:  # noqa: ARG001
    """Count existing runs' steps into the new counters; keep published steps' send time."""
    run = apps.get_model("assets", "Run")
    materialization = apps.get_model("assets", "Materialization")
    counts = materialization.objects.values("run_id", "status").annotate(n=Count("id")).order_by()
    by_run: dict[Any, dict[str, int]] = {}
    for row in counts.iterator():
        values = by_run.setdefault(row["run_id"], dict.fromkeys(COUNTER_OF.values(), 0))
        values[COUNTER_OF[row["status"]]] += row["n"]
    for run_id, values in by_run.items():
        run.objects.filter(pk=run_id).update(**values)
    queued = materialization.objects.filter(status="queued")
    queued.filter(queued_at__isnull=False).update(dispatched_at=models.F("queued_at"))
    queued.filter(queued_at__isnull=True).update(queued_at=timezone.now())


class Migration(migrations.Migration):
    dependencies = [
        ("assets", "0004_run_has_step_edges"),
    ]

    operations = [
        migrations.AddField(
            model_name="materialization",
            name="dispatched_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When its message was handed to the broker; a queued step without it is unsent.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="run",
            name="steps_active",
            field=models.PositiveIntegerField(default=0, help_text="Queued or running steps."),
        ),
        migrations.AddField(
            model_name="run",
            name="steps_canceled",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="run",
            name="steps_failed",
            field=models.PositiveIntegerField(
                default=0, help_text="Failed and upstream-failed steps."
            ),
        ),
        migrations.AddField(
            model_name="run",
            name="steps_pending",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="run",
            name="steps_succeeded",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="run",
            name="steps_waiting",
            field=models.PositiveIntegerField(default=0, help_text="Steps waiting for approval."),
        ),
        migrations.AlterField(
            model_name="materialization",
            name="queued_at",
            field=models.DateTimeField(
                blank=True, help_text="When the step last became queued.", null=True
            ),
        ),
        migrations.AddIndex(
            model_name="materialization",
            index=models.Index(
                condition=models.Q(("dispatched_at__isnull", True), ("status", "queued")),
                fields=["queued_at"],
                name="materialization_outbox",
            ),
        ),
        migrations.RunPython(count_steps, migrations.RunPython.noop),
        migrations.RemoveField(
            model_name="run",
            name="steps_remaining",
        ),
    ]
