"""Signed versions: Ed25519 signatures inside manifests and announcements (docs/FORMAT.md, "Signatures").

Anyone who can write to the bucket could otherwise forge a version. A
producer with a private key signs every manifest it writes and every
announcement (``combe pin`` too); a reader given public keys refuses any
manifest or announcement that is unsigned, signed by a key it does not
trust, or changed after signing. Blobs need no signature of their own: a
signed manifest records their sha256, which readers check.

The signature is a member of the document it signs, so ``announced.json``
stays one object changed by one compare-and-swap (a sidecar could not change
with it atomically) and a poll stays one request. What is signed is the
document without that member in RFC 8785 canonical form (JCS): sorted keys,
no whitespace, one spelling per string and number, so any reader in any
language rebuilds the same bytes from what it parsed.

Pure functions on documents and keys; loading key files is the one I/O here.
``cryptography`` is an optional extra (``combe[sign]``), imported when keys
are first used.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, FormatError, SignatureError
from .jsontext import canonical_text

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE = "signature"
ALGORITHM = "ed25519"
DOMAIN = b"combe-signature-v1\n"
# JSON numbers every reader holds exactly (IEEE doubles): all combe documents need.
MAX_INTEGER = 2**53 - 1
PASSPHRASE_ENV = "COMBE_SIGNING_KEY_PASSPHRASE"


def _crypto() -> Any:
    """The cryptography modules, or a ConfigError naming the extra to install."""
    try:
        from cryptography import exceptions
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise ConfigError("signing or verifying versions needs the cryptography package; install it with: "
                          "pip install 'combe[sign]'") from exc
    return serialization, ed25519, exceptions


# -- canonical form --------------------------------------------------------------------------


def canonical(value: Any) -> bytes:
    """``value`` as RFC 8785 (JCS) canonical JSON, for the JSON types combe's documents use.

    Members are sorted by their names' UTF-16 code units; strings escape only
    ``"``, ``\\`` and control characters (``\\b \\t \\n \\f \\r``, else ``\\u00xx``);
    numbers are integers within +-(2^53 - 1). Anything else (a float, a lone
    surrogate) is a FormatError: combe never signs it.
    """
    try:
        _check_signable(value)
        return canonical_text(value).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FormatError(f"a signed document holds text that is not Unicode: {exc}") from exc
    except RecursionError as exc:
        raise FormatError("a signed document is nested too deep to check") from exc


def _check_signable(value: Any) -> None:
    """What combe signs is a subset of JSON: no floats, integers JCS writes exactly (format/jsontext.py writes it)."""
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if abs(value) > MAX_INTEGER:
            raise FormatError(f"a signed document holds the integer {value}, beyond +-(2^53 - 1)")
    elif isinstance(value, list):
        for item in value:
            _check_signable(item)
    elif isinstance(value, dict):
        for name, item in value.items():
            _check_signable(name)
            _check_signable(item)
    else:
        raise FormatError(f"a signed document holds a {type(value).__name__} ({value!r}); only strings, "
                          "integers, booleans, null, arrays and objects can be signed")


def signed_bytes(kind: str, document: dict[str, Any]) -> bytes:
    """What a signature of a ``kind`` document covers: domain, kind, then the document without its signature."""
    unsigned = {name: value for name, value in document.items() if name != SIGNATURE}
    return DOMAIN + kind.encode() + b"\n" + canonical(unsigned)


def key_id(public: Ed25519PublicKey) -> str:
    """A public key's id: the first 16 hex digits of the sha256 of its 32 raw bytes."""
    serialization = _crypto()[0]
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# -- keys ------------------------------------------------------------------------------------


