"""Partition key encoding: one unambiguous, reversible, JSON-safe string per partition value.

A *partition value* is what an asset function sees (``"acme"``, ``date(2025, 1, 3)``, a tuple).
A *partition key* is its encoded string: the form stored in the database, written to logs and
sent in Celery payloads. Every key but ``""`` starts with a one-letter type tag and a colon, so no
value can be read back as another type::

    value                     key                                example key
    ------------------------  ---------------------------------  ------------------------------
    None (unpartitioned)      ""  (the empty string)             ""
    str                       "s:" + the text, verbatim          "s:acme|eu:1"   ("" -> "s:")
    int (not bool)            "i:" + canonical decimal           "i:42"   "i:-7"   "i:0"
    date                      "d:" + YYYY-MM-DD                  "d:2025-01-03"
    naive datetime            "n:" + isoformat()                 "n:2025-01-03T05:00:00"
    aware datetime            "t:" + isoformat()                 "t:2025-01-03T05:00:00+01:00"
    tuple (nested, or empty)  "T:" + compact JSON array of the   'T:["s:acme","d:2025-01-03"]'
                              elements' keys

Rules:

- ``None`` only means "unpartitioned" and encodes as ``""``; the empty string *value* is
  ``"s:"``, so the two never collide. ``None`` is not allowed inside a tuple.
- A string is kept verbatim after ``"s:"`` (``|``, ``:``, quotes, newlines, any unicode), so a
  string never decodes as anything but that same string. Strings may not contain NUL (U+0000,
  which PostgreSQL text cannot hold) or lone surrogates (which are not valid UTF-8).
- Integers are plain decimal: no ``+``, no leading zeros, no ``-0``, ASCII digits only. ``bool``
  is rejected although it is an ``int``.
- ``datetime`` is checked before ``date`` (it is a subclass). A datetime is aware when
  ``utcoffset()`` is not ``None``. ``isoformat()`` keeps the microseconds (when non-zero) and the
  offset (down to seconds when it has them, as old local mean times do; offsets with a fraction
  of a second are rejected because they do not round-trip). An aware datetime decodes with a
  fixed-offset ``datetime.timezone``: same wall time, same ``utcoffset()``, same instant, but not
  the original ``tzinfo`` object. Python never calls a datetime inside a DST fold equal to one in
  another zone, so compare such values by instant (``.timestamp()``), not with ``==``.
- A tuple is ``"T:" + json.dumps(keys, ensure_ascii=False, separators=(",", ":"))`` where
  ``keys`` is the list of its elements' keys.
- Subclasses (an ``enum.StrEnum`` member, a namedtuple) encode as their base value and decode as
  the base type.
- An encoded key is at most ``MAX_PARTITION_KEY_LENGTH`` (512) characters.

Decoding accepts only the canonical form: ``encode_partition_key(decode_partition_key(k)) == k``
for every accepted key, and ``decode_partition_key(encode_partition_key(v)) == v`` (same types,
recursively) for every supported value. Anything else (an unknown tag, ``"i:007"``,
``"d:2025-1-3"``, ``"t:...Z"``, invalid JSON, an over-long key) raises ``PartitionKeyError``.
Keys are plain ``str`` and survive ``json.loads(json.dumps(key))`` unchanged.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from typing import TYPE_CHECKING, Final, TypeAlias

from flowstone.errors import PartitionKeyError

if TYPE_CHECKING:
    from collections.abc import Callable

PartitionValue: TypeAlias = str | int | date | datetime | tuple["PartitionValue", ...]
"""A value that identifies one partition; the module docstring shows how it is encoded."""

# Keys are indexed with the asset name and run id; 512 characters (at most 2,048 bytes of UTF-8)
# keeps every index entry under PostgreSQL's B-tree limit of about 2,700 bytes.
MAX_PARTITION_KEY_LENGTH: Final = 512
"""The longest encoded partition key, in characters."""

UNPARTITIONED_KEY: Final = ""
"""The key of an unpartitioned asset, whose partition value is ``None``."""

STR_PREFIX: Final = "s:"
INT_PREFIX: Final = "i:"
DATE_PREFIX: Final = "d:"
NAIVE_DATETIME_PREFIX: Final = "n:"
AWARE_DATETIME_PREFIX: Final = "t:"
TUPLE_PREFIX: Final = "T:"

# Each nesting level escapes the inner keys once more, so a key at least doubles in length per
# level and nothing nested deeper than 8 levels fits in 512 characters. This limit only stops a
# runaway recursion before the length check can.
_MAX_TUPLE_DEPTH: Final = 16
_PREFIX_LENGTH: Final = 2
_PREVIEW_LENGTH: Final = 60
# An int with more bits than this has more digits than a key can hold; checking the bit length
# first avoids str() on huge ints (and Python's int-to-str digit limit).
_MAX_INT_BITS: Final = 4 * MAX_PARTITION_KEY_LENGTH
_INT_PATTERN: Final = re.compile(r"-?(?:0|[1-9][0-9]*)")
_DATE_PATTERN: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_JSON_SEPARATORS: Final = (",", ":")


def format_partition_value(value: object) -> str:
    """Show a partition value as a person writes it, for messages.

    ISO dates and times, a key as itself, a multi-dimensional value as a JSON array; ``None`` is
    ``(unpartitioned)``.
    """
    if value is None:
        return "(unpartitioned)"
    if isinstance(value, date):  # a datetime too
        return value.isoformat()
    if isinstance(value, tuple):
        return json.dumps([format_partition_value(item) for item in value], ensure_ascii=False)
    if isinstance(value, str):
        return value if len(value) <= _PREVIEW_LENGTH else value[: _PREVIEW_LENGTH - 3] + "..."
    return _preview(value)


def encode_partition_key(value: PartitionValue | None) -> str:
    """Encode a partition value as its partition key (``None`` becomes ``""``)."""
    if value is None:
        return UNPARTITIONED_KEY
    return _encode(value, depth=0)


def decode_partition_key(key: str) -> PartitionValue | None:
    """Decode a partition key back to its value (``""`` becomes ``None``); reject other forms."""
    if not isinstance(key, str):
        msg = f"a partition key must be a str, got {type(key).__name__} ({_preview(key)})"
        raise PartitionKeyError(msg)
    if key == UNPARTITIONED_KEY:
        return None
    _check_length(key)
    return _decode(key, depth=0)


def check_key_text(text: object, *, what: str = "partition key") -> str:
    """Return ``text`` as a plain ``str`` if a key may hold it; raise ``PartitionKeyError`` if not.

    The text must be a ``str`` without NUL or lone surrogates that fits in an encoded key.
    ``what`` names the text in the error message.
    """
    if not isinstance(text, str):
        msg = f"a {what} must be a str, got {type(text).__name__} ({_preview(text)})"
        raise PartitionKeyError(msg)
    plain = str.__str__(text)
    if len(plain) > MAX_PARTITION_KEY_LENGTH - _PREFIX_LENGTH:
        msg = (
            f"{what} {_preview(plain)} is {len(plain)} characters long; encoded keys are limited "
            f"to {MAX_PARTITION_KEY_LENGTH} characters"
        )
        raise PartitionKeyError(msg)
    if "\x00" in plain:
        msg = f"{what} {_preview(plain)} contains NUL (U+0000), which cannot be stored"
        raise PartitionKeyError(msg)
    try:
        plain.encode("utf-8")
    except UnicodeEncodeError as exc:
        msg = f"{what} {_preview(plain)} contains a lone surrogate, which is not valid UTF-8"
        raise PartitionKeyError(msg) from exc
    return plain


def _encode(value: object, *, depth: int) -> str:
    """Encode one value other than ``None``; ``depth`` counts the enclosing tuples."""
    key: str
    if isinstance(value, bool):
        msg = f"cannot encode a partition value of type bool ({value!r}); use an int or a str"
        raise PartitionKeyError(msg)
    if isinstance(value, str):
        key = STR_PREFIX + check_key_text(value, what="partition string")
    elif isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            msg = (
                f"partition integer has {value.bit_length()} bits; its key would be longer than "
                f"{MAX_PARTITION_KEY_LENGTH} characters"
            )
            raise PartitionKeyError(msg)
        key = INT_PREFIX + int.__repr__(value)
    elif isinstance(value, datetime):
        key = _encode_datetime(value)
    elif isinstance(value, date):
        key = DATE_PREFIX + date.isoformat(value)
    elif isinstance(value, tuple):
        key = _encode_tuple(value, depth=depth)
    else:
        msg = (
            f"cannot encode a partition value of type {type(value).__name__} "
            f"({_preview(value)}); supported types are str, int, date, datetime and tuples of them"
        )
        raise PartitionKeyError(msg)
    _check_length(key)
    return key


def _encode_datetime(value: datetime) -> str:
    """Encode a naive (``n:``) or aware (``t:``) datetime with its ``isoformat()``."""
    try:
        text = datetime.isoformat(value)
        offset = value.utcoffset()
    except ValueError as exc:  # a tzinfo that returns an out-of-range offset
        msg = f"cannot encode datetime {_preview(value)}: {exc}"
        raise PartitionKeyError(msg) from exc
    if offset is None:
        if value.tzinfo is not None:
            msg = (
                f"cannot encode datetime {_preview(value)}: its tzinfo gives no utcoffset(); "
                "pass a naive datetime or an aware one"
            )
            raise PartitionKeyError(msg)
        return NAIVE_DATETIME_PREFIX + text
    if offset.microseconds:
        # datetime.fromisoformat() (Python 3.11) misreads some fractional-second offsets.
        msg = (
            f"cannot encode datetime {_preview(value)}: its UTC offset {offset} has a fraction "
            "of a second; only whole-second offsets are supported"
        )
        raise PartitionKeyError(msg)
    return AWARE_DATETIME_PREFIX + text


def _encode_tuple(value: tuple[object, ...], *, depth: int) -> str:
    """Encode a tuple as ``T:`` and a compact JSON array of its elements' keys."""
    if depth >= _MAX_TUPLE_DEPTH:
        msg = f"partition tuples are nested more than {_MAX_TUPLE_DEPTH} levels deep"
        raise PartitionKeyError(msg)
    parts: list[str] = []
    for index, element in enumerate(value):
        if element is None:
            msg = (
                f"None is not allowed inside a partition tuple (element {index} of "
                f"{_preview(value)}); None only means 'unpartitioned', at the top level"
            )
            raise PartitionKeyError(msg)
        parts.append(_encode(element, depth=depth + 1))
    return TUPLE_PREFIX + json.dumps(parts, ensure_ascii=False, separators=_JSON_SEPARATORS)


