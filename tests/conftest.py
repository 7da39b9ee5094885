"""Shared fixtures: small synthetic datasets and tiny real models, all on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.synth import write_dataset

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-image 64 px synthetic MVTec-layout dataset."""
    return write_dataset(
        tmp_path_factory.mktemp("synth"), seed=3, size=64, count=20, progress=False
    )


@pytest.fixture(scope="session")
def tiny_encoder():  # type: ignore[no-untyped-def]
    """The small random SAM-architecture encoder at 64 px."""
    from model.encoders import build_encoder

    torch.manual_seed(0)
    return build_encoder("sam_tiny", input_size=64)


from tests.storage_fixtures import engine, repo  # noqa: E402,F401  (shared fixtures)
from tests.webapp_fixtures import running_app  # noqa: E402,F401
