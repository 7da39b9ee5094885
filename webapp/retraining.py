"""One retraining run, from the labelled corrections to a gated model version.

Steps: take the newest non-skipped correction of every reviewed image (defect-free →
empty mask; an image whose stored bytes are missing or damaged is skipped and reported),
keep the fixed holdout apart, fine-tune from the active checkpoint (or start fresh) with
the training task the command line uses too, evaluate candidate and active model on the
same holdout, register the candidate, and promote it only if it is not worse than the
active model by more than the margin (and, when a per-type margin is set, not worse on any
one defect type by more than that). Each sample carries its type mask, and counts as its
most common region type when the training split is stratified. Progress and loss go to
the run's `training_runs` row as it trains.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from model.checkpoint import ModelBundle, load_bundle, read_checkpoint
from model.dataset import GOOD, LoadedSample, Sample
from model.encoders import FrozenEncoder, build_encoder
from model.encoders.registry import DEFAULT_ENCODER
from model.evaluate import evaluate
from model.geometry import Geometry, Scale, resolve_scale, scale_label
from model.hashing import sha256_file
from model.images import decode_image
from model.region_types import UNSPECIFIED, label_regions, regions_from_mask
from model.starter import adopt, starter_path, train_starter
from model.training_task import run_training_task, training_cache
from storage.defect_types import UNSPECIFIED_ID
from storage.errors import BlobIntegrityError, NotFoundError
from storage.masks import decode_mask, decode_type_mask
from storage.repository import Repository
from storage.review_queue import LabelledImage
from storage.schema import RunStatus, VersionStatus, utcnow
from webapp.region_view import region_type_ids
from webapp.settings import TrainingSettings

log = logging.getLogger(__name__)
FRESH_HEADS_EPOCHS = 1000  # in effect unbounded: a from-scratch run is time-bounded


class Cancelled(Exception):
    """A user cancelled the run (its row says so); raised between epochs."""


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class RetrainConfig(TrainingSettings):
    """The training knobs (inherited from the settings' [training] table) and those of the
    active-learning loop itself."""

    min_new_corrections: int = Field(default=20, ge=1)
    promotion_margin: float = Field(default=0.01, ge=0)
    # A candidate whose holdout IoU on any one defect type falls more than this below the
    # active model's is refused, however good its overall score (None: no per-type gate).
    type_regression_margin: float | None = Field(default=None, ge=0)
    from_scratch: bool = False
    encoder: str = DEFAULT_ENCODER  # for a fresh start when no model is active yet
    threads: int | None = None


@dataclass(frozen=True)
class Skipped:
    """A labelled image left out of a run because its stored bytes are missing or damaged."""

    image_id: int
    error: str


DEFECT = "defect"  # the type of a sample whose regions are all "unspecified"


def sample_type(mask: np.ndarray, types: np.ndarray, names: Mapping[int, str]) -> str:
    """What a sample counts as when the training split is stratified: its most common
    named region type; GOOD with no region, DEFECT when every region is unspecified."""
    _, region_names = regions_from_mask(mask, types, names)
    named = Counter(n for n in region_names if n != UNSPECIFIED)
    if named:
        return named.most_common(1)[0][0]
    return DEFECT if region_names else GOOD


def codes_like(codes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Resized codes made to agree with the mask resized beside them: 0 outside it, and a
    mask pixel that nearest-neighbour sampling left at 0 takes its region's main type."""
    labels, count = label_regions(mask)
    codes = np.where(mask, codes, 0).astype(np.uint8)
    lut = np.array([0, *region_type_ids(labels, count, codes)], dtype=np.uint8)
    return np.where(mask & (codes == 0), lut[labels], codes).astype(np.uint8)


def _load(
    repo: Repository, li: LabelledImage, geometry: Geometry, names: Mapping[int, str]
) -> LoadedSample:
    """One labelled image in the model's space, with its type mask: codes are the
    database's type ids, `names` the defect_types table ({id: name})."""
    rgb = decode_image(repo.blobs.get(li.image.sha256), name=f"image {li.image.id}")
    mask = (
        decode_mask(repo.blobs.get(li.correction.mask_sha256))
        if li.correction.mask_sha256
        else np.zeros(rgb.shape[:2], bool)
    )
    types = (mask * UNSPECIFIED_ID).astype(np.uint8)  # no type mask: all unspecified
    if li.correction.types_sha256:
        stored = decode_type_mask(repo.blobs.get(li.correction.types_sha256))
        if stored.shape == mask.shape:
            types = np.where(mask, np.where(stored > 0, stored, UNSPECIFIED_ID), 0)
    sample = Sample(Path(f"image-{li.image.id}"), None, sample_type(mask, types, names))
    model_mask = geometry.mask_to_model(mask)
    return LoadedSample(
        sample,
        li.image.sha256,
        geometry.image_to_model(rgb),
        model_mask,
        types=codes_like(geometry.codes_to_model(types.astype(np.uint8)), model_mask),
        type_names=dict(names),
    )


def to_samples(
    repo: Repository, labelled: list[LabelledImage], space: Geometry | int
) -> tuple[list[LoadedSample], list[Skipped]]:
    """Training samples in the model's space (a bare input size: fit) from stored images
    and corrections, and the images skipped because a blob is missing or no longer matches
    its hash (one damaged file must not cost the whole run)."""
    geometry = Geometry.of(space)
    names = {t.id: t.name for t in repo.types.list()}
    items: list[LoadedSample] = []
    skipped: list[Skipped] = []
    for li in labelled:
        try:
            items.append(_load(repo, li, geometry, names))
        except (BlobIntegrityError, NotFoundError) as exc:
            skipped.append(Skipped(li.image.id, f"{exc.__class__.__name__}: {exc}"))
    return items, skipped


def _start(
    active_path: str | None, config: RetrainConfig, sam_checkpoint: Path | None
) -> ModelBundle | FrozenEncoder:
    """The active model to fine-tune, or (from scratch / no model yet) the encoder for fresh
    heads: the active model's encoder and input size when there is one."""
    if active_path is not None and not config.from_scratch:
        return load_bundle(active_path, sam_checkpoint=sam_checkpoint)
    encoder_id, size, stride = config.encoder, config.input_size, None
    if active_path is not None:
        meta, _ = read_checkpoint(active_path)
        encoder_id, size, stride = meta.encoder_id, meta.input_size, meta.embedding_stride
    return build_encoder(
        encoder_id, input_size=size, embedding_stride=stride, sam_checkpoint=sam_checkpoint
    )


def _starter(
    encoder: FrozenEncoder,
    models_dir: Path,
    cache_dir: Path,
    config: RetrainConfig,
    *,
    minutes: float,
    note: Callable[[str], None],
    check_cancelled: Callable[[], None] = lambda: None,
) -> ModelBundle:
    """The starter heads for `encoder`, trained first for up to `minutes` (once, kept
    beside the models) when they are missing."""
    path = starter_path(models_dir, encoder)
    if not path.exists():
        note(
            f"training the starter heads on {config.starter_images} built-in synthetic "
            f"surfaces for {config.starter_epochs} epochs, at most {minutes:g} minutes "
            "(once for this encoder)"
        )

        def on_epoch(record: dict[str, float]) -> None:
            check_cancelled()
            note(
                f"starter epoch {int(record['epoch'])} of {config.starter_epochs}: "
                f"loss {record['loss']:.4f}"
            )

        models_dir.mkdir(parents=True, exist_ok=True)
        train_starter(
            encoder,
            path,
            images=config.starter_images,
            epochs=config.starter_epochs,
            minutes=minutes,
            seed=config.seed,
            cache=training_cache(
                cache_dir / encoder.encoder_id, config.train_config(), config.starter_images
            ),
            device="cpu",
            on_epoch=on_epoch,
        )
    return load_bundle(path, encoder=encoder)


def prepare_starter(
    *, models_dir: Path, cache_dir: Path, config: RetrainConfig, sam_checkpoint: Path | None
) -> Path:
    """Train the starter heads of the first model's encoder ahead of its run (while a new
    line's first labels are being given), unless they exist; returns their path."""
    if config.threads:
        torch.set_num_threads(config.threads)
    start = _start(None, config, sam_checkpoint)
    encoder = start.encoder if isinstance(start, ModelBundle) else start
    _starter(encoder, models_dir, cache_dir, config, minutes=config.starter_minutes, note=log.info)
    return starter_path(models_dir, encoder)


def fresh_scale(
    setting: str | float, labelled: list[LabelledImage], encoder: FrozenEncoder
) -> Scale:
    """The pixel scale of fresh heads: the setting, with "auto" decided from the sizes of
    the labelled images."""
    return resolve_scale(
        setting, encoder.input_size, lambda: [(li.image.height, li.image.width) for li in labelled]
    )


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
    repo.runs.update_training_run(run_id, status=RunStatus.running, started_at=utcnow())
    log_lines: list[str] = []

    def note(line: str) -> None:
        log_lines.append(line)
        repo.runs.update_training_run(run_id, log_tail="\n".join(log_lines[-40:]))

    def check_cancelled() -> None:
        if repo.runs.get_training_run(run_id).status is RunStatus.cancelled:
            raise Cancelled  # cancellation travels through the database

    try:
        if config.threads:
            torch.set_num_threads(config.threads)
        run = repo.runs.get_training_run(run_id)
        watermark = repo.reviews.max_correction_id()
        train_set = repo.reviews.labelled_since(0, holdout=False)
        holdout = repo.reviews.holdout_set()
        if not train_set:
            raise ValueError("no labelled images outside the holdout to train on")
        active = repo.registry.active_version()
        start = _start(active.checkpoint_path if active else None, config, sam_checkpoint)
        encoder = start.encoder if isinstance(start, ModelBundle) else start
        geometry = (
            start.geometry
            if isinstance(start, ModelBundle)
            else Geometry(encoder.input_size, fresh_scale(config.scale, train_set, encoder))
        )
        fine_tune = isinstance(start, ModelBundle)  # of the active model
        origin = f"version {active.id}" if fine_tune and active else "scratch"
        starter_minutes = 0.0  # spent training (or loading) the starter in this run
        if active is None and config.first_model_start == "starter":
            begun = time.monotonic()
            starter = _starter(
                encoder,
                models_dir,
                cache_dir,
                config,
                minutes=min(config.starter_minutes, config.max_minutes / 2),
                note=note,
                check_cancelled=check_cancelled,
            )
            start, origin = adopt(starter, geometry.scale), "the starter heads"
            starter_minutes = (time.monotonic() - begun) / 60
        train_items, skipped = to_samples(repo, train_set, geometry)
        holdout_items, skipped_holdout = to_samples(repo, holdout, geometry)
        skipped += skipped_holdout
        for item in skipped:
            note(f"skipped image {item.image_id}: {item.error}")
        if not train_items:
            raise ValueError("every labelled image outside the holdout was skipped")
        note(
            f"run {run.id}: {len(train_items)} training images, {len(holdout_items)} holdout, "
            f"starting from {origin}, "
            f"scale {scale_label(geometry.scale)}, tiles of {geometry.tile} px"
        )
        history: list[dict[str, float]] = []
        skipped_metrics = {"skipped": [asdict(item) for item in skipped]}

        def on_epoch(record: dict[str, float]) -> None:
            check_cancelled()
            history.append(record)
            repo.runs.update_training_run(run_id, metrics={"history": history} | skipped_metrics)
            note(f"epoch {int(record['epoch'])}: loss {record['loss']:.4f}")

        # Train under a hidden name; the checkpoint appears under its real name only when the
        # run has finished, so a killed run never leaves a visible partial checkpoint.
        models_dir.mkdir(parents=True, exist_ok=True)
        work = models_dir / f".run-{run_id}.training.pt"
        out = models_dir / f"run-{run_id}.pt"
        train_config = config.train_config()
        if not fine_tune:
            # Fresh or starter heads (the first model, or from scratch) need far more epochs
            # than a fine-tune: the time budget and early stopping end the run, not the cap.
            train_config = dataclasses.replace(
                train_config, epochs=max(train_config.epochs, FRESH_HEADS_EPOCHS)
            )
        if starter_minutes and train_config.max_minutes is not None:
            # A starter trained by this run came out of the run's own time budget.
            train_config = dataclasses.replace(
                train_config,
                max_minutes=max(
                    train_config.max_minutes - starter_minutes, train_config.max_minutes / 2
                ),
            )
        # Shared with the holdout evaluation below, so the holdout is encoded once.
        cache = training_cache(
            cache_dir / encoder.encoder_id, train_config, len(train_items) + len(holdout_items)
        )
        # Validation inside training is a split of the training set, never the holdout.
        run_training_task(
            train_items,
            train_config,
            start=start,
            scale=None if isinstance(start, ModelBundle) else geometry.scale,  # a bundle's own
            out=work,
            val_fraction=config.val_fraction,
            cache=cache,
            device="cpu",
            on_epoch=on_epoch,
            progress=False,
        )
        work.replace(out)
        bundle = load_bundle(out, encoder=encoder)  # the candidate is the file registered
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
            "start": origin,
            "starter_minutes": starter_minutes,  # spent on the starter in this run
            "history": history,
            "candidate_holdout": candidate_report,
            "active_holdout": active_report,
        } | skipped_metrics
        promote, why = decide(
            candidate_report,
            active_report,
            active is not None,
            config.promotion_margin,
            type_margin=config.type_regression_margin,
        )
        version = repo.registry.register_model_version(
            checkpoint_path=str(out),
            checkpoint_sha256=sha256_file(out),
            encoder_id=bundle.meta.encoder_id,
            parent_id=active.id if active else None,
            metrics=_version_metrics(candidate_report),
            note=why if active is None else None,  # the first model says why it is served
        )
        if promote:
            repo.registry.activate(version)
        else:
            repo.registry.set_version_status(version, VersionStatus.rejected)
        note(why)
        repo.runs.update_training_run(
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
        repo.runs.update_training_run(run_id, finished_at=utcnow())
        return None
    except Exception as exc:  # recorded on the run; the served model is not touched
        log.exception("training run %s failed", run_id)
        note(traceback.format_exc(limit=3))
        repo.runs.update_training_run(
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
    candidate: dict[str, Any] | None,
    active: dict[str, Any] | None,
    has_active: bool,
    margin: float,
    *,
    type_margin: float | None = None,
) -> tuple[bool, str]:
    """The promotion gate: (promote?, the reason in words). With `type_margin`, a
    candidate is also refused when its holdout IoU on one defect type (the report's
    `per_type` breakdown) drops more than that below the active model's: a better average
    must not hide a type the model has stopped finding."""
    if not has_active:
        return True, "first model: promoted without a holdout comparison"
    if candidate is None or active is None:
        return True, "no holdout images yet: promoted without a comparison"
    c, a = _score(candidate), _score(active)
    if c < a - margin:
        return (
            False,
            f"rejected: holdout score {c:.4f} is worse than active {a:.4f} by more than {margin}",
        )
    if type_margin is not None:
        for name, (c_iou, a_iou) in type_ious(candidate, active).items():
            if c_iou < a_iou - type_margin:
                return (
                    False,
                    f"rejected: holdout IoU on defect type {name!r} fell to {c_iou:.4f} from "
                    f"{a_iou:.4f}, more than the per-type margin {type_margin}",
                )
    return True, f"promoted: holdout score {c:.4f} vs active {a:.4f} (margin {margin})"


def _breakdowns(report: dict[str, Any]) -> list[dict[str, Any]]:
    """A report's per-type IoU tables, best first: the typed decision's pixel IoU per type
    (`types.per_type`, typed models only), then the segmentation IoU of the holdout images
    grouped by their type (`per_type`, every report)."""
    typed = (report.get("types") or {}).get("per_type") or {}
    return [typed, report.get("per_type") or {}]


def type_ious(candidate: dict[str, Any], active: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """{type: (candidate IoU, active IoU)} from the best breakdown both reports have, for
    the defect types both measured."""
    for mine, theirs in zip(_breakdowns(candidate), _breakdowns(active), strict=True):
        out: dict[str, tuple[float, float]] = {}
        for name, stats in sorted(mine.items()):
            c_iou, a_iou = stats.get("iou"), (theirs.get(name) or {}).get("iou")
            if isinstance(c_iou, (int, float)) and isinstance(a_iou, (int, float)):
                out[name] = (float(c_iou), float(a_iou))
        if out:
            return out
    return {}
