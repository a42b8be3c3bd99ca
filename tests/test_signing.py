"""Signed versions: producers sign manifests and announcements with Ed25519; readers with public keys refuse
unsigned or forged ones and keep the version they serve; keys rotate with two trusted at once."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from combe.cli import EXIT_FAILURE, EXIT_USAGE, main
from combe.consumer import Consumer
from combe.format.dataset import Dataset
from combe.format.errors import ConfigError, FormatError, SignatureError
from combe.format.signing import SIGNATURE, Signer, TrustedKeys, canonical, signed_bytes
from combe.producer import PublishOptions, Publisher, RecordFormat, open_source
from tests.support.changelog import Change, append_jsonl, canon, replay
from tests.support.feed import view_state
from tests.support.sharded import ShardedWriter

DATASET = "movies"


def make_key(directory: Path, name: str, *, ssh: bool = False, passphrase: bytes | None = None) -> tuple[Path, Path]:
    """A new Ed25519 key pair as files: (private, public)."""
    private = Ed25519PrivateKey.generate()
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    if ssh:
        secret = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption)
        public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        public += b" combe@test\n"
    else:
        secret = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        public = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / f"{name}.key", directory / f"{name}.pub"
    paths[0].write_bytes(secret)
    paths[1].write_bytes(public)
    return paths


class SignedFeed:
    """A changelog published version by version with a signing key that can change, and the replayed states."""

    def __init__(self, root: Path, key: Path | None, **options: Any) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.store = str(root / "store")
        self.path = root / "changes.jsonl"
        self.path.touch()
        self.options = PublishOptions(fmt=RecordFormat(), snapshot_ratio=1e9, **options)
        self.states: dict[int, dict[Any, str]] = {}
        self.key = key

    def publish(self, changes: list[Change]) -> int:
        append_jsonl(self.path, changes)
        dataset = Dataset.open(self.store, DATASET, signing_key=self.key)
        with open_source(str(self.path)) as source:
            result = Publisher(dataset, source, self.options).run_cycle()
        assert result.outcome == "published" and result.version is not None, result
        self.states[result.version] = replay(changes, self.states.get(result.version - 1))
        return result.version

    def document(self, name: str) -> dict[str, Any]:
        return json.loads((Path(self.store) / DATASET / name).read_bytes())

    def rewrite(self, name: str, document: dict[str, Any]) -> None:
        (Path(self.store) / DATASET / name).write_text(json.dumps(document, indent=1))


def movies(start: int, count: int, tag: str = "") -> list[Change]:
    return [(f"m{i:03d}", {"title": f"Movie {i}{tag}", "year": 1990 + i % 30}) for i in range(start, start + count)]


def manifest_name(version: int) -> str:
    return f"versions/{version:012d}.json"


# -- the canonical form --------------------------------------------------------------------------


def test_canonical_form_sorts_by_utf16_code_units_and_escapes_as_rfc_8785() -> None:
    # RFC 8785's sorting example: by UTF-16 code units, so U+1F600 (a surrogate pair) sorts before U+FB33.
    document = {"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
                "1": "One", "\U0001f600": "Emoji: Grinning Face", "\u0080": "Control",
                "\u00f6": "Latin Small Letter O With Diaeresis"}
    text = canonical(document).decode()
    assert sorted(document, key=lambda k: text.index(json.dumps(k, ensure_ascii=False) + ":")) == [
        "\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert canonical({"b": [1, True, None, "é\n\u000f\"\\"], "a": {"z": -7, "y": ""}}) == \
        '{"a":{"y":"","z":-7},"b":[1,true,null,"é\\n\\u000f\\"\\\\"]}'.encode()
    for bad in ({"x": 1.5}, {"x": 2**53}, {"x": "\ud800"}):
        with pytest.raises(FormatError):
            canonical(bad)
    # The signature member is never part of what is signed.
    assert signed_bytes("manifest", {"a": 1, SIGNATURE: {"x": 1}}) == b'combe-signature-v1\nmanifest\n{"a":1}'


# -- round trip, unsigned, forged -----------------------------------------------------------------


def test_a_signed_round_trip(tmp_path: Path) -> None:
    key, public = make_key(tmp_path / "keys", "producer")
    feed = SignedFeed(tmp_path, key, snapshot_every=3)
    feed.publish(movies(0, 50))
    key_id = Signer.from_file(key).key_id
    assert feed.document("announced.json")[SIGNATURE]["key_id"] == key_id
    assert feed.document(manifest_name(1))[SIGNATURE] == {
        "algorithm": "ed25519", "key_id": key_id, "value": feed.document(manifest_name(1))[SIGNATURE]["value"]}
    with Consumer(feed.store, DATASET, trusted_keys=[public]) as consumer:
        assert view_state(consumer.view()) == feed.states[1]
        for version in range(2, 6):  # deltas, and a snapshot at 4
            assert feed.publish(movies(version * 10, 5, " (new)") + [(f"m{version:03d}", None)]) == version
            assert consumer.refresh() and view_state(consumer.view()) == feed.states[version]
    # A producer that verifies too builds on its own signed versions.
    verifying = Dataset.open(feed.store, DATASET, signing_key=key, trusted_keys=[public])
    assert verifying.manifest(5).version == 5 and verifying.announced().version == 5


def test_unsigned_versions_are_refused_and_the_consumer_keeps_its_version(tmp_path: Path) -> None:
    key, public = make_key(tmp_path / "keys", "producer")
    unsigned = SignedFeed(tmp_path / "unsigned", None)
    unsigned.publish(movies(0, 10))
    with pytest.raises(SignatureError, match="announced.json is not signed"):
        Consumer(unsigned.store, DATASET, trusted_keys=[public])

    feed = SignedFeed(tmp_path / "signed", key)
    feed.publish(movies(0, 10))
    with Consumer(feed.store, DATASET, trusted_keys=[public]) as consumer:
        feed.key = None  # a producer that lost its key configuration
        feed.publish(movies(20, 3))
        with pytest.raises(SignatureError, match="is not signed"):
            consumer.refresh()
        assert consumer.version == 1 and view_state(consumer.view()) == feed.states[1]
        assert "is not signed" in consumer.status()["last_error"]
        # Signed again: the unsigned version 2 stays in the chain of version 3, so it is refused too ...
        feed.key = key
        feed.publish(movies(30, 3))
        with pytest.raises(SignatureError, match=f"{manifest_name(2)} is not signed"):
            consumer.refresh()
        assert consumer.version == 1


def _forgeries(feed: SignedFeed, attacker: Signer) -> dict[str, tuple[str, dict[str, Any], str]]:
    """name -> (document path, forged document, what the error says)."""
    manifest = feed.document(manifest_name(2))
    announced = feed.document("announced.json")
    edited_manifest = json.loads(json.dumps(manifest))
    edited_manifest["changes"]["added"] += 1
    swapped = json.loads(json.dumps(manifest))
    swapped["blobs"]["delta"]["sha256"] = "0" * 64  # what a forger pointing at their own blob would change
    stripped = {k: v for k, v in manifest.items() if k != SIGNATURE}
    bumped = json.loads(json.dumps(announced))
    bumped["version"] += 1  # announcing a forged version 3
    garbled = json.loads(json.dumps(manifest))
    garbled[SIGNATURE]["value"] = "not base64!"
    return {
        "manifest edited after signing": (manifest_name(2), edited_manifest, "does not match its content"),
        "manifest blob swapped": (manifest_name(2), swapped, "does not match its content"),
        "manifest signature removed": (manifest_name(2), stripped, "is not signed"),
        "manifest signed by another key": (manifest_name(2), attacker.sign("manifest", edited_manifest),
                                           f"signed by key {attacker.key_id}, which this reader does not trust"),
        "manifest signature garbled": (manifest_name(2), garbled, "does not match its content"),
        "announcement edited after signing": ("announced.json", bumped, "does not match its content"),
        "announcement signed by another key": ("announced.json", attacker.sign("announced", bumped),
                                               "which this reader does not trust"),
        "manifest signature moved to the announcement": (
            "announced.json", {**announced, SIGNATURE: manifest[SIGNATURE]}, "does not match its content"),
    }


def test_forged_manifests_and_announcements_are_refused_while_the_consumer_keeps_its_version(tmp_path: Path) -> None:
    key, public = make_key(tmp_path / "keys", "producer")
    attacker_key, _ = make_key(tmp_path / "keys", "attacker")
    attacker = Signer.from_file(attacker_key)
    feed = SignedFeed(tmp_path, key)
    feed.publish(movies(0, 20))
    feed.publish(movies(20, 5))
    originals = {name: feed.document(name) for name in (manifest_name(2), "announced.json")}
    for name, (path, forged, message) in _forgeries(feed, attacker).items():
        with Consumer(feed.store, DATASET, trusted_keys=[public], pin=1) as consumer:
            feed.rewrite(path, forged)
            with pytest.raises(SignatureError, match=message):
                consumer.set_pin(None)
            assert consumer.version == 1 and consumer.pin == 1 and view_state(consumer.view()) == feed.states[1], name
            with pytest.raises(SignatureError, match=message):
                Consumer(feed.store, DATASET, trusted_keys=[public])
            # A producer that verifies refuses to build on it: nothing forged is ever signed into a new version.
            append_jsonl(feed.path, movies(90, 1))
            with pytest.raises(SignatureError, match=message), open_source(str(feed.path)) as source:
                Publisher(Dataset.open(feed.store, DATASET, signing_key=key, trusted_keys=[public]), source,
                          feed.options).run_cycle()
            feed.rewrite(path, originals[path])
            consumer.set_pin(None)
            assert consumer.version == 2, name  # the real version 2 is accepted


# -- key rotation ----------------------------------------------------------------------------


def test_key_rotation_with_two_trusted_keys(tmp_path: Path) -> None:
    old_key, old_public = make_key(tmp_path / "keys", "old")
    new_key, new_public = make_key(tmp_path / "keys", "new", ssh=True)  # OpenSSH files work too
    feed = SignedFeed(tmp_path, old_key, snapshot_every=3)  # snapshots at 1 and 4
    feed.publish(movies(0, 30))
    feed.publish(movies(30, 3))
    both = [old_public, new_public]
    with Consumer(feed.store, DATASET, trusted_keys=both) as consumer:
        # 1. Consumers trust both keys. 2. The producer switches to the new key.
        feed.key = new_key
        feed.publish(movies(40, 3))
        assert consumer.refresh() and view_state(consumer.view()) == feed.states[3]
        # Version 3 is still built on version 1's snapshot, signed by the old key.
        with pytest.raises(SignatureError, match="which this reader does not trust"):
            Consumer(feed.store, DATASET, trusted_keys=[new_public])
        # 3. Once a snapshot signed by the new key is announced, the old key is needed no more.
        feed.publish(movies(50, 3))
        assert feed.document(manifest_name(4))["blobs"]["snapshot"] is not None
        assert consumer.refresh() and view_state(consumer.view()) == feed.states[4]
        with Consumer(feed.store, DATASET, trusted_keys=[new_public]) as rotated:
            assert view_state(rotated.view()) == feed.states[4]
            with pytest.raises(SignatureError):  # going back before the switch needs the old key
                rotated.set_pin(2)
            assert rotated.version == 4


# -- configuration ------------------------------------------------------------------------------


def test_keys_from_files_and_the_environment_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    key, public = make_key(tmp_path / "keys", "producer", passphrase=b"s3cret")
    _, other_public = make_key(tmp_path / "keys", "other")
    changes = tmp_path / "changes.jsonl"
    append_jsonl(changes, movies(0, 5))
    store = str(tmp_path / "store")
    common = ["--store", store, "--dataset", DATASET]
    monkeypatch.setenv("COMBE_SIGNING_KEY", str(key))
    with monkeypatch.context() as env:  # an encrypted key without its passphrase
        env.delenv("COMBE_SIGNING_KEY_PASSPHRASE", raising=False)
        assert main(["publish", "--once", "--source", str(changes), *common]) == EXIT_USAGE
        assert "COMBE_SIGNING_KEY_PASSPHRASE" in capsys.readouterr().err
    monkeypatch.setenv("COMBE_SIGNING_KEY_PASSPHRASE", "s3cret")
    assert main(["publish", "--once", "--source", str(changes), *common]) == 0
    monkeypatch.delenv("COMBE_SIGNING_KEY")
    capsys.readouterr()

    assert main(["get", *common, "--trusted-key", str(public), "m001"]) == 0
    assert json.loads(capsys.readouterr().out) == {"key": "m001", "title": "Movie 1", "year": 1991}
    assert main(["get", *common, "--trusted-key", str(other_public), "m001"]) == EXIT_FAILURE
    assert "which this reader does not trust" in capsys.readouterr().err
    monkeypatch.setenv("COMBE_TRUSTED_KEYS", f"{other_public}:{public}")  # several, as during a rotation
    assert main(["get", *common, "m001"]) == 0
    capsys.readouterr()

    # A pin rewrites announced.json: signed with the key given; without one, verifying readers refuse it.
    assert main(["pin", *common, "--signing-key", str(key), "1"]) == 0
    assert main(["get", *common, "m001"]) == 0
    assert main(["unpin", *common]) == 0
    capsys.readouterr()
    assert main(["get", *common, "m001"]) == EXIT_FAILURE
    assert "announced.json is not signed" in capsys.readouterr().err
    # Repaired by signing it again, from a shell that does not verify what it replaces.
    monkeypatch.delenv("COMBE_TRUSTED_KEYS")
    assert main(["pin", *common, "--signing-key", str(key), "1"]) == 0
    assert main(["unpin", *common, "--signing-key", str(key)]) == 0
    assert main(["get", *common, "--trusted-key", str(public), "m001"]) == 0
    capsys.readouterr()
    assert main(["inspect", *common, "--trusted-key", str(other_public)]) == EXIT_FAILURE
    assert "which this reader does not trust" in capsys.readouterr().err
    # combe serve reads its keys before it starts anything.
    assert main(["serve", *common, "--trusted-key", str(tmp_path / "missing.pub")]) == EXIT_USAGE
    assert "missing.pub: cannot read it" in capsys.readouterr().err


def test_a_sharded_dataset_is_signed_throughout_and_a_forged_version_refused(tmp_path: Path) -> None:
    key, public = make_key(tmp_path / "keys", "producer")
    store = str(tmp_path / "store")
    for folder in ("signed", "forger"):
        (tmp_path / folder).mkdir()
    ShardedWriter(store, DATASET, 2, tmp_path / "signed", signing_key=key).publish(movies(0, 30))
    root = Path(store) / DATASET
    documents = {str(path.relative_to(root)): json.loads(path.read_bytes()) for path in root.rglob("*.json")}
    # shards.json, the dataset's announcement and version 1, and each shard's head and version 1
    assert len(documents) == 7, sorted(documents)
    assert all(SIGNATURE in document for document in documents.values()), sorted(documents)
    expected = replay(movies(0, 30))
    with Consumer(store, DATASET, trusted_keys=[public]) as consumer:
        assert consumer.version == 1 and consumer.get("m007") == {"key": "m007", "title": "Movie 7", "year": 1997}

        # Someone who can write to the bucket but has no key publishes and commits a version 2 of every shard.
        ShardedWriter(store, DATASET, 2, tmp_path / "forger").publish([("m007", {"title": "Forged", "year": 1})])
        with pytest.raises(SignatureError, match="announced.json is not signed"):
            consumer.refresh()
        assert consumer.version == 1
        assert {row["key"]: canon(row) for row in consumer.view().table.to_pylist()} == expected
        with pytest.raises(SignatureError, match="is not signed"):
            Consumer(store, DATASET, trusted_keys=[public])
    with Consumer(store, DATASET) as unverified:  # what a reader without keys would have served
        assert unverified.version == 2 and unverified.get("m007") == {"key": "m007", "title": "Forged", "year": 1}


def test_a_missing_cryptography_package_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key, public = make_key(tmp_path / "keys", "producer")
    monkeypatch.setitem(sys.modules, "cryptography", None)  # what an install without combe[sign] sees
    for attempt in (lambda: Signer.from_file(key), lambda: TrustedKeys.from_files([public])):
        with pytest.raises(ConfigError, match=r"pip install 'combe\[sign\]'"):
            attempt()


def test_the_http_endpoint_serves_only_signed_versions(tmp_path: Path) -> None:
    from combe.consumer.server import Settings, create_app

    key, public = make_key(tmp_path / "keys", "producer")
    unsigned = SignedFeed(tmp_path / "unsigned", None)
    unsigned.publish(movies(0, 5))
    settings = Settings(ready_wait=0, refresh_interval=3600)
    app = create_app(unsigned.store, [DATASET], settings=settings, trusted_keys=[public])
    try:
        client = app.test_client()
        deadline = time.monotonic() + 30
        while "not signed" not in client.get("/readyz").get_json()["waiting"].get(DATASET, ""):
            assert time.monotonic() < deadline, client.get("/readyz").get_json()
            time.sleep(0.05)
        assert client.get(f"/v1/datasets/{DATASET}/records/m001").status_code == 503
    finally:
        app.extensions["combe"].close()

    feed = SignedFeed(tmp_path / "signed", key)
    feed.publish(movies(0, 5))
    app = create_app(feed.store, [DATASET], settings=Settings(ready_wait=30, refresh_interval=3600),
                     trusted_keys=[public])
    try:
        client = app.test_client()
        assert client.get(f"/v1/datasets/{DATASET}/records/m001").get_json()["record"]["title"] == "Movie 1"
        feed.publish([("m001", {"title": "Forged", "year": 1})])
        manifest = feed.document(manifest_name(2))
        manifest["changes"]["updated"] = 0  # edited after signing
        feed.rewrite(manifest_name(2), manifest)
        consumer = app.extensions["combe"].catalog.get(DATASET).consumer
        with pytest.raises(SignatureError):
            consumer.refresh()
        answer = client.get(f"/v1/datasets/{DATASET}/records/m001")
        assert answer.headers["X-Combe-Version"] == "1" and answer.get_json()["record"]["title"] == "Movie 1"
    finally:
        app.extensions["combe"].close()


def test_a_signature_checks_out_from_the_spec_alone(tmp_path: Path) -> None:
    """docs/FORMAT.md's bytes, rebuilt with the standard library's JSON: enough to verify without combe."""
    key, public = make_key(tmp_path / "keys", "producer")
    feed = SignedFeed(tmp_path, key)
    feed.publish(movies(0, 3))
    public_key = serialization.load_pem_public_key(public.read_bytes())
    assert isinstance(public_key, Ed25519PublicKey)
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for name, kind in ((manifest_name(1), "manifest"), ("announced.json", "announced")):
        document = feed.document(name)
        signature = document.pop(SIGNATURE)
        assert signature["algorithm"] == "ed25519" and signature["key_id"] == hashlib.sha256(raw).hexdigest()[:16]
        # Every member name here is ASCII, so sorting by code point is sorting by UTF-16 code units.
        message = f"combe-signature-v1\n{kind}\n".encode() + json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        public_key.verify(base64.b64decode(signature["value"]), message)  # raises if it does not check out
