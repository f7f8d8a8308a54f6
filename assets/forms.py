"""The admin's form to launch a run: one asset, its partitions, its config, on the workers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from django import forms
from django.core.exceptions import ValidationError

from assets.api import start_run
from flowstone.errors import FlowStoneError
from flowstone.inputs import validate_json_object
from flowstone.registry import get_registry

if TYPE_CHECKING:
    from flowstone.execution.handle import RunHandle

MAX_LISTED_PARTITIONS: Final = 10_000

KINDS: Final = (
    ("materialize", "Materialize one partition"),
    ("materialize_all", "Materialize one partition with every upstream step it needs"),
    ("backfill", "Backfill: many partitions (all when none is listed)"),
)


class LaunchRunForm(forms.Form):
    """What ``POST /api/runs/`` takes, as a form; the run starts on the workers."""

    kind = forms.ChoiceField(choices=KINDS, initial="materialize_all")
    asset = forms.ChoiceField(choices=())
    partition = forms.CharField(
        required=False,
        max_length=512,
        help_text="Materialize: the partition as text (2025-12-03, eu, ...); "
        "empty for an unpartitioned asset.",
    )
    partitions = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=f"Backfill: one partition per line, at most {MAX_LISTED_PARTITIONS:,}; "
        "empty for every partition.",
    )
    config = forms.JSONField(
        required=False, initial=dict, help_text="Run config: a JSON object (context.config)."
    )
    max_parallel = forms.IntegerField(
        required=False, min_value=1, help_text="Backfill: most steps queued or running at once."
    )
    force = forms.BooleanField(
        required=False, help_text="Backfill: also partitions whose latest run succeeded."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = sorted(get_registry().graph.order)
        self.fields["asset"].choices = [(name, name) for name in names]  # type: ignore[attr-defined]

    def clean_config(self) -> dict[str, Any]:
        """A JSON object, checked like every other input."""
        value = self.cleaned_data.get("config")
        try:
            return validate_json_object({} if value in (None, "") else value, what="config")
        except FlowStoneError as exc:
            raise ValidationError(exc.message) from exc

    def clean(self) -> dict[str, Any]:
        """Options of one kind only: a single partition, or a backfill's list."""
        data = super().clean() or {}
        kind = data.get("kind")
        lines = [line.strip() for line in (data.get("partitions") or "").splitlines()]
        data["partitions"] = [line for line in lines if line]
        if kind == "backfill" and data.get("partition"):
            self.add_error("partition", "A backfill takes its partitions below, one per line.")
        if kind != "backfill":
            for name in ("partitions", "max_parallel", "force"):
                if data.get(name):
                    self.add_error(name, "Only for a backfill.")
        if len(data["partitions"]) > MAX_LISTED_PARTITIONS:
            self.add_error("partitions", f"At most {MAX_LISTED_PARTITIONS:,} partitions.")
        return data

    def launch(self, *, requested_by: str) -> RunHandle:
        """Start the run; a ``FlowStoneError`` (a bad partition...) becomes a form error."""
        data = self.cleaned_data
        request = {
            **data,
            "partition": data["partition"] or None,
            "partitions": data["partitions"] or None,  # none listed: every partition
        }
        try:
            definition = get_registry().get(data["asset"])
            return start_run(definition, request, requested_by=requested_by, actor_type="user")
        except FlowStoneError as exc:
            raise ValidationError(exc.message) from exc
