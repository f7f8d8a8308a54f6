"""Tick history and sensor cursors.

A ``Tick`` is one schedule tick, one sensor run request or notice (or one sensor poll that
requested nothing), unique by ``(kind, name, run_key)``: the process that inserts it is the only
one that starts its run (or records its notice), so two beat processes or a redelivered message
never act twice on one key. A schedule with catch-up also writes a tick for each missed cron
time it replays (``is_catch_up``) and one ``missed`` tick for the missed cron times it does not
replay.
A ``SensorCursor`` is the state a sensor keeps between polls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

from django.db import connection, models, transaction
from django.utils import timezone

if TYPE_CHECKING:
    import datetime as dt

UNIQUE_TICK_FIELDS: Final = ("kind", "name", "run_key")
NO_CURSOR: Final = ""
"""The stored cursor of a sensor that has not stored one yet (the sensor sees ``None``)."""


class TickManager(models.Manager["Tick"]):
    """Inserts ticks so that exactly one process wins each run key."""

    def insert_once(self, tick: Tick) -> int | None:
        """``INSERT ... ON CONFLICT DO NOTHING RETURNING id``: the new id, or ``None`` if taken.

        A concurrent inserter of the same key waits for this transaction and then inserts
        nothing, so only the transaction that gets an id may act on the tick.
        """
        meta = self.model._meta  # noqa: SLF001  # Django's documented model API
        fields = [f for f in meta.concrete_fields if not f.primary_key]
        quote = connection.ops.quote_name
        values = [f.get_db_prep_save(f.pre_save(tick, add=True), connection) for f in fields]
        columns = ", ".join(quote(f.column) for f in fields)
        by_name = {f.name: f.column for f in fields}
        conflict = ", ".join(quote(by_name[name]) for name in UNIQUE_TICK_FIELDS)
        # Identifiers come from the model, values are parameters.
        sql = (
            f"INSERT INTO {quote(meta.db_table)} ({columns}) "  # noqa: S608
            f"VALUES ({', '.join(['%s'] * len(fields))}) "
            f"ON CONFLICT ({conflict}) DO NOTHING RETURNING {quote(meta.pk.column)}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, values)
            row = cursor.fetchone()
        return None if row is None else int(row[0])

    def last_schedule_tick(self, name: str, *, before: dt.datetime) -> dt.datetime | None:
        """The tick time of the latest tick of schedule ``name`` before ``before`` (indexed)."""
        return (
            self.filter(kind=Tick.Kind.SCHEDULE, name=name, tick_time__lt=before)
            .order_by("-tick_time")
            .values_list("tick_time", flat=True)
            .first()
        )

    def finish(self, tick_id: int, **values: Any) -> None:
        """Record what became of a tick this process inserted (same transaction)."""
        self.filter(pk=tick_id).update(**values)


class SensorCursorManager(models.Manager["SensorCursor"]):
    """Reads and compare-and-sets sensor cursors."""

    def current(self, name: str) -> str | None:
        """The stored cursor of sensor ``name`` (``None`` before its first stored cursor)."""
        return self.filter(name=name).values_list("cursor", flat=True).first() or None

    def compare_and_set(self, name: str, *, expected: str | None, new: str) -> bool:
        """Store ``new`` if the cursor is still ``expected``; return whether this call won."""
        with transaction.atomic():
            self.bulk_create([self.model(name=name)], ignore_conflicts=True)
            rows = self.filter(name=name, cursor=expected or NO_CURSOR)
            return rows.update(cursor=new, updated_at=timezone.now()) == 1


class Tick(models.Model):
    """One schedule tick or sensor run request, and what became of it."""

    class Kind(models.TextChoices):
        SCHEDULE = "schedule"
        SENSOR = "sensor"

    class Status(models.TextChoices):
        REQUESTED = "requested"
        SKIPPED = "skipped"
        FAILED = "failed"
        NOTIFIED = "notified"
        MISSED = "missed"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=128, help_text="The schedule or sensor name.")
    run_key = models.CharField(
        max_length=255,
        help_text="A schedule's tick time (UTC) or a sensor's run key; one run per key.",
    )
    tick_time = models.DateTimeField(
        help_text="The cron time of a schedule tick, or the poll time."
    )
    status = models.CharField(max_length=16, choices=Status.choices)
    is_catch_up = models.BooleanField(
        default=False,
        help_text="A missed schedule tick run (or recorded as missed) by a later tick's catch-up.",
    )
    local_tick_time = models.CharField(
        max_length=64,
        blank=True,
        help_text="The tick time the schedule's functions received, in its timezone (ISO 8601).",
    )
    reason = models.TextField(
        blank=True, help_text="Why the tick was skipped or failed, or which ticks were missed."
    )
    run = models.ForeignKey(
        "assets.Run",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="ticks",
    )
    selection = models.JSONField(default=list, blank=True, help_text="The assets requested.")
    partition_keys = models.JSONField(
        default=list, blank=True, help_text="The encoded partition key of each requested asset."
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects: ClassVar[TickManager] = TickManager()

    class Meta:
        ordering = ("-tick_time", "-id")
        constraints = (
            models.UniqueConstraint(fields=("kind", "name", "run_key"), name="tick_unique_run_key"),
        )
        indexes = (models.Index(fields=("kind", "name", "-tick_time"), name="tick_history"),)

    def __str__(self) -> str:
        return f"{self.kind} {self.name} {self.run_key} ({self.status})"


class SensorCursor(models.Model):
    """The cursor a sensor stored after its last poll (text; its format is the sensor's)."""

    name = models.CharField(max_length=128, unique=True, help_text="The sensor name.")
    cursor = models.TextField(blank=True, default=NO_CURSOR)
    updated_at = models.DateTimeField(default=timezone.now)

    objects: ClassVar[SensorCursorManager] = SensorCursorManager()

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return f"cursor of sensor {self.name}"
