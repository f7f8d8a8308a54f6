"""The PostgreSQL suite's streams (tests/streams.py) never share a broker database."""

from __future__ import annotations

import pytest

from tests.streams import stream_broker, stream_index

pytestmark = pytest.mark.embedded


@pytest.mark.parametrize(
    ("worker", "index"), [("gw0", 0), ("gw1", 1), ("gw12", 12), (None, None), ("master", None)]
)
def test_the_stream_index_comes_from_the_xdist_worker_id(
    worker: str | None, index: int | None
) -> None:
    assert stream_index(worker) == index


def test_listed_brokers_win_and_the_first_stream_keeps_the_given_one() -> None:
    listed = "redis://h:1/15 redis://h:1/12"
    assert stream_broker("redis://h:1/15", 0, listed) == "redis://h:1/15"
    assert stream_broker("redis://h:1/15", 1, listed) == "redis://h:1/12"
    assert stream_broker("redis://h:1/15", 0) == "redis://h:1/15"


@pytest.mark.parametrize(
    ("base", "index", "expected"),
    [
        ("redis://127.0.0.1:6379/15", 1, "redis://127.0.0.1:6379/0"),
        ("redis://127.0.0.1:6379/3", 2, "redis://127.0.0.1:6379/5"),
        ("redis://127.0.0.1:6379", 1, "redis://127.0.0.1:6379/1"),
        ("redis://:secret@127.0.0.1:6379/0/", 1, "redis://:secret@127.0.0.1:6379/1"),
    ],
)
def test_an_unlisted_stream_takes_the_next_redis_database(
    base: str, index: int, expected: str
) -> None:
    assert stream_broker(base, index) == expected


def test_a_broker_that_is_not_redis_must_be_listed() -> None:
    with pytest.raises(RuntimeError, match="FLOWSTONE_TEST_STREAM_BROKERS"):
        stream_broker("amqp://guest@127.0.0.1:5672//", 1)
