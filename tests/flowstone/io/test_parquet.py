"""The Parquet IO manager: local files written atomically, and s3:// on a real S3 server."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowstone.errors import DefinitionError, IOManagerError
from flowstone.io import IOTarget
from flowstone.io.filesystem import partition_file_stem
from flowstone.io.parquet import ParquetIOManager
from flowstone.partitions import encode_partition_key

if TYPE_CHECKING:
    from pathlib import Path

    from tests.s3 import MotoServer

KEYS = [
    "",
    encode_partition_key("a|b"),
    encode_partition_key("日本/..|x"),
    encode_partition_key(("tenant|1", dt.date(2025, 1, 2))),
]
ROWS = [
    {"id": 1, "city": "Zürich", "price": 1.5, "day": dt.date(2025, 1, 2), "tags": ["a|b"]},
    {"id": 2, "city": "a|b", "price": None, "day": None, "tags": []},
]


@pytest.mark.parametrize("partition_key", KEYS)
def test_local_round_trip(tmp_path: Path, partition_key: str) -> None:
    manager = ParquetIOManager(path=tmp_path)
    target = IOTarget(asset="orders", partition_key=partition_key)
    assert not manager.exists(target)
    stored = manager.store(target, ROWS)
    path = tmp_path / "orders" / f"{partition_file_stem(partition_key)}.parquet"
    assert stored.uri == path.resolve().as_uri()
    assert stored.row_count == 2
    assert stored.size_bytes == path.stat().st_size
    assert stored.content_hash is not None
    assert stored.content_hash.startswith("sha256:")
    loaded = manager.load(target)
    assert isinstance(loaded, pa.Table)
    assert loaded.to_pylist() == ROWS
    manager.delete(target)
    assert not manager.exists(target)
    manager.delete(target)


def test_one_file_per_partition_and_no_temporary_files(tmp_path: Path) -> None:
    manager = ParquetIOManager(path=tmp_path)
    for key in KEYS:
        manager.store(IOTarget(asset="orders", partition_key=key), [{"key": key}])
    names = sorted(path.name for path in (tmp_path / "orders").iterdir())
    assert names == sorted(f"{partition_file_stem(key)}.parquet" for key in KEYS)
    assert "__unpartitioned__.parquet" in names
    assert all("/" not in name and not name.startswith(".tmp-") for name in names)


def test_restore_overwrites(tmp_path: Path) -> None:
    manager = ParquetIOManager(path=tmp_path)
    target = IOTarget(asset="orders", partition_key=encode_partition_key("a|b"))
    manager.store(target, [{"n": 1}, {"n": 2}])
    manager.store(target, [{"n": 3}])
    assert manager.load(target).to_pylist() == [{"n": 3}]
    assert len(list((tmp_path / "orders").iterdir())) == 1


def test_arrow_and_pandas_values(tmp_path: Path) -> None:
    manager = ParquetIOManager(path=tmp_path, as_pandas=True)
    frame = pd.DataFrame({"id": [1, 2], "name": ["ä", "|"]})
    table = pa.table({"id": [3], "name": ["ö"]})
    assert manager.store(IOTarget(asset="frame", partition_key=""), frame).row_count == 2
    assert manager.store(IOTarget(asset="table", partition_key=""), table).row_count == 1
    loaded = manager.load(IOTarget(asset="frame", partition_key=""))
    assert isinstance(loaded, pd.DataFrame)
    pd.testing.assert_frame_equal(loaded, frame)
    pd.testing.assert_frame_equal(
        manager.load(IOTarget(asset="table", partition_key="")), table.to_pandas()
    )


def test_a_failed_store_keeps_the_previous_file(tmp_path: Path) -> None:
    manager = ParquetIOManager(path=tmp_path)
    target = IOTarget(asset="orders", partition_key="")
    manager.store(target, [{"n": 1}])
    with pytest.raises(IOManagerError, match="is not tabular") as caught:
        manager.store(target, {"not": "rows"})
    assert caught.value.retryable is False
    with pytest.raises(IOManagerError, match="the columns cannot be typed"):
        manager.store(target, [{"n": 1}, {"n": "one"}])
    assert manager.load(target).to_pylist() == [{"n": 1}]
    assert [p.name for p in (tmp_path / "orders").iterdir()] == ["__unpartitioned__.parquet"]


def test_per_asset_compression(tmp_path: Path) -> None:
    manager = ParquetIOManager(path=tmp_path)
    target = IOTarget(asset="orders", partition_key="", options={"compression": "zstd"})
    manager.store(target, [{"n": 1}])
    metadata = pq.ParquetFile(manager.path_for(target)).metadata
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    (problem,) = manager.validate_options({"compression": "pickle"})
    assert problem.startswith("compression 'pickle' is not one of brotli, gzip, lz4")
    assert manager.validate_options({"path": "/etc"}) == [
        "unknown option 'path' (known: compression)"
    ]
    with pytest.raises(IOManagerError, match="invalid IO options for asset 'orders'"):
        manager.store(IOTarget(asset="orders", partition_key="", options={"path": "/etc"}), [])


def test_corrupt_and_missing_files_are_permanent_errors(tmp_path: Path) -> None:
    manager = ParquetIOManager(path=tmp_path)
    target = IOTarget(asset="orders", partition_key="")
    with pytest.raises(IOManagerError, match="no stored value at") as caught:
        manager.load(target)
    assert caught.value.retryable is False
    manager.store(target, [{"n": 1}])
    manager.path_for(target).write_bytes(b"not parquet")
    with pytest.raises(IOManagerError, match="is not valid Parquet"):
        manager.load(target)


def test_manager_options_are_checked_when_configured(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="compression 'lzo' is not one of"):
        ParquetIOManager(path=tmp_path, compression="lzo")
    with pytest.raises(DefinitionError, match="the s3 option only applies to an s3://"):
        ParquetIOManager(path=tmp_path, s3={"endpoint_url": "http://127.0.0.1:1"})
    with pytest.raises(DefinitionError, match="bucket 'Bad_Bucket' is not a valid S3 bucket"):
        ParquetIOManager(path="s3://Bad_Bucket/x")


def test_s3_round_trip(moto_server: MotoServer, bucket: str) -> None:
    manager = ParquetIOManager(
        path=f"s3://{bucket}/lake", as_pandas=True, s3=moto_server.client_options()
    )
    target = IOTarget(asset="orders", partition_key=encode_partition_key("日本|1"))
    stored = manager.store(target, ROWS)
    assert stored.uri == f"s3://{bucket}/lake/orders/s%3A%E6%97%A5%E6%9C%AC%7C1.parquet"
    assert stored.row_count == 2
    assert manager.exists(target)
    loaded: Any = manager.load(target)
    assert isinstance(loaded, pd.DataFrame)
    assert list(loaded["city"]) == ["Zürich", "a|b"]
    manager.store(target, [{"id": 9}])
    listing = moto_server.client().list_objects_v2(Bucket=bucket)
    assert [item["Key"] for item in listing["Contents"]] == [
        "lake/orders/s%3A%E6%97%A5%E6%9C%AC%7C1.parquet"
    ]
    manager.delete(target)
    assert not manager.exists(target)
