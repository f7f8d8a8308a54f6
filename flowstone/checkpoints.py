"""Checkpoints: approval gates declared on assets with ``@checkpoint``.

A checkpoint looks at the value an asset just computed. When its ``condition`` holds, the step
does not store the value: it records an approval request and waits (no worker waits with it).
A reviewer approves, modifies (edits the value) or rejects; an automated gate (``decide``) does
the same at once. Only then is the value stored and the step completed, or the step failed with
a ``checkpoint_rejected`` error.

A checkpoint may declare a ``form`` (a JSON Schema the edited value must match; the consoles
render it as fields) and named ``options`` beyond approve/reject, each mapped to an outcome:
continue with the value, skip the step and everything downstream of it, or fail the step.

::

    @checkpoint(
        condition=lambda review: review.value["total"] > 10_000,
        message=lambda review: f"Pay {review.value['total']} EUR to {review.partition}?",
        timeout=dt.timedelta(hours=4),
        on_timeout="escalate",
        escalate_to="group:finance-leads",
        assignees=["alice", "group:finance"],
        quorum=2,
    )
    @asset(partitions=DAILY)
    def payouts(invoices: list[dict]) -> dict: ...

``assignees`` name who may decide (users, or ``group:NAME`` for a Django auth group's members);
``quorum`` is how many of them must approve. Escalation hands the decision to ``escalate_to``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal

import jsonschema
import referencing
import referencing.exceptions
from referencing.jsonschema import DRAFT202012

from flowstone.definitions import DEFINITION_ATTRIBUTE, AssetFunction, definition_of
from flowstone.errors import DefinitionError, ValidationFailedError

if TYPE_CHECKING:
    from flowstone.partitions import PartitionValue

OnTimeout = Literal["auto_approve", "auto_reject", "escalate", "extend"]
ON_TIMEOUT_POLICIES: Final = ("auto_approve", "auto_reject", "escalate", "extend")
DEFAULT_ON_TIMEOUT: Final[OnTimeout] = "auto_reject"
Outcome = Literal["continue", "skip", "fail"]
OUTCOMES: Final = ("continue", "skip", "fail")
OPTION_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,39}")
"""An option's name: a short slug, safe in a URL, a form value and a command line."""
RESERVED_OPTION_NAMES: Final = frozenset({"approve", "modify", "reject", "option"})
FORM_VALIDATOR: Final = jsonschema.Draft202012Validator
"""The JSON Schema dialect of review forms (a schema's own ``$schema`` is not honoured)."""
GROUP_PREFIX: Final = "group:"
NAME_LENGTH: Final = 150
"""The longest user or group name (Django's ``User.username`` and ``Group.name``)."""
USER_NAME: Final = re.compile(r"[\w.@+-]+\Z")
"""Django's default user name characters (``UnicodeUsernameValidator``)."""
MAX_DECIDERS: Final = 100
MAX_QUORUM: Final = 100


@dataclass(frozen=True, kw_only=True, slots=True)
class Review:
    """What a checkpoint's functions see: the step, the proposed value and the upstream values."""

    asset: str
    partition: PartitionValue | None
    partition_key: str
    run_id: str
    value: Any
    upstream: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Approve:
    """An automated decision: store the value as computed."""


@dataclass(frozen=True, slots=True)
class Modify:
    """An automated decision: store ``value`` instead of the computed value."""

    value: Any


@dataclass(frozen=True, slots=True)
class Reject:
    """An automated decision: fail the step with ``reason``."""

    reason: str


Decision = Approve | Modify | Reject
ReviewFunction = Callable[[Review], Any]
Assignees = Sequence[str] | Callable[[Review], Sequence[str]]


def decider_name(name: object) -> str:
    """Check one decider name: a user name, or ``group:`` and a group name; return it.

    Names end up in queries, audit details and HTML, so anything else (not a string, empty, too
    long, control characters, a user name Django would not accept) is a ``DefinitionError``.
    """
    if not isinstance(name, str):
        raise DefinitionError(f"a decider must be a user or 'group:NAME', got {name!r:.80}")
    group = name.removeprefix(GROUP_PREFIX) if name.startswith(GROUP_PREFIX) else None
    bare = name if group is None else group
    if not bare or len(bare) > NAME_LENGTH or bare != bare.strip() or not bare.isprintable():
        raise DefinitionError(f"{name!r:.80} is not a valid user or group name")
    if group is None and not USER_NAME.match(name):
        raise DefinitionError(f"{name!r:.80} is not a valid user name")
    return name


