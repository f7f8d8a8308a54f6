"""The JSON request parser of the HTTP API: a body nested too deep is a 400, never a 500.

DRF's ``JSONParser`` lets the ``RecursionError`` of a body nested thousands of levels deep escape
as a server error, and parses anything shallower whatever its depth. ``JSONParser`` here refuses
both with a ``ParseError`` (400): a body may nest ``MAX_BODY_DEPTH`` levels, one more than
``flowstone.inputs.MAX_INPUT_DEPTH`` allows a single input inside it (a run's ``config``, an
approval's ``value``), whose own shape ``flowstone.inputs`` checks after the serializer.
It is the first of ``REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]`` in ``flowstone/settings.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from rest_framework import parsers
from rest_framework.exceptions import ParseError

from flowstone.inputs import MAX_INPUT_DEPTH, nests_deeper_than

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import IO

MAX_BODY_DEPTH: Final = MAX_INPUT_DEPTH + 1
"""How deep lists and objects may nest in a JSON request body; the body itself is level 1."""


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with a depth limit: too deep is a ``ParseError`` (400)."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        """Parse the body; refuse it when it nests deeper than ``MAX_BODY_DEPTH``."""
        too_deep = f"JSON parse error - nested deeper than {MAX_BODY_DEPTH} levels"
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(too_deep) from None
        if nests_deeper_than(data, MAX_BODY_DEPTH):
            raise ParseError(too_deep)
        return data
