"""Poison messages: whatever a worker cannot read is recorded, dropped, and the worker goes on.

Celery and kombu let some malformed deliveries escape into the worker's event loop, and an
exception there stops the worker (celery/celery#7975, #4308); a broker that redelivers the
message stops the next worker too. Two seams close that, both for task queues only:

- ``PoisonProofConsumer`` (``CELERY_WORKER_CONSUMER``) guards Celery's task handler: anything but
  a broker error raised while it reads one message (headers or body Celery's strategy cannot use)
  records the message and rejects it without requeueing. Undecodable bodies, which Celery only
  logs and acknowledges, are recorded too.
- On Redis its read connection uses ``RedisTransport``, whose channel checks each item it pops
  from a queue's list before kombu builds a message from it: an item that is not JSON, or not an
  envelope kombu can read (``LPUSH flowstone '{}'``), is recorded and dropped.

Every poison message becomes one ``RejectedMessage`` row, its body cut to ``MAX_RECORDED_BODY``.
The ``[validation_error]`` prefix of the reason matches the other rejections.
"""

from __future__ import annotations

import json
import logging
from queue import Empty
from typing import TYPE_CHECKING, Any, Final

from celery.worker.consumer import Consumer
from django.db import DatabaseError, close_old_connections
from kombu.transport import redis
from vine import promise

from flowstone.celery import MAX_RECORDED_BODY

if TYPE_CHECKING:
    from collections.abc import Callable

    from kombu import Connection
    from kombu.message import Message

logger = logging.getLogger(__name__)

MAX_DETAIL: Final = 500
"""The longest exception text kept in a rejection's reason."""
REDIS_SCHEMES: Final = frozenset({"redis", "rediss"})


def bounded_body(body: object) -> str:
    """A printable copy of a message body (or queue item), at most ``MAX_RECORDED_BODY`` long."""
    if isinstance(body, bytes | str):
        return repr(body[:MAX_RECORDED_BODY])[:MAX_RECORDED_BODY]
    try:
        text = json.dumps(body, default=repr)
    except (TypeError, ValueError):
        text = repr(body)
    return text[:MAX_RECORDED_BODY]


def _detail(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_DETAIL]


def _content_type(message: Message) -> str:
    return str(getattr(message, "content_type", "") or "")


def broker_errors(*groups: tuple[type[BaseException], ...]) -> tuple[type[BaseException], ...]:
    """The broker's own errors, left to kombu and Celery to handle (reconnect, or stop).

    kombu counts ``KeyError`` among Redis's connection errors, and Celery reconnects on one, which
    puts an unacknowledged message back on the queue: a message that raises ``KeyError`` (a task
    header without an ``id``) would come back forever. A ``KeyError`` is the message's fault here.
    """
    return tuple(e for group in groups for e in group if not issubclass(KeyError, e))


def record_poison(
    reason: str, body: object, *, content_type: str = "", headers: Any = None
) -> None:
    """Record one message no task can run, with a bounded copy of ``body``.

    Called in the worker's main process, between messages: a database error is logged with the
    body, never raised, so it cannot stop the worker either.
    """
    from assets import services  # noqa: PLC0415  # only in a running worker

    headers = headers if isinstance(headers, dict) else {}
    payload = bounded_body(body)
    try:
        close_old_connections()
        services.record_rejection(
            reason=reason,
            task_name=str(headers.get("task", ""))[:255],
            task_id=str(headers.get("id", ""))[:255],
            content_type=str(content_type or "")[:255],
            payload=payload,
        )
    except DatabaseError:
        logger.exception("could not record a rejected message (%s): %s", reason, payload)


