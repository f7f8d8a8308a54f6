"""The ``FLOWSTONE`` settings namespace, read lazily through ``flowstone_settings``.

Every FlowStone setting has exactly one default, here. Unknown keys are an error, and the cached
values are dropped whenever Django's ``setting_changed`` fires for ``FLOWSTONE``, so
``override_settings`` tells the truth in tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from flowstone.errors import DefinitionError

if TYPE_CHECKING:
    from collections.abc import Callable

SETTINGS_NAME: Final = "FLOWSTONE"

DEFAULTS: Final[dict[str, Any]] = {
    # Dotted module paths whose public @asset functions form the registry.
    "DEFINITIONS": [],
    # name -> {"CLASS": dotted path, "OPTIONS": {...}}; assets pick one by ``io_manager=``.
    "IO_MANAGERS": {
        "default": {"CLASS": "flowstone.io.FilesystemIOManager", "OPTIONS": {}},
        "memory": {"CLASS": "flowstone.io.MemoryIOManager", "OPTIONS": {}},
    },
    # name -> {"CLASS": dotted path, "OPTIONS": {...}}; injected as ``context.resources.<name>``.
    "RESOURCES": {},
    # A worker's claim on a running step lasts this long and is renewed every third of it.
    "STEP_LEASE_SECONDS": 15,
    # A step taken back from dead workers more often than this fails instead of running again.
    "MAX_RECOVERIES": 3,
    # A queued step whose message was published this long ago, and whose queue holds no waiting
    # message, is published again by the sweeper (the broker lost it).
    "REQUEUE_AFTER_SECONDS": 600,
    # A released step whose message is still unsent this long after it was queued (the process
    # that released it died before publishing, or the broker was down) is sent by the relay.
    "RELAY_AFTER_SECONDS": 2,
    # Retry delays up to this long become a broker countdown; longer ones wait for the sweeper.
    "MAX_COUNTDOWN_SECONDS": 300,
    # Ready steps of one run and asset share a message when many are released at once: about
    # ready / (8 x STEP_BATCH_CONSUMERS) steps per message, at most STEP_BATCH_MAX (1: no batches).
    "STEP_BATCH_MAX": 500,
    "STEP_BATCH_CONSUMERS": 8,
    # A worker starts no further step of a batch this long after the batch began; the rest go
    # back to the outbox. A batch's time limits are the task's plus this: each step keeps its own.
    "STEP_BATCH_SECONDS": 10,
    # Whether the user who requested a run may decide its approvals.
    "ALLOW_SELF_APPROVAL": False,
    # What an attempt keeps of its asset's ``context.log`` records: from this level, up to this
    # many characters (records past it are counted, not kept). Shown with the attempt's error.
    "STEP_LOG_LEVEL": "INFO",
    "STEP_LOG_MAX_CHARS": 65_536,
    # Who gets an email when an approval is requested, escalated, decided or expires (empty: none).
    "APPROVAL_EMAIL_RECIPIENTS": [],
    # name -> {"CLASS": dotted path, "OPTIONS": {...}}: where notifications go
    # (flowstone.notifications: EmailChannel, WebhookChannel, or your own class).
    "NOTIFICATION_CHANNELS": {},
    # The site's address (e.g. "https://flowstone.example.com"): notifications link to the admin.
    "NOTIFICATION_BASE_URL": "",
    # A notification that failed is tried again after this many seconds, doubling each time...
    "NOTIFICATION_RETRY_SECONDS": 30,
    # ... and given up (kept, status "failed", in the admin) after this many attempts.
    "NOTIFICATION_MAX_ATTEMPTS": 5,
    # A Celery worker records that it is alive this often (one upsert of its WorkerHeartbeat row).
    "WORKER_HEARTBEAT_SECONDS": 10,
    # /health/ answers 503 when no worker has recorded a heartbeat within this long.
    "WORKER_SEEN_WITHIN_SECONDS": 60,
    # /health/ reuses its checks for this long (0: check on every request).
    "HEALTH_CACHE_SECONDS": 5,
    # /metrics reuses its collection for this long (0: collect on every scrape).
    "METRICS_CACHE_SECONDS": 15,
}


class FlowStoneSettings:
    """Lazy, cached view of ``settings.FLOWSTONE`` merged over ``DEFAULTS``."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}
        self._reload_hooks: list[Callable[[], None]] = []

    def _user_settings(self) -> dict[str, Any]:
        user = getattr(settings, SETTINGS_NAME, {}) or {}
        unknown = sorted(set(user) - set(DEFAULTS))
        if unknown:
            raise DefinitionError(
                f"unknown {SETTINGS_NAME} setting(s) {', '.join(unknown)}; "
                f"known settings are {', '.join(sorted(DEFAULTS))}"
            )
        return dict(user)

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"invalid {SETTINGS_NAME} setting: {name!r}")
        if name not in self._cache:
            self._cache[name] = self._user_settings().get(name, DEFAULTS[name])
        return self._cache[name]

    def on_reload(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` whenever the settings are reloaded (to drop caches built from them)."""
        self._reload_hooks.append(hook)

    def reload(self) -> None:
        """Forget cached values and tell every cache built from them."""
        self._cache.clear()
        for hook in self._reload_hooks:
            hook()


flowstone_settings = FlowStoneSettings()


@receiver(setting_changed, dispatch_uid="flowstone.conf.reload_settings")
def reload_settings(*, setting: str, **kwargs: Any) -> None:  # noqa: ARG001
    """Reload ``flowstone_settings`` when a test overrides ``FLOWSTONE``."""
    if setting == SETTINGS_NAME:
        flowstone_settings.reload()