def _decode(key: str, *, depth: int) -> PartitionValue:
    """Decode one non-empty key and check that it is in canonical form."""
    prefix, body = key[:_PREFIX_LENGTH], key[_PREFIX_LENGTH:]
    value: PartitionValue
    if prefix == TUPLE_PREFIX:
        value = _decode_tuple(body, key, depth=depth)
    elif prefix in _SCALAR_DECODERS:
        value = _SCALAR_DECODERS[prefix](body, key)
    else:
        tags = ", ".join([*_SCALAR_DECODERS, TUPLE_PREFIX])
        msg = (
            f"malformed partition key {_preview(key)}: unknown type tag {prefix!r}; expected "
            f"one of {tags}, or '' for unpartitioned"
        )
        raise PartitionKeyError(msg, partition=key)
    if prefix != STR_PREFIX:
        canonical = _encode(value, depth=depth)
        if canonical != key:
            msg = (
                f"partition key {_preview(key)} is not in canonical form; "
                f"expected {_preview(canonical)}"
            )
            raise PartitionKeyError(msg, partition=key)
    return value


def _decode_str(body: str, key: str) -> PartitionValue:
    """Decode the text after ``s:``."""
    try:
        return check_key_text(body, what="partition string")
    except PartitionKeyError as exc:
        msg = f"malformed partition key: {exc.message}"
        raise PartitionKeyError(msg, partition=key) from exc


