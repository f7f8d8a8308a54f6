"""The reviewer's decision forms (admin console): one approval, or a reason for many."""

from __future__ import annotations

from typing import Any

from django import forms

from approvals.services import checked_reason
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
        else:
            _check_reason(self, str(decision or ""), data)
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


class BulkRejectForm(forms.Form):
    """The one reason for rejecting the selected approvals (an admin action's second step)."""

    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}))

    def clean(self) -> dict[str, Any]:
        """The reason, checked by the same rule as every other console's."""
        data = super().clean() or {}
        if "reason" in data:
            _check_reason(self, "reject", data)
        return data


def _check_reason(form: forms.Form, decision: str, data: dict[str, Any]) -> None:
    """Show the service's refusal of the reason (too long, say) as the reason field's error."""
    try:
        data["reason"] = checked_reason(decision, data.get("reason"))
    except ValidationFailedError as exc:
        form.add_error("reason", exc.message)
