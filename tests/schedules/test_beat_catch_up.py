"""A real ``celery beat`` is stopped for several ticks; at its next tick the missed ones run.

Beat and the worker run under libfaketime with a shared clock file (``FAKETIME_TIMESTAMP_FILE``):
the test moves both clocks forward a minute at a time, so an every-minute cron ticks every few
seconds. Nothing else is faked: beat reads its periodic tasks from PostgreSQL and sends real
messages through Redis, and the worker evaluates them and completes the runs.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django_celery_beat.models import PeriodicTask  # type: ignore[import-untyped]
from pytest_django import Settings

from assets.models import Run
from flowstone.celery import app
from schedules.models import Tick
from tests.workers import Services, worker_stack

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DEFINITIONS = "tests.pipelines.catch_up_flow"
DATABASE_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
SCHEDULE = "minutely_catch_up"
WAIT = 60
SWEEPERS = re.compile(r"recover_stale_steps|relay_outbox|expire_approvals")
SECOND_IN_MINUTE = 20
"""Each fake minute is entered at this second, leaving beat and the worker 40 s of it."""


class SharedClock:
    """The fake time of beat and the worker: real time plus an offset read from a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
        self.base = start + dt.timedelta(minutes=2)

    def env(self) -> dict[str, str]:
        """The environment that puts a process on this clock."""
        return {
            "LD_PRELOAD": str(LIBFAKETIME),
            "FAKETIME_TIMESTAMP_FILE": str(self.path),
            "FAKETIME_NO_CACHE": "1",
        }

    def minute(self, n: int) -> dt.datetime:
        """The start of fake minute ``n``."""
        return self.base + dt.timedelta(minutes=n)

    def enter(self, n: int) -> None:
        """Move the fake clock to second ``SECOND_IN_MINUTE`` of minute ``n`` (only forward)."""
        target = self.minute(n) + dt.timedelta(seconds=SECOND_IN_MINUTE)
        offset = round((target - dt.datetime.now(dt.UTC)).total_seconds())
        staged = self.path.with_suffix(".new")
        staged.write_text(f"{offset:+d}\n")
        staged.replace(self.path)  # atomically: a process never reads half a line


@pytest.fixture
def clock(tmp_path: Path) -> SharedClock:
    if not LIBFAKETIME.exists():
        pytest.skip("libfaketime is not installed")
    shared = SharedClock(tmp_path / "clock")
    shared.enter(0)
    return shared


@pytest.fixture
def stack(settings: Settings, tmp_path: Path, clock: SharedClock) -> Iterator[Services]:
    with worker_stack(settings, tmp_path, DEFINITIONS) as started:
        started.extra_env.update(clock.env())
        yield started


def _eventually(check: Callable[[], object], what: str, stack: Services) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            logs = {p.name: _ours(p.read_text())[-4000:] for p in stack.data_dir.glob("*.log")}
            pytest.fail(f"timed out waiting for {what}:\n{logs}")
        time.sleep(0.2)


def _ours(log: str) -> str:
    """A process log without the lines of the settings' every-second beat entries."""
    return "\n".join(line for line in log.splitlines() if not SWEEPERS.search(line))


def _ticked(at: dt.datetime) -> Callable[[], bool]:
    return lambda: Tick.objects.filter(name=SCHEDULE, tick_time=at).exists()


def _history() -> list[tuple[dt.datetime, str, bool]]:
    return [
        (t.tick_time, t.status, t.is_catch_up)
        for t in Tick.objects.filter(name=SCHEDULE).order_by("tick_time")
    ]


def test_ticks_missed_while_beat_was_down_run_once_each_oldest_first(
    stack: Services, clock: SharedClock
) -> None:
    stack.start_worker("w1")
    beat = stack.start_beat(scheduler=DATABASE_SCHEDULER)
    _eventually(
        lambda: PeriodicTask.objects.filter(name=f"flowstone.schedule.{SCHEDULE}").exists(),
        "beat to sync the schedule",
        stack,
    )
    # Beat's first tick: the first minute after it synced the schedule (no history: no catch-up).
    clock.enter(1)
    _eventually(_ticked(clock.minute(1)), "the first tick", stack)
    clock.enter(2)
    _eventually(_ticked(clock.minute(2)), "the second tick", stack)

    stack.kill(beat, signal.SIGTERM)
    clock.enter(8)  # minutes 3 to 7 pass without beat
    stack.start_beat(scheduler=DATABASE_SCHEDULER)
    _eventually(_ticked(clock.minute(8)), "the tick after beat came back", stack)

    assert _history() == [
        (clock.minute(1), "requested", False),
        (clock.minute(2), "requested", False),
        (clock.minute(4), "missed", True),  # minutes 3 and 4: beyond the bound of 3
        (clock.minute(5), "requested", True),
        (clock.minute(6), "requested", True),
        (clock.minute(7), "requested", True),
        (clock.minute(8), "requested", False),
    ]
    ticks = list(Tick.objects.filter(name=SCHEDULE, run__isnull=False).order_by("tick_time"))
    assert [t.run_key for t in ticks] == [clock.minute(n).isoformat() for n in (1, 2, 5, 6, 7, 8)]
    assert [t.local_tick_time for t in ticks] == [t.run_key for t in ticks]  # a UTC schedule
    missed = Tick.objects.get(name=SCHEDULE, status="missed")
    assert missed.run_key == f"missed:{clock.minute(4).isoformat()}"
    assert (
        "older than the catch-up window (10 minutes) or beyond max_catch_up_ticks (3)"
        in missed.reason
    )
    # Oldest first: the runs were created in tick order, and the worker completed each once.
    runs = [t.run_id for t in ticks]
    assert list(Run.objects.order_by("created_at", "id").values_list("pk", flat=True)) == runs
    _eventually(
        lambda: Run.objects.filter(status="success").count() == len(runs), "the runs", stack
    )

    # The same tick's message delivered again reaches the worker and starts nothing.
    before = _history()
    sent = app.send_task(
        "flowstone.tick_schedule", kwargs={"schedule": SCHEDULE}, queue="flowstone"
    )
    log = stack.data_dir / "w1.log"
    done = f"[{sent.id}] succeeded"
    _eventually(lambda: done in log.read_text(), "the message sent again", stack)
    assert f"{done}" in next(line for line in log.read_text().splitlines() if "'duplicate'" in line)
    assert _history() == before
    assert Run.objects.count() == len(runs)
