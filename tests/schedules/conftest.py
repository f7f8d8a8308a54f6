"""Fixtures for the scheduling tests: the scheduling pipeline and a real S3 server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from flowstone.registry import Registry, get_registry
from tests.conftest import UseDefinitions

PIPELINE = "tests.pipelines.scheduled"
HOST = "127.0.0.1"
REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
STARTUP_SECONDS = 30.0


@pytest.fixture
def registry(use_definitions: UseDefinitions) -> Registry:
    """The registry of the scheduling pipeline (filesystem IO in a temporary directory)."""
    use_definitions(PIPELINE)
    return get_registry()


@dataclass
class S3Server:
    """moto's S3 server: a real HTTP S3 API in a subprocess on a loopback port."""

    process: subprocess.Popen[bytes]
    port: int

    def client_options(self) -> dict[str, Any]:
        return {"endpoint_url": f"http://{HOST}:{self.port}", "region_name": REGION, **CREDENTIALS}

    def client(self) -> Any:
        return boto3.session.Session().client("s3", **self.client_options())

    def new_bucket(self) -> str:
        name = f"sched-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Start ``moto_server`` on a free loopback port for the session."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = int(sock.getsockname()[1])
    log: Path = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from moto.server import main; main()",
                "-H",
                HOST,
                "-p",
                str(port),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"moto_server did not start:\n{log.read_text()}")
            time.sleep(0.05)
    yield S3Server(process=process, port=port)
    process.terminate()
    process.wait(timeout=10)
