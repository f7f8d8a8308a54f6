"""Execution benchmark: raw Celery (ceiling), a hand-written floor, FlowStone and Dagster.

    .venv/bin/python benchmarks/run.py [--quick] [--workloads single-noop,diamond-sleep,...]
        [--systems ceiling,floor,flowstone,dagster] [--skip-dagster] [--skip-plan]
        [--concurrency 4] [--conn-max-age 0] [--server postgres://postgres@127.0.0.1:5432]
        [--database flowstone_bench_exec] [--redis redis://127.0.0.1:6379/9] [--json FILE]

It finds PostgreSQL at ``--server`` and Redis at ``--redis`` (or starts private servers in a
temp dir when those do not answer), drops and creates ``--database``, migrates it, creates the
floor's tables, and for each system starts its own ``celery worker`` (prefork, ``--concurrency``
processes, the same broker and ``CELERY_*`` settings), runs the workloads and stops it. Then it
times planning and enqueueing backfills of 10,000 and 100,000 partitions (of a daily asset; the
full run also of a static one), with and without ``max_parallel``, each in a fresh process. It
prints one table per part and the figures against the targets of issue 17 (the Dagster ratios of
issue 10 as information), and exits 1 if a target is missed. The database is dropped and Redis
database 9 flushed at the end. The system ``unbatched`` is FlowStone with ``STEP_BATCH_MAX = 1``
(one message per step), on the ``single`` workloads only: the rows that show what batches do.

Workloads (``benchmarks/workloads.py``), full size / ``--quick``:

- ``single-*``: one asset x 10,000 / 1,000 partitions (FlowStone: one ``backfill_async``);
- ``diamond-*``: ten assets x 1,000 / 100 partitions (FlowStone: one ``materialize_all_async``
  per partition, all submitted at once);
- ``chain-*``: ten unpartitioned assets in a chain, 30 / 10 runs one after another (latency);
- ``*-noop`` bodies return at once, ``*-sleep`` bodies sleep 10 ms.

Figures: materializations/s (steps / (last finish - first request)), p50/p95 request->start (per
step, from its run's creation, or for a step with upstreams in its run from the last upstream's
finish, to its start; raw Celery: publish -> start), SQL statements per materialization sent by
the workers (Django ``execute_wrapper`` / the floor's own cursor; BEGIN/COMMIT not counted) and by
the submitting process, connections opened per materialization, worker CPU (user + system of the
worker process tree, from /proc) per materialization, the peak summed RSS of the worker tree, and
"other %": the share of the machine's CPU that processes other than the workers, the harness,
PostgreSQL and Redis used meanwhile (other people's test runs spoil a measurement).
Dagster runs in-process on a sample of runs (its own venv, ``benchmarks/.dagster-venv``, created
with ``pip install dagster`` on first use).
"""

# ruff: noqa: S603  # every subprocess argument list is built here from constants and paths

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import probes, proctree  # noqa: E402  # needs ROOT on sys.path as a script
from benchmarks.workloads import BODIES, SHAPES, Workload, partition_keys  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import psycopg

DEFAULT_SERVER: Final = "postgres://postgres@127.0.0.1:5432"
DEFAULT_DATABASE: Final = "flowstone_bench_exec"
DEFAULT_REDIS: Final = "redis://127.0.0.1:6379/9"
DAGSTER_VENV: Final = ROOT / "benchmarks" / ".dagster-venv"
SYSTEMS: Final = ("ceiling", "floor", "flowstone", "unbatched", "dagster")
UNBATCHED_SHAPES: Final = frozenset({"single"})
"""``unbatched`` is FlowStone with ``STEP_BATCH_MAX = 1``: only where batches form."""
FULL: Final = {"single": 10_000, "diamond": 1_000, "chain": 30}
QUICK: Final = {"single": 1_000, "diamond": 100, "chain": 10}
DAGSTER_RUNS_FULL: Final = {"single": 100, "diamond": 20, "chain": 20}
DAGSTER_RUNS_QUICK: Final = {"single": 20, "diamond": 5, "chain": 5}
PLAN_SIZES: Final = (10_000, 100_000)
PLAN_MAX_PARALLEL: Final = 100
FLOWSTONE_QUEUE: Final = "flowstone"
POLL_SECONDS: Final = 0.2
SETTLE_SECONDS: Final = 0.6  # > two probe flushes
MIN_TIMEOUT: Final = 180.0
MIN_RATE: Final = 15.0  # steps/s below which a workload is given up (timeout = steps / this)
PERCENT: Final = 100
CPUS: Final = os.cpu_count() or 1
BUSY_WARNING_PERCENT: Final = 10.0
PERCENTILE_95: Final = 18  # index of the 95th percentile in statistics.quantiles(n=20)
MIB: Final = 1024 * 1024
FLOOR_TARGETS: Final = {"single": 1.0, "diamond": 0.7}
"""FlowStone / floor throughput by shape (issue 17)."""
DAGSTER_RATIO: Final = 50.0
"""Issue 10's FlowStone / Dagster ratio, printed for information."""
PLAN_TARGET_S: Final = 10.0
P50_TARGET_MS: Final = 10.0
CPU_TARGET_MS: Final = 3.0
"""Worker CPU per materialization on ``single-noop``."""
FLAT_FACTOR: Final = 2.0  # 10x the partitions may at most double the memory growth

