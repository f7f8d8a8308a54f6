"""The Celery app, configured from Django settings (``CELERY_*``); JSON payloads only.

Start workers with ``celery -A flowstone worker`` and the sweeper with ``celery -A flowstone beat``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flowstone.settings")

app = Celery("flowstone")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["assets"])


@worker_init.connect(dispatch_uid="flowstone.celery.validate_definitions")
def validate_definitions(**kwargs: Any) -> None:  # noqa: ARG001
    """Refuse to start a worker whose asset definitions are invalid."""
    from flowstone.registry import get_registry  # noqa: PLC0415  # Django is set up by now

    get_registry()
