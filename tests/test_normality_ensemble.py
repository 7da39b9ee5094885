"""Normality models at several input sizes in one file, scored together."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.encoders import build_encoder
from model.encoders.base import FrozenEncoder
from model.errors import CheckpointError
from model.feature_cache import FeatureCache
from model.normality import AnomalyScorer
from model.normality_ensemble import EnsembleScorer, NormalityEnsemble, fit_ensemble
from tests.test_normality import shas, surface, with_blob

SIZES = (128, 256)


@pytest.fixture(scope="module")
def encoders() -> dict[int, FrozenEncoder]:
    torch.manual_seed(0)
    return {s: build_encoder("effnet_lite0", input_size=s).eval() for s in SIZES}


@pytest.fixture(scope="module")
def cache() -> FeatureCache:
    return FeatureCache(None)


@pytest.fixture(scope="module")
def ensemble(encoders: dict[int, FrozenEncoder], cache: FeatureCache) -> NormalityEnsemble:
    goods = shas([surface(seed) for seed in range(6)])
    steps: list[tuple[int, int]] = []
    # Given largest first: the members still come out smallest first.
    fitted = fit_ensemble(
        [encoders[256], encoders[128]],
        goods,
        cache=cache,
        progress=lambda done, total: steps.append((done, total)),
    )
    assert steps == [(1, 2), (2, 2)]
    return fitted


def test_one_member_per_size_smallest_first(ensemble: NormalityEnsemble) -> None:
    assert ensemble.input_sizes == SIZES
    assert ensemble.encoder_id == "effnet_lite0" and ensemble.good_images == 6
    first, second = ensemble.members
    assert ensemble.metrics["memory_bank"] == first.metrics["memory_bank"]
    assert ensemble.metrics["memory_bank@256"] == second.metrics["memory_bank"]
    # 4x the patches at twice the input size
    assert second.metrics["patches"] == 4 * first.metrics["patches"]


def test_score_and_heatmap_are_the_members_means(
    ensemble: NormalityEnsemble, encoders: dict[int, FrozenEncoder], cache: FeatureCache
) -> None:
    image, mask = with_blob(surface(200, (150, 220)), (60, 90), 10)
    result = EnsembleScorer(ensemble, encoders, cache=cache).score(image)
    parts = [
        AnomalyScorer(m, encoders[m.input_size], cache=cache).score(image) for m in ensemble.members
    ]
    assert result.score == pytest.approx(np.mean([p.score for p in parts]))
    np.testing.assert_allclose(result.heatmap, (parts[0].heatmap + parts[1].heatmap) / 2)
    assert result.heatmap.shape == (150, 220) and result.heatmap.dtype == np.float32
    assert result.heatmap[mask].mean() > 1.5 * result.heatmap[~mask].mean()
    assert result.score > 1.0


def test_round_trip_in_one_file_scores_identically(
    ensemble: NormalityEnsemble,
    encoders: dict[int, FrozenEncoder],
    cache: FeatureCache,
    tmp_path: Path,
) -> None:
    path = ensemble.save(tmp_path / "normality.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["normality.npz"]
    loaded = NormalityEnsemble.load(path)
    assert loaded.input_sizes == SIZES and loaded.metrics == ensemble.metrics
    image, _ = with_blob(surface(201), (100, 40), 8)
    before = EnsembleScorer(ensemble, encoders, cache=cache).score(image)
    after = EnsembleScorer(loaded, encoders, cache=cache).score(image)
    assert before.score == after.score
    assert np.array_equal(before.heatmap, after.heatmap)


def test_a_single_scale_file_reads_as_a_one_member_ensemble(
    ensemble: NormalityEnsemble,
    encoders: dict[int, FrozenEncoder],
    cache: FeatureCache,
    tmp_path: Path,
) -> None:
    single = ensemble.members[0]
    path = single.save(tmp_path / "older.npz")
    loaded = NormalityEnsemble.load(path)
    assert loaded.input_sizes == (128,)
    image = surface(202)
    alone = AnomalyScorer(single, encoders[128], cache=cache).score(image)
    assert EnsembleScorer(loaded, encoders, cache=cache).score(image).score == alone.score


def test_bad_ensembles_are_refused(ensemble: NormalityEnsemble, tmp_path: Path) -> None:
    first = ensemble.members[0]
    with pytest.raises(ValueError, match="distinct input sizes"):
        NormalityEnsemble((first, first))
    with pytest.raises(ValueError, match="at least one"):
        NormalityEnsemble(())
    path = ensemble.save(tmp_path / "normality.npz")
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta["members"][1]["input_size"] = meta["members"][0]["input_size"]
    arrays["meta"] = np.array(json.dumps(meta))
    twice = tmp_path / "twice.npz"
    with twice.open("wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(CheckpointError, match=r"twice\.npz.*distinct"):
        NormalityEnsemble.load(twice)
    del arrays["1.bank"]
    missing = tmp_path / "missing-bank.npz"
    with missing.open("wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(CheckpointError, match=r"missing-bank\.npz.*no memory bank"):
        NormalityEnsemble.load(missing)
    # A single-scale reader names the reader that can take the file.
    with pytest.raises(CheckpointError, match=r"NormalityEnsemble\.load"):
        type(first).load(path)


def test_scorer_needs_an_encoder_for_every_size(
    ensemble: NormalityEnsemble, encoders: dict[int, FrozenEncoder]
) -> None:
    with pytest.raises(CheckpointError, match="256"):
        EnsembleScorer(ensemble, {128: encoders[128]})