FLOOR_SCHEMA: Final = """
CREATE TABLE floor_run (
    id uuid PRIMARY KEY, config jsonb NOT NULL, created_at timestamptz NOT NULL
);
CREATE TABLE floor_step (
    id bigserial PRIMARY KEY,
    run_id uuid NOT NULL REFERENCES floor_run (id),
    asset text NOT NULL,
    partition_key text NOT NULL,
    status text NOT NULL,
    remaining integer NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    metadata jsonb,
    UNIQUE (run_id, asset, partition_key)
);
CREATE TABLE floor_lineage (
    downstream_id bigint NOT NULL, upstream_id bigint NOT NULL,
    PRIMARY KEY (downstream_id, upstream_id)
);
"""


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class Row:
    """One system on one workload."""

    system: str
    workload: str
    steps: int
    done: int = 0
    seconds: float = 0.0
    submit_seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    sql: int | None = None
    submit_sql: int | None = None
    connections: int | None = None
    cpu_seconds: float | None = None
    peak_rss_bytes: int | None = None
    other_cpu_percent: float | None = None
    note: str = ""

    @property
    def rate(self) -> float:
        """Materializations per second."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def per_step(self, value: float | None) -> float | None:
        """``value`` divided by the materializations made."""
        return None if value is None or not self.done else value / self.done

    def percentile(self, which: int) -> float | None:
        """The p50 (``50``) or p95 (``95``) request->start latency in ms."""
        samples = self.latencies_ms
        if len(samples) < 2:  # noqa: PLR2004
            return samples[0] if samples else None
        if which == 50:  # noqa: PLR2004
            return statistics.median(samples)
        return statistics.quantiles(samples, n=20)[PERCENTILE_95]


@dataclass
class PlanRow:
    """One plan+enqueue measurement."""

    asset: str
    partitions: int
    max_parallel: int | None
    seconds: float = 0.0
    published: int = 0
    statements: int = 0
    rss_before_bytes: int = 0
    peak_rss_bytes: int = 0
    note: str = ""

    @property
    def growth_bytes(self) -> int:
        """Peak RSS above the RSS before the call."""
        return max(self.peak_rss_bytes - self.rss_before_bytes, 0)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def print_table(rows: Sequence[Row]) -> None:
    """The per-system, per-workload table."""
    header = (
        f"{'system':<10} {'workload':<14} {'mats':>7} {'wall s':>7} {'submit s':>8} "
        f"{'mat/s':>8} {'p50 ms':>8} {'p95 ms':>9} {'SQL/mat':>7} {'sub SQL':>7} "
        f"{'conn/mat':>8} {'CPU ms/mat':>10} {'peak RSS MB':>11} {'other %':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        cpu = row.per_step(row.cpu_seconds)
        print(
            f"{row.system:<10} {row.workload:<14} {row.done:>7,} {row.seconds:>7.1f} "
            f"{row.submit_seconds:>8.1f} {row.rate:>8.1f} {_fmt(row.percentile(50)):>8} "
            f"{_fmt(row.percentile(95)):>9} {_fmt(row.per_step(row.sql)):>7} "
            f"{_fmt(row.per_step(row.submit_sql), 2):>7} "
            f"{_fmt(row.per_step(row.connections), 2):>8} "
            f"{_fmt(None if cpu is None else cpu * 1000, 2):>10} "
            f"{_fmt(None if row.peak_rss_bytes is None else row.peak_rss_bytes / MIB, 0):>11}"
            f" {_fmt(row.other_cpu_percent, 0):>7}" + (f"  {row.note}" if row.note else "")
        )


def print_plan_table(rows: Sequence[PlanRow]) -> None:
    """The plan+enqueue table."""
    header = (
        f"{'asset':<12} {'partitions':>10} {'max_parallel':>12} {'plan+enqueue s':>14} "
        f"{'published':>9} {'SQL':>7} {'RSS before MB':>13} {'peak RSS MB':>11} {'growth MB':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.asset:<12} {row.partitions:>10,} {row.max_parallel or '—'!s:>12} "
            f"{row.seconds:>14.2f} {row.published:>9,} {row.statements:>7,} "
            f"{row.rss_before_bytes / MIB:>13.0f} {row.peak_rss_bytes / MIB:>11.0f} "
            f"{row.growth_bytes / MIB:>9.0f}" + (f"  {row.note}" if row.note else "")
        )


# ---------------------------------------------------------------------------------------------
# Services


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_answers(server: str) -> bool:
    import psycopg  # noqa: PLC0415

    try:
        psycopg.connect(f"{server}/postgres", connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


def _as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL's tools refuse to run as root: run them as ``postgres`` then."""
    if os.geteuid() == 0 and shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def start_private_postgres(stack: contextlib.ExitStack) -> str:
    """Start a throwaway PostgreSQL server on a free port; return its server URL."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    initdb = shutil.which("initdb") or (str(candidates[-1]) if candidates else None)
    if initdb is None:
        raise SystemExit("no PostgreSQL reachable and no initdb to start a private server")
    pg_ctl = str(Path(initdb).with_name("pg_ctl"))
    directory = Path(tempfile.mkdtemp(prefix="flowstone-bench-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
    data = directory / "data"
    port = _free_port()
    subprocess.run(
        _as_postgres_user([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    options = f"-h 127.0.0.1 -p {port} -k {directory} -c max_connections=200"
    subprocess.run(
        _as_postgres_user(
            [pg_ctl, "-D", str(data), "-l", str(directory / "log"), "-w", "-o", options, "start"]
        ),
        check=True,
        capture_output=True,
    )
    stack.callback(shutil.rmtree, directory, ignore_errors=True)
    stack.callback(
        subprocess.run,
        _as_postgres_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
        check=False,
        capture_output=True,
    )
    print(f"PostgreSQL: started a private server on 127.0.0.1:{port}")
    return f"postgres://postgres@127.0.0.1:{port}"


def _redis_answers(url: str) -> bool:
    import redis  # noqa: PLC0415

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.ping()
        client.close()
    except redis.RedisError:
        return False
    return True


def start_private_redis(stack: contextlib.ExitStack) -> str:
    """Start a throwaway Redis server on a free port; return a URL of its database 9."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("no Redis reachable and no redis-server to start a private one")
    port = _free_port()
    directory = Path(tempfile.mkdtemp(prefix="flowstone-bench-redis-"))
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stack.callback(shutil.rmtree, directory, ignore_errors=True)
    stack.callback(process.wait, 10)
    stack.callback(process.terminate)
    url = f"redis://127.0.0.1:{port}/9"
    for _ in range(50):
        if _redis_answers(url):
            print(f"Redis: started a private server on 127.0.0.1:{port}")
            return url
        time.sleep(0.1)
    raise SystemExit("the private Redis server did not start")


