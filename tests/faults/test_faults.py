"""Fault scenarios: one fault at a seeded moment, then quiescence, then THE CHECKER.

Each test starts two prefork workers and beat on private servers, launches a seed run, a
backfill of ``f_day`` (36 days fast, 1,000 with ``--long``, ``max_parallel=6``) and fan-in runs
of ``f_week``, injects its fault, waits until every run ended and the broker drained, and
asserts that nothing was lost or doubled (``tests/faults/checker.py``). Each prints a line:
scenario, steps, lost, doubled, executions/requests, recovery time.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from tests.faults.checker import Expected, Report
from tests.faults.harness import (
    HARNESS_APPLICATION,
    MAX_RECOVERIES,
    Scenario,
    fan_in_weeks,
    owner_pid,
    week_key,
)
from tests.faults.pipeline import (
    CRASH_AFTER_COMMIT,
    CRASH_AFTER_STORE,
    DUPLICATE_MARKER,
    FIRST_DAY,
    POISON_MARKER,
    body_seconds,
)

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = [pytest.mark.fault]

TERMINATE_BURST = 1.5
NEWEST_CLAIM = 0.03
MIN_SLEEP_LEFT = 0.04


def _finish(scenario: Scenario) -> Report:
    scenario.wait_quiescent()
    report = scenario.check()
    assert report.lost == 0, report.violations[:20]
    assert report.doubled == 0, report.violations[:20]
    assert not report.violations, report.violations[:20]
    assert report.effects == report.steps - len(scenario.expected)
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
    """Kill -9 the worker child of a step claimed moments ago; return (step, started, lease)."""
    deadline = time.monotonic() + scenario.mode.timeout
    while time.monotonic() < deadline:
        for step in scenario.running_steps():
            if time.time() - step.started < NEWEST_CLAIM:
                scenario.mark_fault()
                os.kill(owner_pid(step.owner), signal.SIGKILL)
                return step.id, step.started, step.lease_expires
        time.sleep(0.002)
    pytest.fail("no freshly claimed step to kill")


def test_kill_9_worker_child(open_scenario: Scenario) -> None:
    def inject(scenario: Scenario) -> None:
        deadline = time.monotonic() + scenario.mode.timeout
        while time.monotonic() < deadline:
            in_body = [
                step
                for step in scenario.running_steps()
                if _sleep_left(scenario, step.partition_key, step.attempt) > MIN_SLEEP_LEFT
            ]
            if in_body:  # its body has started and still sleeps: kill it in the middle
                victim = scenario.rng.choice(in_body)
                scenario.mark_fault()
                os.kill(owner_pid(victim.owner), signal.SIGKILL)
                scenario.notes["victim"] = victim.id
                return
            time.sleep(0.01)
        pytest.fail("no step in its body to kill")

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


def test_crash_after_success_commit_before_ack(open_scenario: Scenario) -> None:
    def inject(scenario: Scenario) -> None:
        scenario.mark_fault(window=2.0)
        scenario.arm(CRASH_AFTER_COMMIT)

    _run(open_scenario, inject)
    crashes = open_scenario.crashes()
    assert len(crashes) == 1
    assert crashes[0].startswith("after commit of f_")


def test_crash_after_output_write_before_commit(open_scenario: Scenario) -> None:
    def inject(scenario: Scenario) -> None:
        scenario.mark_fault(window=2.0)
        scenario.arm(CRASH_AFTER_STORE)

    _run(open_scenario, inject)
    crashes = open_scenario.crashes()
    assert len(crashes) == 1
    assert crashes[0].startswith("after store of f_")


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
        deadline = time.monotonic() + scenario.mode.timeout
        while time.monotonic() < deadline:
            in_body = [
                step
                for step in scenario.running_steps()
                if _sleep_left(scenario, step.partition_key, step.attempt) > MIN_SLEEP_LEFT
            ]
            if in_body:
                victim = scenario.rng.choice(in_body)
                pid = owner_pid(victim.owner)
                scenario.mark_fault(window=_stopped_for(scenario) + 1.0)
                os.kill(pid, signal.SIGSTOP)
                try:
                    _wait_taken_over(scenario, victim.id, victim.attempt)
                finally:
                    os.kill(pid, signal.SIGCONT)
                scenario.notes["victim"] = victim.id
                return
            time.sleep(0.01)
        pytest.fail("no step in its body to stop")

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
