"""Health of the pieces a deployment needs: the database, the broker and live workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from django.db import DatabaseError, connection
from kombu import Connection

from flowstone.celery import app

BROKER_TIMEOUT_SECONDS: Final = 2
PING_TIMEOUT_SECONDS: Final = 1.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Health:
    """Each component's state; healthy when the database and the broker answer."""

    database: str
    broker: str
    workers: list[str] = field(default_factory=list)

    @property
    def is_healthy(self) -> bool:
        """Whether the database and the broker both answered."""
        return self.database == "ok" and self.broker == "ok"

    def as_dict(self) -> dict[str, Any]:
        """The JSON body of the health endpoint."""
        return {
            "status": "ok" if self.is_healthy else "unavailable",
            "database": self.database,
            "broker": self.broker,
            "workers": {"count": len(self.workers), "names": self.workers},
        }


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return f"error: {exc}".strip()[:300]
    return "ok"


def _broker(url: str) -> str:
    try:
        with Connection(url, connect_timeout=BROKER_TIMEOUT_SECONDS) as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
    except Exception as exc:  # noqa: BLE001  # any failure to connect means "down"; it is reported
        return f"error: {type(exc).__name__}: {exc}"[:300]
    return "ok"


def check_health() -> Health:
    """Ask the database, the broker and (when the broker answers) the workers."""
    database = _database()
    broker = _broker(str(app.conf.broker_url))
    workers: list[str] = []
    if broker == "ok":
        replies = app.control.ping(timeout=PING_TIMEOUT_SECONDS) or []
        workers = sorted(name for reply in replies for name in reply)
    return Health(database=database, broker=broker, workers=workers)
