"""Checkpoints: the trainable weights plus the metadata needed to rebuild and trust them.

A checkpoint never holds frozen encoder weights, only the sha256 of the weights it was
trained on, so loading it beside the wrong encoder file is refused. Files are written to a
temporary name, synced to disk and renamed (then the folder is synced), so neither a crash
nor a power cut leaves a half-written checkpoint under the real name; loading can check
the sha256 the database recorded, and a damaged file is always a `CheckpointError`.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.decision import MaskRule
from model.durable import write_atomically
from model.encoders import FrozenEncoder, build_encoder
from model.errors import CheckpointError, HeatPromptError
from model.geometry import Geometry
from model.hashing import sha256_bytes
from model.heatprompt_sam import HeadsConfig, HeatPromptSAM
from model.pixel_type_net import HIDDEN, PixelTypeNet
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
    # Pixel scale the tiles are cut at (1.0: native pixels); None: the whole image squashed
    # into one tile ("fit"), which is also what checkpoints without the key were trained on.
    pixel_scale: float | None = None
    # Pixels neighbouring tiles share at prediction; None: a quarter tile.
    tile_overlap: int | None = None
    mask_threshold: float = 0.5
    min_defect_area: int = 0
    # Flips/rotations whose predictions are averaged (the mask rule is calibrated on them).
    test_time_views: list[str] = field(default_factory=lambda: ["identity"])
    # The defect-type head (None: untyped model): its "kind" ("pixel": a class map,
    # `model.pixel_type_head`, weights in the checkpoint's state as `type_net.*`;
    # "region", also when the key is missing: `model.type_head.TypeHead.as_dict`) and
    # the per-type mask rules calibrated for it ({type: {threshold, min_area}}).
    type_head: dict[str, Any] | None = None
    type_rules: dict[str, dict[str, float]] = field(default_factory=dict)
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

    @property
    def defect_types(self) -> tuple[str, ...]:
        """The types this model can name (empty: untyped)."""
        return tuple(self.type_head["classes"]) if self.type_head else ()

    @property
    def type_head_kind(self) -> str | None:
        """ "pixel" or "region" (None: untyped model)."""
        return str(self.type_head.get("kind", "region")) if self.type_head else None

    @property
    def type_mask_rules(self) -> dict[str, MaskRule]:
        """Per-type mask rules (types without one follow the global rule)."""
        return {
            name: MaskRule(float(r["threshold"]), int(r["min_area"]))
            for name, r in self.type_rules.items()
        }


@dataclass
class ModelBundle:
    """A frozen encoder and the heads trained for it, with their metadata."""

    encoder: FrozenEncoder
    heads: HeatPromptSAM
    meta: CheckpointMeta
    type_net: PixelTypeNet | None = None  # a pixel-kind type head's network
    # Encoder and heads predict in reduced precision where the device has it natively
    # (`model.precision`); a choice of the machine serving it, not stored in checkpoints.
    mixed_precision: bool = True

    def to(self, device: torch.device | str) -> ModelBundle:
        self.encoder.to(device)
        self.heads.to(device)
        if self.type_net is not None:
            self.type_net.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    @property
    def geometry(self) -> Geometry:
        """The tile size and pixel scale this model was trained at."""
        return Geometry(self.meta.input_size, self.meta.pixel_scale, self.meta.tile_overlap)


def new_bundle(
    encoder: FrozenEncoder,
    *,
    label_sigma: float,
    heads: HeadsConfig | None = None,
    scale: float | None = None,
    tile_overlap: int | None = None,
) -> ModelBundle:
    """Fresh heads for `encoder` at pixel `scale` (None: fit) and `tile_overlap` (None: a
    quarter tile), initialised from torch's current random state."""
    config = heads or HeadsConfig()
    meta = CheckpointMeta(
        encoder_id=encoder.encoder_id,
        encoder_sha256=encoder.weights_sha256,
        input_size=encoder.input_size,
        embedding_stride=encoder.embedding_stride,
        heads=config.as_dict(),
        label_sigma=label_sigma,
        pixel_scale=scale,
        tile_overlap=tile_overlap,
    )
    Geometry(meta.input_size, scale, tile_overlap)  # refuses an overlap of a tile or more
    return ModelBundle(encoder, HeatPromptSAM(encoder, config=config), meta)


def write_durably(path: Path | str, payload: Mapping[str, Any]) -> Path:
    """`torch.save` `payload` to `path` so that after a crash or power cut the path holds
    either the old file or the complete new one: temporary file in the same folder,
    flush + fsync, atomic rename, fsync of the folder. Every checkpoint goes through here."""
    return write_atomically(path, lambda fh: torch.save(dict(payload), fh))


