"""Every error combe raises, in one tree, so callers catch one root.

::

    CombeError
    ├── ConfigError (ValueError)            a bad option, URL or argument
    ├── StoreError                          the store failed or refused
    │   ├── ObjectNotFound (LookupError)    a path that is not in the store
    │   ├── StoreUnavailable                unreachable or failing after retries
    │   └── UnsupportedStore                the protocol lacks an atomic operation
    ├── ConflictError                       another producer won the race
    ├── DatasetNotFound (LookupError)       no announced version yet
    ├── FormatError (ValueError)            a manifest or blob we cannot read
    │   └── IntegrityError                  checksum or sha256 mismatch
    │       └── SignatureError              unsigned, untrusted or forged manifest or announcement
    ├── SourceError                         a source we cannot read from
    ├── BadRecordError (ValueError)         one input record we cannot fold
    ├── ValidationError                     a validator refused to announce
    ├── KeyTypeError (TypeError)            a lookup key of the wrong type
    ├── RequestError (ValueError)           an HTTP request the endpoint cannot answer as asked
    │   └── RequestTooLarge                 a body or batch over the server's limits
    ├── RecordNotFound (LookupError)        no record with that key in the version served
    ├── ShardNotHeld (LookupError)          a key in a shard this consumer does not hold
    ├── DatasetNotReady                     a served dataset that has not loaded yet
    ├── VersionNotReached                   a version asked for that the server has not loaded yet
    ├── VersionNotAvailable                 a version asked for that the store does not serve
    └── Unauthorized / Forbidden            no valid token / a token not valid for that dataset

Errors carry the context a user needs to act (dataset, version, path,
topic/partition/offset) as attributes as well as in the message; the HTTP
endpoint reads ``status`` to choose a response code.
"""

from __future__ import annotations


class CombeError(Exception):
    """Root of every combe error."""

    status = 500


class ConfigError(CombeError, ValueError):
    """An option, URL or argument that cannot work as given."""

    status = 400


class StoreError(CombeError):
    """The store failed or refused an operation."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class ObjectNotFound(StoreError, LookupError):
    """A path that is not in the store."""

    status = 404


class StoreUnavailable(StoreError):
    """The store could not be reached, or kept failing, within the retry budget."""

    status = 503


class UnsupportedStore(StoreError):
    """The store's protocol lacks an operation safe publishing relies on."""


class ConflictError(CombeError):
    """Another producer announced first; this cycle announced nothing."""

    status = 409

    def __init__(self, message: str, *, dataset: str, version: int) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.version = version


class DatasetNotFound(CombeError, LookupError):
    """The dataset has no announced version (or the pinned one is gone)."""

    status = 404

    def __init__(self, message: str, *, dataset: str) -> None:
        super().__init__(message)
        self.dataset = dataset


class FormatError(CombeError, ValueError):
    """A manifest, announcement or blob that does not follow docs/FORMAT.md."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class IntegrityError(FormatError):
    """Bytes or state that do not match the checksum recorded for them."""


class SignatureError(IntegrityError):
    """A manifest or announcement a reader with trusted keys refuses: unsigned, signed by a key it does not
    trust, or changed after signing (docs/FORMAT.md, "Signatures")."""


class SourceError(CombeError):
    """A source that cannot be opened or read."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


class BadRecordError(CombeError, ValueError):
    """One input record that cannot be folded, and where it is."""

    status = 400

    def __init__(self, reason: str, *, stream: str, partition: int, offset: int,
                 where: str | None = None) -> None:
        self.reason = reason
        self.stream = stream
        self.partition = partition
        self.offset = offset
        self.where = where or f"{stream} partition {partition} offset {offset}"
        super().__init__(f"bad record at {self.where}: {reason}")


class ValidationError(CombeError):
    """A validator refused the new version; nothing was announced."""

    def __init__(self, message: str, *, dataset: str, version: int,
                 validator: str) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.version = version
        self.validator = validator


class KeyTypeError(CombeError, TypeError):
    """A lookup key that does not match the dataset's key type."""

    status = 400


class RequestError(CombeError, ValueError):
    """An HTTP request the endpoint cannot answer as asked: a bad parameter, body or cursor."""

    status = 400


class RequestTooLarge(RequestError):
    """A request body or batch over the limits the server was started with."""

    status = 413


class RecordNotFound(CombeError, LookupError):
    """No record with that key in the version that answered."""

    status = 404

    def __init__(self, message: str, *, dataset: str, version: int) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.version = version


class ShardNotHeld(CombeError, LookupError):
    """A key of a sharded dataset whose shard this consumer (or server) does not hold: not a miss, a wrong address.

    Answered 421 Misdirected Request by the HTTP endpoint: a router in front
    of servers that each hold some shards sent the key to the wrong one.
    """

    status = 421

    def __init__(self, message: str, *, dataset: str, shard: int, held: tuple[int, ...]) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.shard = shard
        self.held = held


class DatasetNotReady(CombeError):
    """A dataset the server answers for that has not loaded yet (retrying in the background)."""

    status = 503
    retry_after = 5  # seconds, sent as Retry-After

    def __init__(self, message: str, *, dataset: str) -> None:
        super().__init__(message)
        self.dataset = dataset


class VersionNotReached(CombeError):
    """A request asked for a version at least this new, and this server has not loaded it yet: retry soon."""

    status = 503
    retry_after = 1

    def __init__(self, message: str, *, dataset: str, version: int, serving: int) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.version = version
        self.serving = serving


class VersionNotAvailable(CombeError):
    """A request asked for a version at least this new, and the store serves an older one (not announced, or pinned)."""

    status = 409

    def __init__(self, message: str, *, dataset: str, version: int, serving: int) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.version = version
        self.serving = serving


class Unauthorized(CombeError):
    """A request without a valid bearer token, to a server that requires one."""

    status = 401

    def __init__(self, message: str, *, invalid: bool = False) -> None:
        super().__init__(message)
        # The WWW-Authenticate challenge of the answer (RFC 6750): a token was sent and is not valid, or none was.
        self.challenge = 'Bearer realm="combe"' + (', error="invalid_token"' if invalid else "")


class Forbidden(CombeError):
    """A valid bearer token that may not read what the request asks for."""

    status = 403
