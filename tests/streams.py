"""Give each pytest-xdist process its own Redis database and data directory.

``scripts/test.sh`` runs the PostgreSQL suite in two processes (``-n 2 --dist loadfile``).
pytest-django already gives each its own test database (``test_<name>_gw0``, ``_gw1``); the
broker and the data directory are ours to split, or the worker processes one stream starts
would take the other stream's messages.

This module is a plugin (``-p tests.streams`` in pytest's ``addopts``), imported before
pytest-django reads the Django settings, so the settings see the stream's own variables:

- ``CELERY_BROKER_URL``: the ``k``-th URL of ``FLOWSTONE_TEST_STREAM_BROKERS`` (space-separated,
  one per stream) when that is set, else the same Redis server with database ``base + k``
  (modulo 16).
- ``FLOWSTONE_DATA_DIR``: ``<FLOWSTONE_DATA_DIR>/gw<k>`` when it is set.

Outside xdist (and in the first stream without ``FLOWSTONE_TEST_STREAM_BROKERS``) nothing
changes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

DEFAULT_BROKER: Final = "redis://127.0.0.1:6379/0"
REDIS_DATABASES: Final = 16
_DATABASE_SUFFIX: Final = re.compile(r"^(?P<server>.*?)(?:/(?P<db>\d+))?/?$")


def stream_index(worker: str | None) -> int | None:
    """``gw3`` -> 3; ``None`` outside xdist."""
    if not worker or not worker.startswith("gw") or not worker[2:].isdigit():
        return None
    return int(worker[2:])


def stream_broker(base_url: str, index: int, listed: str = "") -> str:
    """The broker URL of stream ``index``: the listed one, else the base server's ``db + index``."""
    urls = listed.split()
    if index < len(urls):
        return urls[index]
    if index == 0:
        return base_url
    match = _DATABASE_SUFFIX.match(base_url)
    if match is None or not base_url.startswith(("redis://", "rediss://")):
        message = (
            f"cannot derive a Redis database for xdist stream {index} from {base_url!r}; "
            "set FLOWSTONE_TEST_STREAM_BROKERS"
        )
        raise RuntimeError(message)
    database = (int(match["db"] or 0) + index) % REDIS_DATABASES
    return f"{match['server']}/{database}"


def _configure_stream() -> None:
    index = stream_index(os.environ.get("PYTEST_XDIST_WORKER"))
    if index is None:
        return
    base = os.environ.get("CELERY_BROKER_URL", DEFAULT_BROKER)
    os.environ["CELERY_BROKER_URL"] = stream_broker(
        base, index, os.environ.get("FLOWSTONE_TEST_STREAM_BROKERS", "")
    )
    data_dir = os.environ.get("FLOWSTONE_DATA_DIR")
    if data_dir:
        own = Path(data_dir) / f"gw{index}"
        own.mkdir(parents=True, exist_ok=True)
        os.environ["FLOWSTONE_DATA_DIR"] = str(own)


_configure_stream()
