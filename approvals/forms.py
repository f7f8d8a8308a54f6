"""The reviewer's decision forms (admin console): one approval, or a reason for many.

A checkpoint with a review form (a JSON Schema) gets one field per property of its object:
numbers, integers, strings, booleans and enums as typed fields with the schema's bounds; any
other property (nested, or of a type the admin does not render) as a JSON textarea. Without a
form, or with one that is not an object with properties, the value is edited as JSON. The
service checks the value against the schema (``approvals.review_forms``) whatever the admin
checked, and its errors come back next to the fields they name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from django import forms

from approvals.review_forms import FormValueError, pointer
from approvals.services import checked_reason
from flowstone.errors import ValidationFailedError
from flowstone.inputs import parse_json

if TYPE_CHECKING:
    from flowstone.checkpoints import Option

DECISION_CHOICES = (("approve", "Approve"), ("modify", "Modify the value"), ("reject", "Reject"))
OPTION_PREFIX: Final = "option:"
"""A decision choice that names a checkpoint option: ``option:<name>``."""
_UNPARSED: Final = object()
"""A JSON field's text that is not JSON: changed from any proposed value."""


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _lines(text: str) -> str:
    """Text with every line break as one LF: a browser's textarea posts CRLF whatever it showed."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _attrs(schema: Mapping[str, Any], **keywords: str) -> dict[str, Any]:
    """HTML attributes from the schema's bounds (``min`` from ``minimum`` ...), for the browser."""
    return {attr: schema[key] for attr, key in keywords.items() if key in schema}


def _typed_field(schema: Mapping[str, Any], *, label: str) -> forms.Field | None:
    """A Django field for a property's schema, or ``None`` when only JSON can edit it.

    The fields convert types only: the bounds are shown to the browser, and checked on the
    server by the one check of the value against the schema (``review_forms``), so every
    console words its errors the same way.
    """
    common: dict[str, Any] = {"required": False, "label": label}
    if schema.get("description"):
        common["help_text"] = str(schema["description"])
    if "enum" in schema:
        choices = [(json.dumps(v), str(v)) for v in schema["enum"]]
        return forms.ChoiceField(choices=[("", "---------"), *choices], **common)
    kind = schema.get("type")
    if kind in ("integer", "number"):
        field = forms.IntegerField if kind == "integer" else forms.FloatField
        number = field(**common)
        number.widget.attrs.update(_attrs(schema, min="minimum", max="maximum"))
        return number
    if kind == "string":
        text = forms.CharField(strip=False, empty_value=None, **common)
        text.widget.attrs.update(_attrs(schema, minlength="minLength", maxlength="maxLength"))
        return text
    if kind == "boolean":
        return forms.BooleanField(**common)
    return None


