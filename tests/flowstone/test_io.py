"""The memory and filesystem IO managers."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from flowstone.errors import IOManagerError
from flowstone.io import FilesystemIOManager, IOManager, IOTarget, MemoryIOManager
from flowstone.io.filesystem import partition_file_stem
from flowstone.partitions import encode_partition_key

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(params=["memory", "filesystem"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> IOManager:
    return MemoryIOManager() if request.param == "memory" else FilesystemIOManager(tmp_path)


TARGET = IOTarget(asset="orders", partition_key=encode_partition_key("a|b/../c"))


def test_store_load_exists_delete(manager: IOManager) -> None:
    assert not manager.exists(TARGET)
    stored = manager.store(TARGET, [{"id": 1}, {"id": 2}])
    assert stored.row_count == 2
    assert stored.size_bytes == len(json.dumps([{"id": 1}, {"id": 2}], sort_keys=True).encode())
    assert stored.content_hash is not None
    assert manager.exists(TARGET)
    assert manager.load(TARGET) == [{"id": 1}, {"id": 2}]
    manager.delete(TARGET)
    assert not manager.exists(TARGET)
    manager.delete(TARGET)


def test_store_overwrites(manager: IOManager) -> None:
    manager.store(TARGET, {"v": 1})
    manager.store(TARGET, {"v": 2})
    assert manager.load(TARGET) == {"v": 2}


def test_load_of_missing_value_is_an_io_error(manager: IOManager) -> None:
    with pytest.raises(IOManagerError) as caught:
        manager.load(TARGET)
    assert caught.value.kind == "io_error"


@pytest.mark.parametrize("value", [{1, 2}, object(), float("nan"), b"bytes"])
def test_non_json_values_are_refused(manager: IOManager, value: object) -> None:
    with pytest.raises(IOManagerError, match="not JSON-serializable"):
        manager.store(TARGET, value)
    assert not manager.exists(TARGET)


def test_filesystem_writes_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    manager = FilesystemIOManager(tmp_path)
    manager.store(TARGET, {"v": 1})
    files = list((tmp_path / "orders").iterdir())
    assert [f.name for f in files] == [f"{partition_file_stem(TARGET.partition_key)}.json"]
    assert files[0].parent == tmp_path / "orders"  # no traversal out of the asset directory


def test_failed_write_keeps_the_previous_value(tmp_path: Path) -> None:
    manager = FilesystemIOManager(tmp_path)
    manager.store(TARGET, {"v": 1})
    with pytest.raises(IOManagerError):
        manager.store(TARGET, {"v": object()})
    assert manager.load(TARGET) == {"v": 1}


def test_corrupt_file_is_a_clear_io_error(tmp_path: Path) -> None:
    manager = FilesystemIOManager(tmp_path)
    manager.store(TARGET, {"v": 1})
    manager.path_for(TARGET).write_text("{not json")
    with pytest.raises(IOManagerError, match="not valid JSON"):
        manager.load(TARGET)


def test_unwritable_directory_is_an_io_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(IOManagerError, match="could not write"):
        FilesystemIOManager(blocker).store(TARGET, 1)


def test_file_stems_are_injective_and_safe() -> None:
    keys = ["", "s:", "s:a", "s:a/b", "s:..", "s:a%2Fb", "T:[]", "s:" + "x" * 500]
    stems = [partition_file_stem(k) for k in keys]
    assert len(set(stems)) == len(stems)
    assert all("/" not in s and s not in {".", ".."} and len(s) <= 200 for s in stems)
