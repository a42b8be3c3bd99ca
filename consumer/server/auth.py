"""Who may read: bearer tokens, each valid for every dataset or for some of them.

Tokens come from a file or an environment variable, never from the command
line (any user of the host can read another's in ``ps``). One token a line,
``TOKEN`` (every dataset) or ``TOKEN DATASET [DATASET ...]`` (only those);
``#`` starts a comment. A token is 16 to 512 characters of RFC 6750's token
alphabet (letters, digits, ``-._~+/``, trailing ``=``).

Only SHA-256 digests of the tokens are kept, and a request's token is
compared with every one of them with ``hmac.compare_digest``, so neither the
comparison nor which token matched shows in the time taken. No log line or
error message ever holds a token (they name the line of the file instead).
Every token is read-only: the API has no write.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from combe.format.errors import ConfigError, Forbidden, Unauthorized

TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]{16,512}=*")


@dataclass(frozen=True)
class Grant:
    """What one token may read; ``datasets`` None means every dataset."""

    digest: bytes
    datasets: frozenset[str] | None
    where: str  # "<source> line N", to name it without its secret

    def may_read(self, dataset: str) -> bool:
        return self.datasets is None or dataset in self.datasets


class Tokens:
    def __init__(self, grants: Iterable[Grant]) -> None:
        self.grants = list(grants)
        if not self.grants:
            raise ConfigError("no bearer token given: the token file or variable holds none")
        digests = [g.digest for g in self.grants]
        if len(set(digests)) != len(digests):
            raise ConfigError("the same bearer token is given twice; give each token once, with all its datasets")

    @classmethod
    def parse(cls, text: str, source: str) -> Tokens:
        """Tokens from ``text`` (the lines of a token file); errors name ``source`` and the line, never a token."""
        return cls(_grants(text, source))

    @classmethod
    def read(cls, files: Iterable[Path] = (), variables: dict[str, str] | None = None) -> Tokens | None:
        """Tokens from files and environment variables (name -> value) together; None if none of them is given."""
        grants: list[Grant] = []
        given = False
        for path in files:
            given = True
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read the token file {path}: {exc}") from None
            grants += _grants(text, str(path))
        for name, value in (variables or {}).items():
            given = True
            grants += _grants(value, f"${name}")
        return cls(grants) if given else None

    def check(self, authorization: str | None) -> Grant:
        """The grant of the request's ``Authorization: Bearer`` token; 401 if there is none or it is not valid."""
        if authorization is None:
            raise Unauthorized("this server needs a bearer token: send Authorization: Bearer <token>")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send the token as Authorization: Bearer <token>", invalid=True)
        digest = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).digest()
        found = None
        for grant in self.grants:  # every one, whichever matches: the time does not tell which
            if hmac.compare_digest(grant.digest, digest):
                found = grant
        if found is None:
            raise Unauthorized("the bearer token is not valid for this server", invalid=True)
        return found

    def check_names(self, served: Iterable[str]) -> None:
        """Refuse a token given for a dataset this server does not serve (a typo would lock its users out)."""
        served = set(served)
        for grant in self.grants:
            unknown = sorted((grant.datasets or frozenset()) - served)
            if unknown:
                raise ConfigError(f"the token on {grant.where} names {', '.join(map(repr, unknown))}, which this "
                                  f"server does not serve (it serves {', '.join(sorted(served))})")


def _grants(text: str, source: str) -> list[Grant]:
    grants = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        token, datasets = words[0], words[1:]
        where = f"{source} line {number}"
        if not TOKEN.fullmatch(token):
            raise ConfigError(f"the token on {where} is not a bearer token: use 16 to 512 letters, digits or "
                              "-._~+/ (a trailing = allowed); for example: python -c \"import secrets; "
                              "print(secrets.token_urlsafe(32))\"")
        grants.append(Grant(hashlib.sha256(token.encode()).digest(), frozenset(datasets) if datasets else None, where))
    return grants


def require(grant: Grant | None, dataset: str | None) -> None:
    """403 unless ``grant`` may read ``dataset`` (None: what concerns every dataset, like /metrics)."""
    if grant is None:
        return  # this server needs no token
    if dataset is None and grant.datasets is not None:
        raise Forbidden("this token may read some datasets only; this route is about all of them")
    if dataset is not None and not grant.may_read(dataset):
        raise Forbidden(f"this token may not read dataset {dataset!r}")