def flush_redis(url: str) -> None:
    """Empty the benchmark's Redis database (9 by default: nothing else uses it)."""
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def recreate_database(server: str, name: str) -> None:
    """Drop ``name`` if it exists and create it empty."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def drop_database(server: str, name: str) -> None:
    """Drop ``name`` (every connection to it is closed first)."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------------------------------------
# Workers


@dataclass
class Worker:
    """One ``celery worker`` process tree started for one system."""

    name: str
    process: subprocess.Popen[bytes]
    probe_dir: Path
    log: Path

    @classmethod
    def start(
        cls,
        name: str,
        app: str,
        *,
        queues: str,
        env: dict[str, str],
        work_dir: Path,
        concurrency: int,
    ) -> Worker:
        """Start a prefork worker and wait until it is ready to consume."""
        probe_dir = work_dir / f"probe-{name}"
        probe_dir.mkdir(parents=True)
        log = work_dir / f"worker-{name}.log"
        with log.open("ab") as handle:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    app,
                    "worker",
                    "--loglevel=WARNING",
                    f"--concurrency={concurrency}",
                    "--pool=prefork",
                    f"--queues={queues}",
                    f"--hostname={name}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                cwd=ROOT,
                env={
                    **env,
                    probes.PROBE_DIR_ENV: str(probe_dir),
                    "BENCH_WORKER_NAME": name,
                },
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = cls(name=name, process=process, probe_dir=probe_dir, log=log)
        deadline = time.monotonic() + 90
        while not (probe_dir / f"ready-{name}").exists():
            if process.poll() is not None or time.monotonic() > deadline:
                worker.stop()
                raise RuntimeError(f"worker {name} did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.1)
        return worker

    def counts(self) -> dict[str, int]:
        """The probe counters summed over the worker's processes."""
        return probes.read_counts(self.probe_dir)

    def stop(self) -> None:
        """Warm shutdown of the process group, then SIGKILL after a grace time."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@dataclass
class Measured:
    """What the harness measures around one workload on a worker."""

    worker: Worker
    counts_before: dict[str, int] = field(default_factory=dict)
    cpu_before: float = 0.0

    @contextlib.contextmanager
    def around(self, row: Row) -> Iterator[None]:
        """Sample the worker's RSS and take CPU and counter differences around the block."""
        root = self.worker.process.pid
        time.sleep(SETTLE_SECONDS)
        self.counts_before = self.worker.counts()
        self.cpu_before = proctree.cpu_seconds(root)
        ours_before = self.cpu_before + _harness_and_services_cpu()
        busy_before, wall_before = proctree.system_busy_seconds(), time.monotonic()
        with proctree.PeakSampler(root) as sampler:
            yield
        busy, wall = proctree.system_busy_seconds(), time.monotonic()
        worker_cpu = proctree.cpu_seconds(root)
        others = (busy - busy_before) - (worker_cpu + _harness_and_services_cpu() - ours_before)
        row.other_cpu_percent = max(others, 0.0) / ((wall - wall_before) * CPUS) * PERCENT
        time.sleep(SETTLE_SECONDS)
        row.cpu_seconds = proctree.cpu_seconds(root) - self.cpu_before
        row.peak_rss_bytes = sampler.peak
        after = self.worker.counts()
        if "sql" in after:
            row.sql = after.get("sql", 0) - self.counts_before.get("sql", 0)
            row.connections = after.get("connections", 0) - self.counts_before.get("connections", 0)


def _harness_and_services_cpu() -> float:
    return proctree.own_cpu_seconds() + proctree.services_cpu_seconds()


def wait_until(done: Callable[[], int], total: int, timeout: float) -> int:
    """Poll ``done()`` until it reaches ``total`` or ``timeout`` passes; return the last value."""
    deadline = time.monotonic() + timeout
    value = done()
    while value < total and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        value = done()
    return value


def timeout_for(workload: Workload) -> float:
    """How long a workload may take before the harness gives up on it."""
    return max(MIN_TIMEOUT, workload.steps / MIN_RATE)


def step_latencies(
    workload: Workload,
    steps: Sequence[tuple[Any, str, str, float, float]],
    created: dict[Any, float],
) -> list[float]:
    """Request->start per step from ``(run, asset, partition, started, finished)`` rows.

    A step is requested when its run is created, or, with upstreams in the run, when the last of
    them finished.
    """
    finished = {(run, asset, key): end for run, asset, key, _, end in steps}
    result: list[float] = []
    for run, asset, key, start, _ in steps:
        ups = workload.upstreams[asset]
        ready = max((finished[(run, u, key)] for u in ups), default=created[run])
        result.append((start - ready) * 1000)
    return result


# ---------------------------------------------------------------------------------------------
# Systems


class Ceiling:
    """Raw Celery tasks running the same bodies; a chain's tasks publish the next hop."""

    name = "ceiling"

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        from benchmarks.celery_app import CEILING_QUEUE, ceiling  # noqa: PLC0415

        self.task = ceiling
        self.queue = CEILING_QUEUE

    def _publish(self, body: str, hops: int) -> None:
        self.task.apply_async(
            kwargs={"published": time.time(), "body": body, "hops": hops}, queue=self.queue
        )

    def _events(self) -> list[dict[str, Any]]:
        return probes.read_events(self.worker.probe_dir)

    def _count(self) -> int:
        return probes.count_events(self.worker.probe_dir)

    def warm_up(self, concurrency: int) -> None:
        """A few tasks so every pool process has run once."""
        seen = self._count()
        for _ in range(concurrency * 4):
            self._publish("noop", 0)
        wait_until(lambda: self._count() - seen, concurrency * 4, 60)

    def run(self, workload: Workload, row: Row) -> None:
        """Publish the workload's tasks and wait for their records."""
        seen = self._count()
        total = workload.steps
        started = time.time()
        if workload.shape == "chain":
            for index in range(workload.count):
                self._publish(workload.body, len(workload.assets) - 1)
                wait_until(
                    lambda: self._count() - seen,
                    (index + 1) * len(workload.assets),
                    timeout_for(workload),
                )
        else:
            for _ in range(total):
                self._publish(workload.body, 0)
        row.submit_seconds = time.time() - started
        row.done = wait_until(lambda: self._count() - seen, total, timeout_for(workload))
        events = sorted(self._events(), key=lambda e: e["started"])[seen:]
        row.latencies_ms = [(e["started"] - e["published"]) * 1000 for e in events]
        row.seconds = max((e["finished"] for e in events), default=started) - started


class Floor:
    """The hand-written floor: its runs and steps live in the ``floor_*`` tables."""

    name = "floor"

    def __init__(self, worker: Worker, dsn: str) -> None:
        import psycopg  # noqa: PLC0415

        from benchmarks.celery_app import FLOOR_QUEUE, floor  # noqa: PLC0415

        self.worker = worker
        self.task = floor
        self.queue = FLOOR_QUEUE
        self.connection: psycopg.Connection[Any] = psycopg.connect(dsn, autocommit=True)
        self.statements = 0

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.statements += 1
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def create_run(self, workload: Workload, keys: Sequence[str]) -> str:
        """Create a run with its step rows (and counters) and publish its root steps."""
        run_id = str(uuid.uuid4())
        with self.connection.transaction():
            self._execute(
                "INSERT INTO floor_run (id, config, created_at) VALUES (%s, %s, now())",
                [run_id, json.dumps({"options": {}})],
            )
            self.statements += 1
            with (
                self.connection.cursor() as cursor,
                cursor.copy(
                    "COPY floor_step (run_id, asset, partition_key, status, remaining) FROM STDIN"
                ) as copy,
            ):
                for key in keys:
                    for asset in workload.assets:
                        ups = workload.upstreams[asset]
                        copy.write_row(
                            (run_id, asset, key, "queued" if not ups else "pending", len(ups))
                        )
        roots = [a for a in workload.assets if not workload.upstreams[a]]
        for key in keys:
            for asset in roots:
                self.task.apply_async(
                    kwargs={"run_id": run_id, "asset": asset, "partition": key}, queue=self.queue
                )
        return run_id

    def _done(self, run_ids: Sequence[str]) -> int:
        ((count,),) = self._execute(
            "SELECT count(*) FROM floor_step WHERE run_id = ANY(%s::uuid[]) AND status = 'success'",
            [list(run_ids)],
        )
        self.statements -= 1  # polling is not part of the work
        return int(count)

    def warm_up(self, concurrency: int) -> None:
        """One small run so every pool process has connected once."""
        single = Workload(shape="single", body="noop", count=concurrency * 4)
        run_id = self.create_run(single, [f"warm{i}" for i in range(single.count)])
        wait_until(lambda: self._done([run_id]), single.steps, 60)

    def run(self, workload: Workload, row: Row) -> None:
        """Create the workload's runs like FlowStone would, and wait for every step."""
        self.statements = 0
        run_ids: list[str] = []
        started = time.time()
        if workload.shape == "single":
            run_ids.append(self.create_run(workload, partition_keys(workload.count)))
        elif workload.shape == "diamond":
            run_ids.extend(
                self.create_run(workload, [key]) for key in partition_keys(workload.count)
            )
        else:
            for _ in range(workload.count):
                run_ids.append(self.create_run(workload, [""]))
                wait_until(
                    lambda: self._done(run_ids[-1:]), len(workload.assets), timeout_for(workload)
                )
        row.submit_seconds = time.time() - started
        row.submit_sql = self.statements
        row.done = wait_until(lambda: self._done(run_ids), workload.steps, timeout_for(workload))
        rows = self._execute(
            "SELECT s.run_id, s.asset, s.partition_key, extract(epoch FROM s.started_at)::float8, "
            "extract(epoch FROM s.finished_at)::float8 FROM floor_step s "
            "WHERE s.run_id = ANY(%s::uuid[]) AND s.status = 'success'",
            [run_ids],
        )
        created = dict(
            self._execute(
                "SELECT id, extract(epoch FROM created_at)::float8 FROM floor_run "
                "WHERE id = ANY(%s::uuid[])",
                [run_ids],
            )
        )
        steps = [(r[0], r[1], r[2], float(r[3]), float(r[4])) for r in rows]
        row.latencies_ms = step_latencies(workload, steps, created)
        row.seconds = max((s[4] for s in steps), default=started) - started


class FlowStone:
    """FlowStone's public async API against real ``celery -A flowstone`` workers."""

    name = "flowstone"

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.submit_statements = 0

    def _count(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:  # noqa: FBT001
        self.submit_statements += 1
        return execute(sql, params, many, context)

    @staticmethod
    def _unfinished(run_ids: Sequence[str]) -> int:
        from django.db import connection  # noqa: PLC0415

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM assets_run WHERE id = ANY(%s::uuid[]) "
                "AND finished_at IS NULL",
                [list(run_ids)],
            )
            (count,) = cursor.fetchone() or (0,)
        return int(count)

    def _steps_done(self, run_ids: Sequence[str]) -> int:
        from django.db import connection  # noqa: PLC0415

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM assets_materialization WHERE run_id = ANY(%s::uuid[]) "
                "AND finished_at IS NOT NULL",
                [list(run_ids)],
            )
            (count,) = cursor.fetchone() or (0,)
        return int(count)

    def warm_up(self, concurrency: int) -> None:
        """A small backfill so every pool process has imported and run a step once."""
        import flowstone  # noqa: PLC0415

        handle = flowstone.backfill_async("warmup")
        handle.wait(120)

    def run(self, workload: Workload, row: Row) -> None:
        """Submit through the public API and wait for every run to end."""
        from django.db import connection  # noqa: PLC0415

        import flowstone  # noqa: PLC0415

        self.submit_statements = 0
        run_ids: list[str] = []
        target = workload.assets[-1]
        started = time.time()
        with connection.execute_wrapper(self._count):
            if workload.shape == "single":
                # force: the partitions a system before this one computed are computed again
                run_ids.append(flowstone.backfill_async(target, force=True).run_id)
            elif workload.shape == "diamond":
                run_ids.extend(
                    flowstone.materialize_all_async(target, key).run_id
                    for key in partition_keys(workload.count)
                )
            else:
                for _ in range(workload.count):
                    run_ids.append(flowstone.materialize_all_async(target).run_id)
                    wait_until(lambda: 1 - self._unfinished(run_ids[-1:]), 1, timeout_for(workload))
        row.submit_seconds = time.time() - started
        row.submit_sql = self.submit_statements
        ended = wait_until(
            lambda: len(run_ids) - self._unfinished(run_ids), len(run_ids), timeout_for(workload)
        )
        row.done = self._steps_done(run_ids)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT run_id, asset, partition_key, extract(epoch FROM started_at)::float8, "
                "extract(epoch FROM finished_at)::float8, status FROM assets_materialization "
                "WHERE run_id = ANY(%s::uuid[]) AND finished_at IS NOT NULL",
                [run_ids],
            )
            rows = cursor.fetchall()
            cursor.execute(
                "SELECT id, extract(epoch FROM created_at)::float8 FROM assets_run "
                "WHERE id = ANY(%s::uuid[])",
                [run_ids],
            )
            created = dict(cursor.fetchall())
        failed = sum(1 for r in rows if r[5] != "success")
        row.done -= failed
        if failed or ended < len(run_ids):
            row.note = f"{failed} steps not successful, {len(run_ids) - ended} runs unfinished"
        steps = [(r[0], r[1], r[2], float(r[3]), float(r[4])) for r in rows if r[5] == "success"]
        row.latencies_ms = step_latencies(workload, steps, created)
        row.seconds = max((s[4] for s in steps), default=started) - started


