"""A real S3-compatible server (moto's server mode) on a loopback port, for the S3 tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

HOST = "127.0.0.1"
STARTUP_SECONDS = 30.0
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
REGION = "us-east-1"


@dataclass
class MotoServer:
    """A ``moto_server`` process: a real HTTP S3 API on a free loopback port."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def boto3_options(self) -> dict[str, Any]:
        """Keyword arguments of a boto3 S3 client for this server."""
        return {"endpoint_url": self.endpoint_url, "region_name": REGION, **CREDENTIALS}

    def client_options(self, **overrides: Any) -> dict[str, Any]:
        """S3IOManager client options for this server (one attempt, short timeouts)."""
        return {
            **self.boto3_options(),
            "max_attempts": 1,
            "connect_timeout": 2.0,
            "read_timeout": 10.0,
            **overrides,
        }

    def client(self) -> S3Client:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["aws_access_key_id"],
            aws_secret_access_key=CREDENTIALS["aws_secret_access_key"],
        )

    def create_bucket(self) -> str:
        name = f"flowstone-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        """Stop the server process (an outage: connections are refused from now on)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def free_port() -> int:
    """A loopback port nothing listens on (bound, read and released)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_moto_server(log: Path) -> MotoServer:
    """Start ``moto_server`` on a free loopback port and wait until it accepts connections."""
    port = free_port()
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
    server = MotoServer(process=process, port=port, log=log)
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                pytest.fail(f"moto_server did not start:\n{log.read_text()}")
            time.sleep(0.05)
        else:
            return server
