"""Starter heads: trained once on the built-in synthetic surfaces, the start of a line's
first model (at the line's own pixel scale), kept and reused."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.checkpoint import load_bundle, read_checkpoint
from model.dataset import GOOD
from model.encoders import FrozenEncoder
from model.starter import (
    PROGRESS_STALE_S,
    STARTER_EPOCHS,
    STARTER_IMAGES,
    STARTER_MINUTES,
    adopt,
    progress_path,
    starter_path,
    starter_progress,
    synthetic_items,
    train_starter,
)
from model.synth import make_surface
from storage.blobs import BlobStore
from storage.engine import make_engine, sqlite_url
from storage.migrate import upgrade
from storage.repository import Repository
from storage.schema import RunStatus
from webapp.retraining import RetrainConfig, run_retraining
from webapp.scheduler import STARTER_NICENESS, process_config
from webapp.settings import Settings
from webapp.ui.common import starter_words

SIZE = 64


def test_synthetic_items_are_seeded_untyped_and_a_fifth_good() -> None:
    items = synthetic_items(10, SIZE, seed=4)
    again = synthetic_items(10, SIZE, seed=4)
    assert [it.sha256 for it in items] == [it.sha256 for it in again]
    assert [it.sample.defect_type for it in items] == [GOOD] * 2 + ["defect"] * 8
    assert all(it.image.shape == (SIZE, SIZE, 3) and it.image.dtype == np.uint8 for it in items)
    assert not any(it.mask.any() for it in items[:2]) and all(it.mask.any() for it in items[2:])
    assert items[0].sha256 != synthetic_items(10, SIZE, seed=5)[0].sha256


def test_bad_starter_budgets_are_refused(tiny_encoder: FrozenEncoder, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 10"):
        train_starter(tiny_encoder, tmp_path / "s.pt", images=3)
    with pytest.raises(ValueError, match="positive time budget"):
        train_starter(tiny_encoder, tmp_path / "s.pt", images=10, minutes=0)
    with pytest.raises(ValueError, match="at least one epoch"):
        train_starter(tiny_encoder, tmp_path / "s.pt", images=10, epochs=0)
    assert not list(tmp_path.iterdir())


def test_a_starter_in_training_says_how_far_it_is(
    tiny_encoder: FrozenEncoder, tmp_path: Path
) -> None:
    out = starter_path(tmp_path, tiny_encoder)
    assert starter_progress(tmp_path) is None
    seen: list[dict | None] = []  # type: ignore[type-arg]
    result = train_starter(
        tiny_encoder,
        out,
        images=12,
        epochs=3,
        minutes=30,
        on_epoch=lambda record: seen.append(starter_progress(tmp_path)),
    )
    # Its work is its epochs, all of them (no early stop), the minutes only a bound.
    assert (result.epochs_run, result.stopped_by) == (3, "epochs")
    assert all(p is not None and p["state"] == "training" for p in seen)
    assert [p["epoch"] for p in seen] == [1, 2, 3]  # type: ignore[index]
    assert seen[0]["epochs"] == 3 and seen[0]["images"] == 12  # type: ignore[index]
    assert seen[0]["minutes"] == 30  # type: ignore[index]
    assert starter_words(seen[1]).startswith(  # type: ignore[arg-type]
        "Preparing the **starter heads** the first model starts from: epoch 2 of 3, "
    )
    assert not progress_path(out).exists()
    assert starter_progress(tmp_path) == {"state": "ready"}
    # A progress file no one has written for long is a dead run's, not news.
    out.unlink()
    progress_path(out).write_text('{"epoch": 3}')
    assert starter_progress(tmp_path) == {"state": "training", "epoch": 3}
    old = progress_path(out).stat().st_mtime - PROGRESS_STALE_S - 1
    os.utime(progress_path(out), (old, old))
    assert starter_progress(tmp_path) is None


def test_a_starter_ends_at_its_time_bound_before_its_epochs(
    tiny_encoder: FrozenEncoder, tmp_path: Path
) -> None:
    result = train_starter(tiny_encoder, tmp_path / "s.pt", images=12, epochs=10_000, minutes=0.02)
    assert result.stopped_by == "time" and result.epochs_run < 10_000
    assert (tmp_path / "s.pt").exists()


def test_the_settings_default_to_the_starters_own_budget() -> None:
    training = Settings().training
    assert (training.starter_epochs, training.starter_minutes) == (
        STARTER_EPOCHS,
        STARTER_MINUTES,
    )
    assert training.starter_images == STARTER_IMAGES


def test_the_starters_process_takes_every_core_and_a_run_leaves_the_app_one() -> None:
    cores = os.cpu_count() or 2
    config = RetrainConfig()
    assert process_config(config, yields=True).threads == cores
    assert process_config(config, yields=False).threads == max(1, cores - 1)
    mine = RetrainConfig(threads=3)
    assert process_config(mine, yields=True) == mine == process_config(mine, yields=False)


def test_a_starter_is_untyped_and_adopted_at_the_lines_scale(
    tiny_encoder: FrozenEncoder, tmp_path: Path
) -> None:
    out = tmp_path / "starter.pt"
    train_starter(tiny_encoder, out, images=12, minutes=0.02)
    starter = load_bundle(out, encoder=tiny_encoder)
    assert starter.meta.pixel_scale is None and starter.meta.type_head is None
    assert starter.meta.metrics  # its own validation figures
    adopted = adopt(starter, 1.0)
    assert adopted.geometry.scale == 1.0 and adopted.geometry.tile == SIZE
    assert adopted.meta.metrics == {} and adopted.type_net is None
    assert adopted.heads is starter.heads  # the weights are the start, not a copy
    assert starter.meta.pixel_scale is None  # the kept starter is unchanged


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _line(root: Path) -> Repository:
    """A new line's repository: 10 labelled 64 × 96 images (wider than a tile), no model."""
    root.mkdir(parents=True)
    engine = make_engine(sqlite_url(root / "heatprompt.db"))
    upgrade(engine)
    repo = Repository(engine, BlobStore(root / "blobs"), holdout_percent=0)
    rng = np.random.default_rng(2)
    for i in range(10):
        kind = None if i % 3 == 0 else "stain"
        image, mask = make_surface(rng, 96, kind)
        image, mask = image[16:80], mask[16:80]  # 64 × 96
        if kind is not None and not mask.any():
            mask[20:30, 40:60] = True
        image_id = repo.images.ingest_image(_png(image), width=96, height=64, format="PNG").id
        if kind is None:
            repo.reviews.save_correction(image_id, author="sim", action="defect_free")
        else:
            repo.reviews.save_correction(image_id, author="sim", action="corrected", mask=mask)
    return repo


