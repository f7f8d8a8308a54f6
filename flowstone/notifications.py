"""Notification channels: where approval and run-status notices go (email, an HTTP webhook).

``FLOWSTONE["NOTIFICATION_CHANNELS"]`` maps a channel name to ``{"CLASS": dotted path,
"OPTIONS": {...}}``; the class is built with the options as keyword arguments and its
``send(notice)`` raises ``DeliveryError`` (or anything) when the notice did not get through, so
the outbox tries again later. ``APPROVAL_EMAIL_RECIPIENTS`` still works: when it is set and no
channel is named ``email``, an ``EmailChannel`` of those recipients is that channel.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable
from urllib.parse import urlsplit

from django.core.mail import get_connection, send_mail
from django.utils.module_loading import import_string

from flowstone.conf import DEFAULTS, flowstone_settings
from flowstone.errors import DefinitionError, FlowStoneError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

EMAIL_CHANNEL: Final = "email"
DEFAULT_TIMEOUT_SECONDS: Final = 5.0
DEFAULT_EMAIL_TIMEOUT_SECONDS: Final = 10.0
MAX_TIMEOUT_SECONDS: Final = 30.0
"""The longest a send may take: a channel's ``timeout`` is at most this; one without gets this."""
MAX_FIELD_CHARS: Final = 2000
MAX_HEADER_CHARS: Final = 150
MAX_LABEL_CHARS: Final = 100
MAX_FIELDS: Final = 10
MAX_CHANNEL_NAME_LENGTH: Final = 128
MAX_NOTIFICATION_EVENT_LENGTH: Final = 160
"""Room for ``sensor:<name>`` (names are at most 128 characters) and the approval events."""
MAX_NOTIFICATION_KEY_LENGTH: Final = 512
"""Room for ``sensor:<name>:<tick key>`` (128 and 255 characters at most)."""


