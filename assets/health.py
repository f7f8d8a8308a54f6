"""Health of the pieces a deployment needs: the database, the broker and live workers.

The checks are cached for ``HEALTH_CACHE_SECONDS`` in Django's default cache (as JSON text), so a
storm of probes costs one database query and one broker connection per process per period.
Workers are the ones that recorded a heartbeat within ``WORKER_SEEN_WITHIN_SECONDS``
(``assets.services.workers``); nobody is pinged.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from django.core.cache import cache
from django.db import DatabaseError
from django.utils import timezone
from kombu import Connection

from assets import services
from flowstone.celery import app
from flowstone.conf import flowstone_settings

BROKER_TIMEOUT_SECONDS: Final = 2
CACHE_KEY: Final = "flowstone:health"
OK: Final = "ok"
FAILING: Final = "failing"
ERROR_LENGTH: Final = 300


@dataclass(frozen=True, kw_only=True, slots=True)
class Health:
    """Each component's state: ``"ok"`` or an error text, and the workers seen in the window."""

    database: str
    broker: str
    workers: list[dict[str, Any]] = field(default_factory=list)
    worker_window_seconds: float
    checked_at: str

    @property
    def is_healthy(self) -> bool:
        """Whether the database and the broker answered and a worker was seen in the window."""
        return self.database == OK and self.broker == OK and bool(self.workers)

    def summary(self) -> dict[str, str]:
        """What anyone may see: the status and each check's ``ok``/``failing``."""
        return {
            "status": "ok" if self.is_healthy else "unavailable",
            "database": OK if self.database == OK else FAILING,
            "broker": OK if self.broker == OK else FAILING,
            "workers": OK if self.workers else FAILING,
        }

    def details(self) -> dict[str, Any]:
        """What staff may see as well: error texts, worker names, the window, the check time."""
        return {
            "database": self.database,
            "broker": self.broker,
            "workers": self.workers,
            "worker_window_seconds": self.worker_window_seconds,
            "checked_at": self.checked_at,
        }


def _broker(url: str) -> str:
    try:
        with Connection(url, connect_timeout=BROKER_TIMEOUT_SECONDS) as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
    except Exception as exc:  # noqa: BLE001  # any failure to connect means "down"; it is reported
        return f"error: {type(exc).__name__}: {exc}"[:ERROR_LENGTH]
    return OK


def check_health() -> Health:
    """Ask the database (who was seen in the window) and the broker, now."""
    window = float(flowstone_settings.WORKER_SEEN_WITHIN_SECONDS)
    workers: list[dict[str, Any]] = []
    try:
        seen = services.workers_seen_within(window)
    except DatabaseError as exc:
        database = f"error: {exc}".strip()[:ERROR_LENGTH]
    else:
        database = OK
        workers = [{"name": w.hostname, "seconds_ago": round(w.seconds_ago, 3)} for w in seen]
    return Health(
        database=database,
        broker=_broker(str(app.conf.broker_url)),
        workers=workers,
        worker_window_seconds=window,
        checked_at=timezone.now().isoformat(),
    )


def cached_health() -> Health:
    """``check_health()``, reused for ``HEALTH_CACHE_SECONDS`` (0: checked every time)."""
    seconds = flowstone_settings.HEALTH_CACHE_SECONDS
    if seconds > 0:
        stored = cache.get(CACHE_KEY)
        if isinstance(stored, str):
            return Health(**json.loads(stored))
    health = check_health()
    if seconds > 0:
        cache.set(CACHE_KEY, json.dumps(asdict(health)), timeout=seconds)
    return health


def _forget_cached_health() -> None:
    cache.delete(CACHE_KEY)


# A cached report was made under the old window; override_settings must not see it.
flowstone_settings.on_reload(_forget_cached_health)
