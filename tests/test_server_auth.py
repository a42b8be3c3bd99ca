"""Bearer tokens and TLS: in process for every route, then ``combe serve`` over a real TLS handshake.

The certificate is made here (self-signed, for 127.0.0.1) with ``cryptography``;
clients verify it against itself, as they would against a private CA.
"""

from __future__ import annotations

import datetime
import os
import ipaddress
import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask
from flask.testing import FlaskClient

from combe.consumer.server import Tokens, create_app
from combe.format.errors import ConfigError
from tests.support.served import Published, fetch, publish_all, start_serve, stop

EVERYTHING = "every-dataset-token-0123456789abcdef"
MOVIES_ONLY = "movies-only-token-0123456789abcdef"
TOKENS = f"# who may read\n{EVERYTHING}\n{MOVIES_ONLY} movies   # the catalogue team\n"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    return publish_all(tmp_path_factory.mktemp("auth"))


@pytest.fixture(scope="module")
def client(published: Published) -> Iterator[FlaskClient]:
    app: Flask = create_app(str(published.store), ["movies", "counts"], tokens=Tokens.parse(TOKENS, "test"))
    yield app.test_client()
    app.extensions["combe"].close()


def error(response: object, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)  # type: ignore[attr-defined]
    body = response.get_json()  # type: ignore[attr-defined]
    assert body["error"]["status"] == status
    return str(body["error"]["message"])


PROTECTED = ["/v1/datasets", "/v1/datasets/movies", "/v1/datasets/movies/records/m2", "/v1/datasets/counts/query?key=1",
             "/v1/datasets/movies/versions", "/v1/datasets/movies/versions/2/changes", "/readyz", "/metrics",
             "/v1/datasets/nope", "/no/such/route"]


@pytest.mark.parametrize("path", PROTECTED)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-0123456789abcdef", "Basic dXNlcjpwYXNz",
                                           "Bearer", f"Token {EVERYTHING}", f"Bearer {EVERYTHING}x"])
def test_without_a_valid_token_every_route_is_401(client: FlaskClient, path: str, authorization: str | None) -> None:
    response = client.get(path, headers={"Authorization": authorization} if authorization else {})
    message = error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="combe"')
    assert ('error="invalid_token"' in response.headers["WWW-Authenticate"]) == (authorization is not None)
    assert "X-Combe-Version" not in response.headers  # nothing about the datasets before a valid token
    assert EVERYTHING not in message and "wrong-token" not in message


def test_batch_get_needs_a_token_too(client: FlaskClient) -> None:
    error(client.post("/v1/datasets/counts/records:batchGet", json={"keys": [1]}), 401)
    response = client.post("/v1/datasets/counts/records:batchGet", json={"keys": [1]}, headers=bearer(EVERYTHING))
    assert response.status_code == 200 and response.get_json()["records"][0]["n"] == 1


@pytest.mark.parametrize("path", ["/healthz", "/", "/openapi.json", "/static/explorer.js"])
def test_health_explorer_and_spec_are_open(client: FlaskClient, path: str) -> None:
    with client.get(path) as response:
        assert response.status_code == 200


@pytest.mark.parametrize("path", [p for p in PROTECTED if "nope" not in p and "no/such" not in p])
def test_a_token_for_every_dataset_reads_everything(client: FlaskClient, path: str) -> None:
    assert client.get(path, headers=bearer(EVERYTHING)).status_code == 200


def test_a_dataset_token_reads_its_datasets_only(client: FlaskClient) -> None:
    headers = bearer(MOVIES_ONLY)
    assert client.get("/v1/datasets/movies/records/m2", headers=headers).status_code == 200
    listing = client.get("/v1/datasets", headers=headers)
    assert [d["name"] for d in listing.get_json()["datasets"]] == ["movies"]
    assert listing.headers["X-Combe-Version"] == "movies=3"
    assert "counts" in error(client.get("/v1/datasets/counts/records/1", headers=headers), 403)
    # Whether a dataset exists is not told to a token that may not read it.
    assert "nope" in error(client.get("/v1/datasets/nope", headers=headers), 403)
    for path in ("/metrics", "/readyz"):  # about every dataset
        error(client.get(path, headers=headers), 403)


@pytest.mark.parametrize("text, fragment", [
    ("", "no bearer token"),
    ("short\n", "line 1"),
    ("# header\n" + "x" * 20 + "\n" + "bad token with spaces?" + "y" * 20 + "\n", "line 3"),
    (f"{EVERYTHING}\n{EVERYTHING} movies\n", "twice"),
])
def test_token_files_that_cannot_work_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as raised:
        Tokens.parse(text, "tokens.txt")
    assert EVERYTHING not in str(raised.value) and "y" * 20 not in str(raised.value)