# ---------------------------------------------------------------------------------------------
# The harness


@dataclass
class Config:
    """Everything the harness needs to know, from the command line and the services."""

    quick: bool
    workloads: list[Workload]
    systems: list[str]
    concurrency: int
    conn_max_age: int
    server: str
    database: str
    broker: str
    work_dir: Path
    dagster_python: Path
    plan: bool

    @property
    def database_url(self) -> str:
        """The benchmark database's URL."""
        return f"{self.server}/{self.database}"

    def env(self) -> dict[str, str]:
        """The environment of the harness's Django and of every worker."""
        sizes = QUICK if self.quick else FULL
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "flowstone.settings",
            "DATABASE_URL": self.database_url,
            "CELERY_BROKER_URL": self.broker,
            "FLOWSTONE_DEFINITIONS": "benchmarks.flowstone_defs",
            "FLOWSTONE_DATA_DIR": str(self.work_dir / "flowstone-data"),
            "FLOWSTONE_LOG_LEVEL": "WARNING",
            "BENCH_SINGLE_PARTITIONS": str(sizes["single"]),
            "BENCH_DIAMOND_PARTITIONS": str(sizes["diamond"]),
            "BENCH_FLOOR_DSN": self.database_url.replace("postgres://", "postgresql://", 1),
            "BENCH_FLOOR_STORE": str(self.work_dir / "floor-store"),
            "PYTHONPATH": str(ROOT),
        }


