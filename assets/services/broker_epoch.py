"""The broker's epoch: noticing within one relay tick that the broker lost the messages it held.

A sent step (``dispatched_at`` set) is never sent again by the relay, and the backstop
(``republish_quiet``) only acts after ``REQUEUE_AFTER_SECONDS``. But a Redis that restarts
without persistence, is flushed, or fails over to a replica that missed the last writes drops
every message it held at once, including those reserved by workers (its unacked hash).

So the relay keeps an epoch per broker: a random token stored in the broker's own database (the
key ``EPOCH_KEY``) and in ``BrokerEpoch``, with the Redis server's ``run_id``. Each tick reads
both back in one round trip (``GET`` and ``INFO server``, pipelined). When the marker is gone
or holds another token, or the server's ``run_id`` changed (a restart or a failover, which may
lose the last writes even with persistence), a new epoch begins: in one transaction the epoch
row moves to what the broker holds now (a conditional UPDATE, so one relay wins) and every
queued step already sent becomes unsent again; the relay sends them at once. Duplicates cost a
claim attempt each: a step is claimed once.

The marker is written (``SET NX``) before the steps are marked unsent, and the steps are marked
after the broker was seen in its new state, so every message sent before that is covered; a
later loss removes the marker or changes the ``run_id`` again. A relay that dies between
writing the marker and its commit leaves a marker the database does not know: the next tick
starts the epoch. The first check of a broker (no row yet) only records the epoch.

Only Redis is checked. RabbitMQ keeps Celery's durable queues and persistent messages across a
restart and requeues unacknowledged ones; a message lost there anyway waits for the backstop.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Any, Final

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from kombu.exceptions import OperationalError
from redis.exceptions import ResponseError

from assets.models import BrokerEpoch, Materialization
from flowstone.status import StepStatus

logger = logging.getLogger(__name__)

EPOCH_KEY: Final = "flowstone:broker-epoch"
CHECKED_DRIVERS: Final = frozenset({"redis"})
IDENTITY_LENGTH: Final = 255


def broker_identity(uri: str) -> str:
    """How ``BrokerEpoch`` names a broker: its URL, password masked (hashed if very long)."""
    if len(uri) <= IDENTITY_LENGTH:
        return uri
    return "sha256:" + hashlib.sha256(uri.encode()).hexdigest()


def check_broker_epoch() -> int:
    """Begin a new epoch if the broker lost or may have lost its messages; return steps unsent.

    Costs one broker round trip and one indexed query when nothing changed. A broker that is
    not Redis, or cannot be reached (the relay's publish reports that), counts as unchanged.
    """
    from flowstone.celery import app  # noqa: PLC0415  # the Celery app loads on first use

    pooled: Any = app.pool.acquire(block=True)  # a kombu Connection (the stubs say Producer)
    with pooled as conn:
        if conn.transport.driver_type not in CHECKED_DRIVERS:
            return 0
        errors: tuple[type[BaseException], ...] = (
            OperationalError,
            OSError,
            *conn.connection_errors,
            *conn.channel_errors,
        )
        try:
            channel: Any = conn.default_channel
            with channel.conn_or_acquire() as client:
                return _check(client, broker_identity(conn.as_uri()))
        except errors as exc:
            logger.info("cannot check the broker's epoch (%s: %s)", type(exc).__name__, exc)
            return 0


def _check(client: Any, broker: str) -> int:
    known = BrokerEpoch.objects.filter(broker=broker).values_list("token", "server_run_id").first()
    token, run_id = _read(client, known)
    if known is not None and known == (token, run_id):
        return 0
    if token is None:
        client.set(EPOCH_KEY, secrets.token_hex(16), nx=True)
        token, run_id = _read(client, known)
        if token is None:  # lost again meanwhile: the next tick begins the epoch
            return 0
    if known is None:
        BrokerEpoch.objects.get_or_create(
            broker=broker, defaults={"token": token, "server_run_id": run_id}
        )
        logger.info("broker %s: first epoch recorded", broker)
        return 0
    return _begin_epoch(broker, known=known, token=token, run_id=run_id)


def _read(client: Any, known: tuple[str, str] | None) -> tuple[str | None, str]:
    """The marker's token (``None``: gone) and the server's ``run_id``.

    A server that refuses ``INFO`` (renamed, or not allowed to this user) keeps the ``run_id``
    already known (empty at first): only the marker is checked then.
    """
    pipeline = client.pipeline(transaction=False)
    pipeline.get(EPOCH_KEY)
    pipeline.info("server")
    marker, info = pipeline.execute(raise_on_error=False)
    if isinstance(marker, Exception):
        raise marker
    if isinstance(info, Exception) and not isinstance(info, ResponseError):
        raise info
    token = marker.decode() if isinstance(marker, bytes) else marker
    if isinstance(info, dict) and info.get("run_id"):
        return token, str(info["run_id"])
    return token, known[1] if known else ""


def _begin_epoch(broker: str, *, known: tuple[str, str], token: str, run_id: str) -> int:
    """Move the epoch row from ``known`` to what the broker holds; mark sent steps unsent."""
    with transaction.atomic():
        won = BrokerEpoch.objects.filter(
            broker=broker, token=known[0], server_run_id=known[1]
        ).update(
            token=token, server_run_id=run_id, started_at=timezone.now(), losses=F("losses") + 1
        )
        if not won:  # another relay began this epoch
            return 0
        unsent = Materialization.objects.filter(
            status=StepStatus.QUEUED, dispatched_at__isnull=False
        ).update(dispatched_at=None)
    cause = (
        "its epoch marker is gone or replaced (it lost its data)"
        if token != known[0]
        else "its server changed (a restart or a failover; run_id "
        f"{known[1] or '?'} -> {run_id or '?'})"
    )
    logger.warning(
        "broker %s: %s; %d sent step(s) whose messages may be lost are sent again",
        broker,
        cause,
        unsent,
    )
    return unsent
