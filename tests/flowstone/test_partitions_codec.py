"""Property tests for the partition key codec: exact, unambiguous, JSON-safe round trips."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum
from typing import NamedTuple
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from flowstone.errors import PartitionKeyError
from flowstone.partitions import (
    MAX_PARTITION_KEY_LENGTH,
    UNPARTITIONED_KEY,
    PartitionValue,
    decode_partition_key,
    encode_partition_key,
)

PROPERTY = settings(
    max_examples=400, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

TRICKY_TEXTS = [
    "",
    "|",
    ":",
    "s:x",
    "s:",
    "i:1",
    "2025-01-01",
    "2025-01-01T00:00:00",
    "T:[]",
    'T:["s:a"]',
    "a|b",
    "a:b|c",
    '"',
    "'",
    '\\"',
    "\\",
    "[]",
    "null",
    "\n",
    "\r\n\t",
    " ",
    "\u2028",
    "é",
    "日本語",
    "🎉",
    "\ufeff",
]

texts = st.sampled_from(TRICKY_TEXTS) | st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=20,
)
integers = st.integers() | st.integers(min_value=-(10**300), max_value=10**300)
ONE_DAY_SECONDS = 24 * 60 * 60
fixed_offsets = st.builds(
    lambda seconds: timezone(timedelta(seconds=seconds)),
    st.integers(min_value=-ONE_DAY_SECONDS + 1, max_value=ONE_DAY_SECONDS - 1),
)
naive_datetimes = st.datetimes()
aware_datetimes = st.datetimes(timezones=st.timezones()) | st.datetimes(timezones=fixed_offsets)
leaves: st.SearchStrategy[PartitionValue] = st.one_of(
    texts, integers, st.dates(), naive_datetimes, aware_datetimes
)
values: st.SearchStrategy[PartitionValue] = st.recursive(
    leaves, lambda children: st.lists(children, max_size=4).map(tuple), max_leaves=8
)


def short_id(param: object) -> str:
    """Keep test ids short and printable."""
    return ascii(param)[:24]


def assert_same(decoded: object, original: object) -> None:
    """Same type, same value, recursively; aware datetimes by instant, wall time and offset."""
    assert type(decoded) is type(original), (decoded, original)
    if isinstance(original, tuple):
        assert isinstance(decoded, tuple)
        assert len(decoded) == len(original)
        for inner_decoded, inner_original in zip(decoded, original, strict=True):
            assert_same(inner_decoded, inner_original)
    elif isinstance(original, datetime) and original.utcoffset() is not None:
        assert isinstance(decoded, datetime)
        assert decoded.utcoffset() == original.utcoffset()
        assert decoded.replace(tzinfo=None) == original.replace(tzinfo=None, fold=0)
        # The same instant; subtraction, since ``astimezone`` overflows at datetime.min + offset.
        assert decoded - original == timedelta(0)
    else:
        assert decoded == original


def encode_or_skip_if_too_long(value: PartitionValue) -> str:
    """Encode; examples whose key is over the length limit are discarded (tested separately)."""
    try:
        return encode_partition_key(value)
    except PartitionKeyError as exc:
        assume("characters long" not in exc.message and "bits" not in exc.message)
        raise


@PROPERTY
@given(values)
def test_decode_encode_round_trips_with_same_types(value: PartitionValue) -> None:
    key = encode_or_skip_if_too_long(value)
    assert_same(decode_partition_key(key), value)


@PROPERTY
@given(values)
def test_encoded_keys_are_canonical(value: PartitionValue) -> None:
    key = encode_or_skip_if_too_long(value)
    assert encode_partition_key(decode_partition_key(key)) == key


@PROPERTY
@given(values)
def test_keys_are_json_safe_and_bounded(value: PartitionValue) -> None:
    key = encode_or_skip_if_too_long(value)
    assert isinstance(key, str)
    assert json.loads(json.dumps(key)) == key
    assert json.loads(json.dumps(key, ensure_ascii=False)) == key
    assert "\x00" not in key
    assert key.encode("utf-8").decode("utf-8") == key
    assert 0 < len(key) <= MAX_PARTITION_KEY_LENGTH


@PROPERTY
@given(texts)
def test_a_string_never_decodes_as_anything_else(text: str) -> None:
    key = encode_partition_key(text)
    assert key == "s:" + text
    decoded = decode_partition_key(key)
    assert type(decoded) is str
    assert decoded == text


@PROPERTY
@given(values, values)
def test_equal_keys_only_for_the_same_value(first: PartitionValue, second: PartitionValue) -> None:
    first_key = encode_or_skip_if_too_long(first)
    second_key = encode_or_skip_if_too_long(second)
    if first_key == second_key:
        assert_same(decode_partition_key(second_key), first)
    else:
        with pytest.raises(AssertionError):
            assert_same(second, first)


@PROPERTY
@given(st.text(max_size=40))
def test_any_text_decodes_or_raises_partition_key_error(key: str) -> None:
    try:
        value = decode_partition_key(key)
    except PartitionKeyError as exc:
        error: PartitionKeyError | None = exc
    else:
        error = None
    if error is not None:
        assert error.message
        assert str(error).startswith("[validation_error] ")
        return
    assert encode_partition_key(value) == key


@PROPERTY
@given(st.sampled_from(["s:", "i:", "d:", "n:", "t:", "T:"]), st.text(max_size=40))
def test_tagged_text_decodes_canonically_or_raises(prefix: str, body: str) -> None:
    key = prefix + body
    try:
        value = decode_partition_key(key)
    except PartitionKeyError:
        return
    assert encode_partition_key(value) == key


def test_none_empty_string_and_empty_value_are_distinct() -> None:
    assert UNPARTITIONED_KEY == ""
    assert encode_partition_key(None) == ""
    assert encode_partition_key("") == "s:"
    assert decode_partition_key("") is None
    assert decode_partition_key("s:") == ""
    assert encode_partition_key(()) == "T:[]"
    assert decode_partition_key("T:[]") == ()


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("acme", "s:acme"),
        ("a|b:c", "s:a|b:c"),
        ("2025-01-03", "s:2025-01-03"),
        (42, "i:42"),
        (-7, "i:-7"),
        (0, "i:0"),
        (date(2025, 1, 3), "d:2025-01-03"),
        (date(1, 1, 1), "d:0001-01-01"),
        (datetime.fromisoformat("2025-01-03T05:00"), "n:2025-01-03T05:00:00"),
        (datetime.fromisoformat("2025-01-03T05:00:00.000005"), "n:2025-01-03T05:00:00.000005"),
        (datetime(2025, 1, 3, 5, tzinfo=UTC), "t:2025-01-03T05:00:00+00:00"),
        (
            datetime(2025, 7, 1, 2, tzinfo=ZoneInfo("Europe/Berlin")),
            "t:2025-07-01T02:00:00+02:00",
        ),
        (("acme", date(2025, 1, 3)), 'T:["s:acme","d:2025-01-03"]'),
        ((("a|b",), ()), 'T:["T:[\\"s:a|b\\"]","T:[]"]'),
        (("é",), 'T:["s:é"]'),
    ],
)
def test_documented_examples(value: PartitionValue, key: str) -> None:
    assert encode_partition_key(value) == key
    assert_same(decode_partition_key(key), value)


def test_aware_datetime_in_a_dst_fold_keeps_its_offset() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    first = datetime(2025, 10, 26, 2, 30, tzinfo=berlin)
    second = datetime(2025, 10, 26, 2, 30, fold=1, tzinfo=berlin)
    assert encode_partition_key(first) == "t:2025-10-26T02:30:00+02:00"
    assert encode_partition_key(second) == "t:2025-10-26T02:30:00+01:00"
    decoded = decode_partition_key(encode_partition_key(second))
    assert isinstance(decoded, datetime)
    assert decoded.timestamp() == second.timestamp()
    assert decoded.utcoffset() == timedelta(hours=1)


def test_sub_minute_offsets_round_trip() -> None:
    lmt = datetime(1800, 1, 1, tzinfo=ZoneInfo("Europe/Berlin"))
    odd = datetime(2025, 1, 1, tzinfo=timezone(timedelta(seconds=-1)))
    assert encode_partition_key(lmt) == "t:1800-01-01T00:00:00+00:53:28"
    for value in (lmt, odd):
        assert_same(decode_partition_key(encode_partition_key(value)), value)


def test_fractional_second_offsets_are_rejected() -> None:
    value = datetime(2000, 1, 1, tzinfo=timezone(timedelta(microseconds=1)))
    with pytest.raises(PartitionKeyError, match="fraction of a second"):
        encode_partition_key(value)
    with pytest.raises(PartitionKeyError):
        decode_partition_key("t:2000-01-01T00:00:00+00:00:00.500000")


def test_subclasses_encode_as_their_base_value() -> None:
    class Region(StrEnum):
        EU = "eu"

    class Pair(NamedTuple):
        left: str
        right: int

    assert encode_partition_key(Region.EU) == "s:eu"
    assert type(decode_partition_key("s:eu")) is str
    assert encode_partition_key(Pair("a", 1)) == 'T:["s:a","i:1"]'
    assert type(decode_partition_key('T:["s:a","i:1"]')) is tuple


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (True, "type bool"),
        (1.5, "type float"),
        ([1], "type list"),
        ({"a": 1}, "type dict"),
        (b"x", "type bytes"),
        (("a", None), "None is not allowed inside a partition tuple"),
        (("a", True), "type bool"),
        ("a\x00b", "NUL"),
        ("\ud800", "surrogate"),
        ("x" * MAX_PARTITION_KEY_LENGTH, "characters long"),
        (10**2000, "bits"),
        (10 ** (MAX_PARTITION_KEY_LENGTH - 1), "characters long"),
        (("x" * 600, "y" * 600), "characters long"),
    ],
    ids=short_id,
)
def test_unsupported_values_raise_a_readable_error(value: object, fragment: str) -> None:
    with pytest.raises(PartitionKeyError) as caught:
        encode_partition_key(value)  # type: ignore[arg-type]
    assert fragment in caught.value.message
    assert str(caught.value).startswith("[validation_error] ")


def test_deep_nesting_is_rejected_without_recursion_error() -> None:
    value: PartitionValue = ()
    for _ in range(10_000):
        value = (value,)
    with pytest.raises(PartitionKeyError, match="nested"):
        encode_partition_key(value)


def test_longest_keys_are_accepted() -> None:
    text = "x" * (MAX_PARTITION_KEY_LENGTH - 2)
    assert decode_partition_key(encode_partition_key(text)) == text
    with pytest.raises(PartitionKeyError, match="characters long"):
        decode_partition_key("s:" + text + "x")


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("x", "unknown type tag"),
        ("acme", "unknown type tag"),
        ("S:acme", "unknown type tag"),
        ("s", "unknown type tag"),
        ("|", "unknown type tag"),
        ("i:", "not a canonical integer"),
        ("i:007", "not a canonical integer"),
        ("i:-0", "not a canonical integer"),
        ("i:+1", "not a canonical integer"),
        ("i:1_000", "not a canonical integer"),
        ("i: 1", "not a canonical integer"),
        ("i:\u0661", "not a canonical integer"),
        ("i:1\n", "not a canonical integer"),
        ("d:2025-1-3", "not a YYYY-MM-DD date"),
        ("d:2025-02-30", "not a YYYY-MM-DD date"),
        ("d:20250103", "not a YYYY-MM-DD date"),
        ("d:0000-01-01", "not a YYYY-MM-DD date"),
        ("n:yesterday", "not an ISO datetime"),
        ("n:2025-01-03T05:00:00+00:00", "without an offset"),
        ("n:2025-01-03T05:00", "not in canonical form"),
        ("n:2025-01-03 05:00:00", "not in canonical form"),
        ("n:2025-01-03T05:00:00.000000", "not in canonical form"),
        ("t:2025-01-03T05:00:00", "with an offset"),
        ("t:2025-01-03T05:00:00Z", "not in canonical form"),
        ("t:2025-01-03T05:00:00+0100", "not in canonical form"),
        ("T:", "not valid JSON"),
        ("T:[", "not valid JSON"),
        ("T:{}", "JSON array of keys"),
        ("T:[1]", "JSON array of keys"),
        ("T:[null]", "JSON array of keys"),
        ('T:[""]', "None"),
        ('T:["s:a", "s:b"]', "not in canonical form"),
        ('T:["s:\\u00e9"]', "not in canonical form"),
        ('T:["s:\\ud800"]', "surrogate"),
        ('T:["x"]', "unknown type tag"),
        ("s:a\x00", "NUL"),
        ("s:\ud800", "surrogate"),
        ("s:" + "x" * MAX_PARTITION_KEY_LENGTH, "characters long"),
    ],
    ids=short_id,
)
def test_malformed_keys_raise_a_readable_error(key: str, fragment: str) -> None:
    with pytest.raises(PartitionKeyError) as caught:
        decode_partition_key(key)
    assert fragment in caught.value.message


def test_decoding_a_non_string_raises() -> None:
    with pytest.raises(PartitionKeyError, match="must be a str"):
        decode_partition_key(None)  # type: ignore[arg-type]
    with pytest.raises(PartitionKeyError, match="must be a str"):
        decode_partition_key(b"s:a")  # type: ignore[arg-type]


def test_deeply_nested_json_is_rejected() -> None:
    with pytest.raises(PartitionKeyError):
        decode_partition_key("T:" + "[" * 500 + "]" * 500)