def decider_names(names: object) -> tuple[str, ...]:
    """Check a list of decider names (no duplicates kept, order kept)."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise DefinitionError(
            f"assignees must be a list of user or 'group:NAME' names, got {names!r:.80}"
        )
    if len(names) > MAX_DECIDERS:
        raise DefinitionError(f"at most {MAX_DECIDERS} assignees, got {len(names)}")
    return tuple(dict.fromkeys(decider_name(name) for name in names))


@dataclass(frozen=True, slots=True)
class Option:
    """A named choice offered to the reviewer beyond approve/reject, mapped to an ``outcome``.

    ``continue`` stores the proposed value (or the value the reviewer submits, checked like a
    modification); ``skip`` ends the step and every step downstream of it ``skipped``, storing
    nothing; ``fail`` fails the step as a rejection would.
    """

    name: str
    label: str
    outcome: Outcome = "continue"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not OPTION_NAME.fullmatch(self.name):
            raise DefinitionError(
                f"an option name must match {OPTION_NAME.pattern} (got {self.name!r:.60})"
            )
        if self.name in RESERVED_OPTION_NAMES:
            raise DefinitionError(f"option name {self.name!r} is a decision's name; pick another")
        if not isinstance(self.label, str) or not self.label.strip():
            raise DefinitionError(f"option {self.name!r} needs a label")
        if self.outcome not in OUTCOMES:
            raise DefinitionError(
                f"option {self.name!r}: outcome must be one of {', '.join(OUTCOMES)}, "
                f"got {self.outcome!r:.60}"
            )


def checked_form(form: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A review form as declared, once it is a valid JSON Schema that is itself JSON.

    The schema is published as is by the API, so it must be JSON; checking it here makes a
    broken form a definition error (``manage.py check``) instead of a reviewer's 500.
    """
    if form is None:
        return None
    if not isinstance(form, Mapping):
        raise DefinitionError(f"a checkpoint form must be a JSON Schema object, got {form!r:.60}")
    try:
        json.dumps(form, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"a checkpoint form must be JSON: {exc}") from exc
    try:
        FORM_VALIDATOR.check_schema(form)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path)
        raise DefinitionError(
            f"the checkpoint form is not a valid JSON Schema at /{where}: {exc.message}"
        ) from exc
    _resolve_refs(form)
    return MappingProxyType(dict(form))


def _resolve_refs(form: Mapping[str, Any]) -> None:
    """Resolve every ``$ref`` and ``$dynamicRef`` of the form within the form itself.

    A reference that leads nowhere (``#/$defs/money`` without ``$defs``) is valid JSON Schema
    but fails every validation, so it is a definition error here. The registry holds the form
    alone: nothing is fetched, a remote reference does not resolve.
    """
    root = DRAFT202012.create_resource(form)
    resolver = referencing.Registry().with_resource(root.id() or "", root).resolver()
    pending = [(resolver.in_subresource(root), root)]
    while pending:
        scope, resource = pending.pop()
        contents = resource.contents
        for keyword in ("$ref", "$dynamicRef"):
            ref = contents.get(keyword) if isinstance(contents, Mapping) else None
            if not isinstance(ref, str):
                continue
            try:
                scope.lookup(ref)
            except referencing.exceptions.Unresolvable as exc:
                raise DefinitionError(
                    f"the checkpoint form's {keyword} {ref[:80]!r} does not resolve: {exc!s:.120}"
                ) from exc
        pending.extend((scope.in_subresource(sub), sub) for sub in resource.subresources())


