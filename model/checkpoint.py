"""Checkpoints: the trainable weights plus the metadata needed to rebuild and trust them.

A checkpoint never holds frozen encoder weights, only the sha256 of the weights it was
trained on, so loading it beside the wrong encoder file is refused. Files are written to a
temporary name and renamed, so a crash never leaves a half-written checkpoint visible.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.decision import MaskRule
from model.encoders import FrozenEncoder, build_encoder
from model.errors import CheckpointError, HeatPromptError
from model.heatprompt_sam import HeadsConfig, HeatPromptSAM
from model.version import code_version

FORMAT = "heatprompt-checkpoint/1"


@dataclass
class CheckpointMeta:
    """Everything but the weights; serialised as a plain dict."""

    encoder_id: str
    encoder_sha256: str | None
    input_size: int
    embedding_stride: int
    heads: dict[str, int | bool]
    label_sigma: float
    mask_threshold: float = 0.5
    min_defect_area: int = 0
    # Flips/rotations whose predictions are averaged (the mask rule is calibrated on them).
    test_time_views: list[str] = field(default_factory=lambda: ["identity"])
    metrics: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    code_version: str = field(default_factory=code_version)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def mask_rule(self) -> MaskRule:
        """The calibrated rule that turns this model's probabilities into masks."""
        return MaskRule(self.mask_threshold, self.min_defect_area)


@dataclass
class ModelBundle:
    """A frozen encoder and the heads trained for it, with their metadata."""

    encoder: FrozenEncoder
    heads: HeatPromptSAM
    meta: CheckpointMeta

    def to(self, device: torch.device | str) -> ModelBundle:
        self.encoder.to(device)
        self.heads.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.encoder.device


def new_bundle(
    encoder: FrozenEncoder, *, label_sigma: float, heads: HeadsConfig | None = None
) -> ModelBundle:
    """Fresh heads for `encoder` (initialised from torch's current random state)."""
    config = heads or HeadsConfig()
    meta = CheckpointMeta(
        encoder_id=encoder.encoder_id,
        encoder_sha256=encoder.weights_sha256,
        input_size=encoder.input_size,
        embedding_stride=encoder.embedding_stride,
        heads=config.as_dict(),
        label_sigma=label_sigma,
    )
    return ModelBundle(encoder, HeatPromptSAM(encoder, config=config), meta)


def save_checkpoint(path: Path | str, bundle: ModelBundle) -> Path:
    """Atomically write the bundle's trainable weights and metadata to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Metadata must be plain JSON so that checkpoints load with `weights_only=True`;
    # checking it first means a bad value never replaces a good file.
    meta = json.loads(json.dumps(bundle.meta.as_dict()))
    payload = {
        "format": FORMAT,
        "meta": meta,
        "state": bundle.heads.trainable_state_dict(),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# Head settings added after checkpoints were first written: what a checkpoint that lacks
# the key was trained with.
HEADS_BEFORE_THEIR_KEY: dict[str, int | bool] = {"fusion_scale": 1}


def read_checkpoint(path: Path | str) -> tuple[CheckpointMeta, dict[str, torch.Tensor]]:
    """Metadata and weights of a checkpoint file; CheckpointError when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({exc.__class__.__name__})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a HeatPrompt checkpoint")
    try:
        meta = CheckpointMeta(**payload["meta"])
    except TypeError as exc:
        raise CheckpointError(f"{path}: metadata does not match this version ({exc})") from exc
    return meta, payload["state"]


def load_bundle(
    path: Path | str,
    *,
    sam_checkpoint: Path | str | None = None,
    device: torch.device | str = "cpu",
    encoder: FrozenEncoder | None = None,
) -> ModelBundle:
    """Rebuild encoder + heads from a checkpoint; refuse a mismatched encoder.

    `encoder` may be passed to share an already loaded frozen encoder between versions.
    """
    meta, state = read_checkpoint(path)
    if encoder is None:
        try:
            encoder = build_encoder(
                meta.encoder_id,
                input_size=meta.input_size,
                sam_checkpoint=sam_checkpoint,
                embedding_stride=meta.embedding_stride,
            )
        except HeatPromptError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
    if (encoder.encoder_id, encoder.input_size, encoder.embedding_stride) != (
        meta.encoder_id,
        meta.input_size,
        meta.embedding_stride,
    ):
        raise CheckpointError(
            f"{path}: trained for {meta.encoder_id} at {meta.input_size}px, "
            f"not {encoder.encoder_id} at {encoder.input_size}px"
        )
    if meta.encoder_sha256 != encoder.weights_sha256:
        raise CheckpointError(
            f"{path}: trained on encoder weights {str(meta.encoder_sha256)[:12]}…, "
            f"but the loaded encoder has {str(encoder.weights_sha256)[:12]}…"
        )
    try:
        config = HeadsConfig(**{**HEADS_BEFORE_THEIR_KEY, **meta.heads})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: head settings do not match this version ({exc})") from exc
    heads = HeatPromptSAM(encoder, config=config)
    try:
        heads.load_trainable_state_dict(state)
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    heads.eval()
    return ModelBundle(encoder, heads, meta).to(device)
