"""FlowStone: asset-first data orchestration on Django, Celery, Redis and PostgreSQL.

Importing this package touches no database and imports no Django app: the run functions
(``materialize``, ``materialize_async`` ...) are loaded from ``flowstone.api`` on first access,
since Django imports this package while reading ``flowstone.settings``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from flowstone import errors
from flowstone.context import AssetContext
from flowstone.definitions import DEFAULT_RETRY_POLICY, AssetSpec, RetryPolicy, asset
from flowstone.errors import FlowStoneError
from flowstone.resources import BaseResource

if TYPE_CHECKING:
    from flowstone.api import (
        backfill,
        backfill_async,
        load_value,
        materialize,
        materialize_all,
        materialize_all_async,
        materialize_async,
        reexecute,
        reexecute_async,
    )
    from flowstone.execution.handle import RunHandle
    from flowstone.results import RunResult, StepResult

__version__ = "0.2.0"

_LAZY: Final = {
    "backfill": "flowstone.api",
    "backfill_async": "flowstone.api",
    "load_value": "flowstone.api",
    "materialize": "flowstone.api",
    "materialize_all": "flowstone.api",
    "materialize_all_async": "flowstone.api",
    "materialize_async": "flowstone.api",
    "reexecute": "flowstone.api",
    "reexecute_async": "flowstone.api",
    "RunHandle": "flowstone.execution.handle",
    "RunResult": "flowstone.results",
    "StepResult": "flowstone.results",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'flowstone' has no attribute {name!r}")


__all__ = [
    "DEFAULT_RETRY_POLICY",
    "AssetContext",
    "AssetSpec",
    "BaseResource",
    "FlowStoneError",
    "RetryPolicy",
    "RunHandle",
    "RunResult",
    "StepResult",
    "__version__",
    "asset",
    "backfill",
    "backfill_async",
    "errors",
    "load_value",
    "materialize",
    "materialize_all",
    "materialize_all_async",
    "materialize_async",
    "reexecute",
    "reexecute_async",
]
