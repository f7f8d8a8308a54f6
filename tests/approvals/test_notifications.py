"""The notification outbox and its channels on in-process runs: webhook, retries, checks."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from django.core.mail.backends import locmem
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st
from pytest_django import Settings

import flowstone
from approvals import notifications, services
from approvals.models import Approval, Notification
from approvals.tasks import deliver_notifications
from assets.models import RejectedMessage
from flowstone.checks import check_notification_channels
from flowstone.notifications import (
    MAX_TIMEOUT_SECONDS,
    DeliveryError,
    EmailChannel,
    Notice,
    WebhookChannel,
    send_within,
    slack_payload,
)
from flowstone.status import RunStatus
from tests.conftest import UseDefinitions
from tests.webhook import Endpoint, closed_port_url, webhook_endpoint

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

WEBHOOK = "flowstone.notifications.WebhookChannel"
EMAIL = "flowstone.notifications.EmailChannel"
BASE_URL = "https://flowstone.example.com"
Callbacks = Callable[..., Any]


@pytest.fixture(autouse=True)
def _definitions(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.run_status_flow", resources={})


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    with webhook_endpoint() as started:
        yield started


def _channels(settings: Settings, **channels: dict[str, Any]) -> None:
    settings.FLOWSTONE = {
        **settings.FLOWSTONE,
        "NOTIFICATION_CHANNELS": channels,
        "NOTIFICATION_BASE_URL": BASE_URL,
        "NOTIFICATION_RETRY_SECONDS": 10,
        "NOTIFICATION_MAX_ATTEMPTS": 3,
    }


def _webhook(url: str, **options: Any) -> dict[str, Any]:
    return {"CLASS": WEBHOOK, "OPTIONS": {"url": url, **options}}


def _waiting_approval(callbacks: Callbacks) -> Approval:
    with callbacks(execute=True):
        result = flowstone.materialize("rs_gated", requested_by="alice")
    assert result.status == RunStatus.WAITING_APPROVAL
    return Approval.objects.get(run_id=result.run_id)


def test_the_webhook_gets_a_slack_payload_after_commit(
    settings: Settings, endpoint: Endpoint, django_capture_on_commit_callbacks: Callbacks
) -> None:
    _channels(settings, ops=_webhook(endpoint.url))
    approval = _waiting_approval(django_capture_on_commit_callbacks)
    assert [b["text"] for b in endpoint.received] == [
        (
            "Approval needed: rs_gated [-]: Ship the release?\n\n"
            f"Run: {approval.run_id}\nApproval: {approval.pk}\nStatus: pending\n"
            "Requested by: alice\n"
        )
    ]

    with django_capture_on_commit_callbacks(execute=False) as pending:
        services.decide_approval(approval.pk, "approve", actor="bob")
    row = Notification.objects.get(key=f"approval:{approval.pk}:decided")
    # Recorded with the decision; nothing sent before the commit.
    assert (row.channel, row.status, row.attempts, len(endpoint.received)) == (
        "ops",
        "pending",
        0,
        1,
    )
    for callback in pending:
        callback()

    row.refresh_from_db()
    assert (row.status, row.attempts, row.delivered_at is not None) == ("delivered", 1, True)
    body = endpoint.received[-1]
    assert body["text"].startswith("Approval approved: rs_gated [-]: Ship the release?")
    header, message, facts, actions = body["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Approval approved: rs_gated [-]"},
    }
    assert message["text"]["text"].startswith("Ship the release?")
    assert [f["text"] for f in facts["fields"]] == [
        "*Asset*\nrs_gated",
        "*Status*\napproved",
        f"*Run*\n{approval.run_id}",
        "*Message*\nShip the release?",
    ]
    assert actions["elements"][0]["url"] == (
        f"{BASE_URL}/admin/approvals/approval/{approval.pk}/decide/"
    )


def test_failing_twice_then_succeeding_is_delivered_once_with_growing_delays(
    settings: Settings, django_capture_on_commit_callbacks: Callbacks
) -> None:
    with webhook_endpoint(failures=2) as endpoint:
        _channels(settings, ops=_webhook(endpoint.url))
        approval = _waiting_approval(django_capture_on_commit_callbacks)
        row = Notification.objects.get(key=f"approval:{approval.pk}:requested")
        assert (row.status, row.attempts, row.last_error) == (
            "pending",
            1,
            "DeliveryError: webhook answered HTTP 500",
        )
        first_retry = row.next_attempt_at
        assert first_retry - timezone.now() > dt.timedelta(seconds=8)
        assert notifications.deliver_due() == 0  # not due yet

        assert notifications.deliver_due(now=first_retry) == 0  # fails again
        row.refresh_from_db()
        assert row.attempts == 2
        assert row.next_attempt_at - first_retry >= dt.timedelta(seconds=19)  # doubled

        assert notifications.deliver_due(now=row.next_attempt_at) == 1
        later = timezone.now() + dt.timedelta(days=1)
        assert notifications.deliver_due(now=later) == 0
        assert notifications.deliver([row.pk], now=later) == 0
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error) == (
        "delivered",
        3,
        "DeliveryError: webhook answered HTTP 500",
    )
    assert len(endpoint.received) == 3


def test_an_endpoint_down_or_hanging_never_blocks_or_fails_the_decision(
    settings: Settings, django_capture_on_commit_callbacks: Callbacks
) -> None:
    with webhook_endpoint(hang_seconds=2) as hanging:
        _channels(
            settings,
            down=_webhook(closed_port_url()),
            slow=_webhook(hanging.url, timeout=0.3),
        )
        approval = _waiting_approval(django_capture_on_commit_callbacks)
        started = time.monotonic()
        with django_capture_on_commit_callbacks(execute=True):
            services.decide_approval(approval.pk, "reject", actor="bob", reason="not today")
        assert time.monotonic() - started < 1.5  # two bounded tries, not two hangs
    assert Approval.objects.get(pk=approval.pk).status == "rejected"
    rows = Notification.objects.filter(key=f"approval:{approval.pk}:decided").order_by("channel")
    assert [(r.channel, r.status, r.attempts) for r in rows] == [
        ("down", "pending", 1),
        ("slow", "pending", 1),
    ]
    assert "unreachable" in rows[0].last_error
    assert "timed out" in rows[1].last_error

    # Out of attempts, a notification is given up and stays visible.
    for days in range(1, 5):
        notifications.deliver_due(now=timezone.now() + dt.timedelta(days=days))
    assert set(Notification.objects.values_list("status", "attempts")) == {("failed", 3)}


def test_approval_email_recipients_still_mail_through_the_email_channel(
    settings: Settings, django_capture_on_commit_callbacks: Callbacks
) -> None:
    from django.core import mail  # noqa: PLC0415

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.FLOWSTONE = {**settings.FLOWSTONE, "APPROVAL_EMAIL_RECIPIENTS": ["ops@example.com"]}
    _waiting_approval(django_capture_on_commit_callbacks)
    assert [m.subject for m in mail.outbox] == ["Approval needed: rs_gated [-]"]
    assert Notification.objects.get().channel == "email"


def test_no_channel_records_nothing(django_capture_on_commit_callbacks: Callbacks) -> None:
    _waiting_approval(django_capture_on_commit_callbacks)
    assert not Notification.objects.exists()


BAD_CHANNELS: dict[str, Any] = {
    "no class": {"OPTIONS": {}},
    "unknown class": {"CLASS": "flowstone.notifications.Pager", "OPTIONS": {}},
    "not a channel": {"CLASS": "collections.OrderedDict", "OPTIONS": {}},
    "options not a dict": {"CLASS": WEBHOOK, "OPTIONS": ["http://x"]},
    "unknown option": _webhook("http://127.0.0.1/hook", retries=3),
    "ftp url": _webhook("ftp://example.com/hook"),
    "no host": _webhook("http:///hook"),
    "hostile url": _webhook("javascript:alert(1)"),
    "zero timeout": _webhook("http://127.0.0.1/hook", timeout=0),
    "long timeout": _webhook("http://127.0.0.1/hook", timeout=600),
    "no recipients": {"CLASS": "flowstone.notifications.EmailChannel", "OPTIONS": {}},
    "recipients as a string": {
        "CLASS": "flowstone.notifications.EmailChannel",
        "OPTIONS": {"recipients": "ops@example.com"},
    },
}


@pytest.mark.parametrize("case", sorted(BAD_CHANNELS))
def test_bad_channel_settings_are_check_errors(settings: Settings, case: str) -> None:
    settings.FLOWSTONE = {
        **settings.FLOWSTONE,
        "NOTIFICATION_CHANNELS": {
            "good": _webhook("https://hooks.example.com/x"),
            "bad": BAD_CHANNELS[case],
        },
    }
    errors = check_notification_channels()
    assert [(e.id, e.obj) for e in errors] == [
        ("flowstone.E014", "FLOWSTONE['NOTIFICATION_CHANNELS']['bad']")
    ]
    assert "notification channel 'bad'" in errors[0].msg
    with pytest.raises(SystemCheckError, match=r"flowstone\.E014"):
        call_command("check")


def test_channels_that_are_not_a_mapping_are_a_check_error(settings: Settings) -> None:
    settings.FLOWSTONE = {**settings.FLOWSTONE, "NOTIFICATION_CHANNELS": ["email"]}
    assert [e.id for e in check_notification_channels()] == ["flowstone.E014"]


def test_good_channels_pass_the_check(settings: Settings) -> None:
    _channels(settings, ops=_webhook("https://hooks.example.com/x", timeout=2.5))
    settings.FLOWSTONE = {**settings.FLOWSTONE, "APPROVAL_EMAIL_RECIPIENTS": ["ops@example.com"]}
    assert check_notification_channels() == []


@pytest.mark.parametrize(
    "payload",
    [
        {"ids": "1"},
        {"ids": [True]},
        {"ids": ["1"]},
        {"ids": [1.5]},
        {"ids": None},
        {},
        {"ids": [1], "x": 2},
    ],
)
def test_the_delivery_task_records_malformed_payloads_and_delivers_nothing(
    payload: dict[str, Any],
) -> None:
    assert deliver_notifications(**payload) == 0
    rejected = RejectedMessage.objects.get()
    assert (rejected.task_name, rejected.reason) == (
        "flowstone.deliver_notifications",
        "the payload must be exactly {'ids': [notification ids]}",
    )


@given(
    title=st.text(max_size=200),
    text=st.text(max_size=3000),
    extra=st.dictionaries(st.text(max_size=150), st.text(max_size=3000), max_size=12),
)
def test_the_slack_payload_is_bounded_json_that_no_value_can_turn_into_a_link(
    title: str, text: str, extra: dict[str, str]
) -> None:
    """Slack refuses empty text objects and fields over 2,000 characters; nothing forges a link."""
    notice = Notice(event="e", title=title, text=text, asset=text, extra=extra)
    payload = json.loads(json.dumps(slack_payload(notice)))
    assert 0 < len(payload["text"]) <= 2000
    objects = [b["text"] for b in payload["blocks"] if "text" in b]
    objects += [f for b in payload["blocks"] for f in b.get("fields", [])]
    for item in objects:
        assert item["text"].strip()
        assert len(item["text"]) <= 2000
    headers = [b["text"]["text"] for b in payload["blocks"] if b["type"] == "header"]
    assert all(len(header) <= 150 for header in headers)
    for item in [payload, *objects]:
        if item.get("type") != "plain_text":
            assert "<" not in item["text"]
            assert ">" not in item["text"]
    assert len(objects) <= 2 + 10


class _Timed:
    """A channel that records when each send began; ``slow`` sleeps, ``broken`` raises."""

    started: ClassVar[dict[str, dt.datetime]] = {}

    def __init__(self, **options: Any) -> None:
        self.options = options

    def send(self, notice: Notice) -> None:
        """Record the start; sleep for ``slow``, fail for ``broken``."""
        _Timed.started[notice.title] = timezone.now()
        if notice.title == "slow":
            time.sleep(1.2)
        if notice.title == "broken":
            raise RuntimeError("broken")


def test_each_claim_and_failure_is_timed_when_it_happens(settings: Settings) -> None:
    """After a slow send in one batch, the next row is held (and retried) from its own claim."""
    _channels(settings, timed={"CLASS": f"{__name__}._Timed"})
    for title in ("slow", "next", "broken"):
        notifications.record(title, Notice(event="e", title=title, text="x"))
    Notification.objects.update(next_attempt_at=timezone.now() - dt.timedelta(seconds=1))
    assert notifications.deliver_due() == 2
    rows = {r.key: r for r in Notification.objects.all()}
    hold = dt.timedelta(seconds=notifications.CLAIM_SECONDS)
    # "next" was claimed after the slow send ended (>= 1.2 s after it began), before its own send
    slow_ended = _Timed.started["slow"] + dt.timedelta(seconds=1.2)
    assert slow_ended + hold <= rows["next"].next_attempt_at <= _Timed.started["next"] + hold
    assert rows["broken"].next_attempt_at >= _Timed.started["broken"] + dt.timedelta(seconds=10)
    assert (rows["broken"].status, rows["broken"].attempts) == ("pending", 1)


def test_the_hold_outlasts_the_longest_send() -> None:
    assert notifications.CLAIM_SECONDS > MAX_TIMEOUT_SECONDS


def test_a_trickling_endpoint_is_cut_off_at_the_timeout(
    settings: Settings, django_capture_on_commit_callbacks: Callbacks
) -> None:
    """Each read is quick but the answer takes 3 s: the whole send is bounded, not each read."""
    with webhook_endpoint(trickle_seconds=3) as trickling:
        channel = WebhookChannel(url=trickling.url, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(DeliveryError, match="timed out"):
            send_within(channel, Notice(event="e", title="t", text="x"))
        assert time.monotonic() - started < 1.2

        _channels(settings, trickling=_webhook(trickling.url, timeout=0.5))
        approval = _waiting_approval(django_capture_on_commit_callbacks)
        assert time.monotonic() - started < 2.5
    row = Notification.objects.get(key=f"approval:{approval.pk}:requested")
    assert (row.status, row.attempts) == ("pending", 1)
    assert "timed out" in row.last_error


def test_a_redirect_is_a_failure_and_is_not_followed(
    settings: Settings, django_capture_on_commit_callbacks: Callbacks
) -> None:
    """Following it would send the secret header elsewhere, as a GET, and call a 2xx delivered."""
    with webhook_endpoint() as elsewhere, webhook_endpoint(redirect_to=elsewhere.url) as moved:
        _channels(settings, ops=_webhook(moved.url, headers={"Authorization": "Bearer secret"}))
        approval = _waiting_approval(django_capture_on_commit_callbacks)
        assert [method for method, _headers in moved.requests] == ["POST"]
        assert moved.requests[0][1]["Authorization"] == "Bearer secret"
        assert elsewhere.requests == []
    row = Notification.objects.get(key=f"approval:{approval.pk}:requested")
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error == "DeliveryError: webhook answered HTTP 302 (a redirect, not followed)"


class _RecordingBackend(locmem.EmailBackend):
    """The locmem backend, keeping the timeout each connection was opened with."""

    timeouts: ClassVar[list[float | None]] = []

    def __init__(self, *, timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _RecordingBackend.timeouts.append(timeout)


@pytest.mark.parametrize(("options", "timeout"), [({}, 10.0), ({"timeout": 2}, 2.0)])
def test_the_email_channel_opens_its_connection_with_a_timeout(
    settings: Settings, options: dict[str, Any], timeout: float
) -> None:
    """Django's EMAIL_TIMEOUT is unbounded by default; the channel's is not."""
    settings.EMAIL_BACKEND = f"{__name__}._RecordingBackend"
    _RecordingBackend.timeouts.clear()
    channel = EmailChannel(recipients=["ops@example.com"], **options)
    send_within(channel, Notice(event="e", title="t", text="x"))
    assert _RecordingBackend.timeouts == [timeout]


BAD_SETTINGS: list[tuple[str, object]] = [
    ("NOTIFICATION_BASE_URL", "flowstone.example.com"),
    ("NOTIFICATION_BASE_URL", "javascript:alert(1)"),
    ("NOTIFICATION_BASE_URL", "https://example.com/\r\nX-Evil: 1"),
    ("NOTIFICATION_BASE_URL", 8000),
    ("NOTIFICATION_RETRY_SECONDS", "30"),
    ("NOTIFICATION_RETRY_SECONDS", 0),
    ("NOTIFICATION_RETRY_SECONDS", 1.5),
    ("NOTIFICATION_RETRY_SECONDS", True),
    ("NOTIFICATION_MAX_ATTEMPTS", "5"),
    ("NOTIFICATION_MAX_ATTEMPTS", -1),
    ("NOTIFICATION_MAX_ATTEMPTS", None),
]


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS)
def test_bad_notification_settings_are_check_errors(
    settings: Settings, name: str, value: object
) -> None:
    settings.FLOWSTONE = {**settings.FLOWSTONE, name: value}
    errors = check_notification_channels()
    assert [(e.id, e.obj) for e in errors] == [("flowstone.E014", f"FLOWSTONE[{name!r}]")]


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("x" * 129, _webhook("https://hooks.example.com/x")),
        ("", _webhook("https://hooks.example.com/x")),
        ("ops", _webhook("https://hooks.example.com/x", headers={"X-A": "1\r\nX-B: 2"})),
        ("ops", _webhook("https://hooks.example.com/x", headers={"X-A\n": "1"})),
        ("ops", {"CLASS": EMAIL, "OPTIONS": {"recipients": ["a@example.com"], "timeout": 0}}),
    ],
)
def test_bad_channel_names_and_headers_are_check_errors(
    settings: Settings, name: str, config: dict[str, Any]
) -> None:
    settings.FLOWSTONE = {**settings.FLOWSTONE, "NOTIFICATION_CHANNELS": {name: config}}
    assert [e.id for e in check_notification_channels()] == ["flowstone.E014"]


def test_a_channel_name_too_long_for_its_column_records_nothing(
    settings: Settings, django_capture_on_commit_callbacks: Callbacks
) -> None:
    """E014 reports it; a decision must not fail on it (PostgreSQL would refuse the row)."""
    _channels(settings, **{"x" * 129: _webhook(closed_port_url())})
    _waiting_approval(django_capture_on_commit_callbacks)
    assert not Notification.objects.exists()


def test_bad_retry_settings_still_give_a_failing_notice_up(
    settings: Settings, django_capture_on_commit_callbacks: Callbacks
) -> None:
    """Read after the claim, a setting that is not a positive integer falls back to its default."""
    _channels(settings, down=_webhook(closed_port_url()))
    settings.FLOWSTONE = {
        **settings.FLOWSTONE,
        "NOTIFICATION_RETRY_SECONDS": "soon",
        "NOTIFICATION_MAX_ATTEMPTS": "3",
    }
    approval = _waiting_approval(django_capture_on_commit_callbacks)
    row = Notification.objects.get(key=f"approval:{approval.pk}:requested")
    assert row.next_attempt_at - row.created_at >= dt.timedelta(seconds=29)  # the default 30 s
    for days in range(1, 8):
        notifications.deliver_due(now=timezone.now() + dt.timedelta(days=days))
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("failed", 5)  # the default 5 attempts
