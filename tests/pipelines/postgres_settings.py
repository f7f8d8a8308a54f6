"""Django settings for worker processes whose default IO manager is PostgreSQL (fencing tests).

The project's settings, with ``FLOWSTONE["IO_MANAGERS"]["default"]`` the PostgreSQL manager on
Django's own database, so a worker's stores hold the step attempt's fence.
"""

from __future__ import annotations

from typing import Any

from flowstone import settings as _project

globals().update({name: value for name, value in vars(_project).items() if name.isupper()})

POSTGRES_DEFAULT: dict[str, Any] = {"CLASS": "flowstone.io.postgres.PostgresIOManager"}

_project_flowstone: dict[str, Any] = dict(_project.FLOWSTONE)
FLOWSTONE: dict[str, Any] = {
    **_project_flowstone,
    "IO_MANAGERS": {**_project_flowstone["IO_MANAGERS"], "default": POSTGRES_DEFAULT},
}