class DeliveryError(FlowStoneError):
    """A channel could not deliver a notice (the endpoint failed, refused or timed out)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Notice:
    """What a notification says, rendered once when it is recorded (JSON-safe fields only)."""

    event: str
    title: str
    text: str
    asset: str = ""
    partition: str = ""
    status: str = ""
    run_id: str = ""
    link: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The notice as stored in the outbox row."""
        return {
            "event": self.event,
            "title": self.title,
            "text": self.text,
            "asset": self.asset,
            "partition": self.partition,
            "status": self.status,
            "run_id": self.run_id,
            "link": self.link,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Notice:
        """Rebuild a stored notice."""
        return cls(**{**data, "extra": dict(data.get("extra") or {})})


@runtime_checkable
class Channel(Protocol):
    """Delivers a notice somewhere; raises when it did not get through."""

    def send(self, notice: Notice) -> None:
        """Deliver ``notice`` once, or raise."""
        ...


class EmailChannel:
    """Email through Django's mail framework (``EMAIL_*`` settings) to fixed recipients.

    ``timeout`` bounds the SMTP connection's socket operations (Django's ``EMAIL_TIMEOUT`` is
    unbounded by default) and, through ``send_within``, the whole send.
    """

    def __init__(
        self,
        *,
        recipients: Sequence[str],
        from_email: str | None = None,
        timeout: float = DEFAULT_EMAIL_TIMEOUT_SECONDS,
    ) -> None:
        if isinstance(recipients, str) or not recipients:
            raise DefinitionError("EmailChannel needs a non-empty list of recipients")
        self.recipients = [str(r) for r in recipients]
        self.from_email = from_email
        self.timeout = checked_timeout(timeout, what="EmailChannel")

    def send(self, notice: Notice) -> None:
        """Send one email; an SMTP error propagates (the outbox retries)."""
        connection = get_connection(timeout=self.timeout)
        send_mail(
            notice.title, notice.text, self.from_email, self.recipients, connection=connection
        )


class WebhookChannel:
    """POST a JSON body shaped for Slack's incoming webhooks (``text`` plus ``blocks``).

    Any 2xx answer is a delivery; anything else, a connection error or no answer within
    ``timeout`` seconds is a ``DeliveryError``. A redirect is not followed (it would turn the
    POST into a GET and send the configured headers, secrets included, to another host): a 3xx
    is a failure.
    """

    def __init__(
        self,
        *,
        url: str,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not is_http_url(url):
            raise DefinitionError(f"WebhookChannel url must be an http(s) URL, got {url!r}")
        self.url = str(url)
        self.timeout = checked_timeout(timeout, what="WebhookChannel")
        self.headers = {str(k): str(v) for k, v in (headers or {}).items()}
        for header in self.headers.items():
            if any(char in text for text in header for char in "\r\n"):
                raise DefinitionError("WebhookChannel header names and values must be one line")

    def send(self, notice: Notice) -> None:
        """POST the payload; raise ``DeliveryError`` unless the endpoint answers 2xx in time."""
        body = json.dumps(slack_payload(notice)).encode()
        request = urllib.request.Request(  # noqa: S310  # the scheme is checked in __init__
            self.url,
            data=body,
            method="POST",
            headers={**self.headers, "Content-Type": "application/json"},
        )
        try:
            with _NO_REDIRECTS.open(request, timeout=self.timeout) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            exc.close()  # its answer's socket
            redirect = " (a redirect, not followed)" if 300 <= exc.code < 400 else ""  # noqa: PLR2004
            raise DeliveryError(f"webhook answered HTTP {exc.code}{redirect}") from exc
        except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out
            raise DeliveryError(f"webhook unreachable: {exc}") from exc
        if not 200 <= status < 300:  # noqa: PLR2004  # the 2xx range
            raise DeliveryError(f"webhook answered HTTP {status}")


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Leave a 3xx answer as the ``HTTPError`` it is instead of following it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        """Follow no redirect."""
        return


_NO_REDIRECTS: Final = urllib.request.build_opener(_RefuseRedirects)


def checked_timeout(value: object, *, what: str) -> float:
    """A channel's ``timeout`` in seconds: above 0, at most ``MAX_TIMEOUT_SECONDS``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DefinitionError(f"{what} timeout must be seconds, got {value!r}")
    if not 0 < value <= MAX_TIMEOUT_SECONDS:
        raise DefinitionError(f"{what} timeout must be above 0 and at most {MAX_TIMEOUT_SECONDS} s")
    return float(value)


def send_within(channel: Channel, notice: Notice) -> None:
    """Send with a deadline on the whole send: the channel's ``timeout``, at most 30 s.

    Socket timeouts bound each read or write, not a send: an endpoint that trickles its answer
    keeps one alive, and name lookup has none. The send runs in a daemon thread that this waits
    for; past the deadline it is a ``DeliveryError`` (the thread ends at its socket timeout).
    """
    deadline = getattr(channel, "timeout", MAX_TIMEOUT_SECONDS)
    if isinstance(deadline, bool) or not isinstance(deadline, int | float) or deadline <= 0:
        deadline = MAX_TIMEOUT_SECONDS
    deadline = min(float(deadline), MAX_TIMEOUT_SECONDS)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            channel.send(notice)
        except BaseException as exc:  # noqa: BLE001  # handed to the caller below
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, name="flowstone-notification-send", daemon=True)
    thread.start()
    thread.join(deadline)
    if not outcome:
        raise DeliveryError(f"timed out: the send did not finish within {deadline:g} s")
    if outcome[0] is not None:
        raise outcome[0]


def slack_payload(notice: Notice) -> dict[str, Any]:
    """``{"text": ..., "blocks": [...]}``: a header, the message, the facts, the link.

    Slack refuses empty text objects and fields over 2,000 characters, so an empty title or
    message leaves its block out and a field's label counts toward its limit. Everything shown
    as mrkdwn (the fields and the top-level ``text``, which notifications render) is escaped.
    """
    facts = [
        (label, value)
        for label, value in (
            ("Asset", notice.asset),
            ("Partition", notice.partition),
            ("Status", notice.status),
            ("Run", notice.run_id),
            *notice.extra.items(),
        )
        if value
    ]
    blocks: list[dict[str, Any]] = [
        {"type": kind, "text": {"type": "plain_text", "text": value[:limit]}}
        for kind, value, limit in (
            ("header", notice.title.strip(), MAX_HEADER_CHARS),
            ("section", notice.text.strip(), MAX_FIELD_CHARS),
        )
        if value
    ]
    if facts:
        blocks.append(
            {
                "type": "section",
                "fields": [_field(label, value) for label, value in facts[:MAX_FIELDS]],
            }
        )
    if notice.link:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open"},
                        "url": notice.link,
                    }
                ],
            }
        )
    text = f"{notice.title}: {notice.text}" if notice.text else notice.title
    return {"text": _escape(text)[:MAX_FIELD_CHARS] or "(no text)", "blocks": blocks}


def _field(label: object, value: str) -> dict[str, str]:
    """One fact as a mrkdwn field: its label in bold, its value; at most 2,000 characters."""
    head = f"*{_escape(str(label))[:MAX_LABEL_CHARS]}*\n"
    return {"type": "mrkdwn", "text": head + _escape(value)[: MAX_FIELD_CHARS - len(head)]}


def _escape(value: str) -> str:
    """Slack's mrkdwn escapes: ``&``, ``<`` and ``>`` (so a value cannot forge a link)."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True, kw_only=True, slots=True)
class ChannelProblem:
    """Why one configured channel cannot be built (a ``manage.py check`` error)."""

    name: str
    message: str


def channel_settings() -> dict[str, Mapping[str, Any]]:
    """The configured channels by name, with the email recipients' implicit ``email`` channel."""
    configured = flowstone_settings.NOTIFICATION_CHANNELS
    channels = dict(configured) if isinstance(configured, dict) else {}
    recipients = list(flowstone_settings.APPROVAL_EMAIL_RECIPIENTS)
    if recipients and EMAIL_CHANNEL not in channels:
        channels[EMAIL_CHANNEL] = {
            "CLASS": "flowstone.notifications.EmailChannel",
            "OPTIONS": {"recipients": recipients},
        }
    return channels


def build_channel(name: str, config: object) -> Channel:
    """Import and build one channel; ``DefinitionError`` names the channel and what is wrong."""
    if not isinstance(config, dict) or not isinstance(config.get("CLASS"), str):
        raise DefinitionError(f"notification channel {name!r} needs a 'CLASS' dotted path")
    options = config.get("OPTIONS", {})
    if not isinstance(options, dict):
        raise DefinitionError(f"notification channel {name!r}: 'OPTIONS' must be a dict")
    try:
        cls = import_string(config["CLASS"])
    except ImportError as exc:
        raise DefinitionError(
            f"notification channel {name!r}: cannot import {config['CLASS']!r}"
        ) from exc
    try:
        channel = cls(**options)
    except DefinitionError as exc:
        raise DefinitionError(f"notification channel {name!r}: {exc.message}") from exc
    except TypeError as exc:
        raise DefinitionError(f"notification channel {name!r}: {exc}") from exc
    if not isinstance(channel, Channel):
        raise DefinitionError(f"notification channel {name!r}: {cls!r} has no send(notice)")
    return channel


def channel_problems() -> list[ChannelProblem]:
    """Every configured channel that cannot be built, for ``manage.py check``."""
    configured = flowstone_settings.NOTIFICATION_CHANNELS
    if not isinstance(configured, dict):
        return [ChannelProblem(name="", message="NOTIFICATION_CHANNELS must be a dict")]
    problems = []
    for name, config in sorted(channel_settings().items(), key=lambda item: str(item[0])):
        if not _is_channel_name(name):
            problems.append(
                ChannelProblem(
                    name=str(name)[:80],
                    message="a channel name must be a non-empty string of at most "
                    f"{MAX_CHANNEL_NAME_LENGTH} characters (its notifications are not recorded)",
                )
            )
            continue
        try:
            build_channel(name, config)
        except DefinitionError as exc:
            problems.append(ChannelProblem(name=name, message=exc.message))
    return problems


def _is_channel_name(name: object) -> bool:
    """Whether ``name`` fits the outbox's channel column."""
    return isinstance(name, str) and 0 < len(name) <= MAX_CHANNEL_NAME_LENGTH


def channel_names() -> list[str]:
    """The names of the configured channels that fit a row (E014 reports others), sorted."""
    return sorted(name for name in channel_settings() if _is_channel_name(name))


def positive_int_setting(name: str) -> int:
    """A positive integer setting, or its default when it is not one (E014 reports it).

    The outbox reads these between claiming a row and recording the try: a bad value must not
    make that fail and leave the row to be claimed again without end.
    """
    value = getattr(flowstone_settings, name)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return int(DEFAULTS[name])


def settings_problems() -> list[ChannelProblem]:
    """The notification settings that are not what they must be, for ``manage.py check``."""
    problems = [
        ChannelProblem(name=name, message=f"{name} must be a positive integer, got {value!r}")
        for name in ("NOTIFICATION_RETRY_SECONDS", "NOTIFICATION_MAX_ATTEMPTS")
        if positive_int_setting(name) != (value := getattr(flowstone_settings, name))
    ]
    base = flowstone_settings.NOTIFICATION_BASE_URL
    if base != "" and not is_http_url(base):
        problems.append(
            ChannelProblem(
                name="NOTIFICATION_BASE_URL",
                message=f"NOTIFICATION_BASE_URL must be an http(s) URL or empty, got {base!r}",
            )
        )
    return problems


def is_http_url(value: object) -> bool:
    """Whether ``value`` is an http(s) URL with a host (and no spaces or line breaks)."""
    if not isinstance(value, str) or any(char.isspace() for char in value):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def get_channel(name: str) -> Channel:
    """Build channel ``name`` from the settings (cheap: classes only keep their options)."""
    config = channel_settings().get(name)
    if config is None:
        raise DefinitionError(f"notification channel {name!r} is no longer configured")
    return build_channel(name, config)