def run_worker_system(config: Config, system: str) -> list[Row]:
    """Start the system's worker, warm it up, run every workload, stop it."""
    env = config.env()
    workloads = config.workloads
    if system in {"flowstone", "unbatched"}:
        env["DATABASE_CONN_MAX_AGE"] = str(config.conn_max_age)
        app, queues = "flowstone", FLOWSTONE_QUEUE
        if system == "unbatched":
            env["FLOWSTONE_STEP_BATCH_MAX"] = "1"
            workloads = [w for w in workloads if w.shape in UNBATCHED_SHAPES]
            if not workloads:
                return []
    else:
        app, queues = "benchmarks.celery_app", f"bench_{system}"
    worker = Worker.start(
        system,
        app,
        queues=queues,
        env=env,
        work_dir=config.work_dir,
        concurrency=config.concurrency,
    )
    rows: list[Row] = []
    try:
        runner: Ceiling | Floor | FlowStone
        if system == "ceiling":
            runner = Ceiling(worker)
        elif system == "floor":
            runner = Floor(worker, env["BENCH_FLOOR_DSN"])
        else:
            runner = FlowStone(worker)
        runner.warm_up(config.concurrency)
        for workload in workloads:
            row = Row(system=system, workload=workload.name, steps=workload.steps)
            with Measured(worker).around(row), _publishing(system):
                runner.run(workload, row)
            if row.done < workload.steps and not row.note:
                row.note = f"only {row.done} of {workload.steps} done (timeout)"
            print(f"  {system:<10} {workload.name:<14} {row.rate:>8.1f} mat/s", flush=True)
            rows.append(row)
    finally:
        worker.stop()
    return rows


