"""Notification channels: where approval and run-status notices go (email, an HTTP webhook).

``FLOWSTONE["NOTIFICATION_CHANNELS"]`` maps a channel name to ``{"CLASS": dotted path,
"OPTIONS": {...}}``; the class is built with the options as keyword arguments and its
``send(notice)`` raises ``DeliveryError`` (or anything) when the notice did not get through, so
the outbox tries again later. ``APPROVAL_EMAIL_RECIPIENTS`` still works: when it is set and no
channel is named ``email``, an ``EmailChannel`` of those recipients is that channel.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable
from urllib.parse import urlsplit

from django.core.mail import send_mail
from django.utils.module_loading import import_string

from flowstone.conf import flowstone_settings
from flowstone.errors import DefinitionError, FlowStoneError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

EMAIL_CHANNEL: Final = "email"
DEFAULT_TIMEOUT_SECONDS: Final = 5.0
MAX_TIMEOUT_SECONDS: Final = 30.0
MAX_FIELD_CHARS: Final = 2000


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
    """Email through Django's mail framework (``EMAIL_*`` settings) to fixed recipients."""

    def __init__(self, *, recipients: Sequence[str], from_email: str | None = None) -> None:
        if isinstance(recipients, str) or not recipients:
            raise DefinitionError("EmailChannel needs a non-empty list of recipients")
        self.recipients = [str(r) for r in recipients]
        self.from_email = from_email

    def send(self, notice: Notice) -> None:
        """Send one email; an SMTP error propagates (the outbox retries)."""
        send_mail(notice.title, notice.text, self.from_email, self.recipients)


class WebhookChannel:
    """POST a JSON body shaped for Slack's incoming webhooks (``text`` plus ``blocks``).

    Any 2xx answer is a delivery; anything else, a connection error or no answer within
    ``timeout`` seconds is a ``DeliveryError``.
    """

    def __init__(
        self,
        *,
        url: str,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        parts = urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DefinitionError(f"WebhookChannel url must be an http(s) URL, got {url!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise DefinitionError(f"WebhookChannel timeout must be seconds, got {timeout!r}")
        if not 0 < timeout <= MAX_TIMEOUT_SECONDS:
            raise DefinitionError(
                f"WebhookChannel timeout must be above 0 and at most {MAX_TIMEOUT_SECONDS} s"
            )
        self.url = str(url)
        self.timeout = float(timeout)
        self.headers = {str(k): str(v) for k, v in (headers or {}).items()}

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
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"webhook answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out
            raise DeliveryError(f"webhook unreachable: {exc}") from exc
        if not 200 <= status < 300:  # noqa: PLR2004  # the 2xx range
            raise DeliveryError(f"webhook answered HTTP {status}")


def slack_payload(notice: Notice) -> dict[str, Any]:
    """``{"text": ..., "blocks": [...]}``: a header, the message, the facts, the link."""
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
        {"type": "header", "text": {"type": "plain_text", "text": notice.title[:150]}},
        {"type": "section", "text": {"type": "plain_text", "text": notice.text[:MAX_FIELD_CHARS]}},
    ]
    if facts:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{label}*\n{_escape(value)[:MAX_FIELD_CHARS]}"}
                    for label, value in facts[:10]
                ],
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
    return {"text": text[:MAX_FIELD_CHARS], "blocks": blocks}


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
    for name, config in sorted(channel_settings().items()):
        try:
            build_channel(name, config)
        except DefinitionError as exc:
            problems.append(ChannelProblem(name=name, message=exc.message))
    return problems


def channel_names() -> list[str]:
    """The names of the configured channels, in a stable order."""
    return sorted(channel_settings())


def get_channel(name: str) -> Channel:
    """Build channel ``name`` from the settings (cheap: classes only keep their options)."""
    config = channel_settings().get(name)
    if config is None:
        raise DefinitionError(f"notification channel {name!r} is no longer configured")
    return build_channel(name, config)
