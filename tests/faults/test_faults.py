"""Fault scenarios: one fault at a seeded moment, then quiescence, then THE CHECKER.

Each test starts two prefork workers and beat on private servers, launches a seed run, a
backfill of ``f_day`` (36 days fast, 1,000 with ``--long``, ``max_parallel=6``) and fan-in runs
of ``f_week``, injects its fault, waits until every run ended and the broker drained, and
asserts that nothing was lost or doubled, that every stored value is the recorded attempt's, that
only steps in flight at a fault ran twice, and that no stall outlasted ``MAX_STALL_SECONDS`` plus
the outage itself (``tests/faults/checker.py``). Each prints a line: scenario, steps, lost,
doubled, mismatches, re-executions, executions/requests, recovery time, longest stall.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import redis

from tests.faults.checker import Expected, Report, broker_lengths
from tests.faults.harness import (
    HARNESS_APPLICATION,
    MAX_RECOVERIES,
    RunningStep,
    Scenario,
    client_pid,
    fan_in_weeks,
    owner_pid,
    week_key,
)
from tests.faults.pipeline import (
    CRASH_AFTER_COMMIT,
    CRASH_AFTER_STORE,
    CRASH_BEFORE_SEND,
    DUPLICATE_MARKER,
    FIRST_DAY,
    POISON_MARKER,
    SLOW_MARKER,
    body_seconds,
)
from tests.poison_items import REDIS_POISON

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = [pytest.mark.fault]

TERMINATE_BURST = 1.5
NEWEST_CLAIM = 0.25  # well before the first renewal (a third of the lease), even on a busy machine
MIN_SLEEP_LEFT = 0.04
MAX_STALL_SECONDS = 30.0


def _finish(scenario: Scenario) -> Report:
    scenario.wait_quiescent()
    report = scenario.check()
    assert report.lost == 0, report.violations[:20]
    assert report.doubled == 0, report.violations[:20]
    assert report.mismatches == 0, report.violations[:20]
    assert not report.violations, report.violations[:20]
    assert report.effects == report.steps - len(scenario.expected)
    # An injected outage, or a wait the scenario causes by design, adds to the allowed stall.
    outage = float(scenario.notes.get("outage_seconds", 0.0))
    by_design = float(scenario.notes.get("designed_wait_seconds", 0.0))
    assert report.stall_seconds <= MAX_STALL_SECONDS + outage + by_design, report.line()
    return report


def _run(scenario: Scenario, inject: Callable[[Scenario], None]) -> Report:
    scenario.start()
    scenario.launch()
    scenario.wait_for_successes(scenario.seeded_moment())
    inject(scenario)
    return _finish(scenario)


def _sleep_left(scenario: Scenario, partition_key: str, attempt: int) -> float:
    """How long the body of this attempt will still sleep (negative: not started or done)."""
    started = [
        float(line["at"])
        for line in scenario.executions_of("f_day", partition_key)
        if line["attempt"] == attempt
    ]
    if not started:
        return -1.0
    return float(started[-1] + body_seconds(partition_key) - time.time())


def _kill_newest_claim(scenario: Scenario) -> tuple[int, float, float]:
    """Kill -9 the worker child of a step claimed moments ago; return (step, started, lease).

    Only a step whose body still sleeps: one claimed 0.2 s ago may already have ended (bodies
    sleep 50-200 ms), and killing its idle process would test nothing.
    """
    deadline = time.monotonic() + scenario.mode.timeout
    while time.monotonic() < deadline:
        for step in scenario.running_steps():
            fresh = time.time() - step.started < NEWEST_CLAIM
            if fresh and _sleep_left(scenario, step.partition_key, step.attempt) > MIN_SLEEP_LEFT:
                scenario.mark_fault()
                os.kill(owner_pid(step.owner), signal.SIGKILL)
                return step.id, step.started, step.lease_expires
        time.sleep(0.002)
    pytest.fail("no freshly claimed step to kill")


def _a_step_in_its_body(scenario: Scenario) -> RunningStep:
    """A running backfill step whose body has started and still sleeps (chosen by the seed)."""
    deadline = time.monotonic() + scenario.mode.timeout
    while time.monotonic() < deadline:
        in_body = [
            step
            for step in scenario.running_steps()
            if _sleep_left(scenario, step.partition_key, step.attempt) > MIN_SLEEP_LEFT
        ]
        if in_body:
            return scenario.rng.choice(in_body)
        time.sleep(0.01)
    pytest.fail("no step in its body")


def test_kill_9_worker_child(open_scenario: Scenario) -> None:
    def inject(scenario: Scenario) -> None:
        victim = _a_step_in_its_body(scenario)  # kill it in the middle of its body
        scenario.mark_fault()
        os.kill(owner_pid(victim.owner), signal.SIGKILL)
        scenario.notes["victim"] = victim.id

    _run(open_scenario, inject)
    _, attempt, recoveries, _ = open_scenario.step_row(open_scenario.notes["victim"])
    assert recoveries >= 1
    assert attempt >= 2


def test_kill_9_worker_process_group(open_scenario: Scenario) -> None:
    workers = open_scenario.start()
    open_scenario.launch()
    open_scenario.wait_for_successes(open_scenario.seeded_moment())
    open_scenario.mark_fault()
    open_scenario.stack.kill(workers["w1"])  # the parent and all its children, SIGKILL
    _finish(open_scenario)


def test_warm_shutdown_then_kill(open_scenario: Scenario) -> None:
    workers = open_scenario.start()
    open_scenario.launch()
    open_scenario.wait_for_successes(open_scenario.seeded_moment())
    open_scenario.mark_fault()
    os.kill(workers["w1"].pid, signal.SIGTERM)  # warm shutdown: stop consuming, finish tasks
    grace = open_scenario.rng.uniform(0.05, 0.4)
    time.sleep(grace)
    open_scenario.stack.kill(workers["w1"])
    open_scenario.notes["kill_after_seconds"] = round(grace, 3)
    _finish(open_scenario)


def _crash_once(scenario: Scenario, marker: str) -> str:
    """Arm a crash hook once, seeded into the backfill; return the one crash line it logged."""

    def inject(scenario: Scenario) -> None:
        scenario.mark_fault(window=2.0)
        scenario.arm(marker)

    _run(scenario, inject)
    (crash,) = scenario.crashes()
    return crash


def test_crash_after_success_commit_before_ack(open_scenario: Scenario) -> None:
    assert _crash_once(open_scenario, CRASH_AFTER_COMMIT).startswith("after commit of f_")


def test_crash_after_output_write_before_commit(open_scenario: Scenario) -> None:
    assert _crash_once(open_scenario, CRASH_AFTER_STORE).startswith("after store of f_")


def test_crash_between_a_claim_and_its_send(open_scenario: Scenario) -> None:
    """A worker process claims released steps for sending and dies before the first message.

    The claim rolls back with the dead session, so the relay sends the steps within seconds;
    a claim that committed first would leave them waiting ``REQUEUE_AFTER_SECONDS`` (600 s)
    and the scenario would not end in time (ADR 0035).
    """
    crash = _crash_once(open_scenario, CRASH_BEFORE_SEND)
    assert crash.startswith("before sending flowstone.run_step")


def test_postgres_stopped(open_scenario: Scenario) -> None:
    pause = open_scenario.mode.pg_pause

    def inject(scenario: Scenario) -> None:
        scenario.mark_fault(window=pause + 1.0)
        scenario.cluster.postgres.stop("immediate")
        time.sleep(pause)
        scenario.cluster.postgres.start()
        scenario.notes["outage_seconds"] = pause

    _run(open_scenario, inject)


def _terminate_workers(admin: psycopg.Connection[Any], database: str) -> dict[str, int]:
    """Terminate every worker backend of ``database`` once; count them by state."""
    terminated: dict[str, int] = {}
    backends = admin.execute(
        "SELECT pid, state FROM pg_stat_activity WHERE datname = %s "
        "AND application_name <> %s AND backend_type = 'client backend'",
        (database, HARNESS_APPLICATION),
    ).fetchall()
    for pid, state in backends:
        row = admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
        if row is not None and row[0]:
            terminated[str(state)] = terminated.get(str(state), 0) + 1
    return terminated


LOCK_WAIT_SECONDS = 10.0


def _waiting_on_a_lock(admin: psycopg.Connection[Any], database: str) -> bool:
    """Whether a worker backend of ``database`` waits on a lock (inside its transaction)."""
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name <> %s "
        "AND wait_event_type = 'Lock'",
        (database, HARNESS_APPLICATION),
    ).fetchone()
    return row is not None and int(row[0]) > 0


def test_database_connections_terminated_mid_transaction(open_scenario: Scenario) -> None:
    """Kill worker backends, including ones caught inside a transaction.

    Step bodies sleep outside any transaction, so a backend is mostly idle. To terminate
    some mid-transaction on every run, the harness holds an EXCLUSIVE lock on the step
    table for part of the burst: a worker's claim or completion then waits inside its
    transaction (state ``active``) until it is terminated.
    """

    def inject(scenario: Scenario) -> None:
        scenario.mark_fault(window=TERMINATE_BURST + 1.0)
        terminated: dict[str, int] = {}
        database = f"fault_{scenario.name}"
        with (
            psycopg.connect(scenario.cluster.postgres.conninfo(), autocommit=True) as admin,
            psycopg.connect(scenario.conninfo, application_name=HARNESS_APPLICATION) as locker,
        ):
            locker.execute("LOCK TABLE assets_materialization IN EXCLUSIVE MODE")
            # Start the burst once a worker's statement waits on the lock inside its
            # transaction (a worker that met a dead connection pauses before going on).
            waited = time.monotonic() + LOCK_WAIT_SECONDS
            while time.monotonic() < waited and not _waiting_on_a_lock(admin, database):
                time.sleep(0.01)
            ends = time.monotonic() + TERMINATE_BURST
            while time.monotonic() < ends:
                if locker.info.transaction_status != psycopg.pq.TransactionStatus.IDLE and (
                    terminated.get("active", 0) or time.monotonic() > ends - TERMINATE_BURST / 2
                ):
                    locker.rollback()  # release the lock: blocked writers are gone or waited
                for state, count in _terminate_workers(admin, database).items():
                    terminated[state] = terminated.get(state, 0) + count
                time.sleep(0.02)
            locker.rollback()
        scenario.notes["terminated"] = terminated

    _run(open_scenario, inject)
    terminated = open_scenario.notes["terminated"]
    assert terminated.get("active", 0) + terminated.get("idle in transaction", 0) > 0, terminated


def test_redis_killed_and_restarted(open_scenario: Scenario) -> None:
    def inject(scenario: Scenario) -> None:
        down = scenario.rng.uniform(1.0, 3.0)
        scenario.mark_fault(window=down + 1.0)
        scenario.cluster.redis.kill()
        time.sleep(down)
        scenario.cluster.redis.start()
        scenario.notes["outage_seconds"] = round(down, 2)

    _run(open_scenario, inject)


def test_duplicate_delivery_of_every_message(open_scenario: Scenario) -> None:
    open_scenario.arm(DUPLICATE_MARKER)  # before the first publish: every message is doubled
    open_scenario.start()
    open_scenario.launch()
    open_scenario.wait_quiescent()
    log = (open_scenario.stack.data_dir / "executions.log").read_text()
    duplicates = log.count('"duplicate"')
    open_scenario.notes["duplicated_messages"] = duplicates
    report = _finish(open_scenario)
    assert duplicates >= report.requests


def test_poison_step_fails_after_max_recoveries(open_scenario: Scenario) -> None:
    week = fan_in_weeks(open_scenario.mode)[0]
    day = FIRST_DAY + dt.timedelta(days=7 * week + open_scenario.rng.randint(0, 6))
    poison = f"d:{day.isoformat()}"
    open_scenario.arm(POISON_MARKER, poison)
    open_scenario.expected[("f_day", poison)] = Expected(status="failed", reason="poison step")
    open_scenario.expected[("f_week", week_key(week))] = Expected(status="upstream_failed")
    open_scenario.start()
    open_scenario.launch()
    rows = open_scenario.query(
        "SELECT id FROM assets_materialization WHERE asset = 'f_day' AND partition_key = %s",
        poison,
    )
    assert rows
    open_scenario.affected = {int(rows[0][0])}
    # Its run waits while the step is taken back MAX_RECOVERIES times, each after its lease and
    # a sweep: once the rest of the work is done, nothing else ends meanwhile.
    mode = open_scenario.mode
    open_scenario.notes["designed_wait_seconds"] = MAX_RECOVERIES * (
        mode.lease_seconds + mode.sweep_seconds
    )
    deadline = time.monotonic() + open_scenario.mode.timeout
    while not open_scenario.executions_of("f_day", poison):
        assert time.monotonic() < deadline, "the poison step never ran"
        time.sleep(0.05)
    open_scenario.fault_at = open_scenario.executions_of("f_day", poison)[0]["at"]
    open_scenario.fault_window = 0.0
    open_scenario.wait_quiescent()
    executions = len(open_scenario.executions_of("f_day", poison))
    open_scenario.notes["poison_executions"] = executions
    _finish(open_scenario)
    status, _, recoveries, error = open_scenario.step_row(int(rows[0][0]))
    assert status == "failed"
    assert "poison step" in error["message"]
    assert recoveries == MAX_RECOVERIES + 1
    assert executions == MAX_RECOVERIES + 1


def test_kill_before_first_lease_renewal(open_scenario: Scenario) -> None:
    def inject(scenario: Scenario) -> None:
        step_id, started, expires = _kill_newest_claim(scenario)
        scenario.notes["victim"] = step_id
        lease = scenario.mode.lease_seconds
        scenario.notes["lease_renewed_before_kill"] = abs(expires - started - lease) > 0.01

    _run(open_scenario, inject)
    assert open_scenario.notes["lease_renewed_before_kill"] is False
    _, attempt, recoveries, _ = open_scenario.step_row(open_scenario.notes["victim"])
    assert recoveries >= 1
    assert attempt >= 2


def test_sigstop_past_the_lease(open_scenario: Scenario) -> None:
    """A pool process frozen in a step body past its lease, then thawed (a long GC pause, a
    stopped VM): the sweeper hands the step to another process; the thawed attempt must neither
    record a second success nor replace the recorded value (the checker's ``mismatches``).
    """

    def inject(scenario: Scenario) -> None:
        victim = _a_step_in_its_body(scenario)
        pid = owner_pid(victim.owner)
        scenario.mark_fault(window=_stopped_for(scenario) + 1.0)
        os.kill(pid, signal.SIGSTOP)
        try:
            _wait_taken_over(scenario, victim.id, victim.attempt)
        finally:
            os.kill(pid, signal.SIGCONT)
        scenario.notes["victim"] = victim.id

    _run(open_scenario, inject)
    status, attempt, recoveries, _ = open_scenario.step_row(open_scenario.notes["victim"])
    assert (status, recoveries) == ("success", 1)
    assert attempt >= 2


def _stopped_for(scenario: Scenario) -> float:
    """How long a stopped process may take to be replaced: its lease, two sweeps, a margin."""
    return scenario.mode.lease_seconds + 2 * scenario.mode.sweep_seconds + 2


def _wait_taken_over(scenario: Scenario, step_id: int, attempt: int) -> None:
    """Wait until another attempt of the step succeeded (the stopped one is stale)."""
    deadline = time.monotonic() + _stopped_for(scenario) + 30
    while time.monotonic() < deadline:
        rows = scenario.query(
            "SELECT status, attempt FROM assets_materialization WHERE id = %s", step_id
        )
        if rows and rows[0][0] == "success" and int(rows[0][1]) > attempt:
            return
        time.sleep(0.05)
    pytest.fail(f"step {step_id} was not taken over while its worker was stopped")


def test_poison_messages_on_the_step_queue(open_scenario: Scenario) -> None:
    """Malformed items on the step queue mid-backfill: each is recorded and dropped, no worker
    stops, and the backfill goes on (before issue 15 one such item killed every worker in turn).
    """
    workers: dict[str, Any] = {}

    def inject(scenario: Scenario) -> None:
        scenario.mark_fault()
        client = redis.Redis.from_url(scenario.cluster.redis.url())
        try:
            for case in REDIS_POISON:
                client.lpush("flowstone", case.item)
        finally:
            client.close()
        scenario.notes["poison_messages"] = len(REDIS_POISON)

    workers.update(open_scenario.start())
    open_scenario.launch()
    open_scenario.wait_for_successes(open_scenario.seeded_moment())
    inject(open_scenario)
    _finish(open_scenario)
    rows = open_scenario.query("SELECT count(*) FROM assets_rejectedmessage")
    assert rows is not None
    assert int(rows[0][0]) == len(REDIS_POISON)
    assert all(process.poll() is None for process in workers.values())


def test_clock_skew(open_scenario: Scenario) -> None:
    """One worker's clock runs behind by more than a lease: its leases are on the database's
    clock, so none of its healthy steps is taken back (before, 6 were and one failed as poison).
    """
    if not shutil.which("faketime"):
        pytest.skip("needs faketime (Debian: faketime; scripts/test.sh installs it as root)")
    behind = open_scenario.mode.lease_seconds + 5
    open_scenario.start(clock_offsets={"w2": f"-{behind}s"})
    open_scenario.launch()
    _finish(open_scenario)
    rows = open_scenario.query(
        "SELECT count(*) FILTER (WHERE recoveries > 0), "
        "count(*) FILTER (WHERE lease_owner LIKE 'celery:w2@%%') "
        "FROM assets_materialization WHERE run_id::text = ANY(%s)",
        open_scenario.all_runs,
    )
    assert rows is not None
    recovered, by_skewed = (int(n) for n in rows[0])
    open_scenario.notes.update(clock_behind_seconds=behind, steps_of_skewed_worker=by_skewed)
    assert recovered == 0
    assert by_skewed > 0


BLOCKED_COMPLETIONS = (
    "SELECT a.client_port FROM pg_stat_activity a WHERE a.datname = %s "
    "AND a.application_name <> %s AND a.wait_event_type = 'Lock' AND a.client_port > 0 "
    "AND EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
    "WHERE l.pid = a.pid AND c.relname = 'assets_run' AND l.mode = 'RowExclusiveLock' "
    "AND l.granted)"
)


def _stop_a_process_inside_a_completion(scenario: Scenario) -> int:
    """Catch a worker process inside a step's completion transaction (holding its run's row)
    and stop it there; return its pid.

    The harness holds an EXCLUSIVE lock on the step table for a moment, so a completion, which
    settles its run first, waits inside its transaction; that worker process is stopped, then
    the lock is released: its backend finishes the statement and idles in the transaction.
    """
    database = f"fault_{scenario.name}"
    deadline = time.monotonic() + 60
    with psycopg.connect(scenario.conninfo, application_name=HARNESS_APPLICATION) as locker:
        while time.monotonic() < deadline:
            locker.execute("LOCK TABLE assets_materialization IN EXCLUSIVE MODE")
            waited = time.monotonic() + 2.0
            while time.monotonic() < waited:
                rows = scenario.query(BLOCKED_COMPLETIONS, database, HARNESS_APPLICATION) or []
                pids = [pid for (port,) in rows if (pid := client_pid(int(port)))]
                if pids:
                    os.kill(pids[0], signal.SIGSTOP)
                    locker.rollback()
                    return pids[0]
                time.sleep(0.01)
            locker.rollback()
            time.sleep(0.2)
    pytest.fail("no worker process was caught inside a completion")


def test_process_frozen_inside_a_transaction(open_scenario: Scenario) -> None:
    """A pool process frozen inside a completion holds its run's row; the session is ended by
    ``idle_in_transaction_session_timeout``, and an unrelated run, started while the process is
    frozen, runs to its end meanwhile (before issue 15 every run stopped for the whole freeze).
    """
    idle_timeout = open_scenario.mode.idle_in_transaction_ms / 1000
    freeze = idle_timeout + 5.0

    def inject(scenario: Scenario) -> None:
        scenario.mark_fault(window=freeze + 1.0)
        pid = _stop_a_process_inside_a_completion(scenario)
        frozen_at = time.monotonic()
        try:
            extra_week = max(fan_in_weeks(scenario.mode)) + 2
            scenario.notes["unrelated_run"] = scenario.run_extra_week(extra_week, freeze)
        finally:
            time.sleep(max(freeze - (time.monotonic() - frozen_at), 0.0))
            os.kill(pid, signal.SIGCONT)
        scenario.notes["frozen_seconds"] = round(time.monotonic() - frozen_at, 1)

    _run(open_scenario, inject)
    unrelated = open_scenario.notes["unrelated_run"]
    assert unrelated["status"] == "success"
    assert unrelated["seconds"] < freeze


TIME_LIMIT_SECONDS = 4


def test_time_limit_kill(open_scenario: Scenario) -> None:
    """A step that runs past Celery's hard time limit is killed by the pool and fails once as
    a ``timeout`` (before issue 15 it was taken back until it failed as a "poison step?").
    """
    day = FIRST_DAY + dt.timedelta(days=open_scenario.rng.randrange(open_scenario.mode.steps))
    slow = f"d:{day.isoformat()}"
    open_scenario.arm(SLOW_MARKER, slow)
    open_scenario.stack.extra_env["CELERY_TASK_TIME_LIMIT"] = str(TIME_LIMIT_SECONDS)
    open_scenario.expected[("f_day", slow)] = Expected(status="failed", reason="time limit")
    open_scenario.start()
    open_scenario.launch()
    rows = open_scenario.query(
        "SELECT id FROM assets_materialization WHERE asset = 'f_day' AND partition_key = %s "
        "AND run_id::text = %s",
        slow,
        open_scenario.run_ids["backfill"],
    )
    assert rows
    step_id = int(rows[0][0])
    open_scenario.affected = {step_id}
    deadline = time.monotonic() + open_scenario.mode.timeout
    while not open_scenario.executions_of("f_day", slow):
        assert time.monotonic() < deadline, "the slow step never ran"
        time.sleep(0.05)
    open_scenario.fault_at = open_scenario.executions_of("f_day", slow)[0]["at"]
    open_scenario.fault_window = 0.0
    _finish(open_scenario)
    status, _, recoveries, error = open_scenario.step_row(step_id)
    assert (status, recoveries, error["kind"]) == ("failed", 0, "timeout")
    assert f"time limit of {TIME_LIMIT_SECONDS} s" in error["message"]
    assert len(open_scenario.executions_of("f_day", slow)) == 1


def test_broker_down_at_submit(open_scenario: Scenario) -> None:
    """Every run is submitted while Redis is down: the runs are recorded, their messages wait in
    the outbox, and the relay sends them once Redis is back.
    """
    down = open_scenario.rng.uniform(2.0, 4.0)
    open_scenario.start()
    open_scenario.cluster.redis.kill()
    open_scenario.mark_fault(window=down + 2.0)
    restart = threading.Timer(down, open_scenario.cluster.redis.start)
    restart.start()
    try:
        open_scenario.launch()
    finally:
        restart.join()
    open_scenario.notes["outage_seconds"] = round(down, 2)
    _finish(open_scenario)


def test_several_faults_behind_a_deep_backlog(open_scenario: Scenario) -> None:
    """A backfill without ``max_parallel`` (hundreds of steps queued in Redis, thousands with
    ``--long``), then within two seconds: a worker child killed in a step body, Redis killed and
    restarted, and every worker's database connection terminated.
    """
    open_scenario.mode = dataclasses.replace(
        open_scenario.mode, steps=open_scenario.mode.deep_backlog, max_parallel=None
    )
    open_scenario.start()
    open_scenario.launch()
    open_scenario.wait_for_successes(open_scenario.seeded_moment())
    queued, _ = broker_lengths(open_scenario.cluster.redis.url())
    open_scenario.notes["queued_messages_at_fault"] = queued  # a batch is one message (ADR 0032)
    sent = open_scenario.sent_steps()
    open_scenario.notes["sent_steps_at_fault"] = sent
    open_scenario.mark_fault(window=5.0)
    running = open_scenario.running_steps()
    assert running, "no running step to kill"
    os.kill(owner_pid(open_scenario.rng.choice(running).owner), signal.SIGKILL)
    open_scenario.cluster.redis.kill()
    database = f"fault_{open_scenario.name}"
    with psycopg.connect(open_scenario.cluster.postgres.conninfo(), autocommit=True) as admin:
        open_scenario.notes["terminated"] = _terminate_workers(admin, database)
    down = open_scenario.rng.uniform(0.5, 1.5)
    time.sleep(down)
    open_scenario.cluster.redis.start()
    open_scenario.notes["outage_seconds"] = round(down, 2)
    report = _finish(open_scenario)
    assert queued > 0
    assert sent >= open_scenario.mode.deep_backlog // 4, sent
    assert report.steps > open_scenario.mode.deep_backlog