@contextlib.contextmanager
def _publishing(system: str) -> Iterator[None]:
    """This process's FLOWSTONE settings while it submits for ``system`` (it publishes)."""
    if system != "unbatched":
        yield
        return
    from django.conf import settings  # noqa: PLC0415
    from django.test.utils import override_settings  # noqa: PLC0415

    with override_settings(FLOWSTONE={**settings.FLOWSTONE, "STEP_BATCH_MAX": 1}):
        yield


def ensure_dagster(python: Path) -> bool:
    """Create the Dagster venv on first use (``pip install dagster``); whether it is usable."""
    if not python.exists():
        print(f"Dagster: creating {python.parent.parent} (pip install dagster) ...", flush=True)
        try:
            subprocess.run(
                [sys.executable, "-m", "venv", str(python.parent.parent)],
                check=True,
                capture_output=True,
            )
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", "dagster"],
                check=True,
                capture_output=True,
                timeout=900,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            print(f"Dagster: could not be installed ({exc}); skipping its column")
            return False
    probe = subprocess.run([str(python), "-c", "import dagster"], check=False, capture_output=True)
    if probe.returncode:
        print("Dagster: the venv cannot import dagster; skipping its column")
        return False
    return True


def run_dagster(config: Config) -> list[Row]:
    """Each workload in-process in Dagster, on a sample of runs."""
    if not ensure_dagster(config.dagster_python):
        return []
    sizes = QUICK if config.quick else FULL
    samples = DAGSTER_RUNS_QUICK if config.quick else DAGSTER_RUNS_FULL
    rows: list[Row] = []
    for workload in config.workloads:
        runs = samples[workload.shape]
        sample = Workload(shape=workload.shape, body=workload.body, count=runs)
        row = Row(system="dagster", workload=workload.name, steps=sample.steps)
        partitions = sizes[workload.shape] if workload.partitioned else 0
        completed = subprocess.run(
            [
                str(config.dagster_python),
                str(ROOT / "benchmarks" / "dagster_bench.py"),
                workload.name,
                str(partitions),
                str(runs),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=1800,
        )
        if completed.returncode:
            row.note = f"failed: {completed.stderr.strip().splitlines()[-1:]}"
        else:
            data = json.loads(completed.stdout.strip().splitlines()[-1])
            row.done = int(data["materializations"])
            row.seconds = float(data["seconds"])
            row.submit_seconds = row.seconds
            row.latencies_ms = [float(x) for x in data["latencies_ms"]]
            row.cpu_seconds = float(data["cpu_seconds"])
            row.peak_rss_bytes = int(data["peak_rss_bytes"])
            row.note = f"dagster {data['version']}, {runs} runs sampled"
        print(f"  {'dagster':<10} {workload.name:<14} {row.rate:>8.1f} mat/s", flush=True)
        rows.append(row)
    return rows


def run_plans(config: Config) -> list[PlanRow]:
    """Plan+enqueue backfills of 10k and 100k partitions, each in a fresh process."""
    import redis  # noqa: PLC0415

    from benchmarks.flowstone_defs import PLAN_QUEUE  # noqa: PLC0415

    client = redis.Redis.from_url(config.broker)
    # A static partition set's validation is O(n) per key, so its 100k case takes minutes: only
    # the full run measures it.
    assets = ("plan_daily",) if config.quick else ("plan_daily", "plan_static")
    cases = [
        (asset, size, max_parallel)
        for asset in assets
        for size in PLAN_SIZES
        for max_parallel in (None, PLAN_MAX_PARALLEL)
    ]
    rows: list[PlanRow] = []
    for asset, size, max_parallel in cases:
        client.delete(PLAN_QUEUE)
        row = PlanRow(asset=asset, partitions=size, max_parallel=max_parallel)
        completed = subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "plan_bench.py"),
                asset,
                str(max_parallel or 0),
            ],
            cwd=ROOT,
            env={**config.env(), "BENCH_PLAN_PARTITIONS": str(size)},
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        if completed.returncode:
            row.note = "failed: " + " | ".join(completed.stderr.strip().splitlines()[-3:])
        else:
            data = json.loads(completed.stdout.strip().splitlines()[-1])
            row.seconds = float(data["seconds"])
            row.published = int(data["published"])
            row.statements = int(data["statements"])
            row.rss_before_bytes = int(data["rss_before_bytes"])
            row.peak_rss_bytes = int(data["peak_rss_bytes"])
        client.delete(PLAN_QUEUE)
        print(f"  plan {asset:<12} {size:>7,} max_parallel={max_parallel}: {row.seconds:.2f} s")
        rows.append(row)
    client.close()
    return rows


