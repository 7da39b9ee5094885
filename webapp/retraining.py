"""One retraining run, from the labelled corrections to a gated model version.

Steps: take the newest non-skipped correction of every reviewed image (defect-free →
empty mask), keep the fixed holdout apart, fine-tune from the active checkpoint (or start
fresh), evaluate candidate and active model on the same holdout, register the candidate,
and promote it only if it is not worse than the active model by more than the margin.
Progress and loss go to the run's `training_runs` row as it trains.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import load_bundle, new_bundle, read_checkpoint
from model.dataset import GOOD, LoadedSample, Sample
from model.encoders import build_encoder
from model.evaluate import evaluate
from model.feature_cache import FeatureCache
from model.hashing import sha256_file
from model.images import decode_image, resize_image, resize_mask
from model.labels import DEFAULT_SIGMA
from model.train import TrainConfig, seed_everything, train
from storage.masks import decode_mask
from storage.repository import LabelledImage, Repository
from storage.schema import RunStatus, VersionStatus, utcnow

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """A user cancelled the run (its row says so); raised between epochs."""


@dataclass(frozen=True)
class RetrainConfig:
    """Knobs of the active-learning loop (from the app settings)."""

    min_new_corrections: int = 20
    max_minutes: float = 10.0
    epochs: int = 30
    promotion_margin: float = 0.01
    from_scratch: bool = False
    encoder: str = "effnet_lite0"
    seed: int = 0
    threads: int | None = None


def to_samples(repo: Repository, labelled: list[LabelledImage], size: int) -> list[LoadedSample]:
    """Training samples at the model's input size from stored images and corrections."""
    items = []
    for li in labelled:
        rgb = decode_image(repo.blobs.get(li.image.sha256), name=f"image {li.image.id}")
        mask = (
            decode_mask(repo.blobs.get(li.correction.mask_sha256))
            if li.correction.mask_sha256
            else np.zeros(rgb.shape[:2], bool)
        )
        kind = "defect" if mask.any() else GOOD
        sample = Sample(Path(f"image-{li.image.id}"), None, kind)
        items.append(
            LoadedSample(sample, li.image.sha256, resize_image(rgb, size), resize_mask(mask, size))
        )
    return items


def _score(report: dict[str, Any]) -> float:
    return float(report["score"])


