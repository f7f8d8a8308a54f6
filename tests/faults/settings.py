"""Django settings of the fault suite's worker processes: the project's, with two test tweaks.

The default IO manager is ``FaultyFilesystemIOManager``, which behaves exactly like the
filesystem manager unless the ``crash-after-store`` marker is armed. Redis looks for
unacknowledged messages past their visibility timeout every 2 s instead of every ~100 s, so the
messages a killed worker held come back (and are delivered again) within a scenario. Everything
else (database, broker, lease and sweep timings) comes from the environment, as in production.
"""

from __future__ import annotations

from typing import Any

from flowstone import settings as _project

globals().update({name: value for name, value in vars(_project).items() if name.isupper()})

_project_flowstone: dict[str, Any] = dict(_project.FLOWSTONE)
_project_io_managers: dict[str, Any] = dict(_project_flowstone["IO_MANAGERS"])

CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {
    **_project.CELERY_BROKER_TRANSPORT_OPTIONS,
    "unacked_restore_interval": 2,
    "unacked_restore_throttle": 1,
}

FLOWSTONE: dict[str, Any] = {
    **_project_flowstone,
    "IO_MANAGERS": {
        **_project_io_managers,
        "default": {
            "CLASS": "tests.faults.pipeline.FaultyFilesystemIOManager",
            "OPTIONS": _project_io_managers["default"]["OPTIONS"],
        },
    },
    "RESOURCES": {},
}
