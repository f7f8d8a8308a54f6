"""What schedules and sensors return: run requests, skip reasons and sensor results."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from flowstone.definitions import AssetFunction, definition_of, validate_asset_name
from flowstone.errors import DefinitionError, ValidationFailedError
from flowstone.inputs import validate_text

MAX_RUN_KEY_LENGTH: Final = 255
MAX_REASON_LENGTH: Final = 2000
MAX_NOTICE_TEXT: Final = 10_000
MAX_TITLE: Final = 200
MAX_CURSOR_LENGTH: Final = 100_000


def asset_name_of(asset: str | AssetFunction, *, what: str) -> str:
    """Return the name of an asset given by name or by its ``@asset`` function."""
    if isinstance(asset, str):
        return validate_asset_name(asset, what=what)
    definition = definition_of(asset)
    if definition is None:
        raise DefinitionError(f"{what} {asset!r} is neither an asset name nor an @asset function")
    return definition.name


def _run_key(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_RUN_KEY_LENGTH:
        raise ValidationFailedError(
            f"run_key must be a non-empty string of at most {MAX_RUN_KEY_LENGTH} characters, "
            f"got {str(value)[:80]!r}"
        )
    return value


def bounded_run_key(prefix: str, text: str) -> str:
    """``prefix + text``, or ``prefix`` + its SHA-256 when that would exceed the run key limit."""
    key = f"{prefix}{text}"
    if len(key) <= MAX_RUN_KEY_LENGTH:
        return key
    return f"{prefix}sha256:{hashlib.sha256(text.encode()).hexdigest()}"


@dataclass(frozen=True, kw_only=True, slots=True)
class RunRequest:
    """A sensor's request to materialize one asset partition, de-duplicated by ``run_key``.

    Two requests with the same ``run_key`` from the same sensor start one run, however often the
    sensor reports it. ``include_upstreams`` gives ``materialize_all`` semantics.
    """

    asset: str
    run_key: str
    partition: object = None
    include_upstreams: bool = False
    tags: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        try:
            validate_asset_name(self.asset, what="asset of a run request")
        except DefinitionError as exc:
            raise ValidationFailedError(exc.message) from exc
        _run_key(self.run_key)
        if not isinstance(self.include_upstreams, bool):
            raise ValidationFailedError("RunRequest.include_upstreams must be a bool")
        object.__setattr__(self, "tags", MappingProxyType(dict(self.tags)))


@dataclass(frozen=True, kw_only=True, slots=True)
class Notify:
    """A sensor's request to send a notice through the notification channels, once per ``key``.

    A run-status sensor fills ``key`` (the event's run key) and the run's facts; the channels
    are ``FLOWSTONE["NOTIFICATION_CHANNELS"]``.
    """

    text: str
    title: str = ""
    key: str = ""
    asset: str = ""
    partition: str = ""
    status: str = ""
    run_id: str = ""

    def __post_init__(self) -> None:
        # Stored as JSON in the outbox: a NUL would fail the poll's transaction on every poll.
        object.__setattr__(
            self, "text", validate_text(self.text, what="Notify.text", max_length=MAX_NOTICE_TEXT)
        )
        object.__setattr__(
            self, "title", validate_text(self.title, what="Notify.title", max_length=MAX_TITLE)
        )
        if self.key:
            _run_key(self.key)


@dataclass(frozen=True, slots=True)
class SkipReason:
    """Why a schedule or sensor tick started nothing; recorded in the tick history."""

    reason: str

    def __post_init__(self) -> None:
        if not isinstance(self.reason, str):
            raise ValidationFailedError("SkipReason.reason must be a string")
        object.__setattr__(self, "reason", self.reason[:MAX_REASON_LENGTH])


@dataclass(frozen=True, kw_only=True, slots=True)
class SensorResult:
    """A sensor evaluation: run requests and notices, or a skip reason, and the cursor to store.

    ``cursor=None`` keeps the stored cursor. The cursor is stored after the run requests and
    notices are recorded, so a crash in between repeats them, and their keys drop the repeats.
    """

    run_requests: tuple[RunRequest, ...] = ()
    skip_reason: SkipReason | None = None
    cursor: str | None = None
    notices: tuple[Notify, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_requests", tuple(self.run_requests))
        object.__setattr__(self, "notices", tuple(self.notices))
        for request in self.run_requests:
            if not isinstance(request, RunRequest):
                raise ValidationFailedError(f"a sensor returned {request!r}, not a RunRequest")
        for notice in self.notices:
            if not isinstance(notice, Notify) or not notice.key:
                raise ValidationFailedError(f"a sensor notice {notice!r} is not a keyed Notify")
        if (self.run_requests or self.notices) and self.skip_reason is not None:
            raise ValidationFailedError("a sensor result has run requests or a skip reason")
        if self.cursor is not None and (
            not isinstance(self.cursor, str) or len(self.cursor) > MAX_CURSOR_LENGTH
        ):
            raise ValidationFailedError(
                f"a sensor cursor must be a string of at most {MAX_CURSOR_LENGTH} characters"
            )


SensorReturn = SensorResult | RunRequest | SkipReason | Iterable[RunRequest] | None


def as_sensor_result(value: object) -> SensorResult:
    """Normalize what a sensor function returned into a ``SensorResult``."""
    if value is None:
        return SensorResult()
    if isinstance(value, SensorResult):
        return value
    if isinstance(value, RunRequest):
        return SensorResult(run_requests=(value,))
    if isinstance(value, SkipReason):
        return SensorResult(skip_reason=value)
    if isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
        return SensorResult(run_requests=tuple(value))
    raise ValidationFailedError(
        f"a sensor must return run requests, a SkipReason, a SensorResult or None, "
        f"got {type(value).__name__}"
    )
