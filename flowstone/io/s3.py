"""The S3 IO manager (boto3): one object per asset partition, with a JSON or Parquet body.

Object keys come from a key template (``{prefix}{asset}/{partition}.{extension}`` by default)
whose ``{partition}`` is the percent-encoded partition key, so no key can reach outside its asset's
prefix; unpartitioned assets use a fixed name no encoded key can take. ``endpoint_url`` points it
at any S3-compatible server. Unreachable endpoints, timeouts and 5xx/throttling answers are
retryable ``IOManagerError``s; a missing object, bucket or permission is not.
"""

from __future__ import annotations

import re
import string
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from flowstone.errors import DefinitionError, IOManagerError
from flowstone.io.base import (
    IOTarget,
    StoredOutput,
    decode_json,
    describe_output,
    encode_json,
    hash_content,
    invalid_options_error,
    unknown_option_problems,
)
from flowstone.io.filesystem import file_stem
from flowstone.io.tabular import (
    DEFAULT_COMPRESSION,
    PARQUET_CONTENT_TYPE,
    Compression,
    compression_problem,
    decode_parquet,
    encode_parquet,
    is_compression,
    is_pandas_installed,
    to_arrow,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mypy_boto3_s3 import S3Client

DEFAULT_KEY_TEMPLATE: Final = "{prefix}{asset}/{partition}.{extension}"
DEFAULT_FILE_FORMAT: Final = "json"
DEFAULT_CONNECT_TIMEOUT_SECONDS: Final = 5.0
DEFAULT_READ_TIMEOUT_SECONDS: Final = 60.0
DEFAULT_MAX_ATTEMPTS: Final = 3
# file format -> (extension, content type)
FILE_FORMATS: Final = {
    "json": ("json", "application/json"),
    "parquet": ("parquet", PARQUET_CONTENT_TYPE),
}
KEY_TEMPLATE_FIELDS: Final = frozenset({"prefix", "asset", "partition", "extension"})
ASSET_OPTIONS: Final = frozenset({"bucket", "prefix", "key_template", "file_format"})
BUCKET_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
PREFIX_PATTERN: Final = re.compile(r"[A-Za-z0-9!_.*'()=+/-]*\Z")
MAX_PREFIX_LENGTH: Final = 512
MISSING_OBJECT_CODES: Final = frozenset({"NoSuchKey", "404", "NotFound"})
TRANSIENT_ERROR_CODES: Final = frozenset(
    {"RequestTimeout", "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded"}
)
SERVER_ERROR_STATUS: Final = 500

__all__ = ["DEFAULT_KEY_TEMPLATE", "S3ClientOptions", "S3IOManager", "S3Location"]


def _bucket_problem(bucket: object) -> str | None:
    if not isinstance(bucket, str) or not BUCKET_PATTERN.match(bucket) or ".." in bucket:
        return (
            f"bucket {bucket!r} is not a valid S3 bucket name (3-63 lower-case letters, "
            "digits, dots and hyphens, starting and ending with a letter or digit)"
        )
    return None


def _prefix_problem(prefix: object) -> str | None:
    if not isinstance(prefix, str) or len(prefix) > MAX_PREFIX_LENGTH:
        return f"prefix must be a string of at most {MAX_PREFIX_LENGTH} characters"
    segments = prefix.rstrip("/").split("/")
    if (
        not PREFIX_PATTERN.match(prefix)
        or prefix.startswith("/")
        or (prefix and any(segment in {"", ".", ".."} for segment in segments))
    ):
        return (
            f"prefix {prefix!r} must be '/'-separated segments of letters, digits and "
            "!_.*'()=+- without empty, '.' or '..' segments or a leading '/'"
        )
    return None


def _key_template_problem(template: object, *, needs_asset: bool) -> str | None:
    if not isinstance(template, str):
        return "key_template must be a string"
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"key_template {template!r} is malformed: {exc}"
    names = set()
    for _literal, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in KEY_TEMPLATE_FIELDS or spec or conversion:
            return f"key_template {template!r} may only use the plain fields " + ", ".join(
                f"{{{field}}}" for field in sorted(KEY_TEMPLATE_FIELDS)
            )
        names.add(name)
    required = {"partition", "asset"} if needs_asset else {"partition"}
    if not required <= names or template.startswith("/"):
        return (
            f"key_template {template!r} must contain "
            + " and ".join(f"{{{field}}}" for field in sorted(required))
            + " and must not start with '/'"
        )
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class S3Location:
    """Where an asset's objects live: bucket, key prefix, key template and body format."""

    bucket: str
    prefix: str = ""
    key_template: str = DEFAULT_KEY_TEMPLATE
    file_format: str = DEFAULT_FILE_FORMAT

    def problems(self, *, needs_asset: bool) -> list[str]:
        """Every reason this location is unusable (empty when it is valid)."""
        found = [
            _bucket_problem(self.bucket),
            _prefix_problem(self.prefix),
            _key_template_problem(self.key_template, needs_asset=needs_asset),
        ]
        if not isinstance(self.file_format, str) or self.file_format not in FILE_FORMATS:
            found.append(
                f"file_format {self.file_format!r} is not one of {', '.join(sorted(FILE_FORMATS))}"
            )
        return [problem for problem in found if problem is not None]

    def key_for(self, target: IOTarget) -> str:
        """The object key of ``target`` (partition key percent-encoded, or a fixed name)."""
        prefix = self.prefix if not self.prefix or self.prefix.endswith("/") else self.prefix + "/"
        return self.key_template.format(
            prefix=prefix,
            asset=target.asset,
            partition=file_stem(target),
            extension=FILE_FORMATS[self.file_format][0],
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class S3ClientOptions:
    """How to reach S3: endpoint, region, credentials (default: boto3's chain) and timeouts."""

    endpoint_url: str | None = None
    region_name: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS
    read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    def __post_init__(self) -> None:
        if self.endpoint_url is not None and not self.endpoint_url.startswith(
            ("http://", "https://")
        ):
            raise DefinitionError(f"endpoint_url {self.endpoint_url!r} must be an http(s) URL")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise DefinitionError("connect_timeout and read_timeout must be > 0")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise DefinitionError("max_attempts must be an integer")
        if self.max_attempts < 1:
            raise DefinitionError("max_attempts must be >= 1")

    def build_client(self) -> S3Client:
        """A new S3 client on its own session (boto3 sessions are not thread-safe)."""
        config = Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"max_attempts": self.max_attempts, "mode": "standard"},
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region_name,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            config=config,
        )