def _config(first_model_start: str) -> RetrainConfig:
    """A first run of seconds on sam_tiny, with a starter of seconds."""
    return RetrainConfig(
        encoder="sam_tiny",
        input_size=SIZE,
        epochs=1,
        max_minutes=0.02,
        min_new_corrections=1,
        first_model_start=first_model_start,  # type: ignore[arg-type]
        starter_minutes=0.02,
        starter_images=12,
    )


def test_the_first_model_starts_from_the_starter_trained_once(tmp_path: Path) -> None:
    models = tmp_path / "models"
    config = _config("starter")
    logs = []
    for line in ("a", "b"):  # two lines, one models folder: the starter is trained once
        repo = _line(tmp_path / line)
        run_id = repo.runs.create_training_run(trigger="first-model", watermark=0)
        version = run_retraining(
            repo, run_id, models_dir=models, cache_dir=tmp_path / "cache", config=config
        )
        run = repo.runs.get_training_run(run_id)
        assert version is not None and run.status is RunStatus.succeeded, run.error
        assert run.metrics["start"] == "the starter heads"
        logs.append(run.log_tail)
        meta, _ = read_checkpoint(repo.registry.get_version(version).checkpoint_path)
        assert meta.pixel_scale == 1.0  # the line's scale, not the starter's fit
        if line == "a":
            (kept,) = models.glob("starter-*.pt")
            stamp = kept.stat().st_mtime_ns
    assert "training the starter heads on 12 built-in synthetic surfaces" in logs[0]
    assert "training the starter heads" not in logs[1]
    assert all("starting from the starter heads, scale 1" in log for log in logs)
    assert kept.stat().st_mtime_ns == stamp
    starter_meta, _ = read_checkpoint(kept)
    assert starter_meta.pixel_scale is None and starter_meta.type_head is None


