"""The @asset decorator and asset specs."""

from __future__ import annotations

import dataclasses

import pytest

from flowstone import AssetContext, RetryPolicy, asset
from flowstone.definitions import AssetSpec, definition_of
from flowstone.errors import DefinitionError
from flowstone.partitions import IdentityPartitionMapping


def test_bare_decorator_returns_the_function_unchanged() -> None:
    def total(orders: list[int]) -> int:
        return sum(orders)

    decorated = asset(total)
    assert decorated is total
    assert decorated([1, 2]) == 3
    definition = definition_of(total)
    assert definition is not None
    assert definition.spec.deps == ("orders",)
    assert definition.value_parameters == ("orders",)
    assert not definition.wants_context


def test_called_decorator_merges_explicit_and_inferred_deps() -> None:
    @asset(name="report", deps=["audit_log"], description="The report.", tags={"team": "bi"})
    def build(context: AssetContext, orders: list[int]) -> int:
        return len(orders)

    definition = definition_of(build)
    assert definition is not None
    assert definition.name == "report"
    assert definition.spec.deps == ("audit_log", "orders")
    assert definition.value_parameters == ("orders",)
    assert definition.wants_context
    assert definition.spec.description == "The report."
    assert dict(definition.spec.tags) == {"team": "bi"}


def test_docstring_is_the_default_description() -> None:
    @asset
    def documented() -> int:
        """Counts things."""
        return 1

    definition = definition_of(documented)
    assert definition is not None
    assert definition.spec.description == "Counts things."


@pytest.mark.parametrize(
    "name", ["", "1abc", "a-b", "a b", "a" * 129, "drop table;", "é", "a\n", "os.system"]
)
def test_invalid_names_are_rejected(name: str) -> None:
    with pytest.raises(DefinitionError, match="invalid asset name"):
        asset(name=name)(lambda: 1)


def test_longest_valid_name_is_accepted() -> None:
    assert definition_of(asset(name="a" * 128)(lambda: 1)) is not None


def test_var_args_are_rejected() -> None:
    def spread(*upstreams: int) -> int:
        return 0

    with pytest.raises(DefinitionError, match=r"\*args/\*\*kwargs are not allowed"):
        asset(spread)


def test_non_json_options_are_rejected() -> None:
    with pytest.raises(DefinitionError, match="io_options of 'x' must be JSON-serializable"):
        asset(name="x", io_options={"when": object()})(lambda: 1)


def test_self_dependency_is_rejected() -> None:
    def loop(loop: int) -> int:
        return loop

    with pytest.raises(DefinitionError, match="depends on itself"):
        asset(loop)


def test_mapping_for_a_non_dependency_is_rejected() -> None:
    with pytest.raises(DefinitionError, match="not one of its dependencies"):
        asset(name="x", partition_mappings={"y": IdentityPartitionMapping()})(lambda: 1)


def test_specs_are_frozen_and_replaced_not_mutated() -> None:
    spec = AssetSpec(name="a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "b"  # type: ignore[misc]
    assert dataclasses.replace(spec, code_version="2").code_version == "2"
    assert spec.code_version is None


def test_retry_policy_validates_and_backs_off_exponentially() -> None:
    policy = RetryPolicy(max_retries=5, backoff_seconds=2, backoff_factor=3, max_backoff_seconds=50)
    assert [policy.delay_for(n) for n in (1, 2, 3, 4)] == [2, 6, 18, 50]
    with pytest.raises(DefinitionError):
        RetryPolicy(max_retries=-1)
    with pytest.raises(DefinitionError):
        RetryPolicy(backoff_factor=0.5)
