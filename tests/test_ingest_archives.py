"""Zip archives on upload: real bytes are capped, whatever the archive declares."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from PIL import Image

from webapp.ingest import IngestError, iter_zip_images

MB = 1024 * 1024
_EOCD = struct.Struct("<4s4H2LH")  # signature ... central directory size, offset, comment


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (300, 400, 3), np.uint8)
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _central_entries(data: bytes) -> list[int]:
    """Offsets of the central-directory entries (archives written here have no comment)."""
    _, _, _, _, count, _, offset, _ = _EOCD.unpack_from(data, len(data) - _EOCD.size)
    entries = []
    for _ in range(count):
        entries.append(offset)
        name_len, extra_len, comment_len = struct.unpack_from("<3H", data, offset + 28)
        offset += 46 + name_len + extra_len + comment_len
    return entries


def _declare_size(data: bytes, size: int, members: slice = slice(None)) -> bytes:
    """The archive with its members' uncompressed size rewritten to `size` (both headers)."""
    out = bytearray(data)
    for entry in _central_entries(data)[members]:
        struct.pack_into("<L", out, entry + 24, size)
        (local,) = struct.unpack_from("<L", data, entry + 42)
        struct.pack_into("<L", out, local + 22, size)
    return bytes(out)


@pytest.fixture(scope="module")
def zeros() -> bytes:
    return bytes(32 * MB)


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA, zipfile.ZIP_DEFLATED])
def test_a_member_lying_about_its_size_is_refused_within_bounded_memory(
    zeros: bytes, method: int
) -> None:
    bomb = _declare_size(_zip({"bomb.png": zeros}, method), 1000)
    assert len(bomb) < 200_000  # tens of megabytes behind a small archive
    tracemalloc.start()
    try:
        with pytest.raises(IngestError, match=r"parts\.zip: bomb\.png: unpacks past the 1048576"):
            list(iter_zip_images(bomb, "parts.zip", max_total_bytes=8 * MB, max_member_bytes=MB))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MB


def test_the_total_limit_counts_real_bytes_not_declared_ones() -> None:
    members = {f"p{i}.png": bytes(600_000) for i in range(3)}
    archive = _declare_size(_zip(members, zipfile.ZIP_BZIP2), 10, slice(1, None))
    with pytest.raises(IngestError, match=r"p1\.png: unpacks past .*whole archive"):
        list(iter_zip_images(archive, "a.zip", max_total_bytes=MB, max_member_bytes=MB))


@pytest.mark.parametrize(
    "method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]
)
def test_honest_archives_unpack_exactly(method: int) -> None:
    members = {
        "line1/a.png": _png(1),
        "line1/b.PNG": _png(2) + bytes(300_000),  # several decompression steps
        "notes.txt": b"not an image",
        "__MACOSX/line1/._a.png": b"resource fork",
    }
    got = dict(iter_zip_images(_zip(members, method), "ok.zip", max_total_bytes=10 * MB))
    assert got == {k: members[k] for k in ("line1/a.png", "line1/b.PNG")}


def test_an_encrypted_member_is_refused_by_name() -> None:
    out = bytearray(_zip({"a.png": _png(1), "secret.png": _png(2)}))
    entry = _central_entries(bytes(out))[1]
    (flags,) = struct.unpack_from("<H", out, entry + 8)
    struct.pack_into("<H", out, entry + 8, flags | 0x1)
    with pytest.raises(IngestError, match=r"s\.zip: secret\.png is encrypted"):
        list(iter_zip_images(bytes(out), "s.zip", max_total_bytes=10 * MB))


def test_a_damaged_member_is_refused_by_name() -> None:
    data = bytearray(_zip({"a.png": _png(1)}))
    (local,) = struct.unpack_from("<L", data, _central_entries(bytes(data))[0] + 42)
    start = local + 30 + len("a.png")
    data[start + 100 : start + 400] = bytes(300)  # garbage in the deflate stream
    with pytest.raises(IngestError, match=r"d\.zip: a\.png: damaged"):
        list(iter_zip_images(bytes(data), "d.zip", max_total_bytes=10 * MB))


def test_a_member_cut_short_inside_the_archive_is_refused() -> None:
    """Member bytes missing while the central directory survives (a botched copy)."""
    data = _zip({"a.png": _png(1)}, zipfile.ZIP_STORED)
    entry = _central_entries(data)[0]
    cut = 5000
    short = bytearray(data[: entry - cut] + data[entry:])
    eocd = len(short) - _EOCD.size
    (cd_offset,) = struct.unpack_from("<L", short, eocd + 16)
    struct.pack_into("<L", short, eocd + 16, cd_offset - cut)
    with pytest.raises(IngestError, match=r"c\.zip: a\.png: .*truncated"):
        list(iter_zip_images(bytes(short), "c.zip", max_total_bytes=10 * MB))


def test_an_archive_declaring_too_much_is_refused_before_unpacking() -> None:
    archive = _zip({f"p{i}.png": bytes(600_000) for i in range(3)})
    with pytest.raises(IngestError, match=r"big\.zip: unpacks to 1800000 bytes"):
        list(iter_zip_images(archive, "big.zip", max_total_bytes=MB))


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_a_truncated_archive_is_refused(keep: float) -> None:
    data = _zip({"a.png": _png(1), "b.png": _png(2)})
    with pytest.raises(IngestError, match=r"t\.zip: not a valid zip archive"):
        list(iter_zip_images(data[: int(len(data) * keep)], "t.zip", max_total_bytes=10 * MB))