def _decode_int(body: str, key: str) -> PartitionValue:
    """Decode the canonical decimal after ``i:``."""
    if not _INT_PATTERN.fullmatch(body) or body == "-0":
        msg = (
            f"malformed partition key {_preview(key)}: {_preview(body)} is not a canonical "
            "integer (ASCII digits, an optional '-', no leading zeros, no '-0')"
        )
        raise PartitionKeyError(msg, partition=key)
    return int(body)


def _decode_date(body: str, key: str) -> PartitionValue:
    """Decode the ``YYYY-MM-DD`` after ``d:``."""
    value = None
    if _DATE_PATTERN.fullmatch(body):
        try:
            value = date.fromisoformat(body)
        except ValueError:
            value = None
    if value is None:
        msg = f"malformed partition key {_preview(key)}: {_preview(body)} is not a YYYY-MM-DD date"
        raise PartitionKeyError(msg, partition=key)
    return value


def _decode_naive(body: str, key: str) -> PartitionValue:
    """Decode the ISO datetime without offset after ``n:``."""
    value = _parse_datetime(body, key)
    if value.tzinfo is not None:
        msg = f"malformed partition key {_preview(key)}: 'n:' takes a datetime without an offset"
        raise PartitionKeyError(msg, partition=key)
    return value


def _decode_aware(body: str, key: str) -> PartitionValue:
    """Decode the ISO datetime with offset after ``t:``."""
    value = _parse_datetime(body, key)
    if value.tzinfo is None:
        msg = f"malformed partition key {_preview(key)}: 't:' takes a datetime with an offset"
        raise PartitionKeyError(msg, partition=key)
    return value


