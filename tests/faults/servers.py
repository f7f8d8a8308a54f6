"""Private PostgreSQL and Redis servers on loopback that the fault suite may stop and kill.

The same recipe as ``scripts/_services.sh`` (``_fs_start_private_postgres`` and
``_fs_start_private_redis``), in Python: ``initdb`` in a temp dir with trust auth, a free port,
run as the ``postgres`` (else ``nobody``) user when we are root, because PostgreSQL refuses to run
as root; Redis without persistence, so killing it loses every message it held.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis
from psycopg import sql

PG_TOOL_DIRS = (
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
    "/usr/local/pgsql/bin",
    "/opt/homebrew/opt/postgresql@*/bin",
    "/usr/local/opt/postgresql@*/bin",
)
UNPRIVILEGED_USERS = ("postgres", "nobody")
START_TIMEOUT = 60.0


class ServerUnavailableError(RuntimeError):
    """The tools to start a private server are missing on this machine."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _version_key(path: str) -> list[int]:
    return [int(part) for part in "".join(c if c.isdigit() else " " for c in path).split()]


def find_pg_tools() -> tuple[str, str, str]:
    """``(initdb, pg_ctl, postgres)`` from PATH, else from the newest known install."""
    on_path = [shutil.which(name) for name in ("initdb", "pg_ctl", "postgres")]
    if on_path[0] and on_path[1]:
        bindir = Path(on_path[1]).resolve().parent
        return str(on_path[0]), str(on_path[1]), str(bindir / "postgres")
    candidates = [
        str(directory)
        for pattern in PG_TOOL_DIRS
        for directory in Path("/").glob(pattern.lstrip("/"))
        if os.access(directory / "initdb", os.X_OK) and os.access(directory / "pg_ctl", os.X_OK)
    ]
    if not candidates:
        raise ServerUnavailableError("no initdb/pg_ctl found (install the PostgreSQL server)")
    directory = Path(max(candidates, key=_version_key))
    return str(directory / "initdb"), str(directory / "pg_ctl"), str(directory / "postgres")


def _unprivileged_user() -> str | None:
    """The user to run PostgreSQL as: ``None`` unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        completed = subprocess.run(["id", "-u", name], capture_output=True, check=False)
        if completed.returncode == 0:
            return name
    raise ServerUnavailableError("running as root and no postgres/nobody user to run PostgreSQL")


def _as_user(user: str | None, args: list[str]) -> list[str]:
    if user is None:
        return args
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *args]
    return ["su", "-s", "/bin/sh", user, "-c", " ".join(args)]


@dataclass
class PrivatePostgres:
    """A throwaway PostgreSQL server: ``start``, ``stop`` (crash-like), ``restart``, ``remove``."""

    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fs-fault-pg.")))
    port: int = 0
    user: str | None = None
    pg_ctl: str = ""

    @property
    def data(self) -> Path:
        """The cluster's data directory."""
        return self.directory / "data"

    def url(self, database: str = "postgres") -> str:
        """A ``postgres://`` URL of one database on this server."""
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        """The libpq connection string of one database on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def initialize(self) -> None:
        """Create the cluster (trust auth, user ``postgres``) and start it on a free port."""
        initdb, self.pg_ctl, _ = find_pg_tools()
        self.user = _unprivileged_user()
        if self.user is not None:
            shutil.chown(self.directory, user=self.user)
        subprocess.run(
            _as_user(
                self.user,
                [
                    initdb,
                    "-D",
                    str(self.data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
            ),
            cwd=self.directory,
            check=True,
            capture_output=True,
        )
        for _ in range(3):  # the free port could be taken between probing and binding
            self.port = free_port()
            if self.start(check=False):
                return
        raise RuntimeError(f"private PostgreSQL did not start; see {self.directory}/postgres.log")

    def start(self, *, check: bool = True) -> bool:
        """Start the server (again) on its port; wait until it accepts connections."""
        options = f"-h 127.0.0.1 -p {self.port} -k {self.directory} -F -c max_connections=200"
        completed = subprocess.run(
            _as_user(
                self.user,
                [
                    self.pg_ctl,
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.directory / "postgres.log"),
                    "-w",
                    "-t",
                    str(int(START_TIMEOUT)),
                    "-o",
                    options,
                    "start",
                ],
            ),
            cwd=self.directory,
            capture_output=True,
            check=False,
        )
        if completed.returncode != 0:
            if check:
                raise RuntimeError(f"pg_ctl start failed: {completed.stderr.decode()[-2000:]}")
            return False
        return True

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server; ``immediate`` aborts every session, as a crash would."""
        subprocess.run(
            _as_user(
                self.user,
                [self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"],
            ),
            cwd=self.directory,
            capture_output=True,
            check=False,
        )

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create a database (a copy of ``template`` if given) and return its URL."""
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            if template is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            else:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
        return self.url(name)

    def remove(self) -> None:
        """Stop the server and delete its files."""
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class PrivateRedis:
    """A throwaway Redis server that can be killed (or stopped) and restarted.

    Without persistence by default, so killing it loses every message it held; with
    ``appendonly=True`` it keeps an AOF (``appendfsync everysec``) in its directory, as we
    recommend for production, and a restart reloads it.
    """

    directory: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="fs-fault-redis."))
    )
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    appendonly: bool = False

    def url(self, db: int = 0) -> str:
        """The broker URL of one database."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def initialize(self) -> None:
        """Start the server on a free port."""
        if shutil.which("redis-server") is None:
            raise ServerUnavailableError("no redis-server on PATH (install Redis)")
        for _ in range(3):
            self.port = free_port()
            if self.start(check=False):
                return
        raise RuntimeError(f"private Redis did not start; see {self.directory}/redis.log")

    def start(self, *, check: bool = True) -> bool:
        """Start (or restart) the server on its port; wait until it answers PING."""
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "yes" if self.appendonly else "no",
                    "--appendfsync",
                    "everysec",
                    "--dir",
                    str(self.directory),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                client = redis.Redis.from_url(self.url(), socket_connect_timeout=1)
                client.ping()
                client.close()
            except redis.RedisError:
                time.sleep(0.05)
                continue
            return True
        if check:
            raise RuntimeError(f"private Redis did not restart on port {self.port}")
        self.kill()
        return False

    def stop(self) -> None:
        """SIGTERM the server: a clean shutdown, which writes its AOF (if any) to disk first."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
        self.process = None

    def kill(self) -> None:
        """SIGKILL the server: every message it held is gone (unless its AOF kept it)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def remove(self) -> None:
        """Kill the server and delete its files."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
