"""``s3://bucket/prefix`` stores (``s3a://`` too), on the botocore client s3fs sets up.

s3fs resolves credentials, region and endpoint the standard AWS way (environment, profiles,
instance roles; botocore itself reads ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` for
S3-compatible servers) from ``storage_options``, which are ``s3fs.S3FileSystem`` arguments.
The requests are made here, on its client: s3fs's own calls can send ``If-None-Match`` on
PutObject (``pipe_file(mode="create")``) but not on GetObject, and they wrap every call in
s3fs's retry loop and turn S3's answers into OSErrors, while combe needs 304 and 412 as S3 gave
them and one retry budget.

Atomicity is S3's: ``put_if_absent`` is PutObject with ``If-None-Match: *`` and
``compare_and_swap`` is PutObject with ``If-Match: <ETag>``. S3 checks the condition and writes
in one step and answers the loser 412 PreconditionFailed (or 409 ConditionalRequestConflict to
a concurrent conditional write). An S3-compatible server must enforce both headers for
publishing to it to be safe. ``read_if_changed`` is one GetObject with ``If-None-Match: <ETag>``,
answered 304 without a body when nothing changed.

A refused conditional write is read back before it is reported lost: if the object holds exactly
our bytes, an earlier send of the same request was applied and its answer lost, and the refusal
is our own write meeting itself. Such resends happen here (after a dropped connection or a 5xx)
and also below botocore, out of sight: aiohttp resends a PUT once, silently, when its connection
drops before the answer, since HTTP calls PUT idempotent (a conditional PUT is not).

Retries happen in one place, here. botocore retries on its own (up to 5 attempts per call in
its legacy mode) and s3fs retries around botocore again (5 times); nested, they multiply into
minutes against a dead endpoint. So botocore's retries are switched off (``total_max_attempts``
1, which also overrides AWS_MAX_ATTEMPTS; a ``config_kwargs["retries"]`` of the caller's wins
and multiplies the bound below) and s3fs's retry loop is not used. A call makes at most
``max_attempts`` attempts (storage option, default 5) on throttling, 5xx, timeouts and broken
connections, backing off exponentially with jitter, and neither sleeps nor starts an attempt
beyond ``retry_deadline`` seconds (storage option, default 10) after it began. An attempt gives
up when connecting takes ``connect_timeout`` (default 5 s) or S3 stays silent for
``read_timeout`` (default 15 s); both are s3fs's defaults, set through ``config_kwargs``. So a
call raises StoreUnavailable within ``retry_deadline + connect_timeout + read_timeout`` at
worst; measured with the defaults: about 2 s when connections are refused or dropped, 10 s
against a host that drops connection attempts, 15 s against a server that never answers.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import timezone
from typing import Any

import aiohttp
import s3fs
from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from botocore.parsers import ResponseParserError
from fsspec.asyn import sync

from .errors import ConfigError, ObjectNotFound, StoreError, StoreUnavailable
from .store import ObjectInfo, Store

logger = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_RETRY_DEADLINE = 10.0
_BACKOFF_FIRST = 0.2  # seconds before the second attempt; doubles, jittered, up to the cap
_BACKOFF_CAP = 4.0

# Failures in reaching S3 or reading its answer, where another attempt may well succeed.
_TRANSPORT_ERRORS = (
    BotocoreConnectionError,
    HTTPClientError,
    IncompleteReadError,
    ResponseParserError,  # throttling proxies sometimes answer with broken XML
    aiohttp.ClientError,
    OSError,  # includes TimeoutError
)
_RETRYABLE_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
    "TooManyRequestsException", "RequestTimeout", "InternalError", "ServiceUnavailable",
})
_CONDITION_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_ACCESS_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
})


class _ConditionFailed(Exception):
    """S3 did not act because a condition did not hold: 304 to a read, 412 or 409 to a write."""


class S3Store(Store):
    def __init__(self, protocol: str, path: str, storage_options: dict[str, Any]) -> None:
        options = dict(storage_options)
        try:
            self.max_attempts = int(options.pop("max_attempts", DEFAULT_MAX_ATTEMPTS))
            self.retry_deadline = float(options.pop("retry_deadline", DEFAULT_RETRY_DEADLINE))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"max_attempts and retry_deadline must be numbers: {exc}") from exc
        if self.max_attempts < 1 or self.retry_deadline <= 0:
            raise ConfigError("max_attempts must be at least 1 and retry_deadline above 0 seconds")
        bucket, _, prefix = path.strip("/").partition("/")
        if not bucket:
            raise ConfigError(f"{protocol}://{path} names no bucket; use {protocol}://bucket/prefix")
        self.protocol = protocol
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"{protocol}://{bucket}/{self.prefix}".rstrip("/")
        self._root = f"{self.prefix}/" if self.prefix else ""
        self._storage_options = storage_options
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("retries", {"total_max_attempts": 1})  # we retry (module docstring)
        options["config_kwargs"] = config
        # s3fs caches filesystems by their arguments, so stores with the same options (a
        # store and its children) share one client and its connection pool.
        self.fs = s3fs.S3FileSystem(**options)

    def _key(self, path: str) -> str:
        return self._root + path

    def _object(self, path: str) -> dict[str, str]:
        return {"Bucket": self.bucket, "Key": self._key(path)}

    def _url(self, path: str) -> str:
        return f"{self.url}/{path}"

    def read(self, path: str) -> bytes:
        return self.read_tagged(path)[0]

    def read_tagged(self, path: str) -> tuple[bytes, str]:
        response = self._send("get_object", f"read {self._url(path)}", **self._object(path))
        return response["Body"], str(response["ETag"])

    def read_if_changed(self, path: str, tag: str | None) -> tuple[bytes, str] | None:
        """One conditional GetObject: an unchanged object costs a 304 and no body."""
        if tag is None:
            return self.read_tagged(path)
        try:
            response = self._send(
                "get_object", f"read {self._url(path)}", IfNoneMatch=tag, **self._object(path)
            )
        except _ConditionFailed:
            return None
        return response["Body"], str(response["ETag"])

    def write(self, path: str, data: bytes | bytearray) -> None:
        self._put("write", path, data)

    def put_if_absent(self, path: str, data: bytes) -> bool:
        """PutObject with If-None-Match: *; an object already holding exactly ``data`` counts as ours."""
        try:
            self._put("create", path, data, IfNoneMatch="*")
        except _ConditionFailed:
            return self._holds(path, data) is not None  # see the module docstring
        return True

    def compare_and_swap(self, path: str, data: bytes, expected: str | None) -> str | None:
        """PutObject with If-Match on ``expected`` (an ETag from read_tagged), or If-None-Match: *.

        A refused swap whose object already holds exactly ``data`` counts as ours (module docstring).
        """
        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        try:
            return self._put("swap", path, data, **condition)
        except _ConditionFailed:
            return self._holds(path, data)  # see the module docstring
        except ObjectNotFound:
            return None  # If-Match on an object deleted meanwhile: S3 answers 404

    def delete(self, path: str) -> None:
        try:
            self._send("delete_object", f"delete {self._url(path)}", **self._object(path))
        except ObjectNotFound:
            pass  # AWS answers 204 for a missing key; some S3-compatible servers answer 404

    def list(self, prefix: str) -> list[ObjectInfo]:
        # S3 lists keys in UTF-8 byte order, which is code point order: sorted, as the
        # other stores return them.
        found: list[ObjectInfo] = []
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._key(prefix), "Delimiter": "/"}
        while True:
            page = self._send("list_objects_v2", f"list {self._url(prefix)}", **params)
            found.extend(
                ObjectInfo(
                    path=item["Key"][len(self._root):],
                    size=int(item["Size"]),
                    modified=item["LastModified"].astimezone(timezone.utc),
                )
                for item in page.get("Contents", [])
            )
            if not page.get("IsTruncated"):
                return found
            params["ContinuationToken"] = page["NextContinuationToken"]

    def child(self, name: str) -> S3Store:
        return S3Store(self.protocol, f"{self.bucket}/{self._key(name)}", self._storage_options)

    def _put(self, action: str, path: str, data: bytes | bytearray, **condition: str) -> str:
        """PutObject, with the caller's s3_additional_kwargs (e.g. encryption) as s3fs would send them."""
        params = {**self.fs.s3_additional_kwargs, **self._object(path), "Body": data, **condition}
        response = self._send("put_object", f"{action} {self._url(path)}", **params)
        return str(response["ETag"])

    def _holds(self, path: str, data: bytes) -> str | None:
        """The object's ETag if it holds exactly ``data`` (so a refused write of ours was applied)."""
        try:
            current, tag = self.read_tagged(path)
        except ObjectNotFound:
            return None
        return tag if current == data else None

    def _send(self, method: str, action: str, **params: Any) -> dict[str, Any]:
        """Call S3 with bounded retries; raises combe errors, or _ConditionFailed."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response: dict[str, Any] = sync(self.fs.loop, self._attempt, method, params)
                return response
            except Exception as exc:  # noqa: BLE001 - classified below: retried, or raised as a combe error
                failure = exc
            status, code = _status(failure)
            if status in (304, 412) or code in _CONDITION_CODES:
                raise _ConditionFailed() from failure
            if not _retryable(failure, status, code):
                raise self._translate(failure, status, code, action) from failure
            delay = min(_BACKOFF_CAP, _BACKOFF_FIRST * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            elapsed = time.monotonic() - started
            if attempt >= self.max_attempts or elapsed + delay > self.retry_deadline:
                raise StoreUnavailable(
                    f"cannot {action}: gave up after {attempt} attempt(s) in {elapsed:.1f}s "
                    f"against endpoint {self._endpoint()}, the last failing with "
                    f"{_describe(failure)}. Check that the endpoint is reachable and healthy, "
                    "or allow more with the storage options max_attempts and retry_deadline.",
                    url=self.url,
                ) from failure
            logger.info("retrying to %s in %.2fs after %s (attempt %d of %d)",
                        action, delay, _describe(failure), attempt, self.max_attempts)
            time.sleep(delay)

    async def _attempt(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One request on s3fs's client; a body is read here, inside the event loop."""
        client = await self.fs.set_session()
        response: dict[str, Any] = await getattr(client, method)(**params)
        if "Body" in response:
            async with response["Body"] as body:
                response["Body"] = await body.read()
        return response

    def _endpoint(self) -> str:
        """The endpoint the client talks to, wherever it was configured."""
        endpoint: str = self.fs.s3.meta.endpoint_url
        return endpoint

    def _translate(self, failure: Exception, status: int | None, code: str, action: str) -> StoreError:
        if code == "NoSuchKey":
            return ObjectNotFound(f"cannot {action}: no such object", url=self.url)
        if code == "NoSuchBucket":
            return StoreError(
                f"cannot {action}: bucket {self.bucket!r} does not exist at {self._endpoint()}; "
                "create it or correct the store URL",
                url=self.url,
            )
        if status == 404:  # S3 names what is missing; a bare 404 comes from something else
            return StoreError(
                f"cannot {action}: {self._endpoint()} answered 404 without an S3 error code; "
                "check that the endpoint URL points at an S3 service",
                url=self.url,
            )
        if isinstance(failure, NoCredentialsError):
            return StoreError(
                f"cannot {action}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY or AWS_PROFILE, pass key and secret in the storage options, "
                "or anon=True for a public bucket",
                url=self.url,
            )
        if status == 403 or code in _ACCESS_CODES:
            return StoreError(
                f"cannot {action}: S3 refused access ({code or status}); check the credentials "
                "and the bucket's policy",
                url=self.url,
            )
        return StoreError(f"cannot {action}: {_describe(failure)}", url=self.url)


def _status(failure: Exception) -> tuple[int | None, str]:
    """The HTTP status and S3 error code of an answer S3 gave; (None, "") if it gave none."""
    if not isinstance(failure, ClientError):
        return None, ""
    status = failure.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status, str(failure.response.get("Error", {}).get("Code", ""))


def _retryable(failure: Exception, status: int | None, code: str) -> bool:
    if isinstance(failure, ClientError):
        return (status is not None and (status >= 500 or status == 429)) or code in _RETRYABLE_CODES
    return isinstance(failure, _TRANSPORT_ERRORS)


def _describe(failure: Exception) -> str:
    status, code = _status(failure)
    if status is not None:
        return f"S3 answered {status} {code}"
    return f"{type(failure).__name__}: {failure}"