def test_a_token_for_a_dataset_not_served_is_refused(published: Published) -> None:
    with pytest.raises(ConfigError, match="line 1 names 'film'"):
        create_app(str(published.store), ["movies"], tokens=Tokens.parse(f"{EVERYTHING} film\n", "tokens.txt"))


# -- combe serve over TLS, with tokens from a file and from the environment -------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "combe test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_serve_over_tls_with_tokens_never_logged(published: Published, certificate: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    cert_file, key_file = certificate
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{MOVIES_ONLY} movies\n")
    context = ssl.create_default_context(cafile=str(cert_file))  # verifies the chain and the address
    process, base = start_serve(published, "--certfile", str(cert_file), "--keyfile", str(key_file),
                                "--token-file", str(token_file), "--access-log", "--workers", "1", "--threads", "2",
                                env={"COMBE_SERVE_TOKENS": EVERYTHING}, context=context, ready="/healthz")
    host, port = base.removeprefix("https://").split(":")
    try:
        status, headers, body = fetch(f"{base}/v1/datasets/movies/records/m2", bearer(MOVIES_ONLY), context=context)
        assert status == 200 and json.loads(body)["record"] == published.latest("movies")["m2"]
        assert fetch(f"{base}/v1/datasets/counts/records/1", bearer(EVERYTHING), context=context)[0] == 200
        assert fetch(f"{base}/v1/datasets/counts/records/1", bearer(MOVIES_ONLY), context=context)[0] == 403
        status, headers, body = fetch(f"{base}/v1/datasets/movies/records/m2", context=context)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        status, _, body = fetch(f"{base}/v1/datasets/movies/records/m2", bearer("x" * 40), context=context)
        assert status == 401 and json.loads(body)["error"]["type"] == "Unauthorized"
        # A client that does not trust the certificate fails the handshake; the server serves on.
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            fetch(f"{base}/healthz", context=ssl.create_default_context())
        # Plain HTTP to the TLS port fails the handshake: the connection is closed, nothing is answered.
        with socket.create_connection((host, int(port)), timeout=10) as plain:
            plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            try:
                reply = plain.recv(100)
            except ConnectionResetError:
                reply = b""
            assert reply == b""
        # Handshakes left half done and requests left half sent hold no thread.
        stalled = []
        for _ in range(8):
            raw = socket.create_connection((host, int(port)), timeout=30)
            raw.sendall(b"\x16\x03\x01")  # the start of a TLS record, then nothing
            stalled.append(raw)
        for _ in range(4):
            wrapped = context.wrap_socket(socket.create_connection((host, int(port)), timeout=30),
                                          server_hostname=host)
            wrapped.sendall(b"GET /healthz HTTP/1.1\r\n")
            stalled.append(wrapped)  # type: ignore[arg-type]
        started = time.monotonic()
        for _ in range(5):
            assert fetch(f"{base}/v1/datasets/movies/records/m3", bearer(EVERYTHING), context=context)[0] == 200
        assert time.monotonic() - started < 5  # the request timeout is 10 s: nobody waited for the stalled ones
        for sock in stalled:
            sock.close()
    finally:
        code, err = stop(process)
    assert code == 0, err
    assert "GET /v1/datasets/movies/records/m2" in err  # the access log is on
    assert EVERYTHING not in err and MOVIES_ONLY not in err and "x" * 40 not in err


# Four interpreters: make check sees `combe serve` refuse options with exit 2 in test_server.py's
# test_serve_refuses_bad_options; make test runs this one.
@pytest.mark.slow
def test_serve_refuses_tls_and_token_settings_that_cannot_work(published: Published, certificate: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
    cert_file, key_file = certificate

    def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "combe", "serve", "--store", str(published.store), "--dataset",
                               "movies", *args], capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, **(env or {})})

    result = serve("--certfile", str(cert_file))
    assert result.returncode == 2 and "private key" in result.stderr
    result = serve("--certfile", str(key_file), "--keyfile", str(key_file))
    assert result.returncode == 2 and "TLS" in result.stderr
    result = serve("--token-file", str(tmp_path / "absent"))
    assert result.returncode == 2 and "token file" in result.stderr
    result = serve(env={"COMBE_SERVE_TOKENS": f"{EVERYTHING} counts"})
    assert result.returncode == 2 and "$COMBE_SERVE_TOKENS line 1" in result.stderr and EVERYTHING not in result.stderr
