"""The input boundary: JSON inputs are plain copies, str keys, no NUL, bounded depth and size."""

from __future__ import annotations

import enum
import json
import math
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowstone import inputs
from flowstone.errors import ValidationFailedError
from flowstone.inputs import (
    MAX_INPUT_BYTES,
    MAX_INPUT_DEPTH,
    nests_deeper_than,
    parse_json,
    validate_json_object,
    validate_json_value,
    validate_text,
)

pytestmark = pytest.mark.embedded


def test_all_is_pinned() -> None:
    assert inputs.__all__ == [
        "MAX_INPUT_BYTES",
        "MAX_INPUT_DEPTH",
        "nests_deeper_than",
        "parse_json",
        "validate_json_object",
        "validate_json_value",
        "validate_text",
    ]


def _nested(depth: int, leaf: object = 1) -> object:
    value: object = leaf
    for _ in range(depth):
        value = [value]
    return value


# Values JSON can hold, and a few it cannot: NUL, lone surrogates, non-str keys, tuples, sets,
# bytes, objects, non-finite floats. Containers nest up to 40 deep (past MAX_INPUT_DEPTH).
_text = st.text(alphabet=st.characters(codec=None), max_size=8) | st.sampled_from(
    ["a\x00b", "\x00", "\ud800", "ok"]
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | _text
    | st.sampled_from([b"bytes", object(), {1, 2}])
    | st.builds(pow, st.just(10), st.sampled_from([4299, 5000]))
)
_keys = _text | st.integers() | st.none() | st.tuples(st.integers())
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children)
        | st.dictionaries(_keys, children, max_size=4)
    ),
    max_leaves=60,
)


def _is_valid_scalar(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) < 10**4300  # Python's int/str digit limit
    return value is None or isinstance(value, bool)


def _is_valid(value: object, depth: int = 0) -> bool:
    """The reference: a straightforward recursive check of the documented rules (size aside)."""
    if isinstance(value, list):
        return depth < MAX_INPUT_DEPTH and all(_is_valid(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return depth < MAX_INPUT_DEPTH and all(
            isinstance(k, str) and _is_valid_scalar(k) and _is_valid(v, depth + 1)
            for k, v in value.items()
        )
    return _is_valid_scalar(value)


def _outcome(value: object, *, as_object: bool) -> tuple[bool, Any]:
    """``(True, copy)`` or ``(False, error message)``."""
    try:
        if as_object:
            return True, validate_json_object(value, what="config")
        return True, validate_json_value(value, what="config")
    except ValidationFailedError as exc:
        return False, exc.message


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=5))
def test_any_input_is_an_equal_plain_dict_or_a_clean_validation_error(value: Any) -> None:
    accepted, result = _outcome(value, as_object=True)
    assert accepted == _is_valid(value), result
    if accepted:
        assert result == value
        assert result is not value
        assert json.loads(json.dumps(result, allow_nan=False)) == result
    else:
        assert result.startswith("config")
        assert "\x00" not in result


@settings(max_examples=100, deadline=None)
@given(_values)
def test_any_value_is_an_equal_copy_or_a_clean_validation_error(value: Any) -> None:
    accepted, result = _outcome(value, as_object=False)
    assert accepted == _is_valid(value), result
    if accepted:
        assert result == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": [0, 1, "x\x00y"]}, 'config["a"][2]: string contains a NUL character'),
        ({"a\x00": 1}, 'config["a\\u0000"] (key): string contains a NUL character'),
        ({"a": {1: "one"}}, 'config["a"]: key 1 is not a string (int)'),
        ({"a": (1, 2)}, 'config["a"]: tuple is not a JSON value'),
        ({"a": {1, 2}}, 'config["a"]: set is not a JSON value'),
        ({"a": b"x"}, 'config["a"]: bytes is not a JSON value'),
        ({"a": object()}, 'config["a"]: object is not a JSON value'),
        ({"a": math.nan}, 'config["a"]: nan is not a finite number'),
        ({"a": -math.inf}, 'config["a"]: -inf is not a finite number'),
        ({"a": "\udc00"}, 'config["a"]: string contains a lone surrogate'),
        ({"a": 10**5000}, 'config["a"]: integer has too many digits'),
    ],
)
def test_errors_name_the_input_and_the_path(value: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationFailedError) as caught:
        validate_json_object(value, what="config")
    assert caught.value.message == message
    assert caught.value.kind == "validation_error"