def _parse_datetime(body: str, key: str) -> datetime:
    """Parse an ISO datetime, turning a parse failure into ``PartitionKeyError``."""
    try:
        return datetime.fromisoformat(body)
    except ValueError as exc:
        msg = f"malformed partition key {_preview(key)}: {_preview(body)} is not an ISO datetime"
        raise PartitionKeyError(msg, partition=key) from exc


def _decode_tuple(body: str, key: str, *, depth: int) -> PartitionValue:
    """Decode the JSON array of element keys after ``T:``."""
    if depth >= _MAX_TUPLE_DEPTH:
        msg = f"partition key {_preview(key)} nests tuples more than {_MAX_TUPLE_DEPTH} levels"
        raise PartitionKeyError(msg, partition=key)
    try:
        parts = json.loads(body)
    except (ValueError, RecursionError) as exc:
        msg = f"malformed partition key {_preview(key)}: the tuple body is not valid JSON"
        raise PartitionKeyError(msg, partition=key) from exc
    if not isinstance(parts, list) or not all(isinstance(part, str) for part in parts):
        msg = f"malformed partition key {_preview(key)}: a tuple must be a JSON array of keys"
        raise PartitionKeyError(msg, partition=key)
    if UNPARTITIONED_KEY in parts:
        msg = f"malformed partition key {_preview(key)}: None ('') is not allowed in a tuple"
        raise PartitionKeyError(msg, partition=key)
    return tuple(_decode(part, depth=depth + 1) for part in parts)


_SCALAR_DECODERS: Final[dict[str, Callable[[str, str], PartitionValue]]] = {
    STR_PREFIX: _decode_str,
    INT_PREFIX: _decode_int,
    DATE_PREFIX: _decode_date,
    NAIVE_DATETIME_PREFIX: _decode_naive,
    AWARE_DATETIME_PREFIX: _decode_aware,
}


def _check_length(key: str) -> None:
    """Reject keys longer than ``MAX_PARTITION_KEY_LENGTH``."""
    if len(key) > MAX_PARTITION_KEY_LENGTH:
        msg = (
            f"partition key {_preview(key)} is {len(key)} characters long; the limit is "
            f"{MAX_PARTITION_KEY_LENGTH}"
        )
        raise PartitionKeyError(msg)


def _preview(value: object) -> str:
    """Return a short ``repr`` of ``value`` for error messages."""
    text = repr(value)
    if len(text) <= _PREVIEW_LENGTH:
        return text
    return text[: _PREVIEW_LENGTH - 3] + "..."