def save_checkpoint(path: Path | str, bundle: ModelBundle) -> Path:
    """Durably write the bundle's trainable weights and metadata to `path`."""
    # Metadata must be plain JSON so that checkpoints load with `weights_only=True`;
    # checking it first means a bad value never replaces a good file.
    meta = json.loads(json.dumps(bundle.meta.as_dict()))
    state = bundle.heads.trainable_state_dict()
    if bundle.type_net is not None:
        state |= {TYPE_NET + k: v.detach().cpu() for k, v in bundle.type_net.state_dict().items()}
    payload = {"format": FORMAT, "meta": meta, "state": state}
    return write_durably(path, payload)


TYPE_NET = "type_net."  # state keys of a pixel-kind type head


def split_state(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A checkpoint's state as (segmentation heads' weights, pixel type head's weights,
    without their `type_net.` prefix): the two are loaded into different modules."""
    heads = {k: v for k, v in state.items() if not k.startswith(TYPE_NET)}
    types = {k[len(TYPE_NET) :]: v for k, v in state.items() if k.startswith(TYPE_NET)}
    return heads, types


def _type_net(
    path: Path, meta: CheckpointMeta, state: dict[str, torch.Tensor]
) -> PixelTypeNet | None:
    """The pixel-kind type head's network from its `type_net.*` weights (None for other
    kinds, which must then have none)."""
    if meta.type_head_kind != "pixel":
        if state:
            raise CheckpointError(f"{path}: type-head weights without a pixel type head")
        return None
    head = meta.type_head or {}
    try:
        net = PixelTypeNet(
            int(head["in_channels"]), len(head["classes"]), int(head.get("hidden", HIDDEN))
        )
        net.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: pixel type head does not match its weights ({exc})"
        ) from exc
    return net.eval()


# Head settings added after checkpoints were first written: what a checkpoint that lacks
# the key was trained with.
HEADS_BEFORE_THEIR_KEY: dict[str, int | bool] = {"fusion_scale": 1}


def _check_archive(path: Path, data: bytes) -> None:
    """Refuse a damaged file: torch.load does not check the zip CRCs of tensor data, so
    zeroed or flipped bytes inside the weights would otherwise load silently."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            damaged = archive.testzip()
    except Exception as exc:  # zipfile raises several unrelated types for damaged files
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({exc.__class__.__name__})"
        ) from exc
    if damaged is not None:
        raise CheckpointError(f"{path}: damaged checkpoint (bad checksum in {damaged})")


def read_checkpoint(
    path: Path | str, *, expected_sha256: str | None = None
) -> tuple[CheckpointMeta, dict[str, torch.Tensor]]:
    """Metadata and weights of a checkpoint file; CheckpointError when it is not one.

    With `expected_sha256` the bytes are checked before anything is unpickled, so a
    truncated or replaced file is refused with both hashes in the message. Without it the
    archive's own checksums still catch damage. The file is read once, so the bytes
    checked are the bytes loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if expected_sha256 is not None:
        actual = sha256_bytes(data)
        if actual != expected_sha256.lower():
            raise CheckpointError(
                f"{path}: sha256 {actual} does not match the expected {expected_sha256} "
                f"({len(data)} bytes; truncated or replaced?)"
            )
    _check_archive(path, data)
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for damaged files
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({exc.__class__.__name__})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a HeatPrompt checkpoint")
    meta_dict, state = payload.get("meta"), payload.get("state")
    if not isinstance(meta_dict, dict) or not isinstance(state, dict):
        raise CheckpointError(f"{path}: checkpoint lacks its metadata or weights")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: checkpoint weights are not all tensors")
    try:
        meta = CheckpointMeta(**meta_dict)
    except TypeError as exc:
        raise CheckpointError(f"{path}: metadata does not match this version ({exc})") from exc
    return meta, state


def load_bundle(
    path: Path | str,
    *,
    sam_checkpoint: Path | str | None = None,
    device: torch.device | str = "cpu",
    encoder: FrozenEncoder | None = None,
    expected_sha256: str | None = None,
    mixed_precision: bool = True,
) -> ModelBundle:
    """Rebuild encoder + heads from a checkpoint; refuse a mismatched encoder.

    `encoder` may be passed to share an already loaded frozen encoder between versions;
    `expected_sha256` (the hash recorded when the checkpoint was registered) refuses a
    file whose bytes changed since; `mixed_precision` is `ModelBundle.mixed_precision`.
    """
    meta, state = read_checkpoint(path, expected_sha256=expected_sha256)
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
    heads_state, type_state = split_state(state)
    try:
        heads.load_trainable_state_dict(heads_state)
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    heads.eval()
    if torch.device(device).type == "cpu":
        # The encoder's levels come out channels-last; with the heads' weights laid out
        # the same, oneDNN keeps every conv channels-last, and a depthwise 3x3 on a batch
        # of tiles runs ~15x faster than on NCHW (the heads: 41.8 -> 38.2 ms per tile).
        heads.to(memory_format=torch.channels_last)
    type_net = _type_net(Path(path), meta, type_state)
    return ModelBundle(encoder, heads, meta, type_net, mixed_precision).to(device)
