"""Resumable weights download against a real local HTTP server."""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from model.errors import WeightsError
from model.hashing import sha256_bytes
from model.weights import OFFICIAL_WEIGHTS, download, download_official

PAYLOAD = random.Random(1234).randbytes(300_000)
PAYLOAD_SHA = sha256_bytes(PAYLOAD)


@dataclass
class FakeHost:
    """State shared by the handler: what to serve and what it was asked."""

    payload: bytes = PAYLOAD
    ignore_range: bool = False
    paths: list[str] = field(default_factory=list)
    ranges: list[str | None] = field(default_factory=list)
    url: str = ""


def _handler(host: FakeHost) -> type[BaseHTTPRequestHandler]:
    """A handler class serving `host.payload` at /weights.bin, honouring `Range: bytes=N-`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            host.paths.append(self.path)
            rng = self.headers.get("Range")
            host.ranges.append(rng)
            if self.path != "/weights.bin":
                self.send_error(404, "Not Found")
                return
            start, status = 0, 200
            if rng and not host.ignore_range:
                start, status = int(rng.removeprefix("bytes=").rstrip("-")), 206
            body = host.payload[start:]
            self.send_response(status)
            if status == 206:
                total = len(host.payload)
                self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Keep test output quiet."""

    return Handler


@pytest.fixture
def host() -> Iterator[FakeHost]:
    """A ThreadingHTTPServer on 127.0.0.1, port 0, in a daemon thread."""
    state = FakeHost()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}/weights.bin"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_fresh_download_writes_verified_file(host: FakeHost, tmp_path: Path) -> None:
    """A fresh download lands at dest with the payload and leaves no partial file."""
    dest = tmp_path / "w" / "weights.pth"
    assert download(host.url, dest, sha256=PAYLOAD_SHA, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("weights.pth.partial").exists()
    assert host.ranges == [None]


def test_resume_sends_range_and_completes(host: FakeHost, tmp_path: Path) -> None:
    """An existing partial file is resumed with `Range: bytes=100000-`."""
    dest = tmp_path / "weights.pth"
    partial = tmp_path / "weights.pth.partial"
    partial.write_bytes(PAYLOAD[:100_000])
    download(host.url, dest, sha256=PAYLOAD_SHA, progress=False)
    assert host.ranges == ["bytes=100000-"]
    assert dest.read_bytes() == PAYLOAD
    assert not partial.exists()


def test_server_ignoring_range_restarts_from_zero(host: FakeHost, tmp_path: Path) -> None:
    """A 200 answer to a Range request overwrites the partial file instead of appending."""
    host.ignore_range = True
    dest = tmp_path / "weights.pth"
    (tmp_path / "weights.pth.partial").write_bytes(PAYLOAD[:100_000])
    download(host.url, dest, sha256=PAYLOAD_SHA, progress=False)
    assert host.ranges == ["bytes=100000-"]
    assert dest.read_bytes() == PAYLOAD


def test_sha_mismatch_removes_partial(host: FakeHost, tmp_path: Path) -> None:
    """A wrong hash raises, leaves no dest and deletes the partial data."""
    dest = tmp_path / "weights.pth"
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        download(host.url, dest, sha256="0" * 64, progress=False)
    assert not dest.exists()
    assert not (tmp_path / "weights.pth.partial").exists()


def test_unreachable_host_explains_offline_fallback(tmp_path: Path) -> None:
    """A closed port gives a message pointing at --sam-checkpoint."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(WeightsError) as info:
        download(
            f"http://127.0.0.1:{port}/w.bin",
            tmp_path / "w.pth",
            sha256=None,
            progress=False,
            timeout=5.0,
        )
    assert "cannot download" in str(info.value)
    assert "--sam-checkpoint" in str(info.value)


def test_http_404_is_reported(host: FakeHost, tmp_path: Path) -> None:
    """A missing file on the server raises WeightsError naming the HTTP status."""
    url = host.url.replace("weights.bin", "missing.bin")
    with pytest.raises(WeightsError, match="HTTP 404"):
        download(url, tmp_path / "w.pth", sha256=PAYLOAD_SHA, progress=False)
    assert not (tmp_path / "w.pth").exists()


def test_complete_dest_skips_network(host: FakeHost, tmp_path: Path) -> None:
    """An already verified dest is returned without contacting the server."""
    dest = tmp_path / "weights.pth"
    dest.write_bytes(PAYLOAD)
    assert download(host.url, dest, sha256=PAYLOAD_SHA, progress=False) == dest
    assert host.paths == []


def test_download_official_checks_official_sha(host: FakeHost, tmp_path: Path) -> None:
    """A mirror serving other bytes fails the official hash and leaves no checkpoint."""
    assert OFFICIAL_WEIGHTS["sam_vit_b"].sha256 != PAYLOAD_SHA
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        download_official("sam_vit_b", tmp_path, url=host.url, progress=False)
    assert not (tmp_path / "sam_vit_b_01ec64.pth").exists()
    assert not (tmp_path / "sam_vit_b_01ec64.pth.partial").exists()


def test_download_official_unknown_name(tmp_path: Path) -> None:
    """An unknown name raises and lists the known choices."""
    with pytest.raises(WeightsError) as info:
        download_official("nope", tmp_path, progress=False)
    for name in OFFICIAL_WEIGHTS:
        assert name in str(info.value)