def checked_options(options: Sequence[Option]) -> tuple[Option, ...]:
    """The options as a tuple, once each is an ``Option`` and their names are unique."""
    checked = tuple(options)
    for option in checked:
        if not isinstance(option, Option):
            raise DefinitionError(f"checkpoint options must be Option(...), got {option!r:.60}")
    names = [option.name for option in checked]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DefinitionError(f"checkpoint option names must be unique: {', '.join(duplicates)}")
    return checked


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckpointSpec:
    """The approval gate of one asset."""

    condition: Callable[[Review], bool] | None = None
    message: str | Callable[[Review], str] = "Approve this value?"
    timeout: dt.timedelta | None = None
    on_timeout: OnTimeout = DEFAULT_ON_TIMEOUT
    escalate_to: str | None = None
    extend_by: dt.timedelta | None = None
    decide: Callable[[Review], Decision] | None = None
    validate_modification: Callable[[Review, Any], Any] | None = None
    on_approve: Callable[[Review, Any], None] | None = None
    on_reject: Callable[[Review, str], None] | None = None
    form: Mapping[str, Any] | None = None
    options: tuple[Option, ...] = ()
    assignees: Assignees | None = None
    quorum: int = 1

    def __post_init__(self) -> None:
        self._check_deciders()
        if self.on_timeout not in ON_TIMEOUT_POLICIES:
            raise DefinitionError(
                f"on_timeout must be one of {', '.join(ON_TIMEOUT_POLICIES)}, "
                f"got {self.on_timeout!r}"
            )
        if self.timeout is not None and self.timeout <= dt.timedelta(0):
            raise DefinitionError("a checkpoint timeout must be positive")
        if self.on_timeout == "escalate" and not self.escalate_to:
            raise DefinitionError("on_timeout='escalate' needs escalate_to (a group or user name)")
        if self.on_timeout == "extend" and (
            self.extend_by is None or self.extend_by <= dt.timedelta(0)
        ):
            raise DefinitionError("on_timeout='extend' needs a positive extend_by")
        if self.timeout is None and self.on_timeout != DEFAULT_ON_TIMEOUT:
            raise DefinitionError(f"on_timeout={self.on_timeout!r} needs a timeout")

    def option(self, name: str) -> Option | None:
        """The option called ``name``, if this checkpoint offers it."""
        return next((option for option in self.options if option.name == name), None)

    def _check_deciders(self) -> None:
        """Fixed assignees and ``escalate_to`` are checked here; a callable's names on request."""
        if self.assignees is not None and not callable(self.assignees):
            decider_names(self.assignees)
        if self.escalate_to is not None:
            decider_name(self.escalate_to)
        if (
            isinstance(self.quorum, bool)
            or not isinstance(self.quorum, int)
            or not 1 <= self.quorum <= MAX_QUORUM
        ):
            raise DefinitionError(f"quorum must be an integer from 1 to {MAX_QUORUM}")
        if self.decide is not None and (self.assignees is not None or self.quorum != 1):
            raise DefinitionError("an automated gate (decide=) has no assignees or quorum")

    def deciders_for(self, review: Review) -> tuple[str, ...]:
        """Who may decide this value: the assignees (a callable's answer, checked); () for all."""
        if self.assignees is None:
            return ()
        names = self.assignees(review) if callable(self.assignees) else self.assignees
        return decider_names(names)

    def needs_review(self, review: Review) -> bool:
        """Whether this value must pass the gate (the condition, or always without one)."""
        return True if self.condition is None else bool(self.condition(review))

    def message_for(self, review: Review) -> str:
        """The reviewer's message for this value."""
        return self.message if isinstance(self.message, str) else str(self.message(review))

    def modified_value(self, review: Review, value: Any) -> Any:
        """Check a reviewer's edited value (JSON, then the asset's validator) and return it."""
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValidationFailedError(f"the modified value must be JSON: {exc}") from exc
        if self.validate_modification is None:
            return value
        return self.validate_modification(review, value)


def checkpoint(
    *,
    condition: Callable[[Review], bool] | None = None,
    message: str | Callable[[Review], str] = "Approve this value?",
    timeout: dt.timedelta | None = None,
    on_timeout: OnTimeout = DEFAULT_ON_TIMEOUT,
    escalate_to: str | None = None,
    extend_by: dt.timedelta | None = None,
    decide: Callable[[Review], Decision] | None = None,
    validate_modification: Callable[[Review, Any], Any] | None = None,
    on_approve: Callable[[Review, Any], None] | None = None,
    on_reject: Callable[[Review, str], None] | None = None,
    form: Mapping[str, Any] | None = None,
    options: Sequence[Option] = (),
    assignees: Assignees | None = None,
    quorum: int = 1,
) -> Callable[[AssetFunction], AssetFunction]:
    """Put an approval gate on an asset; apply it above ``@asset``.

    ``form`` is a JSON Schema (draft 2020-12) that a reviewer's edited value must match;
    ``options`` are named choices beyond approve/reject (``Option``). Both are checked here: an
    invalid schema or option is a ``DefinitionError``. ``assignees`` (names, or a function of
    the ``Review`` returning names) restricts who may decide; without them anyone holding
    ``approvals.decide_approval`` may. ``quorum`` approvals of those deciders decide.
    """
    spec = CheckpointSpec(
        condition=condition,
        message=message,
        timeout=timeout,
        on_timeout=on_timeout,
        escalate_to=escalate_to,
        extend_by=extend_by,
        decide=decide,
        validate_modification=validate_modification,
        on_approve=on_approve,
        on_reject=on_reject,
        form=checked_form(form),
        options=checked_options(options),
        assignees=assignees,
        quorum=quorum,
    )

    def decorate(function: AssetFunction) -> AssetFunction:
        definition = definition_of(function)
        if definition is None:
            raise DefinitionError(
                "@checkpoint must be applied above @asset "
                f"({getattr(function, '__name__', function)!r})"
            )
        if definition.checkpoint is not None:
            raise DefinitionError(f"asset {definition.name!r} already has a checkpoint")
        setattr(function, DEFINITION_ATTRIBUTE, replace(definition, checkpoint=spec))
        return function

    return decorate