class DecisionForm(forms.Form):
    """Approve, reject (a reason is required), modify, or choose one of the checkpoint's options.

    ``form_schema`` is the checkpoint's review form, ``options`` its named choices and
    ``proposed`` the value under review (the typed fields' initial values).
    """

    decision = forms.ChoiceField(choices=DECISION_CHOICES, widget=forms.RadioSelect)
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        *,
        proposed: Any = None,
        form_schema: Mapping[str, Any] | None = None,
        options: Sequence[Option] = (),
    ) -> None:
        super().__init__(data)
        self.proposed = proposed
        self.options = {option.name: option for option in options}
        self.decision_field.choices = [
            *DECISION_CHOICES,
            *((f"{OPTION_PREFIX}{o.name}", f"{o.label} ({o.outcome})") for o in options),
        ]
        self.properties: dict[str, str] = {}  # field name -> property name
        self.json_fields: set[str] = set()
        properties = (form_schema or {}).get("properties")
        if (form_schema or {}).get("type") == "object" and isinstance(properties, Mapping):
            self._add_property_fields(form_schema or {}, properties)
        else:
            self.fields["value"] = forms.CharField(
                required=False,
                initial=_json_text(proposed),
                widget=forms.Textarea(attrs={"rows": 12, "cols": 80}),
                help_text="The value to store instead, as JSON (for 'Modify' only).",
            )

    @property
    def decision_field(self) -> forms.ChoiceField:
        """The decision radio (its choices include the checkpoint's options)."""
        field = self.fields["decision"]
        assert isinstance(field, forms.ChoiceField)  # noqa: S101  # declared above
        return field

    def _add_property_fields(
        self, form_schema: Mapping[str, Any], properties: Mapping[str, Any]
    ) -> None:
        """One field per property, in the schema's order, initial from the proposed value."""
        required = set(form_schema.get("required", ()))
        current = self.proposed if isinstance(self.proposed, Mapping) else {}
        for index, (prop, schema) in enumerate(properties.items()):
            name = f"value_{index}"
            label = str(schema.get("title", prop)) if isinstance(schema, Mapping) else prop
            typed = _typed_field(schema, label=label) if isinstance(schema, Mapping) else None
            initial = current.get(prop)
            if typed is None:
                self.json_fields.add(name)
                typed = forms.CharField(
                    required=False,
                    label=label,
                    widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
                    help_text="As JSON.",
                )
                initial = None if prop not in current else _json_text(initial)
            elif isinstance(schema, Mapping) and "enum" in schema:
                # a value outside the enum shows as no choice, so it is no change either
                shown = json.dumps(initial) if prop in current else None
                initial = shown if shown in {json.dumps(v) for v in schema["enum"]} else None
            elif (
                isinstance(typed, forms.CharField)
                and isinstance(initial, str)
                and ("\n" in initial or "\r" in initial)
            ):
                # a one-line input drops line breaks: the proposed text would change unseen
                typed.widget = forms.Textarea(attrs={**typed.widget.attrs, "rows": 3, "cols": 60})
            typed.initial = initial
            if prop in required:  # the schema says so, for a decision that stores a value
                typed.label_suffix = " (required):"
            self.fields[name] = typed
            self.properties[name] = prop

    def chosen_option(self) -> Option | None:
        """The option the decision names, if it names one."""
        decision = str(self.cleaned_data.get("decision") or "")
        return self.options.get(decision.removeprefix(OPTION_PREFIX))

    def clean(self) -> dict[str, Any]:
        """Require a reason to reject; build the value a modification (or an option) stores."""
        data = super().clean() or {}
        decision = data.get("decision")
        if decision == "reject" and not (data.get("reason") or "").strip():
            self.add_error("reason", "A rejection needs a reason.")
        else:
            _check_reason(self, str(decision or ""), data)
        if decision == "modify":
            if not self.errors:
                data["parsed_value"] = self._value(data, list(self.properties))
            return data
        option = self.chosen_option()
        continues = option is not None and option.outcome == "continue"
        # An option continues with the value as proposed unless the reviewer changed a field;
        # what the untouched fields hold does not matter (nor, to other decisions, any field).
        changed = self._changed_fields(data) if continues else []
        for name in self.properties:
            if name not in changed:
                self.errors.pop(name, None)
        if changed and not self.errors:
            value = self._value(data, changed)
            data["parsed_value"] = None if value == self.proposed else value
        return data

    def _changed_fields(self, data: Mapping[str, Any]) -> list[str]:
        """The property fields the reviewer changed from the proposed value.

        Django's ``changed_data`` compares each field with its initial value; a JSON textarea is
        compared as JSON and text with its line breaks normalized, so the browser's line
        endings or spacing change nothing.
        """
        current = self.proposed if isinstance(self.proposed, Mapping) else {}
        changed = []
        for name in self.changed_data:
            prop = self.properties.get(name)
            if prop is None:
                continue
            submitted = data.get(name)
            if name in self.json_fields:
                try:
                    submitted = parse_json(submitted or "", what=prop)
                except ValidationFailedError:
                    submitted = _UNPARSED
            elif isinstance(submitted, str) and isinstance(current.get(prop), str):
                submitted = (
                    current[prop] if _lines(submitted) == _lines(current[prop]) else submitted
                )
            if prop in current and submitted == current[prop]:
                continue
            changed.append(name)
        return changed

    def _value(self, data: Mapping[str, Any], fields: Sequence[str]) -> Any:
        """The submitted value: the JSON textarea, or the proposed object with ``fields`` set."""
        if not self.properties:
            try:
                return parse_json(data.get("value") or "", what="value")
            except ValidationFailedError as exc:
                self.add_error("value", exc.message)
                return None
        value = dict(self.proposed) if isinstance(self.proposed, Mapping) else {}
        for name in fields:
            prop = self.properties[name]
            submitted = data.get(name)
            if name in self.json_fields and submitted:
                try:
                    submitted = parse_json(submitted, what=prop)
                except ValidationFailedError as exc:
                    self.add_error(name, exc.message)
                    continue
            elif isinstance(self.fields[name], forms.ChoiceField) and submitted:
                submitted = json.loads(submitted)
            elif isinstance(submitted, float) and submitted.is_integer():
                submitted = int(submitted)  # JSON has one number type: "80" stays 80
            if submitted is None or submitted == "":
                value.pop(prop, None)  # an empty optional field leaves the property out
            else:
                value[prop] = submitted
        return value

    def refuse(self, error: ValidationFailedError) -> None:
        """Show a decision the service refused as invalid next to the field(s) it is about."""
        if isinstance(error, FormValueError) and self.properties:
            by_pointer = {pointer([prop]): name for name, prop in self.properties.items()}
            for where, messages in error.errors.items():
                field = next(
                    (n for p, n in by_pointer.items() if where == p or where.startswith(p + "/")),
                    None,
                )
                for message in messages:
                    self.add_error(field, message if field else f"{where or '/'}: {message}")
            return
        modifies = self.cleaned_data.get("decision") == "modify"
        field = "value" if "value" in self.fields and modifies else None
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
