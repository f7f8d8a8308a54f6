"""Keeping a running step's lease alive while its function runs."""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING

from django.db import DatabaseError, connection

from assets import services
from flowstone.conf import flowstone_settings

if TYPE_CHECKING:
    from collections.abc import Iterator

logger = logging.getLogger(__name__)


@contextmanager
def lease_heartbeat(
    step_id: int, owner: str, attempt: int | None = None
) -> Iterator[threading.Event]:
    """Renew the step's lease every third of its length until the block ends.

    The yielded event is set if the lease was lost (the sweeper took the step back); the step's
    completion will then lose its conditional update and change nothing.
    """
    stop = threading.Event()
    lost = threading.Event()
    interval = flowstone_settings.STEP_LEASE_SECONDS / 3

    def renew() -> None:
        try:
            while not stop.wait(interval):
                try:
                    renewed = services.renew_lease(step_id, owner, attempt)
                except DatabaseError:
                    # A database blip: drop the broken connection and try again at the next
                    # beat, while the lease (three beats long) still holds.
                    logger.warning("could not renew the lease of step %s; retrying", step_id)
                    connection.close()
                    continue
                if not renewed:
                    lost.set()
                    logger.warning("lost the lease of step %s", step_id, extra={"step": step_id})
                    return
        finally:
            connection.close()

    thread = threading.Thread(target=renew, name=f"flowstone-lease-{step_id}", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join()