Line = tuple[str, "bool | None"]
"""A line of the targets block: its text, and met / missed / ``None`` for information."""


def _ratio_lines(rows: Sequence[Row]) -> list[Line]:
    """Issue 17's throughput, CPU and latency targets; issue 10's Dagster ratios as information."""
    by = {(r.system, r.workload): r for r in rows}
    lines: list[Line] = []
    for shape, target in FLOOR_TARGETS.items():
        for body in BODIES:
            name = f"{shape}-{body}"
            ours, floor = by.get(("flowstone", name)), by.get(("floor", name))
            if ours and floor and floor.rate:
                ratio = ours.rate / floor.rate
                text = f"FlowStone / floor throughput, {name}: {ratio:.2f} (target >= {target})"
                lines.append((text, ratio >= target))
    ours, ceiling = by.get(("flowstone", "single-noop")), by.get(("ceiling", "single-noop"))
    if ours and ceiling and ceiling.rate:
        text = (
            f"FlowStone backfill, single-noop ({ours.steps:,} partitions): {ours.rate:.1f} mat/s "
            f"(target >= raw Celery's {ceiling.rate:.1f})"
        )
        lines.append((text, ours.rate >= ceiling.rate))
    cpu = ours.per_step(ours.cpu_seconds) if ours else None
    if cpu is not None:
        text = f"FlowStone worker CPU, single-noop: {cpu * 1000:.2f} ms/mat (target <= 3 ms)"
        lines.append((text, cpu * 1000 <= CPU_TARGET_MS))
    for body in BODIES:
        chain = by.get(("flowstone", f"chain-{body}"))
        p50 = chain.percentile(50) if chain else None
        if p50 is not None and body == "noop":
            text = f"FlowStone p50 request->start, chain-noop: {p50:.1f} ms (target <= 10 ms)"
            lines.append((text, p50 <= P50_TARGET_MS))
    for shape in SHAPES:
        for body in BODIES:
            name = f"{shape}-{body}"
            ours, dagster = by.get(("flowstone", name)), by.get(("dagster", name))
            if ours and dagster and dagster.rate:
                ratio = ours.rate / dagster.rate
                text = (
                    f"FlowStone / Dagster per-asset throughput, {name}: {ratio:.1f} "
                    f"(issue 10 asked >= {DAGSTER_RATIO:.0f})"
                )
                lines.append((text, None))
    return lines


def _plan_lines(plans: Sequence[PlanRow]) -> list[Line]:
    """Plan+enqueue time at 100k partitions and memory growth from 10k to 100k."""
    lines: list[Line] = [
        (
            (
                f"plan+enqueue {plan.partitions:,} partitions ({plan.asset}, "
                f"max_parallel={plan.max_parallel}): {plan.seconds:.2f} s "
                f"(target <= {PLAN_TARGET_S:.0f} s)"
            ),
            plan.seconds <= PLAN_TARGET_S,
        )
        for plan in plans
        if plan.partitions == max(PLAN_SIZES) and not plan.note
    ]
    found = {(p.asset, p.partitions, p.max_parallel): p for p in plans if not p.note}
    for asset in ("plan_daily", "plan_static"):
        for max_parallel in (None, PLAN_MAX_PARALLEL):
            small = found.get((asset, min(PLAN_SIZES), max_parallel))
            large = found.get((asset, max(PLAN_SIZES), max_parallel))
            if small and large:
                grow_small, grow_large = small.growth_bytes, large.growth_bytes
                lines.append(
                    (
                        (
                            f"memory growth {asset} max_parallel={max_parallel}: "
                            f"{grow_small / MIB:.0f} MB at 10k, {grow_large / MIB:.0f} MB at 100k "
                            f"(flat: 100k <= {FLAT_FACTOR:.0f} x 10k)"
                        ),
                        grow_large <= FLAT_FACTOR * max(grow_small, MIB),
                    )
                )
    return lines