def run_retraining(
    repo: Repository,
    run_id: int,
    *,
    models_dir: Path,
    cache_dir: Path,
    config: RetrainConfig,
    sam_checkpoint: Path | None = None,
) -> int | None:
    """Execute training run `run_id`; returns the new model version id (or None on failure).

    Failures are recorded on the run row, never raised: the served model is untouched.
    """
    started = time.monotonic()
    repo.update_training_run(run_id, status=RunStatus.running, started_at=utcnow())
    log_lines: list[str] = []

    def note(line: str) -> None:
        log_lines.append(line)
        repo.update_training_run(run_id, log_tail="\n".join(log_lines[-40:]))

    try:
        if config.threads:
            torch.set_num_threads(config.threads)
        run = repo.get_training_run(run_id)
        watermark = repo.max_correction_id()
        train_set = repo.labelled_since(0, holdout=False)
        holdout = repo.holdout_set()
        if not train_set:
            raise ValueError("no labelled images outside the holdout to train on")
        active = repo.active_version()
        seed_everything(config.seed)
        if active is not None and not config.from_scratch:
            bundle = load_bundle(active.checkpoint_path, sam_checkpoint=sam_checkpoint)
        else:
            # From scratch: fresh heads on the active model's encoder and input size.
            encoder_id, size, stride = config.encoder, None, None
            if active is not None:
                meta, _ = read_checkpoint(active.checkpoint_path)
                encoder_id, size, stride = meta.encoder_id, meta.input_size, meta.embedding_stride
            encoder = build_encoder(
                encoder_id, input_size=size, embedding_stride=stride, sam_checkpoint=sam_checkpoint
            )
            bundle = new_bundle(encoder, label_sigma=DEFAULT_SIGMA * encoder.input_size / 256)
        size = bundle.encoder.input_size
        cache = FeatureCache(cache_dir / bundle.meta.encoder_id)
        train_items = to_samples(repo, train_set, size)
        holdout_items = to_samples(repo, holdout, size)
        note(
            f"run {run.id}: {len(train_items)} training images, {len(holdout_items)} holdout, "
            f"starting from {'version ' + str(active.id) if active else 'scratch'}"
        )
        history: list[dict[str, float]] = []

        def on_epoch(record: dict[str, float]) -> None:
            if repo.get_training_run(run_id).status is RunStatus.cancelled:
                raise Cancelled  # cancellation travels through the database
            history.append(record)
            repo.update_training_run(run_id, metrics={"history": history})
            note(f"epoch {int(record['epoch'])}: loss {record['loss']:.4f}")

        # Train under a hidden name; the checkpoint appears under its real name only when the
        # run has finished, so a killed run never leaves a visible partial checkpoint.
        models_dir.mkdir(parents=True, exist_ok=True)
        work = models_dir / f".run-{run_id}.training.pt"
        out = models_dir / f"run-{run_id}.pt"
        # Validation inside training uses a slice of the training set, never the holdout.
        val = train_items[: max(1, len(train_items) // 5)] if len(train_items) > 4 else []
        fit = train_items[len(val) :] if val else train_items
        train(
            bundle,
            fit,
            val,
            TrainConfig(epochs=config.epochs, max_minutes=config.max_minutes, seed=config.seed),
            out=work,
            cache=cache,
            progress=False,
            on_epoch=on_epoch,
        )
        work.replace(out)
        candidate_report = (
            evaluate(bundle, holdout_items, cache=cache, ablation=False) if holdout_items else None
        )
        active_report = None
        if active is not None and holdout_items:
            active_bundle = load_bundle(
                active.checkpoint_path, sam_checkpoint=sam_checkpoint, encoder=bundle.encoder
            )
            active_report = evaluate(active_bundle, holdout_items, cache=cache, ablation=False)
        metrics = {
            "history": history,
            "candidate_holdout": candidate_report,
            "active_holdout": active_report,
        }
        version = repo.register_model_version(
            checkpoint_path=str(out),
            checkpoint_sha256=sha256_file(out),
            encoder_id=bundle.meta.encoder_id,
            parent_id=active.id if active else None,
            metrics=_version_metrics(candidate_report),
            note=None,
        )
        promote, why = decide(
            candidate_report, active_report, active is not None, config.promotion_margin
        )
        if promote:
            repo.activate(version)
        else:
            repo.set_version_status(version, VersionStatus.rejected)
        note(why)
        repo.update_training_run(
            run_id,
            status=RunStatus.succeeded,
            finished_at=utcnow(),
            model_version_id=version,
            corrections_used=len(train_items),
            correction_watermark=watermark,
            metrics=metrics
            | {"promoted": promote, "decision": why, "seconds": time.monotonic() - started},
        )
        return version
    except Cancelled:
        note("cancelled by a user; no model version was registered")
        repo.update_training_run(run_id, finished_at=utcnow())
        return None
    except Exception as exc:  # recorded on the run; the served model is not touched
        log.exception("training run %s failed", run_id)
        note(traceback.format_exc(limit=3))
        repo.update_training_run(
            run_id,
            status=RunStatus.failed,
            finished_at=utcnow(),
            error=f"{exc.__class__.__name__}: {exc}",
        )
        return None


def _version_metrics(report: dict[str, Any] | None) -> dict[str, Any]:
    if report is None:
        return {}
    return {k: report[k] for k in ("miou", "dice", "empty_accuracy", "image_auroc", "score")}


def decide(
    candidate: dict[str, Any] | None, active: dict[str, Any] | None, has_active: bool, margin: float
) -> tuple[bool, str]:
    """The promotion gate: (promote?, the reason in words)."""
    if not has_active:
        return True, "first model: promoted without a holdout comparison"
    if candidate is None or active is None:
        return True, "no holdout images yet: promoted without a comparison"
    c, a = _score(candidate), _score(active)
    if c >= a - margin:
        return True, f"promoted: holdout score {c:.4f} vs active {a:.4f} (margin {margin})"
    return (
        False,
        f"rejected: holdout score {c:.4f} is worse than active {a:.4f} by more than {margin}",
    )
