"""Typed review forms: what a checkpoint lets a reviewer change, as a JSON Schema.

``validate_form_value`` is the one check of a submitted value against a checkpoint's form; the
admin, the API and the command line all reach it through ``services.decide_approval``. Its error
names each wrong field by its JSON pointer (``/amount``; ``""`` is the value itself), so every
console can put the message next to the field it is about.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import jsonschema
import referencing.exceptions

from flowstone.checkpoints import FORM_VALIDATOR
from flowstone.errors import ValidationFailedError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from jsonschema import ValidationError

MAX_ERROR_CHARS: Final = 200
"""A message quotes the submitted value; a reviewer's huge or hostile value is cut short."""
SCHEMA_FAILURES: Final = (
    referencing.exceptions.Unresolvable,
    jsonschema.exceptions.SchemaError,
    jsonschema.exceptions.UnknownType,
    jsonschema.exceptions.UndefinedTypeCheck,
    jsonschema.exceptions.FormatError,
    RecursionError,
)
"""What a form that passed the definition check may still raise on a value: the reviewer gets a
``ValidationFailedError`` (a 400), never a 500. ``checked_form`` refuses unresolved references."""


class FormValueError(ValidationFailedError):
    """A submitted value does not match the checkpoint's form; ``errors`` by JSON pointer."""

    def __init__(self, errors: Mapping[str, list[str]]) -> None:
        self.errors = dict(errors)
        first, messages = next(iter(self.errors.items()))
        more = sum(len(m) for m in self.errors.values()) - 1
        super().__init__(
            f"the value does not match the review form: {first or '(the value)'}: {messages[0]}"
            + (f" (and {more} more)" if more else ""),
            details={"errors": self.errors},
        )


def pointer(path: Iterable[str | int]) -> str:
    """The JSON pointer (RFC 6901) of a path into the value."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _one_line(message: str) -> str:
    flat = " ".join(message.split())
    return flat if len(flat) <= MAX_ERROR_CHARS else flat[: MAX_ERROR_CHARS - 3] + "..."


def _located(error: ValidationError) -> tuple[str, str]:
    """The pointer an error is about: a missing required property is the property's own."""
    path = list(error.absolute_path)
    required = error.validator_value
    if error.validator == "required" and isinstance(required, list):
        for name in required:
            if error.message == f"{name!r} is a required property":
                return pointer([*path, name]), "This field is required."
    return pointer(path), _one_line(error.message)


def validate_form_value(form: Mapping[str, Any], value: Any) -> None:
    """Raise ``FormValueError`` unless ``value`` matches the JSON Schema ``form``.

    The errors are sorted by pointer, so the message names the first wrong field the same way
    every time. A form that cannot check the value (``SCHEMA_FAILURES``) is a
    ``ValidationFailedError`` too.
    """
    errors: dict[str, list[str]] = {}
    try:
        for error in FORM_VALIDATOR(form).iter_errors(value):
            where, message = _located(error)
            errors.setdefault(where, []).append(message)
    except SCHEMA_FAILURES as exc:
        raise ValidationFailedError(
            f"the review form cannot check this value: {_one_line(f'{type(exc).__name__}: {exc}')}"
        ) from exc
    if errors:
        raise FormValueError(dict(sorted(errors.items())))
