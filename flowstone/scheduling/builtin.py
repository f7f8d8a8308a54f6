"""Built-in sensors: files in a directory, objects under an S3 prefix, an asset's successes.

``file_sensor``, ``s3_sensor`` and ``asset_sensor`` (new successful materializations) each
decorate a function that receives the new arrivals (oldest first) and returns run requests, a
``SkipReason`` or ``None``; the sensor keeps its own cursor::

    @file_sensor(directory="/data/inbox", pattern="*.csv", interval=30)
    def inbox_files(files: list[FileArrival]) -> list[RunRequest]:
        return [RunRequest(asset="imports", partition=f.name, run_key=f.run_key) for f in files]

File and S3 cursors hold the newest modification time seen and the names seen at that time, so
two arrivals with the same timestamp are both reported, and each arrival once. An arrival whose
timestamp is older than the cursor (a file moved in with its old mtime) is not seen: write new
files, or touch them. At most ``MAX_ARRIVALS_PER_POLL`` arrivals are handed over per poll; the
rest follow on the next polls.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from flowstone.errors import DefinitionError, ExecutionError
from flowstone.scheduling.requests import (
    SensorResult,
    SkipReason,
    as_sensor_result,
    asset_name_of,
    bounded_run_key,
)
from flowstone.scheduling.sensors import (
    DEFAULT_SENSOR_INTERVAL_SECONDS,
    MaterializationEvent,
    Poller,
    SensorContext,
    SensorFunction,
    attach_sensor,
    build_sensor_definition,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from flowstone.definitions import AssetFunction

MAX_ARRIVALS_PER_POLL: Final = 100

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True, slots=True)
class FileArrival:
    """A file found by a ``file_sensor``: its path, name relative to the directory, mtime, size."""

    path: str
    name: str
    mtime_ns: int
    size: int

    @property
    def run_key(self) -> str:
        """A run key naming this version of the file."""
        return bounded_run_key("file:", f"{self.name}@{self.mtime_ns}")


@dataclass(frozen=True, kw_only=True, slots=True)
class S3Arrival:
    """An object found by an ``s3_sensor``."""

    bucket: str
    key: str
    last_modified: dt.datetime
    size: int
    etag: str

    @property
    def run_key(self) -> str:
        """A run key naming this version of the object."""
        return bounded_run_key("s3:", f"{self.bucket}/{self.key}@{self.etag}")


def _read_stamp_cursor(cursor: str | None) -> tuple[str, frozenset[str]]:
    """The newest timestamp (sortable text) and the names seen at it, from a stored cursor."""
    if not cursor:
        return "", frozenset()
    try:
        data = json.loads(cursor)
        return str(data["stamp"]), frozenset(str(name) for name in data["names"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ExecutionError(f"unreadable sensor cursor {cursor[:200]!r}") from exc


def _new_arrivals(
    found: Iterable[tuple[str, str, T]], cursor: str | None
) -> tuple[list[T], str | None]:
    """Pick arrivals newer than the cursor (oldest first, bounded) and the cursor after them.

    ``found`` yields ``(stamp, name, arrival)`` where stamps sort as text in time order.
    """
    stamp, names = _read_stamp_cursor(cursor)
    fresh = sorted(
        (item for item in found if item[0] > stamp or (item[0] == stamp and item[1] not in names)),
        key=lambda item: (item[0], item[1]),
    )[:MAX_ARRIVALS_PER_POLL]
    if not fresh:
        return [], None
    newest = fresh[-1][0]
    seen = {name for s, name, _ in fresh if s == newest}
    if newest == stamp:
        seen |= names
    return [item[2] for item in fresh], json.dumps({"stamp": newest, "names": sorted(seen)})


def _handing_over(
    fn: SensorFunction, arrivals: Sequence[object], cursor: str | None, nothing: str
) -> SensorResult:
    """Call ``fn`` with the arrivals; the cursor moves past them unless ``fn`` set another."""
    if not arrivals:
        return SensorResult(skip_reason=SkipReason(nothing))
    result = as_sensor_result(fn(list(arrivals)))
    return result if result.cursor is not None else replace(result, cursor=cursor)


def _file_poller(directory: Path, pattern: str) -> Callable[[SensorFunction], Poller]:
    def wrap(fn: SensorFunction) -> Poller:
        def poll(context: SensorContext) -> SensorResult:
            if not directory.is_dir():
                return SensorResult(skip_reason=SkipReason(f"directory {directory} does not exist"))
            found = []
            for path in directory.glob(pattern):
                try:
                    stat = path.stat()
                except FileNotFoundError:  # removed while listing
                    continue
                if path.is_file():
                    name = path.relative_to(directory).as_posix()
                    arrival = FileArrival(
                        path=str(path), name=name, mtime_ns=stat.st_mtime_ns, size=stat.st_size
                    )
                    found.append((f"{stat.st_mtime_ns:024d}", name, arrival))
            arrivals, cursor = _new_arrivals(found, context.cursor)
            return _handing_over(
                fn, arrivals, cursor, f"no new files matching {pattern!r} in {directory}"
            )

        return poll

    return wrap


def file_sensor(
    *,
    directory: str | Path,
    pattern: str = "*",
    interval: int | dt.timedelta = DEFAULT_SENSOR_INTERVAL_SECONDS,
    name: str | None = None,
    description: str | None = None,
) -> Callable[[SensorFunction], SensorFunction]:
    """Report files matching ``pattern`` (a relative glob) that appear in ``directory``."""
    if not isinstance(pattern, str) or not pattern or Path(pattern).is_absolute():
        raise DefinitionError(f"file_sensor: pattern must be a relative glob, got {pattern!r}")
    if ".." in Path(pattern).parts:
        raise DefinitionError(f"file_sensor: pattern {pattern!r} may not leave the directory")
    root = Path(directory)

    return builtin_sensor(
        _file_poller(root, pattern),
        name=name,
        interval=interval,
        description=description,
        parameter="the list of new FileArrival",
    )


def _list_objects(client: Any, bucket: str, prefix: str) -> Iterable[tuple[str, str, S3Arrival]]:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            modified: dt.datetime = item["LastModified"].astimezone(dt.UTC)
            arrival = S3Arrival(
                bucket=bucket,
                key=str(item["Key"]),
                last_modified=modified,
                size=int(item.get("Size", 0)),
                etag=str(item.get("ETag", "")).strip('"'),
            )
            yield modified.isoformat(timespec="microseconds"), arrival.key, arrival


def _s3_poller(
    bucket: str, prefix: str, client_options: Mapping[str, Any]
) -> Callable[[SensorFunction], Poller]:
    def wrap(fn: SensorFunction) -> Poller:
        def poll(context: SensorContext) -> SensorResult:
            import boto3  # noqa: PLC0415  # only sensors that poll S3 need boto3

            client = boto3.session.Session().client("s3", **dict(client_options))
            arrivals, cursor = _new_arrivals(_list_objects(client, bucket, prefix), context.cursor)
            return _handing_over(
                fn, arrivals, cursor, f"no new objects under s3://{bucket}/{prefix}"
            )

        return poll

    return wrap


def s3_sensor(
    *,
    bucket: str,
    prefix: str = "",
    client_options: Mapping[str, Any] | None = None,
    interval: int | dt.timedelta = DEFAULT_SENSOR_INTERVAL_SECONDS,
    name: str | None = None,
    description: str | None = None,
) -> Callable[[SensorFunction], SensorFunction]:
    """Report objects that appear under ``s3://bucket/prefix``.

    ``client_options`` go to ``boto3``'s S3 client (``endpoint_url``, ``region_name``,
    credentials); by default boto3 finds credentials itself.
    """
    if not isinstance(bucket, str) or not bucket:
        raise DefinitionError(f"s3_sensor: bucket must be a bucket name, got {bucket!r}")
    if not isinstance(prefix, str):
        raise DefinitionError(f"s3_sensor: prefix must be a string, got {prefix!r}")
    options = dict(client_options or {})
    if any(not isinstance(key, str) for key in options):
        raise DefinitionError("s3_sensor: client_options keys must be strings")

    return builtin_sensor(
        _s3_poller(bucket, prefix, options),
        name=name,
        interval=interval,
        description=description,
        parameter="the list of new S3Arrival",
    )


def _asset_poller(asset: str) -> Callable[[SensorFunction], Poller]:
    def wrap(fn: SensorFunction) -> Poller:
        def poll(context: SensorContext) -> SensorResult:
            if context.materializations is None:
                raise ExecutionError("an asset sensor needs a materialization feed")
            after = _read_id_cursor(context.cursor)
            events: Sequence[MaterializationEvent] = context.materializations.successes_after(
                asset, after, MAX_ARRIVALS_PER_POLL
            )
            cursor = str(events[-1].id) if events else None
            return _handing_over(
                fn, list(events), cursor, f"no new successful materialization of {asset!r}"
            )

        return poll

    return wrap


def _read_id_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return int(cursor)
    except ValueError as exc:
        raise ExecutionError(f"unreadable asset sensor cursor {cursor[:200]!r}") from exc


def asset_sensor(
    *,
    asset: str | AssetFunction,
    interval: int | dt.timedelta = DEFAULT_SENSOR_INTERVAL_SECONDS,
    name: str | None = None,
    description: str | None = None,
) -> Callable[[SensorFunction], SensorFunction]:
    """Report each new successful materialization of ``asset`` (cursor: the last id reported)."""
    watched = asset_name_of(asset, what="asset watched by asset_sensor")

    return builtin_sensor(
        _asset_poller(watched),
        name=name,
        interval=interval,
        description=description,
        parameter="the list of new MaterializationEvent",
        watched_assets=(watched,),
    )


def builtin_sensor(
    poller: Callable[[SensorFunction], Poller],
    *,
    name: str | None,
    interval: int | dt.timedelta,
    description: str | None,
    parameter: str,
    watched_assets: Sequence[str] = (),
) -> Callable[[SensorFunction], SensorFunction]:
    """The decorator of a built-in sensor: the user's function receives what ``poller`` found."""

    def decorate(function: SensorFunction) -> SensorFunction:
        definition = build_sensor_definition(
            function,
            name=name,
            interval=interval,
            description=description,
            poller=poller,
            watched_assets=watched_assets,
            parameter=parameter,
        )
        return attach_sensor(function, definition)

    return decorate
