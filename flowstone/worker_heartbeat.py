"""A worker records that it is alive, so ``/health/`` can tell a fleet from no fleet.

``WorkerHeartbeatStep`` is a Celery worker bootstep (added in ``flowstone.celery``). When the
worker starts it records a heartbeat at once, then a thread records one every
``WORKER_HEARTBEAT_SECONDS``; a warm shutdown deletes the worker's row, so a fleet stopped cleanly
is reported gone at once, and a killed worker is reported gone once ``WORKER_SEEN_WITHIN_SECONDS``
pass without a heartbeat.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps
from django.db import DatabaseError, connection

from flowstone.conf import flowstone_settings

logger = logging.getLogger(__name__)


class WorkerHeartbeat:
    """Records worker ``hostname`` alive now and every ``WORKER_HEARTBEAT_SECONDS``."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> None:
        from assets import services  # noqa: PLC0415  # Django is set up once the worker starts

        try:
            services.record_worker_heartbeat(self.hostname)
        except Exception:  # the beat must outlive any failure, or /health/ lies
            # A database blip (or anything else): drop the connection; the next beat tries
            # again, and the window /health/ allows spans several beats.
            logger.warning(
                "could not record the heartbeat of worker %s", self.hostname, exc_info=True
            )
            connection.close()

    def _loop(self) -> None:
        try:
            while not self._stop.wait(flowstone_settings.WORKER_HEARTBEAT_SECONDS):
                self._record()
        finally:
            connection.close()

    def start(self) -> None:
        """Record a heartbeat now, then keep recording them from a thread."""
        self._record()
        connection.close()  # the thread has its own; the worker's main thread keeps none open
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, name="flowstone-worker-heartbeat", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop recording and delete this worker's row (it is going away cleanly)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        from assets import services  # noqa: PLC0415

        try:
            services.forget_worker(self.hostname)
        except DatabaseError:
            logger.warning(
                "could not forget worker %s; it is reported gone once its window passes",
                self.hostname,
            )
        finally:
            connection.close()


class WorkerHeartbeatStep(bootsteps.StartStopStep):
    """The worker bootstep that runs a ``WorkerHeartbeat`` (after the pool has started)."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.heartbeat = WorkerHeartbeat(str(parent.hostname))

    def start(self, parent: Any) -> None:
        """Start recording heartbeats."""
        self.heartbeat.start()

    def stop(self, parent: Any) -> None:
        """Stop recording and forget this worker (warm shutdown)."""
        self.heartbeat.stop()

    def terminate(self, parent: Any) -> None:
        """Stop recording and forget this worker (cold shutdown)."""
        self.heartbeat.stop()
