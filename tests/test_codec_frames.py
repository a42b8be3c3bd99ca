"""Multi-frame blobs: a frame table in a skippable frame, frames decompressed in parallel."""

from __future__ import annotations

import io
import struct

import pyarrow as pa
import pytest
import zstandard

from combe.format import codec
from combe.format.errors import IntegrityError


@pytest.fixture
def ipc() -> bytes:
    table = pa.table({"key": [f"k{i:06d}" for i in range(20_000)], "n": list(range(20_000))})
    return codec.ipc_file_bytes(table).to_pybytes()


def test_a_large_blob_is_cut_into_frames_that_round_trip(ipc: bytes) -> None:
    blob = codec.compress(ipc, frame_bytes=50_000)
    frames = codec._frame_table(blob, "b")
    assert frames is not None and len(frames) == -(-len(ipc) // 50_000)
    assert bytes(codec.decompress(blob, path="b")) == ipc


def test_any_zstd_decoder_reads_the_blob_as_one_stream(ipc: bytes) -> None:
    blob = codec.compress(ipc, frame_bytes=50_000)
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True)
    assert reader.read() == ipc


def test_python_zstandard_reads_across_frames_only_as_format_md_says(ipc: bytes) -> None:
    """FORMAT.md ("Blobs"): the streaming API with read_across_frames reads a multi-frame blob whole; the
    one-shot API and a default decompressobj do not, which is why a reader must be told."""
    blob = codec.compress(ipc, frame_bytes=50_000)
    decompressor = zstandard.ZstdDecompressor()
    assert decompressor.stream_reader(blob, read_across_frames=True).read() == ipc
    whole = decompressor.decompressobj(read_across_frames=True)
    assert b"".join(whole.decompress(blob[i:i + 65536]) for i in range(0, len(blob), 65536)) == ipc
    with pytest.raises(zstandard.ZstdError):
        decompressor.decompress(blob)  # it decodes the skippable frame alone: no content
    assert decompressor.decompressobj().decompress(blob) == b""  # it stops after the skippable frame


def test_a_blob_of_exactly_one_frame_size_has_no_table() -> None:
    data = bytes(range(256)) * 16
    assert codec._frame_table(codec.compress(data, frame_bytes=len(data)), "b") is None
    table = codec._frame_table(codec.compress(data, frame_bytes=len(data) - 1), "b")
    assert table is not None and [size for _, _, _, size in table] == [len(data) - 1, 1]
    blob = codec.compress(data, frame_bytes=len(data) - 1)
    assert struct.unpack_from("<I", blob, 4)[0] == 20 + 16 * 2  # the table's length: 20 + 16 N


def test_a_small_blob_stays_one_plain_frame(ipc: bytes) -> None:
    blob = codec.compress(ipc)
    assert codec._frame_table(blob, "b") is None
    assert zstandard.ZstdDecompressor().decompress(blob) == ipc


def test_a_corrupted_frame_is_refused(ipc: bytes) -> None:
    blob = bytearray(codec.compress(ipc, frame_bytes=50_000))
    blob[-100] ^= 0xFF
    with pytest.raises(IntegrityError, match="blob b does not decompress"):
        codec.decompress(bytes(blob), path="b")


def test_a_frame_table_that_lies_is_refused(ipc: bytes) -> None:
    blob = bytearray(codec.compress(ipc, frame_bytes=50_000))
    offset = 8 + len(codec.TABLE_TAG) + 4 + 8  # the first frame's decompressed size
    struct.pack_into("<Q", blob, offset, struct.unpack_from("<Q", blob, offset)[0] - 1)
    with pytest.raises(IntegrityError, match="other than the"):
        codec.decompress(bytes(blob), path="b")
    truncated = bytes(blob[:-10])
    with pytest.raises(IntegrityError, match="frame table covers"):
        codec.decompress(truncated, path="b")


def test_the_sha256_is_checked_while_decompressing(ipc: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "PARALLEL_FROM", 1)  # the threaded path, whatever the blob's size
    blob = codec.compress(ipc, frame_bytes=50_000)
    with pytest.raises(IntegrityError, match="has sha256 .* but its manifest records"):
        codec.verified_ipc(blob, "0" * 64, path="b")
    corrupted = bytearray(blob)
    corrupted[-100] ^= 0xFF  # fails to decompress; the error still says the sha256 did not match
    with pytest.raises(IntegrityError, match="has sha256"):
        codec.verified_ipc(bytes(corrupted), codec.sha256_hex(blob), path="b")
    assert bytes(codec.verified_ipc(blob, codec.sha256_hex(blob), path="b")) == ipc


@pytest.mark.parametrize("frame_bytes", [50_000, codec.FRAME_BYTES])
def test_a_blob_that_passes_its_check_decompresses_to_what_was_written(ipc: bytes, frame_bytes: int) -> None:
    """check_blob keeps nothing it decompresses; whatever byte of the blob is changed, it refuses the blob or
    the blob still holds the same bytes (a change zstd ignores)."""
    blob = codec.compress(ipc, frame_bytes=frame_bytes)
    codec.check_blob(blob, path="b")
    for at in range(0, len(blob), max(1, len(blob) // 300)):
        damaged = bytearray(blob)
        damaged[at] ^= 0x5A
        try:
            codec.check_blob(bytes(damaged), path="b")
        except IntegrityError:
            continue
        assert bytes(codec.decompress(bytes(damaged), path="b")) == ipc, f"byte {at} changed what it holds"


def test_a_frame_without_a_content_checksum_is_refused(ipc: bytes) -> None:
    blob = zstandard.ZstdCompressor(write_checksum=False, write_content_size=True).compress(ipc)
    assert bytes(codec.decompress(blob, path="b")) == ipc
    with pytest.raises(IntegrityError, match="without a content checksum"):
        codec.check_blob(blob, path="b")