def test_scratch_first_models_train_fresh_heads_and_no_starter(tmp_path: Path) -> None:
    repo = _line(tmp_path / "line")
    config = _config("scratch")
    run_id = repo.runs.create_training_run(trigger="first-model", watermark=0)
    assert run_retraining(
        repo, run_id, models_dir=tmp_path / "models", cache_dir=tmp_path / "cache", config=config
    )
    assert "starting from scratch" in repo.runs.get_training_run(run_id).log_tail
    assert not list((tmp_path / "models").glob("starter-*"))


def test_the_starter_file_is_named_by_encoder_weights_and_size(
    tiny_encoder: FrozenEncoder, tmp_path: Path
) -> None:
    path = starter_path(tmp_path, tiny_encoder)
    assert path.parent == tmp_path and str(SIZE) in path.name
    assert tiny_encoder.cache_id in path.name


def test_a_new_line_prepares_the_starter_while_its_first_labels_are_given(
    tmp_path: Path,
) -> None:
    """A scheduler that starts with no model trains the starter at once; the first model's
    run, requested by the K-th label, waits for it and starts from it."""
    from tests.test_cold_start import _defect_mask, _png, _reviewer
    from tests.waiting import wait_for
    from webapp.app import create_app
    from webapp.settings import Settings
    from webapp.ui.common import model_line

    settings = Settings(
        data_dir=tmp_path / "data",
        first_model_labels=2,
        first_model_min_defective=1,
        holdout_percent=0,
        retrain_check_minutes=600,  # the periodic check never fires during the test
        hot_swap_seconds=0.3,
        training={
            "epochs": 1,
            "max_minutes": 0.05,
            "input_size": SIZE,
            "first_model_start": "starter",
            "starter_minutes": 0.05,
            "starter_images": 10,
        },
    )
    models = settings.data_dir / "models"
    app = create_app(settings, ui=False, scheduler=True)
    try:
        services = app.services
        assert services.trainer is not None and services.trainer.busy  # before any label
        # It yields the cores to the app's own work (anomaly maps) while nobody waits for it.
        starter_pid = services.trainer._process.pid  # type: ignore[union-attr]
        own = os.getpriority(os.PRIO_PROCESS, 0)
        wait_for(
            lambda: os.getpriority(os.PRIO_PROCESS, starter_pid) == own + STARTER_NICENESS,
            "the starter's process to lower its priority",
            timeout=60,
        )
        wait_for(
            lambda: (services.health()["starter"] or {}).get("state") == "ready",
            "the starter heads to be ready",
            timeout=300,
        )
        assert "starter heads** (ready)" in model_line(services)
        inspector = _reviewer(services)
        ids = [services.ingest(_png(seed), f"p{seed}.png", source="line").id for seed in (1, 2)]
        for image_id, mask in zip(ids, (_defect_mask(), None), strict=True):
            services.save_correction(
                image_id,
                inspector,
                action="corrected" if mask is not None else "defect_free",
                mask=mask,
                based_on=services.repo.reviews.image_state(image_id).token,
            )
        run = services.repo.runs.active_training_run()
        assert run is not None and run.trigger == "first-model"
        wait_for(
            lambda: (
                services.training_run(run.id).status not in (RunStatus.queued, RunStatus.running)
            ),
            "the first model's run to finish",
            timeout=300,
        )
        done = services.training_run(run.id)
        assert done.status is RunStatus.succeeded, done.log_tail
        assert done.metrics["start"] == "the starter heads"
        assert done.metrics["starter_minutes"] < 0.01  # prepared before the run
        assert len(list(models.glob("starter-*.pt"))) == 1
    finally:
        app.stop()
