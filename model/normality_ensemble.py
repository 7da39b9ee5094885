"""Normality models of one encoder at several input sizes, scored together.

One input size sees one band of detail: at 256 px the stride-8 patches of a 256-px image
are 8 px wide, so a 1-px hairline or a 3-px speck on a fine texture is a small share of a
patch, while broad stains and colour faults stand out. The same image encoded at 512 px
has 4-px patches that see the small faults, and miss more of the broad ones. Each member
is a full PatchCore model at its own size (`normality.py`); an image's score is the mean
of the members' normalised scores, its heatmap the mean of their heatmaps.

Measured with `python -m tests.benchmarks.bench_normality` and the cold-start sets of
`bench_cold_start` (20 good images, 100 to score, a third defective), image AUROC for
256 px / 512 px / both: cold start seed 0 0.844 / 0.901 / 0.886, seed 1 0.878 / 0.903 /
0.909; bench_normality seeds 0–2 0.941 / 0.924 / 0.939, 0.946 / 0.930 / 0.972,
0.953 / 0.948 / 0.967. Both sizes together are never more than 0.002 below the better
single size and lift the mean of the five sets from 0.912 (256 px) to 0.935.

Larger members were measured on the two cold-start sets (seeds 0 / 1, image AUROC):
768 px 0.927 / 0.908, 1024 px 0.893 / 0.933, 512 + 768 0.919 / 0.910, 768 + 1024
0.915 / 0.923, against 0.887 / 0.908 for the default 256 + 512. A gain of about 0.02 on
average for 2.25-4x the encoding and a coreset over 2.25-4x the patches: not the default.
Neither were these, on the same sets: other feature levels (strides 8+16+32, 4+8+32,
16+32: within 0.01), each image compared only with its k nearest good images (SPADE's
rule; k = 1-20: within 0.01), the good images with their flips added to the memory bank
(0.895 on seed 0), top-k means or k-nearest patches for the score, other blurs or baseline
quantiles (within 0.01). The defects these sets leave undetected are chips at an image's
edge and specks of 1-3 px on busy textures; a stronger backbone than EfficientNet-Lite0
is what the literature would try next.

One file holds every member (format version 2 of `heatprompt-normality`); a version 1
file, written before, is read as a one-member ensemble.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.encoders.base import FrozenEncoder
from model.errors import CheckpointError
from model.feature_cache import FeatureCache
from model.hashing import sha256_bytes
from model.normality import (
    AnomalyResult,
    AnomalyScorer,
    NormalityModel,
    fit_normality,
    read_normality_file,
    write_normality_file,
)

ENSEMBLE_VERSION = 2


@dataclass(frozen=True)
class NormalityEnsemble:
    """Normality models of one encoder, one per input size (smallest first)."""

    members: tuple[NormalityModel, ...]

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("a normality ensemble needs at least one member")
        sizes = [m.input_size for m in self.members]
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"normality ensemble members need distinct input sizes, got {sizes}")
        if len({m.encoder_id for m in self.members}) != 1:
            raise ValueError("normality ensemble members must share one encoder")

    @property
    def encoder_id(self) -> str:
        return self.members[0].encoder_id

    @property
    def input_sizes(self) -> tuple[int, ...]:
        return tuple(m.input_size for m in self.members)

    @property
    def good_images(self) -> int:
        return self.members[0].good_images

    @property
    def metrics(self) -> dict[str, float]:
        """Every member's figures, keyed `<figure>` for the first and `<figure>@<size>`
        for the others."""
        out: dict[str, float] = {}
        for i, member in enumerate(self.members):
            suffix = "" if i == 0 else f"@{member.input_size}"
            out.update({f"{k}{suffix}": v for k, v in member.metrics.items()})
        return out

    def save(self, path: Path) -> Path:
        """Write one `.npz` file atomically; returns `path`."""
        metas, arrays = [], {}
        for i, member in enumerate(self.members):
            meta, member_arrays = member.payload(prefix=f"{i}.")
            metas.append(meta)
            arrays.update(member_arrays)
        return write_normality_file(path, {"version": ENSEMBLE_VERSION, "members": metas}, arrays)

    @classmethod
    def load(cls, path: Path) -> NormalityEnsemble:
        """Read a file of either version; CheckpointError naming the file when it is bad."""
        path = Path(path)
        meta, arrays = read_normality_file(path)
        if meta.get("version") != ENSEMBLE_VERSION:
            return cls((NormalityModel.from_payload(meta, arrays, path),))
        metas = meta.get("members")
        if not isinstance(metas, list) or not metas:
            raise CheckpointError(f"{path}: normality ensemble lists no members")
        members = tuple(
            NormalityModel.from_payload(m, arrays, path, prefix=f"{i}.")
            for i, m in enumerate(metas)
        )
        try:
            return cls(members)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc


def fit_ensemble(
    encoders: Sequence[FrozenEncoder],
    images: Sequence[tuple[str, np.ndarray]],
    *,
    cache: FeatureCache | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> NormalityEnsemble:
    """One normality model per encoder (the same network at different input sizes) on the
    known-good `(sha256, RGB)` images; `progress(done, total)` after each member."""
    ordered = sorted(encoders, key=lambda e: e.input_size)
    members = []
    for done, encoder in enumerate(ordered, start=1):
        members.append(fit_normality(encoder, images, cache=cache, seed=seed))
        if progress is not None:
            progress(done, len(ordered))
    return NormalityEnsemble(tuple(members))


class EnsembleScorer:
    """Scores images with every member of an ensemble and averages heatmap and score."""

    def __init__(
        self,
        ensemble: NormalityEnsemble,
        encoders: Mapping[int, FrozenEncoder],
        *,
        cache: FeatureCache | None = None,
    ) -> None:
        missing = [s for s in ensemble.input_sizes if s not in encoders]
        if missing:
            raise CheckpointError(f"no encoder at input size {missing} for the normality model")
        self.ensemble = ensemble
        self.scorers = [
            AnomalyScorer(m, encoders[m.input_size], cache=cache) for m in ensemble.members
        ]

    def score(self, image: np.ndarray, *, sha256: str | None = None) -> AnomalyResult:
        """Mean heatmap (at the image's own size) and mean normalised score."""
        sha = sha256 or sha256_bytes(np.ascontiguousarray(image).tobytes())  # once, not per member
        results = [s.score(image, sha256=sha) for s in self.scorers]
        heat = np.mean([r.heatmap for r in results], axis=0).astype(np.float32)
        return AnomalyResult(heatmap=heat, score=float(np.mean([r.score for r in results])))
