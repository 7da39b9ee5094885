"""Checkpoints survive crashes and are checked against the hash recorded for them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

import model.checkpoint as checkpoint
import model.durable as durable
from model.checkpoint import load_bundle, new_bundle, read_checkpoint, save_checkpoint
from model.errors import CheckpointError
from model.hashing import sha256_file


@pytest.fixture()
def saved(tiny_encoder, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "v1.pt", new_bundle(tiny_encoder, label_sigma=2.0))


def test_matching_sha256_loads_the_same_weights(saved: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    digest = sha256_file(saved)
    bundle = load_bundle(saved, encoder=tiny_encoder, expected_sha256=digest)
    _, state = read_checkpoint(saved, expected_sha256=digest.upper())
    for name, tensor in bundle.heads.trainable_state_dict().items():
        assert torch.equal(tensor, state[name])


def test_a_changed_file_is_refused_before_unpickling(saved: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    recorded = sha256_file(saved)
    # Another valid checkpoint under the same name: loadable, but not the registered file.
    torch.manual_seed(1)
    save_checkpoint(saved, new_bundle(tiny_encoder, label_sigma=2.0))
    actual = sha256_file(saved)
    with pytest.raises(CheckpointError) as err:
        load_bundle(saved, encoder=tiny_encoder, expected_sha256=recorded)
    message = str(err.value)
    assert "\n" not in message
    assert str(saved) in message and recorded in message and actual in message
    load_bundle(saved, encoder=tiny_encoder)  # without a recorded hash it still loads


@pytest.mark.parametrize("keep", [0, 1, 64, 0.5, -1])
def test_a_truncated_checkpoint_is_a_checkpoint_error(
    saved: Path,
    tiny_encoder,  # type: ignore[no-untyped-def]
    keep: float,
) -> None:
    recorded = sha256_file(saved)
    data = saved.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    saved.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=r"v1\.pt"):
        load_bundle(saved, encoder=tiny_encoder)
    with pytest.raises(CheckpointError, match="does not match"):
        load_bundle(saved, encoder=tiny_encoder, expected_sha256=recorded)


def test_corrupt_bytes_are_a_checkpoint_error(saved: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    data = bytearray(saved.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(4096)  # zeroed block, as after a torn write
    saved.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"v1\.pt"):
        load_bundle(saved, encoder=tiny_encoder)


def test_payloads_without_weights_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.pt"
    torch.save({"format": checkpoint.FORMAT, "meta": {}}, path)
    with pytest.raises(CheckpointError, match="lacks"):
        read_checkpoint(path)
    torch.save({"format": checkpoint.FORMAT, "meta": {}, "state": {"w": [1, 2]}}, path)
    with pytest.raises(CheckpointError, match="not all tensors"):
        read_checkpoint(path)


def test_a_folder_in_place_of_the_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "dir.pt")


def test_save_syncs_the_file_before_the_rename_and_the_folder_after(
    tiny_encoder,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Records the real calls (they still run) to check their order."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(src: str, dst: str | Path) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(durable.os, "fsync", fsync)
    monkeypatch.setattr(durable.os, "replace", replace)
    path = save_checkpoint(tmp_path / "sub" / "m.pt", new_bundle(tiny_encoder, label_sigma=2.0))
    assert events == ["fsync-file", "replace", "fsync-folder"]
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]
    read_checkpoint(path)


def test_a_failed_write_keeps_the_old_file_and_no_temporary(
    saved: Path,
    tiny_encoder,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = saved.read_bytes()

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(durable.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(saved, new_bundle(tiny_encoder, label_sigma=2.0))
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == ["v1.pt"]