class RedisChannel(redis.Channel):
    """A Redis channel that records and drops queue items kombu cannot make a message of."""

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        """Consume from ``queue``, checking each envelope before kombu builds its message."""
        tag = super().basic_consume(queue, *args, **kwargs)
        callbacks = self.connection._callbacks  # noqa: SLF001  # where kombu keeps a queue's consumer
        assert callbacks is not None  # noqa: S101  # basic_consume has just set it
        deliver = callbacks[queue]

        def checked(raw: Any) -> None:
            try:
                self._check_envelope(raw)
            except Exception as exc:  # whatever kombu would have raised
                logger.exception("dropped a malformed item of queue %s", queue)
                headers = raw.get("headers") if isinstance(raw, dict) else None
                record_poison(
                    f"[validation_error] not a message envelope: {_detail(exc)}",
                    raw,
                    headers=headers,
                )
                return
            deliver(raw)

        callbacks[queue] = checked
        return tag

    def _check_envelope(self, raw: Any) -> None:
        """Raise if kombu cannot make a message of ``raw``, or cannot acknowledge one."""
        message = self.Message(raw, channel=self)  # what the consumer builds first
        info = message.delivery_info
        if not isinstance(message.delivery_tag, str) or not isinstance(info, dict):
            raise TypeError("delivery_tag must be a string and delivery_info an object")
        if not isinstance(info.get("exchange"), str) or not isinstance(
            info.get("routing_key"), str
        ):
            raise TypeError("delivery_info must name an exchange and a routing key")

    def _brpop_read(self, **options: Any) -> Any:
        """Deliver the item BRPOP returned; an item that is not JSON is recorded and dropped."""
        try:
            return super()._brpop_read(**options)  # type: ignore[misc]  # not in kombu's stubs
        except self._not_poison:
            raise
        except Exception as exc:  # noqa: BLE001  # the item was popped: record it, go on
            self._drop_undecodable(exc)
            return True

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        """Pop one item of ``queue`` (polling); an item that is not JSON is recorded and dropped."""
        try:
            return super()._get(queue)
        except self._not_poison:
            raise
        except Exception as exc:  # the item was popped: record it, go on
            self._drop_undecodable(exc)
            raise Empty from exc

    @property
    def _not_poison(self) -> tuple[type[BaseException], ...]:
        """No message left, or the broker itself failing: for kombu and Celery to handle."""
        transport = self.connection
        return (Empty, *broker_errors(transport.connection_errors, transport.channel_errors))

    def _drop_undecodable(self, exc: Exception) -> None:
        logger.error("dropped a queue item that is not a message: %s", _detail(exc))
        doc = getattr(exc, "doc", None)  # json.JSONDecodeError keeps the text it could not read
        record_poison(
            f"[validation_error] not a message: {_detail(exc)}",
            doc if isinstance(doc, str) else "(not available)",
        )


class RedisTransport(redis.Transport):
    """kombu's Redis transport with ``RedisChannel``; used only to consume."""

    Channel = RedisChannel


def poison_proof(connection: Connection) -> Connection:
    """``connection`` itself, or, for Redis, a copy that uses ``RedisTransport``."""
    if connection.transport_cls not in REDIS_SCHEMES:
        return connection
    guarded = connection.clone(transport=RedisTransport)
    if not isinstance(guarded.transport, RedisTransport):  # "redis+socket://" names its own
        logger.warning("cannot guard this Redis URL against malformed queue items")
        return connection
    return guarded


class PoisonProofConsumer(Consumer):
    """Celery's consumer, except that no single message can stop it."""

    connection_errors: tuple[type[BaseException], ...]  # set by Consumer.__init__
    channel_errors: tuple[type[BaseException], ...]

    def connection_for_read(self, heartbeat: float | None = None) -> Connection:
        """The broker connection tasks are consumed from (``RedisTransport`` on Redis)."""
        return self.ensure_connected(
            poison_proof(self.app.connection_for_read(heartbeat=heartbeat))
        )

    def create_task_handler(self, promise: type[promise] = promise) -> Callable[..., Any]:
        """Celery's task handler, which records and rejects a message it raises for."""
        handle = super().create_task_handler(promise)
        not_poison = broker_errors(self.connection_errors, self.channel_errors)

        def on_task_received(message: Message) -> None:
            try:
                handle(message)
            except not_poison:
                raise
            except Exception as exc:  # noqa: BLE001  # a poison message, whatever it broke
                self.on_poison_message(message, exc)

        return on_task_received

    def on_poison_message(self, message: Message, exc: Exception) -> None:
        """Record a message Celery could not handle and drop it (reject, no requeue)."""
        logger.error("dropped a task message the worker cannot read: %s", _detail(exc))
        record_poison(
            f"[validation_error] unreadable task message: {_detail(exc)}",
            message.body,
            content_type=_content_type(message),
            headers=getattr(message, "headers", None),
        )
        if not message.acknowledged:
            message.reject_log_error(logger, self.connection_errors, requeue=False)

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        """Record a message whose body does not decode; Celery logs and acknowledges it."""
        record_poison(
            f"[validation_error] undecodable message ({_content_type(message)[:100]}): "
            f"{_detail(exc)}",
            message.body,
            content_type=_content_type(message),
            headers=getattr(message, "headers", None),
        )
        super().on_decode_error(message, exc)
