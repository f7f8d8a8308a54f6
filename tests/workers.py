"""Real Celery worker and beat processes for execution tests (no eager mode, no mocks)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection
from kombu import Connection

if TYPE_CHECKING:
    from assets.models import Materialization

ROOT = Path(__file__).resolve().parents[1]
DEFINITIONS = "tests.pipelines.celery_flow"
LEASE_SECONDS = 3
CELERY = ("-m", "celery", "-A", "flowstone")
"""How a worker or beat process is started, after the interpreter."""


def database_url() -> str:
    """The URL of the database the tests use (pytest-django's test database)."""
    params = connection.settings_dict
    user = params["USER"] or "postgres"
    password = f":{params['PASSWORD']}" if params["PASSWORD"] else ""
    host = params["HOST"] or "127.0.0.1"
    port = params["PORT"] or 5432
    return f"postgres://{user}{password}@{host}:{port}/{params['NAME']}"


def flowstone_settings_for(data_dir: Path, definitions: str = DEFINITIONS) -> dict[str, Any]:
    """The FLOWSTONE setting that matches what the worker processes use."""
    return {
        "DEFINITIONS": [definitions],
        "IO_MANAGERS": {
            "default": {
                "CLASS": "flowstone.io.FilesystemIOManager",
                "OPTIONS": {"base_dir": str(data_dir / "storage")},
            },
        },
        "RESOURCES": {},
        "STEP_LEASE_SECONDS": LEASE_SECONDS,
    }


@dataclass
class Services:
    """Where the worker processes look: broker, database and data directory."""

    broker_url: str
    data_dir: Path
    definitions: str = DEFINITIONS
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    database: str | None = None
    """A database URL for the processes; ``None``: pytest-django's test database."""
    extra_env: dict[str, str] = field(default_factory=dict)
    """Variables set last in every process's environment (they win over the defaults)."""

    def env(self) -> dict[str, str]:
        """The environment of a worker or beat process."""
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "flowstone.settings",
            "DATABASE_URL": self.database or database_url(),
            "CELERY_BROKER_URL": self.broker_url,
            "FLOWSTONE_DEFINITIONS": self.definitions,
            "FLOWSTONE_DATA_DIR": str(self.data_dir),
            "FLOWSTONE_STEP_LEASE_SECONDS": str(LEASE_SECONDS),
            "FLOWSTONE_SWEEP_SECONDS": "1",
            "FLOWSTONE_REQUEUE_AFTER_SECONDS": "5",
            "FLOWSTONE_LOG_LEVEL": "INFO",
            **self.extra_env,
        }

    def submit_with_the_broker_down(self, call: str) -> tuple[str, str]:
        """Run ``print(<call>.run_id)`` in a new process whose broker port is closed.

        ``call`` is a ``flowstone`` API call (``flowstone.backfill_async("x")``). Returns the run
        id it printed and its stderr; fails unless the process exited 0.
        """
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed = int(probe.getsockname()[1])
        script = f"import django\ndjango.setup()\nimport flowstone\nprint({call}.run_id)\n"
        submitted = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={**self.env(), "CELERY_BROKER_URL": f"redis://127.0.0.1:{closed}/0"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert submitted.returncode == 0, submitted.stderr[-4000:]
        return submitted.stdout.strip().splitlines()[-1], submitted.stderr

    def kill_while_sending(self, call: str, *, timeout: float = 60.0) -> str:
        """Run ``call`` in a new process, kill -9 it at its first broker send; return its stdout.

        The process's ``send_task`` marks a file and sleeps instead of sending, so the process
        stands between a claim and its send (or inside a backfill's publish) when it is killed,
        as a publisher killed there would. ``call`` is a statement using ``flowstone`` and
        ``services`` (``assets.services``); what it prints before the send is returned.
        """
        marker = self.data_dir / f"sending-{time.monotonic_ns()}"
        script = (
            "import pathlib, sys, time\nimport django\ndjango.setup()\n"
            "import flowstone\nfrom assets import services\nfrom flowstone.celery import app\n"
            "def stuck(*args, **kwargs):\n"
            "    sys.stdout.flush()\n"
            f"    pathlib.Path({str(marker)!r}).touch()\n"
            "    time.sleep(3600)\n"
            "app.send_task = stuck\n"
            f"{call}\n"
        )
        process = self._spawn(marker.name, ["-c", script])
        out = self.data_dir / f"{marker.name}.log"
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert process.poll() is None, out.read_text()[-4000:]
            assert time.monotonic() < deadline, "the process never reached a send"
            time.sleep(0.05)
        self.kill(process)
        return out.read_text()

    def _spawn(
        self, name: str, args: Sequence[str], *, prefix: Sequence[str] = ()
    ) -> subprocess.Popen[bytes]:
        """Start ``python <args>`` (after ``prefix``) in its own session, logging to ``name``."""
        with (self.data_dir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [*prefix, sys.executable, *args],
                cwd=ROOT,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def start_worker(
        self,
        name: str,
        *,
        queues: str = "flowstone,later,flowstone.control",
        concurrency: int = 2,
        wait: bool = True,
        clock_offset: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a prefork worker and (unless ``wait=False``) wait until it is ready to consume.

        ``clock_offset`` (e.g. ``"-10s"``) runs it under ``faketime``: its clock is that far off.
        """
        log_path = self.data_dir / f"{name}.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        process = self._spawn(
            name,
            [
                *CELERY,
                "worker",
                "--loglevel=INFO",
                f"--concurrency={concurrency}",
                "--pool=prefork",
                f"--queues={queues}",
                f"--hostname={name}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            prefix=() if clock_offset is None else ("faketime", "-f", clock_offset),
        )
        if wait:
            self.wait_ready(name, process, offset=offset)
        return process

    def wait_ready(self, name: str, process: subprocess.Popen[bytes], *, offset: int = 0) -> None:
        """Wait until worker ``name`` logs that it is ready (past ``offset`` in its log)."""
        log_path = self.data_dir / f"{name}.log"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = log_path.read_bytes()[offset:].decode(errors="replace")
            if " ready." in text:
                return
            if process.poll() is not None:
                raise RuntimeError(f"worker {name} exited early:\n{text[-4000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"worker {name} did not become ready:\n{log_path.read_text()[-4000:]}")

    def start_beat(self, *, scheduler: str | None = None) -> subprocess.Popen[bytes]:
        """Start Celery beat (it runs the stale-step sweeper every second here).

        ``scheduler`` overrides ``CELERY_BEAT_SCHEDULER`` (e.g. django-celery-beat's
        ``django_celery_beat.schedulers:DatabaseScheduler``).
        """
        args = ["beat", "--loglevel=INFO", f"--schedule={self.data_dir / 'beat-schedule'}"]
        if scheduler is not None:
            args.append(f"--scheduler={scheduler}")
        return self._spawn("beat", [*CELERY, *args])

    def kill(self, process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Signal a process's whole group (worker parent and its children) and reap it."""
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        process.wait(timeout=60)

    def stop_all(self) -> None:
        """Stop every process started here: warm shutdown, then SIGKILL after a grace time."""
        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill(process)
        self.processes.clear()

    def executions(self) -> list[dict[str, Any]]:
        """Every execution the assets logged, in order."""
        path = self.data_dir / "executions.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]


@contextmanager
def running_services(
    broker_url: str, data_dir: Path, definitions: str = DEFINITIONS
) -> Iterator[Services]:
    """Yield a ``Services`` whose processes are all stopped afterwards."""
    data_dir.mkdir(parents=True, exist_ok=True)
    services = Services(broker_url=broker_url, data_dir=data_dir, definitions=definitions)
    try:
        yield services
    finally:
        services.stop_all()


@contextmanager
def worker_stack(
    settings: Any, tmp_path: Path, definitions: str = DEFINITIONS
) -> Iterator[Services]:
    """A test's ``Services``: the same FLOWSTONE settings here and in the worker processes, the
    test queues purged before and after, every process stopped afterwards.
    """
    data_dir = tmp_path / "data"
    settings.FLOWSTONE = flowstone_settings_for(data_dir, definitions)
    purge(broker_url())
    with running_services(broker_url(), data_dir, definitions) as started:
        yield started
    purge(broker_url())


def purge(
    broker_url: str, queues: Sequence[str] = ("flowstone", "later", "flowstone.control")
) -> None:
    """Drop every message left in the test queues."""
    with Connection(broker_url) as conn:
        for queue in queues:
            simple = conn.SimpleQueue(queue)
            simple.clear()
            simple.close()


def broker_url() -> str:
    """The broker the tests use (scripts/test.sh exports a Redis database for them)."""
    return str(settings.CELERY_BROKER_URL)


DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def amqp_url() -> str | None:
    """A reachable RabbitMQ URL (``FLOWSTONE_TEST_AMQP_URL`` or the local default), else None."""
    url = os.environ.get("FLOWSTONE_TEST_AMQP_URL", DEFAULT_AMQP_URL)
    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception:  # noqa: BLE001  # any failure means "not available here"
        return None
    return url


DRIVER = """
import json, sys
import django
django.setup()
import flowstone
handle = getattr(flowstone, sys.argv[1])(sys.argv[2], sys.argv[3])
print(json.dumps({"run_id": handle.run_id, "status": handle.wait(90).status}))
"""


def drive(stack: Services, function: str, asset: str, partition: str) -> dict[str, str]:
    """Start a run from a separate process that publishes to ``stack``'s broker; wait for it."""
    completed = subprocess.run(
        [sys.executable, "-c", DRIVER, function, asset, partition],
        cwd=ROOT,
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result: dict[str, str] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def most_at_once(rows: Sequence[Materialization]) -> int:
    """The most steps whose [started_at, finished_at] intervals overlap at one moment."""
    events = []
    for row in rows:
        assert row.started_at is not None
        assert row.finished_at is not None
        events += [(row.started_at, 1), (row.finished_at, -1)]
    current = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        current += delta
        peak = max(peak, current)
    return peak