@pytest.mark.parametrize("value", ["abc", 5, None, [("a", 1)], b"{}"])
def test_an_object_must_be_a_mapping(value: object) -> None:
    with pytest.raises(ValidationFailedError, match="tags: must be a JSON object"):
        validate_json_object(value, what="tags")


def test_depth_is_bounded_without_recursion() -> None:
    validate_json_value(_nested(MAX_INPUT_DEPTH), what="value")
    for depth in (MAX_INPUT_DEPTH + 1, 100_000):
        with pytest.raises(ValidationFailedError, match=f"nested deeper than {MAX_INPUT_DEPTH}"):
            validate_json_value(_nested(depth), what="value")
    deep: dict[str, Any] = {}
    for _ in range(100_000):
        deep = {"a": deep}
    with pytest.raises(ValidationFailedError, match="nested deeper"):
        validate_json_object(deep, what="config")
    assert nests_deeper_than(_nested(100_000), MAX_INPUT_DEPTH)
    assert not nests_deeper_than(_nested(MAX_INPUT_DEPTH), MAX_INPUT_DEPTH)


def test_a_container_that_holds_itself_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValidationFailedError, match="nested deeper"):
        validate_json_value(loop, what="value")


def test_size_is_the_compact_utf8_encoding() -> None:
    fits = {"k": "é" * ((MAX_INPUT_BYTES - len('{"k":""}')) // 2)}
    assert len(json.dumps(fits, ensure_ascii=False, separators=(",", ":")).encode()) <= (
        MAX_INPUT_BYTES
    )
    assert validate_json_object(fits, what="config") == fits
    with pytest.raises(ValidationFailedError, match=f"larger than {MAX_INPUT_BYTES} bytes"):
        validate_json_object({"k": "é" * (MAX_INPUT_BYTES // 2)}, what="config")
    with pytest.raises(ValidationFailedError, match="larger than"):
        validate_json_value([0] * MAX_INPUT_BYTES, what="value")


class _Colour(enum.StrEnum):
    RED = "red"


class _Size(enum.IntEnum):
    BIG = 3


def test_the_copy_is_plain_and_detached() -> None:
    inner = {"b": [1, 2]}
    given_value = MappingProxyType({"a": inner, "c": _Colour.RED, "d": _Size.BIG, "e": 1.5})
    checked = validate_json_object(given_value, what="config")
    inner["b"].append(3)
    assert checked == {"a": {"b": [1, 2]}, "c": "red", "d": 3, "e": 1.5}
    assert type(checked) is dict
    assert (type(checked["c"]), type(checked["d"])) == (str, int)


def test_parse_json_refuses_bad_text_and_bad_values_alike() -> None:
    assert parse_json('{"a": [1, null]}', what="--config") == {"a": [1, None]}
    with pytest.raises(ValidationFailedError, match="--config: not valid JSON"):
        parse_json("{not json", what="--config")
    with pytest.raises(ValidationFailedError, match="NUL"):
        parse_json('{"a": "\\u0000"}', what="--config")
    with pytest.raises(ValidationFailedError, match="not a finite number"):
        parse_json('{"a": NaN}', what="--config")
    with pytest.raises(ValidationFailedError, match="nested deeper"):
        parse_json("[" * 100_000, what="--value")


def test_validate_text() -> None:
    assert validate_text("alice", what="requested_by", max_length=5) == "alice"
    for bad in ("alice!", "a\x00", 5, None):
        with pytest.raises(ValidationFailedError, match="requested_by"):
            validate_text(bad, what="requested_by", max_length=5)