def report_targets(rows: Sequence[Row], plans: Sequence[PlanRow]) -> bool:
    """Print the ratios against the issue's targets; return whether all measured ones are met."""
    lines = _ratio_lines(rows) + _plan_lines(plans)
    for text, met in lines:
        print(f"{'INFO  ' if met is None else 'MET   ' if met else 'MISSED'}  {text}")
    return all(met is not False for _, met in lines)


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[Workload], list[str]]:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1,000/100 partitions, 10 chains")
    parser.add_argument("--workloads", default="", help="comma-separated, e.g. single-noop")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--skip-dagster", action="store_true")
    parser.add_argument("--skip-plan", action="store_true", help="no plan+enqueue measurement")
    parser.add_argument("--concurrency", type=int, default=4, help="pool processes per worker")
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=600,
        help="DATABASE_CONN_MAX_AGE of FlowStone's workers (FlowStone's default: 600)",
    )
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--redis", default=DEFAULT_REDIS)
    parser.add_argument("--dagster-python", default=str(DAGSTER_VENV / "bin" / "python"))
    parser.add_argument("--json", default="", help="also write the results to this file")
    parser.add_argument(
        "--keep-work-dir", action="store_true", help="keep worker logs and probe files"
    )
    args = parser.parse_args(argv)
    if not args.database.startswith("flowstone_bench"):
        parser.error("--database must start with flowstone_bench")
    sizes = QUICK if args.quick else FULL
    wanted = [w for w in args.workloads.split(",") if w]
    workloads = [
        Workload(shape=shape, body=body, count=sizes[shape])
        for shape in SHAPES
        for body in BODIES
        if not wanted or f"{shape}-{body}" in wanted
    ]
    systems = [s for s in args.systems.split(",") if s in SYSTEMS]
    if args.skip_dagster and "dagster" in systems:
        systems.remove("dagster")
    return args, workloads, systems


def versions(config: Config) -> str:
    """Machine and software versions, for the report."""
    from importlib.metadata import version  # noqa: PLC0415

    from django.db import connection  # noqa: PLC0415

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        (pg,) = cursor.fetchone() or ("?",)
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(config.broker)
    info = client.info("server")
    client.close()
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}; "
        f"Python {platform.python_version()}, Django {version('django')}, "
        f"Celery {version('celery')}, kombu {version('kombu')}, psycopg {version('psycopg')}, "
        f"PostgreSQL {pg}, Redis {info.get('redis_version', '?')}; "
        f"workers: prefork x {config.concurrency}, DATABASE_CONN_MAX_AGE={config.conn_max_age}"
    )


def setup_django(config: Config) -> None:
    """Configure this process's Django for the benchmark database and migrate it."""
    os.environ.update(config.env())
    import django  # noqa: PLC0415
    from django.core.management import call_command  # noqa: PLC0415
    from django.db import connection  # noqa: PLC0415

    django.setup()
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(FLOOR_SCHEMA)


def main(argv: Sequence[str] | None = None) -> int:
    """Run everything and print the tables; exit 1 if a target is missed."""
    args, workloads, systems = parse(argv)
    with contextlib.ExitStack() as stack:
        server = args.server if _postgres_answers(args.server) else start_private_postgres(stack)
        broker = args.redis if _redis_answers(args.redis) else start_private_redis(stack)
        work_dir = Path(tempfile.mkdtemp(prefix="flowstone-bench-"))
        if not args.keep_work_dir:
            stack.callback(shutil.rmtree, work_dir, ignore_errors=True)
        config = Config(
            quick=args.quick,
            workloads=workloads,
            systems=systems,
            concurrency=args.concurrency,
            conn_max_age=args.conn_max_age,
            server=server,
            database=args.database,
            broker=broker,
            work_dir=work_dir,
            dagster_python=Path(args.dagster_python),
            plan=not args.skip_plan,
        )
        recreate_database(server, args.database)
        stack.callback(drop_database, server, args.database)
        flush_redis(broker)
        stack.callback(flush_redis, broker)
        setup_django(config)
        from django.db import connections  # noqa: PLC0415

        stack.callback(connections.close_all)
        about = versions(config)
        print(about)
        print(f"mode: {'quick' if args.quick else 'full'}; work dir {work_dir}\n", flush=True)
        started = time.monotonic()
        rows: list[Row] = []
        for system in systems:
            if system == "dagster":
                rows += run_dagster(config)
            else:
                rows += run_worker_system(config, system)
            flush_redis(broker)
        plans = run_plans(config) if config.plan else []
        print(f"\nmeasured in {time.monotonic() - started:.0f} s\n")
        print_table(rows)
        busy = [
            f"{r.system} {r.workload}"
            for r in rows
            if (r.other_cpu_percent or 0) > BUSY_WARNING_PERCENT
        ]
        if busy:
            print(
                f"\nWARNING: other processes used more than {BUSY_WARNING_PERCENT:.0f}% of the "
                f"machine's CPU during: {', '.join(busy)}; rerun on an idle machine."
            )
        if plans:
            print()
            print_plan_table(plans)
        print()
        all_met = report_targets(rows, plans)
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "about": about,
                        "quick": args.quick,
                        "rows": [asdict(r) | {"rate": r.rate} for r in rows],
                        "plans": [asdict(p) for p in plans],
                    },
                    indent=1,
                )
            )
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