class S3IOManager:
    """Stores each asset partition as one S3 object (JSON or Parquet); overwrites on re-store.

    Per-asset ``io_options``: ``bucket``, ``prefix``, ``key_template``, ``file_format``.
    """

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        key_template: str = DEFAULT_KEY_TEMPLATE,
        file_format: str = DEFAULT_FILE_FORMAT,
        as_pandas: bool = False,
        compression: str = DEFAULT_COMPRESSION,
        **client_options: Any,
    ) -> None:
        self.location = S3Location(
            bucket=bucket, prefix=prefix, key_template=key_template, file_format=file_format
        )
        problems = self.location.problems(needs_asset=True)
        problems += [p for p in (compression_problem(compression),) if p is not None]
        if as_pandas and not is_pandas_installed():
            problems.append("as_pandas needs pandas, which is not installed")
        if problems or not is_compression(compression):  # the second test narrows the type
            raise DefinitionError("; ".join(problems))
        self.as_pandas = as_pandas
        self.compression: Compression = compression
        self.client_options = S3ClientOptions(**client_options)
        self._client: S3Client | None = None
        self._client_lock = threading.Lock()

    @property
    def client(self) -> S3Client:
        """The S3 client, created on first use (never at import or configuration time)."""
        with self._client_lock:
            if self._client is None:
                self._client = self.client_options.build_client()
            return self._client

    def validate_options(self, options: Mapping[str, Any]) -> list[str]:
        """Check an asset's ``io_options`` (``flowstone.E009``)."""
        location = self._location_for(options)
        return unknown_option_problems(options, ASSET_OPTIONS) + location.problems(
            needs_asset=False
        )

    def _location_for(self, options: Mapping[str, Any]) -> S3Location:
        base = self.location
        return S3Location(
            bucket=options.get("bucket", base.bucket),
            prefix=options.get("prefix", base.prefix),
            key_template=options.get("key_template", base.key_template),
            file_format=options.get("file_format", base.file_format),
        )

    def locate(self, target: IOTarget) -> tuple[S3Location, str]:
        """The checked location and object key of ``target``; bad options raise first."""
        problems = self.validate_options(target.options)
        if problems:
            raise invalid_options_error(target, problems)
        location = self._location_for(target.options)
        return location, location.key_for(target)

    def _error(self, target: IOTarget, action: str, uri: str, exc: Exception) -> IOManagerError:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            retryable = status >= SERVER_ERROR_STATUS or code in TRANSIENT_ERROR_CODES
            reason = f"S3 answered {code or status}: {error.get('Message', '')}".rstrip(": ")
        else:
            transient = (BotoConnectionError, HTTPClientError)
            retryable = isinstance(exc, transient)
            reason = f"S3 is unreachable: {exc}" if retryable else str(exc)
        return IOManagerError(
            f"could not {action} {uri}: {reason}",
            asset=target.asset,
            partition=target.partition_key,
            retryable=retryable,
        )

    def put_body(self, target: IOTarget, location: S3Location, key: str, body: bytes) -> None:
        """Upload an encoded body as one object (a PUT replaces the object atomically)."""
        try:
            self.client.put_object(
                Bucket=location.bucket,
                Key=key,
                Body=body,
                ContentType=FILE_FORMATS[location.file_format][1],
            )
        except (BotoCoreError, ClientError) as exc:
            uri = f"s3://{location.bucket}/{key}"
            raise self._error(target, "write", uri, exc) from exc

    def store(self, target: IOTarget, value: Any) -> StoredOutput:
        """Upload the value as one object, replacing any earlier one (S3 puts are atomic)."""
        location, key = self.locate(target)
        uri = f"s3://{location.bucket}/{key}"
        if location.file_format == "parquet":
            table = to_arrow(target, value)
            body = encode_parquet(target, table, compression=self.compression)
            stored = StoredOutput(
                uri=uri,
                size_bytes=len(body),
                row_count=table.num_rows,
                content_hash=hash_content(body),
            )
        else:
            body = encode_json(target, value)
            stored = describe_output(uri, value, body)
        self.put_body(target, location, key, body)
        return stored

    def load(self, target: IOTarget) -> Any:
        """Download and decode the object; a missing one is a non-retryable ``IOManagerError``."""
        location, key = self.locate(target)
        uri = f"s3://{location.bucket}/{key}"
        try:
            body = self.client.get_object(Bucket=location.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in MISSING_OBJECT_CODES:
                raise IOManagerError(
                    f"no stored value at {uri}",
                    asset=target.asset,
                    partition=target.partition_key,
                    retryable=False,
                ) from exc
            raise self._error(target, "read", uri, exc) from exc
        except BotoCoreError as exc:
            raise self._error(target, "read", uri, exc) from exc
        if location.file_format == "parquet":
            return decode_parquet(target, body, as_pandas=self.as_pandas)
        return decode_json(target, body)

    def exists(self, target: IOTarget) -> bool:
        """Whether the object exists (``HEAD``); unreachable S3 raises instead of answering."""
        location, key = self.locate(target)
        try:
            self.client.head_object(Bucket=location.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in MISSING_OBJECT_CODES:
                return False
            raise self._error(target, "check", f"s3://{location.bucket}/{key}", exc) from exc
        except BotoCoreError as exc:
            raise self._error(target, "check", f"s3://{location.bucket}/{key}", exc) from exc
        return True

    def delete(self, target: IOTarget) -> None:
        """Delete the object, if any (deleting a missing key succeeds in S3)."""
        location, key = self.locate(target)
        try:
            self.client.delete_object(Bucket=location.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(target, "delete", f"s3://{location.bucket}/{key}", exc) from exc

    def discard(self, target: IOTarget) -> None:
        """Delete the object a stale attempt wrote (its version only)."""
        self.delete(target)
