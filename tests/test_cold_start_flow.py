"""The cold-start benchmark's whole path at small scale: a fresh data directory and no
checkpoint; known-good and unlabelled images through the REST API; anomaly scores for
every image; labels in queue order until the first model trains itself and is served."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.bench_cold_start import run_cold_start


@pytest.mark.slow
def test_from_zero_to_a_served_model(tmp_path: Path) -> None:
    figures = run_cold_start(
        tmp_path,
        good=4,
        unlabelled=12,
        held_out=6,
        first_model_labels=8,
        min_defective=2,
        train_minutes=0.05,
        size=64,
        timeout_s=600,
    )
    assert 0.0 <= figures["anomaly_image_auroc"] <= 1.0
    assert 0.0 <= figures["anomaly_pixel_auroc"] <= 1.0
    assert figures["first_model_version"] == 1
    assert 2 <= figures["labels_until_promotion"] <= 12
    assert 0 <= figures["defective_among_first_served"] <= figures["first_served"]
    assert figures["seconds_first_ingest_to_model"] > 0
    assert 0.0 <= figures["first_model_miou"] <= 1.0
