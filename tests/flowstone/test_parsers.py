"""The API's JSON parser: bodies nested too deep are a ParseError (400), never a RecursionError."""

from __future__ import annotations

import io
import json

import pytest
from rest_framework.exceptions import ParseError

from flowstone.parsers import MAX_BODY_DEPTH, JSONParser

pytestmark = pytest.mark.embedded


def _parse(text: str) -> object:
    return JSONParser().parse(io.BytesIO(text.encode()), "application/json", {})


def test_a_body_within_the_depth_limit_parses() -> None:
    body = "[" * MAX_BODY_DEPTH + "]" * MAX_BODY_DEPTH
    assert json.dumps(_parse(body)) == body
    assert _parse('{"config": {"a": [1, "x"]}}') == {"config": {"a": [1, "x"]}}


@pytest.mark.parametrize(
    "body",
    [
        "[" * (MAX_BODY_DEPTH + 1) + "]" * (MAX_BODY_DEPTH + 1),
        '{"a": ' * 500 + "1" + "}" * 500,
        "[" * 100_000,
        '{"a": ' * 100_000,
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_a_body_nested_too_deep_is_a_parse_error(body: str) -> None:
    with pytest.raises(ParseError, match=f"nested deeper than {MAX_BODY_DEPTH} levels"):
        _parse(body)


@pytest.mark.parametrize("body", ["{not json", '{"a": NaN}', ""])
def test_malformed_bodies_are_still_parse_errors(body: str) -> None:
    with pytest.raises(ParseError, match="JSON parse error"):
        _parse(body)
