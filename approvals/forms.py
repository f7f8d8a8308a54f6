"""The reviewer's decision form (admin console)."""

from __future__ import annotations

from typing import Any

from django import forms

from flowstone.errors import ValidationFailedError
from flowstone.inputs import parse_json

DECISION_CHOICES = (("approve", "Approve"), ("modify", "Modify the value"), ("reject", "Reject"))


class DecisionForm(forms.Form):
    """Approve, reject (a reason is required) or modify (edit the value as JSON)."""

    decision = forms.ChoiceField(choices=DECISION_CHOICES, widget=forms.RadioSelect)
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    value = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 12, "cols": 80}),
        help_text="The value to store instead, as JSON (for 'Modify' only).",
    )

    def clean(self) -> dict[str, Any]:
        """Require a reason to reject and a valid JSON value (``flowstone.inputs``) to modify."""
        data = super().clean() or {}
        decision = data.get("decision")
        if decision == "reject" and not (data.get("reason") or "").strip():
            self.add_error("reason", "A rejection needs a reason.")
        if decision == "modify":
            try:
                data["parsed_value"] = parse_json(data.get("value") or "", what="value")
            except ValidationFailedError as exc:
                self.add_error("value", exc.message)
        return data

    def refuse(self, error: ValidationFailedError) -> None:
        """Show a decision the service refused as invalid (the validator's word) on the form."""
        field = "value" if self.cleaned_data.get("decision") == "modify" else None
        self.add_error(field, error.message)
