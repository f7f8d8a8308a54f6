"""S3 fixtures for the IO manager tests: a bucket on the session's S3 server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.s3 import MotoServer


@pytest.fixture
def bucket(moto_server: MotoServer) -> str:
    """A new, empty bucket on the session's S3 server."""
    return moto_server.create_bucket()
