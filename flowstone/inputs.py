"""The input boundary: the shape every caller-given JSON value has before FlowStone uses it.

Run config, IO overrides, resource overrides, tags and an approval's modified value come from
Python callers, the HTTP API, the admin and the command line, and end up in PostgreSQL ``jsonb``
and ``text`` columns. ``validate_json_object`` and ``validate_json_value`` check them here, once,
and raise ``ValidationFailedError`` naming the input and the path of the offending item
(``config["a"][2]: string contains a NUL character``):

- an object is a ``Mapping`` with ``str`` keys; every other value is a ``str``, an ``int``, a
  finite ``float``, a ``bool``, ``None`` or a ``list`` (no tuples, sets, bytes or other objects);
- no key or string holds a NUL character or a lone surrogate (PostgreSQL refuses both);
- containers nest at most ``MAX_INPUT_DEPTH`` deep, and the compact UTF-8 JSON encoding is at
  most ``MAX_INPUT_BYTES`` long.

The walk is iterative and checks the depth before descending, so input nested 100,000 deep (or a
container holding itself) is refused cleanly, never with a ``RecursionError``. Both functions
return a plain copy (``dict``, ``list``, exact ``str``/``int``/``float``), so a caller changing its
value afterwards cannot change what was checked. ``parse_json`` parses text a person typed (a
form field, a command-line option) and validates the result; ``validate_text`` checks one string.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

from flowstone.errors import ValidationFailedError

MAX_INPUT_DEPTH: Final = 32
"""How deep objects and lists may nest in one input; the input itself is level 1."""

MAX_INPUT_BYTES: Final = 1024 * 1024
"""The largest compact UTF-8 JSON encoding of one input, in bytes."""

_SHOWN_KEY: Final = 40


def _show(key: object) -> str:
    """A key as it appears in a path: JSON-quoted (so a NUL shows escaped), shortened."""
    text = json.dumps(key) if isinstance(key, str) else repr(key)
    return text if len(text) <= _SHOWN_KEY else text[: _SHOWN_KEY - 3] + "..."


def _string(value: str, path: str) -> tuple[str, int]:
    """An exact ``str`` copy and its encoded size; refuse NUL and lone surrogates."""
    if "\x00" in value:
        raise ValidationFailedError(f"{path}: string contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationFailedError(f"{path}: string contains a lone surrogate") from exc
    copy = str.__str__(value)
    return copy, len(json.dumps(copy, ensure_ascii=False).encode("utf-8"))


def _scalar(value: object, path: str) -> tuple[Any, int]:
    """A plain copy of a JSON scalar and its encoded size."""
    if value is None or isinstance(value, bool):
        return value, 4 if value in (None, True) else 5
    if isinstance(value, str):
        return _string(value, path)
    if isinstance(value, int):
        number = int.__index__(value)
        try:
            return number, len(repr(number))
        except ValueError as exc:  # more digits than int <-> str conversion allows
            raise ValidationFailedError(f"{path}: integer has too many digits") from exc
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationFailedError(f"{path}: {value!r} is not a finite number")
        real = float(value)
        return real, len(repr(real))
    raise ValidationFailedError(f"{path}: {type(value).__name__} is not a JSON value")


class _Walk:
    """One iterative walk over an input: copies containers and counts the encoded size."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.size = 0

    def add(self, size: int) -> None:
        self.size += size
        if self.size > MAX_INPUT_BYTES:
            raise ValidationFailedError(f"{self.what}: larger than {MAX_INPUT_BYTES} bytes as JSON")

    def run(self, value: object) -> Any:
        root: list[Any] = [None]
        stack: list[tuple[object, list[Any] | dict[str, Any], Any, str, int]] = [
            (value, root, 0, self.what, 0)
        ]
        while stack:
            item, parent, slot, path, depth = stack.pop()
            if not isinstance(item, (Mapping, list)):
                copy, size = _scalar(item, path)
                self.add(size)
                parent[slot] = copy
                continue
            if depth + 1 > MAX_INPUT_DEPTH:
                raise ValidationFailedError(f"{path}: nested deeper than {MAX_INPUT_DEPTH} levels")
            self.add(2 + max(len(item) - 1, 0))  # brackets and commas
            if isinstance(item, list):
                items: list[Any] = [None] * len(item)
                parent[slot] = items
                stack.extend(
                    (child, items, index, f"{path}[{index}]", depth + 1)
                    for index, child in reversed(list(enumerate(item)))
                )
                continue
            members: dict[str, Any] = {}
            parent[slot] = members
            pending = []
            for key, child in item.items():
                if not isinstance(key, str):
                    raise ValidationFailedError(
                        f"{path}: key {_show(key)} is not a string ({type(key).__name__})"
                    )
                copy, size = _string(key, f"{path}[{_show(key)}] (key)")
                self.add(size + 1)  # the key and its colon
                members[copy] = None
                pending.append((child, members, copy, f"{path}[{_show(key)}]", depth + 1))
            stack.extend(reversed(pending))
        return root[0]


def nests_deeper_than(value: object, limit: int) -> bool:
    """Whether lists and objects in ``value`` nest more than ``limit`` levels (iteratively)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def validate_json_value(value: object, *, what: str) -> Any:
    """A plain copy of ``value`` if it is a valid JSON input; else ``ValidationFailedError``."""
    return _Walk(what).run(value)


def validate_json_object(value: object, *, what: str) -> dict[str, Any]:
    """A plain ``dict`` copy of ``value`` if it is a valid JSON object input; else raise."""
    if not isinstance(value, Mapping):
        raise ValidationFailedError(
            f"{what}: must be a JSON object (a mapping), not {type(value).__name__}"
        )
    copy: dict[str, Any] = _Walk(what).run(value)
    return copy


def parse_json(text: str, *, what: str) -> Any:
    """Parse JSON text typed by a person (a form, the command line) and validate the value."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValidationFailedError(
            f"{what}: nested deeper than {MAX_INPUT_DEPTH} levels"
        ) from None
    except ValueError as exc:
        raise ValidationFailedError(f"{what}: not valid JSON ({exc})") from exc
    return validate_json_value(data, what=what)


def validate_text(value: object, *, what: str, max_length: int) -> str:
    """An exact ``str`` copy of ``value``: a string of at most ``max_length`` characters."""
    if not isinstance(value, str):
        raise ValidationFailedError(f"{what}: must be a string, not {type(value).__name__}")
    if len(value) > max_length:
        raise ValidationFailedError(f"{what}: longer than {max_length} characters")
    return _string(value, what)[0]


__all__ = [
    "MAX_INPUT_BYTES",
    "MAX_INPUT_DEPTH",
    "nests_deeper_than",
    "parse_json",
    "validate_json_object",
    "validate_json_value",
    "validate_text",
]
