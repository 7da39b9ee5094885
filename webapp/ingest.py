"""Validation of incoming image files before anything is stored.

Refused with a clear message: zero bytes, files over the size limit, non-images,
truncated files, decompression bombs (over the pixel limit, checked before decoding).
Converted rather than refused: CMYK, palette, 16-bit, grayscale and alpha images.

Zip archives are unpacked by `iter_zip_images`, which never trusts the sizes an archive
declares: each member is decompressed a bounded chunk at a time and refused as soon as
it passes the per-member or the total byte limit (a bzip2 or LZMA member a few hundred
bytes long can unpack to gigabytes, and the standard reader inflates a whole input chunk
at once). Encrypted, corrupt and truncated archives are refused with the member named.
"""

from __future__ import annotations

import bz2
import io
import lzma
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from model.images import IMAGE_EXTENSIONS, to_rgb_array

SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "MPO")


class IngestError(ValueError):
    """An upload that cannot be accepted; the message says why."""


@dataclass(frozen=True)
class DecodedImage:
    """A validated image: 8-bit RGB pixels plus what the file said about itself."""

    rgb: np.ndarray
    width: int
    height: int
    format: str


def decode_upload(data: bytes, name: str, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Validate and decode one uploaded file (IngestError naming `name` when refused)."""
    if not data:
        raise IngestError(f"{name}: empty file (0 bytes)")
    if len(data) > max_bytes:
        raise IngestError(f"{name}: {len(data)} bytes is over the {max_bytes}-byte limit")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise IngestError(
                    f"{name}: {width}x{height} = {width * height} pixels is over the "
                    f"{max_pixels}-pixel limit (decompression bomb guard)"
                )
            if img.format not in SUPPORTED_FORMATS:
                raise IngestError(
                    f"{name}: format {img.format} is not supported "
                    f"(use {', '.join(SUPPORTED_FORMATS[:4])})"
                )
            img.load()
            rgb = to_rgb_array(img)
            fmt = img.format
    except IngestError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise IngestError(f"{name}: not an image ({exc.__class__.__name__})") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise IngestError(f"{name}: damaged or truncated image ({exc})") from exc
    return DecodedImage(rgb=rgb, width=width, height=height, format=fmt)


_CHUNK = 64 * 1024  # most bytes decompressed in one step
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then name and extra-field lengths
_LOCAL_SIGNATURE = b"PK\x03\x04"
_ENCRYPTED = 0x1
_ARCHIVE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError)


def _compressed_bytes(data: bytes, member: zipfile.ZipInfo) -> memoryview:
    """The raw compressed bytes of `member`, located through its local header."""
    offset = member.header_offset
    if offset + _LOCAL_HEADER.size > len(data):
        raise IngestError(f"{member.filename}: archive is truncated")
    signature, name_len, extra_len = _LOCAL_HEADER.unpack_from(data, offset)
    if signature != _LOCAL_SIGNATURE:
        raise IngestError(f"{member.filename}: archive is damaged (bad local header)")
    start = offset + _LOCAL_HEADER.size + name_len + extra_len
    end = start + member.compress_size
    if end > len(data):
        raise IngestError(f"{member.filename}: archive is truncated")
    return memoryview(data)[start:end]


def _lzma_decompressor(raw: memoryview, cap: int) -> tuple[lzma.LZMADecompressor, memoryview]:
    """A raw LZMA1 decompressor from the zip LZMA header (version, props size, props).

    The declared dictionary is allocated up front, so it is clamped to `cap`: a stream
    that unpacks to at most `cap` bytes never reaches further back than that."""
    if len(raw) < 4:
        raise EOFError("LZMA header cut short")
    props_size = int.from_bytes(raw[2:4], "little")
    props = bytes(raw[4 : 4 + props_size])
    if len(props) != 5:
        raise ValueError("LZMA properties are malformed")
    lc_lp_pb, dict_size = props[0], int.from_bytes(props[1:5], "little")
    dict_size = max(min(dict_size, cap), 4096)
    lp_pb, lc = divmod(lc_lp_pb, 9)
    pb, lp = divmod(lp_pb, 5)
    lzma_filter = {"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": dict_size}
    return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma_filter]), raw[4 + props_size :]


class _Decompressor(Protocol):
    """What bz2's and lzma's decompressors offer: output bounded by `max_length`."""

    needs_input: bool
    eof: bool

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class _Inflater:
    """Raw deflate behind the same interface (zlib keeps pending input aside)."""

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(-15)
        self.needs_input = True

    @property
    def eof(self) -> bool:
        return self._zlib.eof

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        out = self._zlib.decompress(self._zlib.unconsumed_tail + data, max_length)
        self.needs_input = not self._zlib.unconsumed_tail and len(out) < max_length
        return out


def _stream(decompressor: _Decompressor, raw: memoryview) -> Iterator[bytes]:
    """Feed `raw` in chunks, asking for at most _CHUNK output bytes per step."""
    pos = 0
    while not decompressor.eof:
        if decompressor.needs_input:
            if pos >= len(raw):
                return  # input used up: the size and CRC checks tell a cut-short stream
            chunk = bytes(raw[pos : pos + _CHUNK])
            pos += len(chunk)
        else:
            chunk = b""
        out = decompressor.decompress(chunk, _CHUNK)
        if out:
            yield out


def _member_chunks(member: zipfile.ZipInfo, raw: memoryview, cap: int) -> Iterator[bytes]:
    """Decompressed chunks of one member, never more than _CHUNK bytes at a time."""
    method = member.compress_type
    if method == zipfile.ZIP_STORED:
        for pos in range(0, len(raw), _CHUNK):
            yield bytes(raw[pos : pos + _CHUNK])
    elif method == zipfile.ZIP_DEFLATED:
        yield from _stream(_Inflater(), raw)
    elif method == zipfile.ZIP_BZIP2:
        yield from _stream(bz2.BZ2Decompressor(), raw)
    elif method == zipfile.ZIP_LZMA:
        yield from _stream(*_lzma_decompressor(raw, cap))
    else:
        raise IngestError(f"{member.filename}: compression method {method} is not supported")


def _read_member(member: zipfile.ZipInfo, raw: memoryview, *, cap: int, limit: str) -> bytes:
    """The member's bytes, verified against its CRC; refused once past `cap` bytes."""
    parts: list[bytes] = []
    size = 0
    crc = 0
    for chunk in _member_chunks(member, raw, cap):
        size += len(chunk)
        if size > cap:
            raise IngestError(
                f"{member.filename}: unpacks past {limit} "
                f"(the archive declared {member.file_size} bytes)"
            )
        crc = zlib.crc32(chunk, crc)
        parts.append(chunk)
    if size != member.file_size or crc != member.CRC:
        raise IngestError(
            f"{member.filename}: damaged or truncated in the archive ({size} bytes "
            f"unpacked, {member.file_size} declared, CRC "
            f"{'matches' if crc == member.CRC else 'differs'})"
        )
    return b"".join(parts)


def iter_zip_images(
    data: bytes, name: str, *, max_total_bytes: int, max_member_bytes: int | None = None
) -> Iterator[tuple[str, bytes]]:
    """Image members of a zip archive as (member name, bytes), each decompressed under a
    hard byte cap (`max_member_bytes`, default the total) and all of them under
    `max_total_bytes`; IngestError naming the archive and member when refused."""
    per_member = max_total_bytes if max_member_bytes is None else max_member_bytes
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _ARCHIVE_ERRORS as exc:
        raise IngestError(f"{name}: not a valid zip archive ({exc})") from exc
    with archive:
        members = [
            m
            for m in archive.infolist()
            if not m.is_dir()
            and m.filename.lower().endswith(IMAGE_EXTENSIONS)
            and not m.filename.startswith("__MACOSX/")
        ]
        declared = sum(m.file_size for m in members)
        if declared > max_total_bytes:
            raise IngestError(
                f"{name}: unpacks to {declared} bytes, over the {max_total_bytes}-byte limit"
            )
        total = 0
        for member in members:
            if member.flag_bits & _ENCRYPTED:
                raise IngestError(
                    f"{name}: {member.filename} is encrypted "
                    "(password-protected archives are not supported)"
                )
            try:
                raw = _compressed_bytes(data, member)
                left = max_total_bytes - total
                limit = (
                    f"the {per_member}-byte per-file limit"
                    if per_member <= left
                    else f"the {max_total_bytes}-byte limit for the whole archive"
                )
                content = _read_member(member, raw, cap=min(per_member, left), limit=limit)
            except IngestError as exc:
                raise IngestError(f"{name}: {exc}") from exc
            except (*_ARCHIVE_ERRORS, zlib.error, lzma.LZMAError) as exc:
                raise IngestError(
                    f"{name}: {member.filename}: damaged archive member ({exc})"
                ) from exc
            total += len(content)
            yield member.filename, content
