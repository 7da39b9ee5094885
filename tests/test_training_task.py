"""The one training task: its split, fresh start and cache sizing, and both of its callers
(the command line's `train_from_folders` and the retraining run) on real tiny models."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from model.checkpoint import read_checkpoint, save_checkpoint
from model.dataset import LoadedSample, Sample, discover, load_samples, split
from model.encoders import FrozenEncoder
from model.hashing import sha256_file
from model.labels import DEFAULT_SIGMA
from model.pipeline import train_from_folders
from model.synth import make_surface
from model.train import TrainConfig
from model.training_task import (
    DEFAULT_VAL_FRACTION,
    fresh_bundle,
    label_sigma,
    run_training_task,
    training_cache,
)
from storage.blobs import BlobStore
from storage.engine import make_engine, sqlite_url
from storage.migrate import upgrade
from storage.repository import Repository
from storage.schema import RunStatus
from webapp.retraining import RetrainConfig, run_retraining, to_samples

SIZE = 64


def _samples() -> list[Sample]:
    types = ["good"] * 16 + ["scratch"] * 10 + ["pit"] * 8 + ["stain"] * 4 + ["crack"] * 2
    return [Sample(Path(f"img/{i:03d}.png"), None, t) for i, t in enumerate(types)]


def _loaded(sample: Sample) -> LoadedSample:
    blank = np.zeros((4, 4, 3), np.uint8)
    return LoadedSample(sample, "0" * 64, blank, np.zeros((4, 4), bool))


def _val_types(report: dict[str, Any]) -> Counter[str]:
    return Counter({kind: stats["count"] for kind, stats in report["per_type"].items()})


def test_split_is_stratified_seeded_and_deterministic() -> None:
    samples = _samples()
    train, val = split(samples, val_fraction=0.25, seed=0)
    assert split(list(reversed(samples)), val_fraction=0.25, seed=0) == (train, val)
    assert sorted(map(str, train + val)) == sorted(map(str, samples))  # a partition
    val_types = Counter(s.defect_type for s in val)
    assert val_types == {"good": 4, "scratch": 2, "pit": 2, "stain": 1, "crack": 1}
    assert split(samples, val_fraction=0.25, seed=1)[1] != val


def test_loaded_items_split_like_their_samples() -> None:
    """What the command line splits (samples on disk) and what the retraining splits
    (items in memory) come apart the same way for the same items and seed."""
    samples = _samples()
    for seed in (0, 7):
        train, val = split([_loaded(s) for s in samples], val_fraction=0.2, seed=seed)
        expected = split(samples, val_fraction=0.2, seed=seed)
        assert ([it.sample for it in train], [it.sample for it in val]) == expected


def test_fresh_heads_come_from_the_seed_and_labels_scale_with_the_size(
    tiny_encoder: FrozenEncoder,
) -> None:
    first = fresh_bundle(tiny_encoder, seed=3)
    torch.rand(100)  # whatever ran before must not matter
    again = fresh_bundle(tiny_encoder, seed=3)
    other = fresh_bundle(tiny_encoder, seed=4)
    a, b, c = (x.heads.trainable_state_dict() for x in (first, again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert first.meta.label_sigma == label_sigma(SIZE) == DEFAULT_SIGMA * SIZE / 256
    assert label_sigma(256) == DEFAULT_SIGMA


def test_cache_has_room_for_every_view() -> None:
    config = TrainConfig(views_per_image=2)
    assert training_cache(None, config, 1000).max_memory_bytes == 2000 * (2 << 20)
    assert training_cache(None, config, 10).max_memory_bytes == 1 << 30  # never below 1 GiB
    assert training_cache(None, config, 10**6).max_memory_bytes == 8 << 30  # nor above 8 GiB


def test_bad_starts_are_refused_before_training(
    tiny_encoder: FrozenEncoder, tmp_path: Path
) -> None:
    from model.heatprompt_sam import HeadsConfig

    bundle = fresh_bundle(tiny_encoder, seed=0)
    item = _loaded(_samples()[0])  # 4 px, not the encoder's 64
    with pytest.raises(ValueError, match="input size 64"):
        run_training_task([item], TrainConfig(), start=tiny_encoder, out=tmp_path / "m.pt")
    with pytest.raises(ValueError, match="fresh heads"):
        run_training_task(
            [item], TrainConfig(), start=bundle, heads=HeadsConfig(), out=tmp_path / "m.pt"
        )
    assert not (tmp_path / "m.pt").exists()


def test_command_line_training_validates_on_the_shared_split(
    synth_dir: Path, tmp_path: Path
) -> None:
    result = train_from_folders(
        data=[synth_dir],
        out=tmp_path / "m.pt",
        encoder="sam_tiny",
        input_size=SIZE,
        epochs=1,
        seed=2,
        device="cpu",
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    _, val = split(discover(synth_dir), val_fraction=DEFAULT_VAL_FRACTION, seed=2)
    assert result.val_report is not None
    assert _val_types(result.val_report) == Counter(s.defect_type for s in val)
    meta, _ = read_checkpoint(result.checkpoint)
    assert meta.label_sigma == label_sigma(SIZE) and meta.train_config["seed"] == 2


def test_fine_tuning_trains_the_given_bundle_in_place(
    synth_dir: Path, tiny_encoder: FrozenEncoder, tmp_path: Path
) -> None:
    bundle = fresh_bundle(tiny_encoder, seed=0)
    before = {k: v.clone() for k, v in bundle.heads.trainable_state_dict().items()}
    items = load_samples(discover(synth_dir), SIZE)
    config = TrainConfig(epochs=1, seed=0, test_time_views=("identity",))
    result = run_training_task(
        items, config, start=bundle, out=tmp_path / "m.pt", device="cpu", progress=False
    )
    after = bundle.heads.trainable_state_dict()
    assert result.checkpoint.is_file()
    assert not all(torch.equal(before[k], after[k]) for k in before)


# ------------------------------------------------------------------------ the retraining
def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _labelled_repo(root: Path, tiny_encoder: FrozenEncoder) -> Repository:
    """A real SQLite repository with 14 labelled images (no holdout) and an active sam_tiny
    model at 64 px."""
    engine = make_engine(sqlite_url(root / "heatprompt.db"))
    upgrade(engine)
    repo = Repository(engine, BlobStore(root / "blobs"), holdout_percent=0)
    rng = np.random.default_rng(11)
    kinds = ["scratch", "stain", "pit", None]
    for i in range(14):
        image, mask = make_surface(rng, SIZE, kinds[i % len(kinds)])
        image_id = repo.images.ingest_image(_png(image), width=SIZE, height=SIZE, format="PNG").id
        if mask.any():
            repo.reviews.save_correction(image_id, author="sim", action="corrected", mask=mask)
        else:
            repo.reviews.save_correction(image_id, author="sim", action="defect_free")
    start = save_checkpoint(root / "start.pt", fresh_bundle(tiny_encoder, seed=0))
    version = repo.registry.register_model_version(
        checkpoint_path=str(start), checkpoint_sha256=sha256_file(start), encoder_id="sam_tiny"
    )
    repo.registry.activate(version)
    return repo


def test_retraining_skips_damaged_images_and_validates_on_the_shared_split(
    tmp_path: Path, tiny_encoder: FrozenEncoder
) -> None:
    repo = _labelled_repo(tmp_path, tiny_encoder)
    labelled = repo.reviews.labelled_since(0, holdout=False)
    defective = [li for li in labelled if li.correction.action.value == "corrected"]
    damaged_image, missing_mask = defective[0], defective[1]
    repo.blobs.path(damaged_image.image.sha256).write_bytes(b"not the stored image")
    assert missing_mask.correction.mask_sha256 is not None
    repo.blobs.path(missing_mask.correction.mask_sha256).unlink()
    run_id = repo.runs.create_training_run(trigger="test", watermark=0)
    config = RetrainConfig(epochs=1, max_minutes=5.0, seed=1, min_new_corrections=1)

    version = run_retraining(
        repo, run_id, models_dir=tmp_path / "models", cache_dir=tmp_path / "cache", config=config
    )

    run = repo.runs.get_training_run(run_id)
    assert version is not None and run.status is RunStatus.succeeded, run.error
    skipped = {s["image_id"]: s["error"] for s in run.metrics["skipped"]}
    assert skipped.keys() == {damaged_image.image.id, missing_mask.image.id}
    assert skipped[damaged_image.image.id].startswith("BlobIntegrityError")
    assert skipped[missing_mask.image.id].startswith("NotFoundError")
    assert f"skipped image {damaged_image.image.id}" in (run.log_tail or "")
    assert run.corrections_used == len(labelled) - 2
    items, _ = to_samples(repo, labelled, SIZE)
    _, val = split(items, val_fraction=DEFAULT_VAL_FRACTION, seed=1)
    meta, _ = read_checkpoint(tmp_path / "models" / f"run-{run_id}.pt")
    assert _val_types(meta.metrics["val"]) == Counter(it.defect_type for it in val)
    assert meta.train_config["epochs"] == 1 and meta.label_sigma == label_sigma(SIZE)