class Signer:
    """A producer's private key: signs the manifests and announcements it writes."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    @classmethod
    def from_file(cls, path: str | Path, passphrase: bytes | None = None) -> Signer:
        """An Ed25519 private key from a PEM (PKCS#8, ``openssl genpkey``) or OpenSSH (``ssh-keygen``) file.

        An encrypted key's ``passphrase`` defaults to ``$COMBE_SIGNING_KEY_PASSPHRASE``: a secret is
        never an argument on a command line.
        """
        serialization, ed25519, _ = _crypto()
        data = _read_key(path, "signing key")
        if passphrase is None and (secret := os.environ.get(PASSPHRASE_ENV)) is not None:
            passphrase = secret.encode()
        try:
            if b"OPENSSH PRIVATE KEY" in data:
                private = serialization.load_ssh_private_key(data, passphrase)
            else:
                private = serialization.load_pem_private_key(data, passphrase)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"signing key {path}: not a readable private key ({exc}); give an Ed25519 key in "
                              f"PEM or OpenSSH format (and ${PASSPHRASE_ENV} if it is encrypted)") from exc
        if not isinstance(private, ed25519.Ed25519PrivateKey):
            raise ConfigError(f"signing key {path}: a {type(private).__name__}, not an Ed25519 key")
        return cls(private)

    def sign(self, kind: str, document: dict[str, Any]) -> dict[str, Any]:
        """``document`` with its ``signature`` member (replacing any it had)."""
        value = self.private.sign(signed_bytes(kind, document))
        unsigned = {name: item for name, item in document.items() if name != SIGNATURE}
        return {**unsigned, SIGNATURE: {"algorithm": ALGORITHM, "key_id": self.key_id,
                                        "value": base64.b64encode(value).decode("ascii")}}


class TrustedKeys:
    """The public keys a reader accepts signatures from; several at once while keys rotate."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self.keys = {key_id(key): key for key in keys}

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> TrustedKeys:
        """Every public key in ``paths``: PEM ``PUBLIC KEY`` blocks (several per file) or ``ssh-ed25519`` lines."""
        serialization, ed25519, _ = _crypto()
        keys = []
        for path in paths:
            data = _read_key(path, "trusted key")
            blocks = [b"-----BEGIN" + block for block in data.split(b"-----BEGIN")[1:]]
            blocks += [line for line in data.splitlines() if line.startswith(b"ssh-ed25519 ")]
            if not blocks:
                raise ConfigError(f"trusted key {path}: no PEM public key or ssh-ed25519 line in it")
            for block in blocks:
                try:
                    key = (serialization.load_ssh_public_key(block) if block.startswith(b"ssh-")
                           else serialization.load_pem_public_key(block))
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"trusted key {path}: not a readable public key ({exc})") from exc
                if not isinstance(key, ed25519.Ed25519PublicKey):
                    raise ConfigError(f"trusted key {path}: a {type(key).__name__}, not an Ed25519 key")
                keys.append(key)
        return cls(keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def with_key(self, key: Ed25519PublicKey) -> TrustedKeys:
        return TrustedKeys([*self.keys.values(), key])

    def verify(self, kind: str, document: dict[str, Any], path: str) -> str:
        """The id of the trusted key that signed ``document``; SignatureError if none did."""
        found = document.get(SIGNATURE)
        if found is None:
            raise SignatureError(f"{path} is not signed, and this reader accepts only versions signed by "
                                 f"{self._describe()}; not using it", path=path)
        if (not isinstance(found, dict) or found.get("algorithm") != ALGORITHM
                or not isinstance(found.get("key_id"), str) or not isinstance(found.get("value"), str)):
            raise SignatureError(f"{path}: its signature is not an {ALGORITHM} signature as docs/FORMAT.md "
                                 "specifies; not using it", path=path)
        key = self.keys.get(found["key_id"])
        if key is None:
            raise SignatureError(f"{path} is signed by key {found['key_id']}, which this reader does not trust "
                                 f"(it trusts {self._describe()}); not using it", path=path)
        try:
            value = base64.b64decode(found["value"], validate=True)
            key.verify(value, signed_bytes(kind, document))
        except (ValueError, _crypto()[2].InvalidSignature) as exc:
            raise SignatureError(f"{path}: its signature by key {found['key_id']} does not match its content "
                                 "(changed after signing, or forged); not using it", path=path) from exc
        return str(found["key_id"])

    def _describe(self) -> str:
        return "key " + ", ".join(sorted(self.keys)) if self.keys else "no key"


def _read_key(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read it ({exc.strerror})") from exc

