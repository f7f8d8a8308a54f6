"""The FlowStone exception hierarchy.

Every error that crosses the public API is a ``FlowStoneError``::

    FlowStoneError                 kind varies; the base of everything below
    ├── DefinitionError            validation_error      bad definitions, found before anything runs
    ├── ValidationFailedError      validation_error      bad input at run time
    │   └── PartitionKeyError      validation_error      malformed or unknown partition key
    ├── AssetNotFoundError         asset_not_found
    ├── RunNotFoundError           validation_error
    ├── RunStateError              validation_error      e.g. re-executing a run that succeeded
    ├── DependencyFailedError      dependency_failed
    ├── DependencyNotReadyError    dependency_not_ready  retryable
    ├── IOManagerError             io_error              retryable when transient
    ├── ExecutionError             execution_error       user code raised; original in __cause__
    ├── StepTimeoutError           timeout               retryable
    ├── LeaseLostError             execution_error       this attempt lost its step; never recorded
    ├── ResourceUnavailableError   resource_unavailable
    ├── CheckpointRejectedError    checkpoint_rejected
    ├── ApprovalNotFoundError      validation_error      no approval has that id
    ├── ApprovalDecidedError       validation_error      a second decision (or after expiry)
    │   └── ApprovalStaleError     validation_error      an input it reviewed changed since
    ├── ApprovalForbiddenError     validation_error      e.g. deciding one's own run
    ├── MaterializationNotFoundError  validation_error   no successful materialization to use
    └── LineageCycleError          validation_error      an edge would close a cycle

Each error carries a ``kind``, a ``retryable`` flag and keyword-only context (``asset``,
``partition``, ``run_id``). ``to_dict()`` gives the structured JSON form stored on a
materialization and ``FlowStoneError.from_dict()`` rebuilds an equivalent error from it.
"""

from __future__ import annotations

import traceback
from typing import Any, ClassVar, Final, Literal

ErrorKind = Literal[
    "asset_not_found",
    "dependency_failed",
    "dependency_not_ready",
    "io_error",
    "execution_error",
    "timeout",
    "validation_error",
    "resource_unavailable",
    "checkpoint_rejected",
    "waiting_approval",
]

ERROR_KINDS: Final[frozenset[str]] = frozenset(ErrorKind.__args__)  # type: ignore[attr-defined]
MAX_ERROR_TEXT: Final = 10_000
MAX_TRACEBACK_TEXT: Final = 30_000


def _bounded(text: str, limit: int = MAX_ERROR_TEXT, *, keep_end: bool = False) -> str:
    """``text`` with NUL escaped (PostgreSQL cannot store it) and cut to ``limit`` characters."""
    text = text.replace("\x00", "\\x00")
    if len(text) <= limit:
        return text
    cut = f"... [{len(text) - limit} characters cut] ..."
    return cut + text[-limit:] if keep_end else text[:limit] + cut


def _formatted_traceback(error: BaseException) -> str:
    """The traceback of ``error`` and the exceptions that caused it, innermost frames kept."""
    text = "".join(traceback.format_exception(error))
    return _bounded(text, MAX_TRACEBACK_TEXT, keep_end=True)


class FlowStoneError(Exception):
    """Base of every FlowStone error: a kind, a retryable flag, context and a readable message."""

    default_kind: ClassVar[ErrorKind] = "execution_error"
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind | None = None,
        retryable: bool | None = None,
        asset: str | None = None,
        partition: str | None = None,
        run_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.kind: ErrorKind = kind if kind is not None else self.default_kind
        self.retryable = self.default_retryable if retryable is None else retryable
        self.message = message
        self.asset = asset
        self.partition = partition
        self.run_id = run_id
        self.details: dict[str, Any] = dict(details or {})
        # The "Type: message" of the original exception when rebuilt from stored JSON.
        self.recorded_cause: str | None = None
        # The formatted traceback when rebuilt from stored JSON.
        self.recorded_traceback: str | None = None
        super().__init__(message)

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, kind={self.kind!r}, "
            f"retryable={self.retryable!r}, asset={self.asset!r}, partition={self.partition!r}, "
            f"run_id={self.run_id!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the structured, JSON-safe form stored on a materialization.

        ``cause`` is the original exception's ``"Type: message"`` and ``traceback`` the formatted
        traceback of the error and its cause chain (the innermost frames kept when it is long).
        Texts are bounded and NUL characters escaped, so any exception can be stored.
        """
        cause = self.__cause__
        cause_text = (
            self.recorded_cause if cause is None else _bounded(f"{type(cause).__name__}: {cause}")
        )
        return {
            "type": type(self).__name__,
            "kind": self.kind,
            "message": _bounded(self.message),
            "retryable": self.retryable,
            "asset": self.asset,
            "partition": self.partition,
            "run_id": self.run_id,
            "details": self.details,
            "cause": cause_text,
            "traceback": self.recorded_traceback
            if self.__traceback__ is None and cause is None
            else _formatted_traceback(self),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlowStoneError:
        """Rebuild an error from ``to_dict()`` output; unknown types come back as the base class."""
        error_class = _ERROR_CLASSES.get(str(data.get("type")), FlowStoneError)
        kind = data.get("kind")
        error = error_class(
            str(data.get("message", "")),
            kind=kind if kind in ERROR_KINDS else None,
            retryable=bool(data.get("retryable", False)),
            asset=data.get("asset"),
            partition=data.get("partition"),
            run_id=data.get("run_id"),
            details=data.get("details") or {},
        )
        cause = data.get("cause")
        error.recorded_cause = None if cause is None else str(cause)
        recorded = data.get("traceback")
        error.recorded_traceback = None if recorded is None else str(recorded)
        return error

    def with_context(
        self, *, asset: str | None = None, partition: str | None = None, run_id: str | None = None
    ) -> FlowStoneError:
        """Fill in context that is still missing and return the same error."""
        self.asset = self.asset if self.asset is not None else asset
        self.partition = self.partition if self.partition is not None else partition
        self.run_id = self.run_id if self.run_id is not None else run_id
        return self


class DefinitionError(FlowStoneError):
    """An asset definition is invalid; raised at registration, before anything runs."""

    default_kind = "validation_error"


class ValidationFailedError(FlowStoneError):
    """Input given at run time is invalid (an option, a payload field, a value)."""

    default_kind = "validation_error"


class PartitionKeyError(ValidationFailedError):
    """A partition key is malformed, of an unsupported type, or not in the asset's partitions."""


