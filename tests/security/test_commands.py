"""Management commands under hostile asset names and partition keys: refused, nothing imported."""

from __future__ import annotations

import io
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from assets.models import Run
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db]

HOSTILE_NAMES = ["os.system", "__import__('os')", "../../etc/passwd", "source;rm -rf /", "a" * 200]
HOSTILE_KEYS = ["s:../../etc/passwd", "s:eu\x00", "p:os.system", "x:" + "y" * 600]


@pytest.fixture(autouse=True)
def _pipelines(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.diamond", "tests.pipelines.shapes")


def _refused(*args: str) -> CommandError:
    with pytest.raises(CommandError) as caught:
        call_command(*args, stdout=io.StringIO(), stderr=io.StringIO())
    return caught.value


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_asset_names_are_unknown_assets(name: str) -> None:
    for warm_up in ("materialize", "backfill", "lineage"):
        _refused(warm_up, "nope")  # the commands' own imports happen here
    modules = set(sys.modules)
    for command in (("materialize", name), ("backfill", name), ("lineage", name)):
        error = _refused(*command)
        assert error.returncode in (1, 2), command
        assert "unknown asset" in str(error) or "invalid" in str(error), (command, str(error))
    assert set(sys.modules) == modules
    assert Run.objects.count() == 0


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_hostile_partition_keys_are_refused(key: str) -> None:
    assert _refused("materialize", "source", "--partition-key", key).returncode == 2
    assert _refused("lineage", "source", "--partition-key", key).returncode in (1, 2)
    assert _refused("materialize", "source", "--partition", key.split(":", 1)[1]).returncode == 2
    assert Run.objects.count() == 0
