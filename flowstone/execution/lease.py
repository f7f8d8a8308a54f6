"""Keeping a running step's lease alive while its function runs.

One thread per process renews the leases of all the steps the process runs (a batch's steps one
after another, or a thread pool's at once), each every third of its lease from when it started.
Starting and joining a thread for every step cost more than a no-op step's own work; the keeper
is started on first use in each process (after a fork too) and closes its database connection
whenever no step runs, so an idle process holds none.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from django.db import DatabaseError, connection

from assets import services
from flowstone.conf import flowstone_settings

if TYPE_CHECKING:
    from collections.abc import Iterator

logger = logging.getLogger(__name__)

BEATS_PER_LEASE: Final = 3


@dataclass(eq=False, slots=True)
class Lease:
    """One running step's lease as the keeper renews it."""

    step_id: int
    owner: str
    attempt: int | None
    interval: float
    due: float
    lost: threading.Event = field(default_factory=threading.Event)


class _Keeper:
    """The thread of this process that renews its running steps' leases when they are due."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """A fresh keeper: at start, and in a forked child (no thread, no parent's leases)."""
        self._lock = threading.Lock()
        self._leases: set[Lease] = set()
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._wakes_at = float("inf")
        """When the keeper wakes next (``inf`` while idle): a lease due later needs no wake."""
        self._connected = False
        """Whether the keeper's thread may hold a database connection (it renewed since idle)."""

    def add(self, lease: Lease) -> None:
        """Renew ``lease`` from now on (starting the thread in this process if needed)."""
        with self._lock:
            self._leases.add(lease)
            thread = self._thread
            if thread is None or self._pid != os.getpid() or not thread.is_alive():
                self._pid, self._wakes_at = os.getpid(), float("inf")
                self._thread = threading.Thread(
                    target=self._run, name="flowstone-leases", daemon=True
                )
                self._thread.start()
            wake = lease.due < self._wakes_at
        if wake:
            self._changed.set()

    def remove(self, lease: Lease) -> None:
        """Stop renewing ``lease`` (its step ended, or its block left)."""
        with self._lock:
            self._leases.discard(lease)
            wake = not self._leases and self._connected
        if wake:
            self._changed.set()  # the keeper closes its connection now, not at the next beat

    def _run(self) -> None:
        while True:
            try:
                self._beat()
            except Exception:  # the keeper must outlive any one failure
                logger.exception("the lease keeper failed; it goes on")
                self._close()
                time.sleep(1)

    def _close(self) -> None:
        try:
            connection.close()
        except Exception:  # a broken connection is dropped either way
            logger.warning("could not close the lease keeper's connection", exc_info=True)

    def _beat(self) -> None:
        """Renew what is due, then wait until the next lease is due (or for a change)."""
        with self._lock:
            leases = list(self._leases)
            if not leases:
                self._wakes_at, self._connected = float("inf"), False
        if not leases:
            self._close()  # this thread's own connection; none is held while idle
            self._changed.wait()
            self._changed.clear()
            return
        for lease in leases:
            if lease.due <= time.monotonic():
                self._connected = True
                self._renew(lease)
        with self._lock:
            self._wakes_at = min((lease.due for lease in self._leases), default=0.0)
        self._changed.wait(max(0.0, self._wakes_at - time.monotonic()))
        self._changed.clear()

    def _renew(self, lease: Lease) -> None:
        lease.due = time.monotonic() + lease.interval
        try:
            renewed = services.renew_lease(lease.step_id, lease.owner, lease.attempt)
        except DatabaseError:
            # A database blip: drop the broken connection and try again at the next beat, while
            # the lease (three beats long) still holds.
            logger.warning("could not renew the lease of step %s; retrying", lease.step_id)
            self._close()
            return
        except Exception:
            logger.exception("renewing the lease of step %s failed; retrying", lease.step_id)
            self._close()
            return
        with self._lock:
            current = lease in self._leases
            if not renewed and current:
                self._leases.discard(lease)
        if not renewed and current:  # a step that just ended is not "lost"
            lease.lost.set()
            logger.warning(
                "lost the lease of step %s", lease.step_id, extra={"step": lease.step_id}
            )


_KEEPER: Final = _Keeper()
os.register_at_fork(after_in_child=_KEEPER.reset)


def hold_lease(step_id: int, owner: str, attempt: int | None = None) -> Lease:
    """Start renewing a step's lease now (every third of its length); ``drop_lease`` stops it.

    For a step claimed before it runs (a batch's next step, claimed by the previous success):
    its lease is kept from its claim on, and ``lease_heartbeat(..., held=...)`` takes it over.
    """
    interval = flowstone_settings.STEP_LEASE_SECONDS / BEATS_PER_LEASE
    lease = Lease(
        step_id=step_id,
        owner=owner,
        attempt=attempt,
        interval=interval,
        due=time.monotonic() + interval,
    )
    _KEEPER.add(lease)
    return lease


def drop_lease(lease: Lease) -> None:
    """Stop renewing ``lease``."""
    _KEEPER.remove(lease)


@contextmanager
def lease_heartbeat(
    step_id: int, owner: str, attempt: int | None = None, *, held: Lease | None = None
) -> Iterator[threading.Event]:
    """Renew the step's lease every third of its length until the block ends.

    ``held``: the lease ``hold_lease`` is already renewing for this step. The yielded event is
    set if the lease was lost (the sweeper took the step back); the step's completion will then
    lose its conditional update and change nothing.
    """
    lease = held if held is not None else hold_lease(step_id, owner, attempt)
    try:
        yield lease.lost
    finally:
        drop_lease(lease)