class AssetNotFoundError(FlowStoneError):
    """No asset of that name is registered."""

    default_kind = "asset_not_found"


class RunNotFoundError(FlowStoneError):
    """No run has that id."""

    default_kind = "validation_error"


class RunStateError(FlowStoneError):
    """The run is not in a state that allows the request (re-executing an unfinished run...)."""

    default_kind = "validation_error"


class DependencyFailedError(FlowStoneError):
    """An upstream step of the same run failed, so this step cannot run."""

    default_kind = "dependency_failed"


class DependencyNotReadyError(FlowStoneError):
    """A needed upstream partition has no successful materialization yet."""

    default_kind = "dependency_not_ready"
    default_retryable = True


class IOManagerError(FlowStoneError):
    """Storing, loading or deleting a value failed; ``retryable`` when the failure is transient."""

    default_kind = "io_error"


class ExecutionError(FlowStoneError):
    """The asset function raised; the original exception is attached as ``__cause__``."""

    default_kind = "execution_error"


class StepTimeoutError(FlowStoneError):
    """A step ran past its time limit."""

    default_kind = "timeout"
    default_retryable = True


class LeaseLostError(FlowStoneError):
    """The step attempt lost its lease (another attempt owns the step): its work is discarded.

    Raised before or while a stale attempt stores its value; the step boundary records nothing
    for it, since the step belongs to the attempt that took it over.
    """

    default_kind = "execution_error"


class ResourceUnavailableError(FlowStoneError):
    """A required resource is missing or failed its setup."""

    default_kind = "resource_unavailable"


class CheckpointRejectedError(FlowStoneError):
    """A reviewer rejected the checkpoint, or its approval expired."""

    default_kind = "checkpoint_rejected"


class ApprovalNotFoundError(FlowStoneError):
    """No approval has that id."""

    default_kind = "validation_error"


class ApprovalDecidedError(FlowStoneError):
    """The approval was already decided (or expired); a second decision changes nothing."""

    default_kind = "validation_error"


class ApprovalStaleError(ApprovalDecidedError):
    """An input the approval reviewed was materialized again: it must be reviewed anew."""

    default_kind = "validation_error"


class ApprovalForbiddenError(FlowStoneError):
    """This actor may not decide this approval (for example, it is their own request)."""

    default_kind = "validation_error"


class MaterializationNotFoundError(FlowStoneError):
    """The asset partition has no successful materialization (or the id names none)."""

    default_kind = "validation_error"


class LineageCycleError(FlowStoneError):
    """Recording an edge would make a materialization (transitively) consume itself."""

    default_kind = "validation_error"


_ERROR_CLASSES: Final[dict[str, type[FlowStoneError]]] = {
    error_class.__name__: error_class
    for error_class in (
        FlowStoneError,
        DefinitionError,
        ValidationFailedError,
        PartitionKeyError,
        AssetNotFoundError,
        RunNotFoundError,
        RunStateError,
        DependencyFailedError,
        DependencyNotReadyError,
        IOManagerError,
        ExecutionError,
        StepTimeoutError,
        LeaseLostError,
        ResourceUnavailableError,
        CheckpointRejectedError,
        ApprovalNotFoundError,
        ApprovalDecidedError,
        ApprovalStaleError,
        ApprovalForbiddenError,
        MaterializationNotFoundError,
        LineageCycleError,
    )
}

__all__ = [
    "ERROR_KINDS",
    "ApprovalDecidedError",
    "ApprovalForbiddenError",
    "ApprovalNotFoundError",
    "ApprovalStaleError",
    "AssetNotFoundError",
    "CheckpointRejectedError",
    "DefinitionError",
    "DependencyFailedError",
    "DependencyNotReadyError",
    "ErrorKind",
    "ExecutionError",
    "FlowStoneError",
    "IOManagerError",
    "LeaseLostError",
    "LineageCycleError",
    "MaterializationNotFoundError",
    "PartitionKeyError",
    "ResourceUnavailableError",
    "RunNotFoundError",
    "RunStateError",
    "StepTimeoutError",
    "ValidationFailedError",
]
