"""One fault scenario: its database, its workers, its runs, the fault, quiescence and the checker.

A ``Cluster`` (private PostgreSQL and Redis, plus a migrated template database) is shared by the
session; each ``Scenario`` gets a fresh copy of the template, an empty broker, two prefork
workers, Celery beat (the sweeper) and its own data directory. The fast mode's timings are short
so that recovery shows up within seconds: a 3 s lease renewed every second, a sweep every second
and a 10 s Redis visibility timeout (so Redis's own redelivery of unacknowledged messages happens
during the test, too); quiet queued steps are re-published only after the production 600 s, so a
message lost for good fails the scenario instead of costing 5 s. The long mode (``--long``)
runs with the production defaults (lease 15 s, sweep 5 s, re-publish after 600 s, visibility
7,200 s), so the stalls it reports are the ones a deployment would see.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import psycopg
import redis

from tests.faults import checker
from tests.faults.pipeline import FIRST_DAY, expected_upstreams
from tests.workers import ROOT, Services

if TYPE_CHECKING:
    from tests.faults.servers import PrivatePostgres, PrivateRedis

DEFINITIONS: Final = "tests.faults.pipeline"
SETTINGS: Final = "tests.faults.settings"
MAX_RECOVERIES: Final = 3
WORKER_CONCURRENCY: Final = 2
HARNESS_APPLICATION: Final = "fault-harness"
DRAIN_TIMEOUT: Final = 45.0
POLL: Final = 0.2
DEFAULT_SEED: Final = 9


@dataclass(frozen=True, kw_only=True, slots=True)
class Mode:
    """How big each scenario is: fast (the default test run) or long (``--long``)."""

    name: str
    steps: int
    max_parallel: int | None
    fan_in_weeks: int
    pg_pause: float
    timeout: float
    lease_seconds: int
    sweep_seconds: int
    requeue_after_seconds: int
    visibility_timeout: int
    lock_timeout_ms: int
    idle_in_transaction_ms: int
    deep_backlog: int
    seed: int = DEFAULT_SEED

    def timing_env(self) -> dict[str, str]:
        """The settings of every worker and beat process of a scenario in this mode."""
        return {
            "FLOWSTONE_STEP_LEASE_SECONDS": str(self.lease_seconds),
            "FLOWSTONE_SWEEP_SECONDS": str(self.sweep_seconds),
            "FLOWSTONE_REQUEUE_AFTER_SECONDS": str(self.requeue_after_seconds),
            "CELERY_VISIBILITY_TIMEOUT": str(self.visibility_timeout),
            "FLOWSTONE_DB_LOCK_TIMEOUT_MS": str(self.lock_timeout_ms),
            "FLOWSTONE_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS": str(self.idle_in_transaction_ms),
        }


FAST: Final = Mode(
    name="fast",
    steps=36,
    max_parallel=6,
    fan_in_weeks=1,
    pg_pause=4.0,
    timeout=180.0,
    lease_seconds=3,
    sweep_seconds=1,
    # The production default: a message lost for good shows as a stall, not as 5 s.
    requeue_after_seconds=600,
    visibility_timeout=10,
    lock_timeout_ms=3000,
    idle_in_transaction_ms=8000,
    deep_backlog=400,
)
LONG: Final = Mode(
    name="long",
    steps=1000,
    max_parallel=6,
    fan_in_weeks=2,
    pg_pause=20.0,
    timeout=1800.0,
    # The production defaults (flowstone/settings.py), not shortened.
    lease_seconds=15,
    sweep_seconds=5,
    requeue_after_seconds=600,
    visibility_timeout=7200,
    lock_timeout_ms=10_000,
    idle_in_transaction_ms=30_000,
    deep_backlog=3000,
)


@dataclass
class Cluster:
    """The private servers of the fault suite and the migrated template database."""

    postgres: PrivatePostgres
    redis: PrivateRedis
    template: str = "fault_template"

    def base_env(self) -> dict[str, str]:
        """Environment shared by every process of every scenario."""
        return {
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "FLOWSTONE_DEFINITIONS": DEFINITIONS,
            "FLOWSTONE_MAX_RECOVERIES": str(MAX_RECOVERIES),
            "FLOWSTONE_LOG_LEVEL": "WARNING",
            "FLOWSTONE_LOG_FORMAT": "plain",
        }

    def migrate_template(self, data_dir: Path) -> None:
        """Create the template database and migrate it once for all scenarios."""
        url = self.postgres.create_database(self.template)
        env = {
            **os.environ,
            **self.base_env(),
            "DATABASE_URL": url,
            "FLOWSTONE_DATA_DIR": str(data_dir),
        }
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )


DRIVER = """
import datetime as dt, json, sys
import django
django.setup()
import flowstone
spec = json.loads(sys.argv[1])
first = dt.date.fromisoformat(spec["first_day"])
seed = flowstone.materialize_async("f_seed").wait(120)
assert seed.status == "success", seed
days = [first + dt.timedelta(days=n) for n in range(spec["steps"])]
backfill = flowstone.backfill_async("f_day", days, max_parallel=spec["max_parallel"])
weeks = [
    flowstone.materialize_all_async("f_week", first + dt.timedelta(days=7 * w))
    for w in spec["weeks"]
]
print(json.dumps({
    "seed": seed.run_id,
    "backfill": backfill.run_id,
    "fan_in": [h.run_id for h in weeks],
    "requests": len(seed.steps) + len(days) + sum(len(h.result().steps) for h in weeks),
}))
"""


EXTRA_DRIVER = """
import datetime as dt, json, sys, time
import django
django.setup()
import flowstone
began = time.monotonic()
handle = flowstone.materialize_all_async("f_week", dt.date.fromisoformat(sys.argv[1]))
result = handle.wait(float(sys.argv[2]))
print(json.dumps({
    "run_id": handle.run_id,
    "status": str(result.status),
    "steps": len(result.steps),
    "seconds": time.monotonic() - began,
}))
"""


def fan_in_weeks(mode: Mode) -> list[int]:
    """Week numbers of the fan-in runs: just after the backfilled days, so nothing overlaps."""
    first = mode.steps // 7 + 2
    return list(range(first, first + mode.fan_in_weeks))


@dataclass(frozen=True, kw_only=True, slots=True)
class RunningStep:
    """A step a worker holds right now, as the database sees it."""

    id: int
    partition_key: str
    attempt: int
    owner: str
    started: float
    lease_expires: float


@dataclass
class Scenario:
    """Everything one scenario started, and what it observed."""

    name: str
    cluster: Cluster
    mode: Mode
    root: Path
    stack: Services = field(init=False)
    rng: random.Random = field(init=False)
    conninfo: str = field(init=False)
    run_ids: dict[str, Any] = field(default_factory=dict)
    requests: int = 0
    expected: dict[tuple[str, str], checker.Expected] = field(default_factory=dict)
    fault_at: float | None = None
    fault_window: float = 1.0
    affected: set[int] = field(default_factory=set)
    notes: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    launched_at: float = 0.0
    ended_at: float = 0.0
    _affected_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.mode.seed}:{self.name}")  # noqa: S311  # not secrets
        database = f"fault_{self.name}"
        url = self.cluster.postgres.create_database(database, template=self.cluster.template)
        self.conninfo = self.cluster.postgres.conninfo(database)
        data_dir = self.root / self.name
        shutil.rmtree(data_dir, ignore_errors=True)
        (data_dir / "faults").mkdir(parents=True, exist_ok=True)
        client = redis.Redis.from_url(self.cluster.redis.url())
        client.flushall()
        client.close()
        self.stack = Services(
            broker_url=self.cluster.redis.url(),
            data_dir=data_dir,
            definitions=DEFINITIONS,
            database=url,
            extra_env={
                **self.cluster.base_env(),
                **self.mode.timing_env(),
                "FLOWSTONE_FAULT_DIR": str(data_dir / "faults"),
            },
        )

    # -- processes -------------------------------------------------------------------------

    @property
    def fault_dir(self) -> Path:
        """Where the pipeline's hooks look for markers."""
        return self.stack.data_dir / "faults"

    def arm(self, marker: str, content: str = "") -> None:
        """Create a marker file atomically (the hooks may read it at any moment)."""
        temporary = self.fault_dir / f".{marker}.tmp"
        temporary.write_text(content)
        temporary.replace(self.fault_dir / marker)

    def start(
        self, *, clock_offsets: dict[str, str] | None = None
    ) -> dict[str, subprocess.Popen[bytes]]:
        """Start two workers and beat; return the workers by name once both are ready.

        ``clock_offsets`` runs the named workers under ``faketime`` (e.g. ``{"w2": "-10s"}``).
        """
        began = time.monotonic()
        offsets = clock_offsets or {}
        workers = {
            name: self.stack.start_worker(
                name,
                concurrency=WORKER_CONCURRENCY,
                wait=False,
                clock_offset=offsets.get(name),
            )
            for name in ("w1", "w2")
        }
        self.stack.start_beat()
        for name, process in workers.items():
            self.stack.wait_ready(name, process)
        self.notes["start_seconds"] = round(time.monotonic() - began, 1)
        return workers

    def launch(self) -> None:
        """Start the runs from a separate process: seed, backfill of ``steps`` days, fan-ins."""
        spec = {
            "first_day": FIRST_DAY.isoformat(),
            "steps": self.mode.steps,
            "max_parallel": self.mode.max_parallel,
            "weeks": fan_in_weeks(self.mode),
        }
        completed = subprocess.run(
            [sys.executable, "-c", DRIVER, json.dumps(spec)],
            cwd=ROOT,
            env=self.stack.env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr[-4000:]
        self.run_ids = json.loads(completed.stdout.strip().splitlines()[-1])
        self.requests = int(self.run_ids.pop("requests"))
        self.launched_at = time.time()

    def run_extra_week(self, week: int, timeout: float) -> dict[str, Any]:
        """Run one more fan-in week (8 steps) to its end from a separate process, now.

        The run joins the scenario's runs (the checker checks it); returns its id, status,
        step count and the seconds it took.
        """
        completed = subprocess.run(
            [
                sys.executable,
                "-c",
                EXTRA_DRIVER,
                (FIRST_DAY + dt.timedelta(days=7 * week)).isoformat(),
                str(timeout),
            ],
            cwd=ROOT,
            env=self.stack.env(),
            capture_output=True,
            text=True,
            timeout=timeout + 60,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr[-4000:]
        outcome: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
        self.run_ids["fan_in"].append(outcome["run_id"])
        self.requests += int(outcome["steps"])
        return outcome

    @property
    def all_runs(self) -> list[str]:
        """Every run this scenario started."""
        return [self.run_ids["seed"], self.run_ids["backfill"], *self.run_ids["fan_in"]]

    # -- the database, read from outside ---------------------------------------------------

    def query(self, text: str, *params: Any) -> list[tuple[Any, ...]] | None:
        """Run a read query; ``None`` while the database cannot be reached."""
        try:
            with psycopg.connect(
                self.conninfo,
                autocommit=True,
                connect_timeout=2,
                application_name=HARNESS_APPLICATION,
            ) as conn:
                return conn.execute(text, params).fetchall()
        except psycopg.OperationalError:
            return None

    def successes(self) -> int:
        """Successful steps of the backfill run so far."""
        rows = self.query(
            "SELECT count(*) FROM assets_materialization WHERE run_id::text = %s "
            "AND status = 'success'",
            self.run_ids["backfill"],
        )
        return int(rows[0][0]) if rows else 0

    def seeded_moment(self) -> int:
        """How many backfill steps must succeed before the fault: 20-50 %, from the seed."""
        return self.rng.randint(max(self.mode.steps // 5, 1), max(self.mode.steps // 2, 2))

    def wait_for_successes(self, count: int) -> None:
        """Wait until ``count`` backfill steps succeeded."""
        deadline = time.monotonic() + self.mode.timeout
        while self.successes() < count:
            assert time.monotonic() < deadline, f"{self.name}: no progress to {count} successes"
            time.sleep(0.05)
        self.notes["fault_after_successes"] = count

    def in_flight(self) -> set[int]:
        """Steps that are queued or running now (the scenario's database holds only its runs)."""
        rows = self.query(
            "SELECT id FROM assets_materialization WHERE status IN ('queued', 'running')"
        )
        return {int(r[0]) for r in rows or []}

    def mark_fault(self, *, window: float = 1.0) -> None:
        """The fault happens now; steps in flight during the next ``window`` s are affected.

        A thread keeps collecting them while the injector is still busy (a freeze, an outage).
        """
        self.affected |= self.in_flight()
        self.fault_at = time.time()
        self.fault_window = window
        ends = self.fault_at + window

        def collect() -> None:
            while time.time() < ends:
                found = self.in_flight()
                with self._affected_lock:
                    self.affected |= found
                time.sleep(POLL)

        threading.Thread(target=collect, name="fault-window", daemon=True).start()

    def runs_terminal(self) -> bool:
        """Whether every run of the scenario has ended."""
        rows = self.query(
            "SELECT count(*) FROM assets_run WHERE id::text = ANY(%s) "
            "AND status IN ('success', 'failed', 'canceled') AND finished_at IS NOT NULL",
            self.all_runs,
        )
        return rows is not None and int(rows[0][0]) == len(self.all_runs)

    def wait_quiescent(self) -> float:
        """Wait until every run ended and the broker drained; return the seconds waited."""
        started = time.monotonic()
        deadline = started + self.mode.timeout
        while not self.runs_terminal():
            if self.fault_at is not None and time.time() < self.fault_at + self.fault_window:
                self.affected |= self.in_flight()
            assert time.monotonic() < deadline, (
                f"{self.name}: runs did not end in time; {self.stuck_state()}"
            )
            time.sleep(POLL)
        drain_deadline = time.monotonic() + DRAIN_TIMEOUT
        while sum(checker.broker_lengths(self.cluster.redis.url())) and (
            time.monotonic() < drain_deadline
        ):
            time.sleep(POLL)
        self.ended_at = time.time()
        self.notes["drain_seconds"] = round(time.monotonic() - drain_deadline + DRAIN_TIMEOUT, 1)
        return time.monotonic() - started

    def stuck_state(self) -> str:
        """What a run that did not end is waiting on: its unfinished steps and the queues."""
        runs = self.query(
            "SELECT id, status, steps_total, steps_pending, steps_active, steps_succeeded, "
            "steps_failed FROM assets_run "
            "WHERE id::text = ANY(%s) AND finished_at IS NULL",
            self.all_runs,
        )
        steps = self.query(
            "SELECT id, asset, partition_key, status, attempt, lease_owner, "
            "lease_expires_at < now(), queued_at, dispatched_at, started_at, recoveries, "
            "remaining_upstreams "
            "FROM assets_materialization WHERE status NOT IN "
            "('success', 'failed', 'canceled', 'skipped', 'upstream_failed') "
            "ORDER BY id LIMIT 12"
        )
        lengths = checker.broker_lengths(self.cluster.redis.url())
        return f"open runs={runs} unfinished steps={steps} broker={lengths} now={time.time()}"

    def recovery_seconds(self) -> float | None:
        """From the fault until the last step in flight around it ended."""
        if self.fault_at is None:
            return None
        if not self.affected:
            return 0.0
        rows = self.query(
            "SELECT max(extract(epoch FROM finished_at)) FROM assets_materialization "
            "WHERE id = ANY(%s)",
            sorted(self.affected),
        )
        latest = float(rows[0][0]) if rows and rows[0][0] is not None else self.fault_at
        return max(latest - self.fault_at, 0.0)

    def check(self) -> checker.Report:
        """Run the checker, print the scenario's line, and return the report."""
        report = checker.check(
            scenario=self.name,
            conninfo=self.conninfo,
            run_ids=self.all_runs,
            requests=self.requests,
            data_dir=self.stack.data_dir,
            broker_url=self.cluster.redis.url(),
            expected=self.expected,
            upstreams=expected_upstreams,
            affected=self.affected,
        )
        report.recovery_seconds = self.recovery_seconds()
        report.notes.update(self.notes)
        if self.launched_at and self.ended_at:
            report.notes["run_seconds"] = round(self.ended_at - self.launched_at, 1)
        self.summary = f"{report.line()} mode={self.mode.name}"
        sys.stdout.write(f"\n{self.summary} notes={json.dumps(report.notes)}\n")
        with (self.root / "fault-report.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps({"line": self.summary, **vars(report)}, default=str) + "\n")
        return report

    def close(self) -> None:
        """Kill every process this scenario started (the history is checked already).

        Beat goes first, and the workers drain what it sent last (sweeper, relay, timeouts)
        before they go: those messages would otherwise be left in the queues.
        """
        if not self.stack.processes:
            return  # closed already: nothing left to drain the queues
        beats = [p for p in self.stack.processes if "beat" in str(p.args)]
        for process in beats:
            self.stack.kill(process)
        drain_deadline = time.monotonic() + DRAIN_TIMEOUT
        while sum(checker.broker_lengths(self.cluster.redis.url())) and (
            time.monotonic() < drain_deadline
        ):
            time.sleep(POLL)
        for process in self.stack.processes:
            if process not in beats:
                self.stack.kill(process)
        self.stack.processes.clear()

    # -- helpers for injectors ---------------------------------------------------------------

    def running_steps(self) -> list[RunningStep]:
        """The running steps of the backfill, newest claim first."""
        rows = self.query(
            "SELECT id, partition_key, attempt, lease_owner, extract(epoch FROM started_at), "
            "extract(epoch FROM lease_expires_at) FROM assets_materialization "
            "WHERE run_id::text = %s AND status = 'running' ORDER BY started_at DESC",
            self.run_ids["backfill"],
        )
        return [
            RunningStep(
                id=int(r[0]),
                partition_key=str(r[1]),
                attempt=int(r[2]),
                owner=str(r[3]),
                started=float(r[4]),
                lease_expires=float(r[5]),
            )
            for r in rows or []
        ]

    def sent_steps(self) -> int:
        """How many steps of the backfill are queued with their message sent (in the broker)."""
        rows = self.query(
            "SELECT count(*) FROM assets_materialization WHERE run_id::text = %s "
            "AND status = 'queued' AND dispatched_at IS NOT NULL",
            self.run_ids["backfill"],
        )
        return int(rows[0][0]) if rows else 0

    def executions_of(self, asset: str, partition_key: str) -> list[dict[str, Any]]:
        """Lines the asset bodies logged for one partition."""
        path = self.stack.data_dir / "executions.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [
            record
            for record in map(json.loads, filter(None, lines))
            if record.get("asset") == asset and record.get("partition") == partition_key
        ]

    def crashes(self) -> list[str]:
        """The crash lines the hooks logged."""
        path = self.stack.data_dir / "executions.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [r["crash"] for r in map(json.loads, filter(None, lines)) if "crash" in r]

    def step_row(self, step_id: int) -> tuple[Any, ...]:
        """``(status, attempt, recoveries, error)`` of one step."""
        rows = self.query(
            "SELECT status, attempt, recoveries, error FROM assets_materialization WHERE id = %s",
            step_id,
        )
        assert rows, f"no step {step_id}"
        return rows[0]


def client_pid(port: int) -> int | None:
    """The local process whose TCP socket has local port ``port`` (Linux ``/proc``), if any.

    PostgreSQL knows a backend's client only by address and port; this finds the worker process
    behind a backend, to stop that process while its transaction is open.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            links = [str(fd.readlink()) for fd in fd_dir.iterdir()]
        except OSError:
            continue
        if any(link.startswith("socket:[") and link[8:-1] in inodes for link in links):
            return int(fd_dir.parent.name)
    return None


def owner_pid(lease_owner: str) -> int:
    """The worker child's pid in a lease owner (``celery:<host>:<pid>:<task id>``)."""
    return int(lease_owner.split(":")[-2])


def week_key(week: int) -> str:
    """The encoded partition key of a fan-in week."""
    return f"d:{(FIRST_DAY + dt.timedelta(days=7 * week)).isoformat()}"
