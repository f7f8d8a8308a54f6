"""The S3 IO manager, against a real S3-compatible server (moto's server mode) on loopback."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pytest
from django.core.management import call_command

import flowstone
from assets.models import Materialization
from flowstone.errors import DefinitionError, IOManagerError
from flowstone.io import IOTarget
from flowstone.io.s3 import S3IOManager
from flowstone.partitions import encode_partition_key
from tests.s3 import free_port, start_moto_server

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import UseDefinitions
    from tests.s3 import MotoServer

S3_CLASS = "flowstone.io.s3.S3IOManager"
KEYS = [
    "",
    encode_partition_key("a|b"),
    encode_partition_key("日本/..|x"),
    encode_partition_key(("tenant|1", dt.date(2025, 1, 2))),
]


def _manager(server: MotoServer, bucket: str, **options: Any) -> S3IOManager:
    return S3IOManager(bucket=bucket, **{**server.client_options(), **options})


def _keys(server: MotoServer, bucket: str) -> list[str]:
    listing = server.client().list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


@pytest.mark.parametrize("partition_key", KEYS)
@pytest.mark.parametrize(
    "value", [{"name": "Zoë", "tags": ["日本", "|"]}, [1, 2.5, None, True], "text ✓", 42]
)
def test_json_round_trip(
    moto_server: MotoServer, bucket: str, partition_key: str, value: object
) -> None:
    manager = _manager(moto_server, bucket, prefix="warehouse")
    target = IOTarget(asset="orders", partition_key=partition_key)
    assert not manager.exists(target)
    stored = manager.store(target, value)
    body = json.dumps(value, sort_keys=True, ensure_ascii=False).encode()
    assert stored.size_bytes == len(body)
    assert stored.row_count == (len(value) if isinstance(value, list) else None)
    assert stored.content_hash is not None
    assert stored.content_hash.startswith("sha256:")
    assert manager.exists(target)
    assert manager.load(target) == value
    manager.delete(target)
    assert not manager.exists(target)
    manager.delete(target)  # deleting twice is fine


def test_keys_are_percent_encoded_under_the_prefix(moto_server: MotoServer, bucket: str) -> None:
    manager = _manager(moto_server, bucket, prefix="warehouse/")
    for key in KEYS:
        stored = manager.store(IOTarget(asset="orders", partition_key=key), {"k": key})
        assert stored.uri.startswith(f"s3://{bucket}/warehouse/orders/")
    keys = _keys(moto_server, bucket)
    assert "warehouse/orders/__unpartitioned__.json" in keys
    assert "warehouse/orders/s%3Aa%7Cb.json" in keys
    assert len(keys) == len(KEYS)
    assert all(k.startswith("warehouse/orders/") and k.count("/") == 2 for k in keys)


def test_restore_overwrites_without_duplicates(moto_server: MotoServer, bucket: str) -> None:
    manager = _manager(moto_server, bucket)
    target = IOTarget(asset="orders", partition_key=encode_partition_key("a|b"))
    manager.store(target, [{"v": 1}, {"v": 2}])
    manager.store(target, [{"v": 3}])
    assert manager.load(target) == [{"v": 3}]
    assert _keys(moto_server, bucket) == ["orders/s%3Aa%7Cb.json"]


def test_parquet_round_trip_per_asset_options(moto_server: MotoServer, bucket: str) -> None:
    manager = _manager(moto_server, bucket)
    target = IOTarget(
        asset="orders",
        partition_key=encode_partition_key("日本|1"),
        options={
            "file_format": "parquet",
            "prefix": "tables",
            "key_template": "{prefix}x/{partition}.{extension}",
        },
    )
    rows = [{"id": 1, "city": "Zürich"}, {"id": 2, "city": "a|b"}]
    stored = manager.store(target, rows)
    assert stored.row_count == 2
    assert stored.uri == f"s3://{bucket}/tables/x/s%3A%E6%97%A5%E6%9C%AC%7C1.parquet"
    loaded = manager.load(target)
    assert isinstance(loaded, pa.Table)
    assert loaded.to_pylist() == rows
    head = moto_server.client().head_object(
        Bucket=bucket, Key="tables/x/s%3A%E6%97%A5%E6%9C%AC%7C1.parquet"
    )
    assert head["ContentLength"] == stored.size_bytes


def test_parquet_as_pandas(moto_server: MotoServer, bucket: str) -> None:
    manager = _manager(moto_server, bucket, file_format="parquet", as_pandas=True)
    target = IOTarget(asset="frame", partition_key="")
    frame = pd.DataFrame({"id": [1, 2], "name": ["ä", "|"]})
    assert manager.store(target, frame).row_count == 2
    loaded = manager.load(target)
    assert isinstance(loaded, pd.DataFrame)
    pd.testing.assert_frame_equal(loaded, frame)


def test_missing_object_is_a_permanent_error(moto_server: MotoServer, bucket: str) -> None:
    manager = _manager(moto_server, bucket)
    with pytest.raises(IOManagerError, match=r"no stored value at s3://") as caught:
        manager.load(IOTarget(asset="orders", partition_key=""))
    assert caught.value.retryable is False


def test_missing_bucket_is_a_permanent_error(moto_server: MotoServer) -> None:
    manager = _manager(moto_server, "flowstone-no-such-bucket")
    with pytest.raises(IOManagerError, match="NoSuchBucket") as caught:
        manager.store(IOTarget(asset="orders", partition_key=""), 1)
    assert caught.value.retryable is False


def test_unreachable_endpoint_is_retryable(moto_server: MotoServer) -> None:
    closed = {**moto_server.client_options(), "endpoint_url": f"http://127.0.0.1:{free_port()}"}
    manager = S3IOManager(bucket="flowstone-gone", **closed)
    target = IOTarget(asset="orders", partition_key="")
    for action in (
        lambda: manager.store(target, 1),
        lambda: manager.load(target),
        lambda: manager.exists(target),
    ):
        with pytest.raises(IOManagerError, match="S3 is unreachable") as caught:
            action()
        assert caught.value.retryable is True
        assert caught.value.kind == "io_error"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"bucket": "Bad_Bucket"}, "bucket 'Bad_Bucket' is not a valid S3 bucket name"),
        ({"prefix": "../escape"}, "prefix '../escape' must be '/'-separated segments"),
        ({"prefix": "/root"}, "prefix '/root' must be '/'-separated segments"),
        ({"key_template": "{asset.__class__}/{partition}"}, "may only use the plain fields"),
        ({"key_template": "{asset}/{partition!r}"}, "may only use the plain fields"),
        ({"key_template": "fixed.json"}, "must contain {partition}"),
        ({"key_template": "{partition"}, "is malformed"),
        ({"file_format": "pickle"}, "file_format 'pickle' is not one of json, parquet"),
        ({"colour": "red"}, "unknown option 'colour'"),
    ],
)
def test_invalid_asset_options_are_refused_before_any_request(
    moto_server: MotoServer, bucket: str, options: dict[str, Any], problem: str
) -> None:
    manager = _manager(moto_server, bucket)
    (reported,) = manager.validate_options(options)
    assert problem in reported
    with pytest.raises(IOManagerError, match="invalid IO options for asset 'orders'") as caught:
        manager.store(IOTarget(asset="orders", partition_key="", options=options), {"v": 1})
    assert caught.value.retryable is False
    assert _keys(moto_server, bucket) == []


def test_manager_options_are_checked_when_configured() -> None:
    with pytest.raises(DefinitionError, match=r"must contain \{asset\} and \{partition\}"):
        S3IOManager(bucket="flowstone-ok", key_template="{partition}.json")
    with pytest.raises(DefinitionError, match="endpoint_url 'ftp://x' must be an http"):
        S3IOManager(bucket="flowstone-ok", endpoint_url="ftp://x")
    with pytest.raises(TypeError):
        S3IOManager(bucket="flowstone-ok", unknown_option=1)


def _s3_default(server: MotoServer, bucket: str) -> dict[str, Any]:
    return {
        "default": {"CLASS": S3_CLASS, "OPTIONS": {"bucket": bucket, **server.client_options()}},
        "memory": {"CLASS": "flowstone.io.MemoryIOManager", "OPTIONS": {}},
    }


@pytest.mark.django_db
def test_pipeline_round_trip_through_materialize(
    use_definitions: UseDefinitions, moto_server: MotoServer, bucket: str
) -> None:
    use_definitions("tests.pipelines.s3_flow", io_managers=_s3_default(moto_server, bucket))
    result = flowstone.materialize_all("region_total", "north|east", include_values=True)
    result.raise_for_status()
    assert result.value("region_total", "north|east") == {"rows": 3, "total": 3.0}
    readings = next(step for step in result.steps if step.asset == "readings")
    version = readings.metadata["version"]
    assert version == f"{readings.materialization_id}.1"
    assert readings.metadata["uri"].endswith(f"/readings/s%3Anorth%7Ceast@{version}.parquet")
    assert readings.metadata["row_count"] == 3
    sensors = next(step for step in result.steps if step.asset == "sensors")
    assert f"sensors/__unpartitioned__@{sensors.metadata['version']}.json" in _keys(
        moto_server, bucket
    )


@pytest.mark.django_db
def test_s3_outage_fails_the_step_with_a_retryable_io_error(
    use_definitions: UseDefinitions, tmp_path: Path
) -> None:
    server = start_moto_server(tmp_path / "moto.log")
    try:
        bucket = server.create_bucket()
        use_definitions("tests.pipelines.s3_flow", io_managers=_s3_default(server, bucket))
        first = flowstone.materialize("sensors")
        assert first.status == "success"
        server.stop()  # the outage

        result = flowstone.materialize("sensors")
    finally:
        server.stop()
    assert result.status == "failed"
    (step,) = result.steps
    assert step.status == "failed"
    assert step.attempt == 2  # the retryable error was retried once (RetryPolicy), then failed
    assert step.error is not None
    assert step.error.kind == "io_error"
    assert step.error.retryable is True
    assert "S3 is unreachable" in step.error.message
    assert not Materialization.objects.filter(run_id=result.run_id, status="success").exists()
    row = Materialization.objects.get(run_id=result.run_id)
    assert row.error is not None
    assert row.error["retryable"] is True
    assert row.error["kind"] == "io_error"


@pytest.mark.django_db
def test_demo_runs_on_the_s3_manager_by_settings_alone(
    use_definitions: UseDefinitions, moto_server: MotoServer, bucket: str
) -> None:
    use_definitions(
        "demo.assets",
        io_managers=_s3_default(moto_server, bucket),
        resources={"catalog": {"CLASS": "demo.resources.ProductCatalog", "OPTIONS": {}}},
    )
    out = io.StringIO()
    call_command("demo", stdout=out)
    assert "success (23 steps)" in out.getvalue()
    assert re.search(rf"s3://{bucket}/raw_orders/d%3A2025-12-03@\d+\.1\.json", out.getvalue())
    keys = _keys(moto_server, bucket)
    assert len(keys) == 23
    assert any(re.fullmatch(r"weekly_report/d%3A2025-12-01@\d+\.1\.json", key) for key in keys)
