"""Shared fixtures: small synthetic datasets and tiny real models, all on CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from model.synth import write_dataset

torch.set_num_threads(2)
# A line's first model starts from starter heads trained for minutes on synthetic surfaces;
# the suite's first models train fresh heads in seconds instead. tests/test_starter.py
# takes the starter path (it sets the knob itself, which beats the environment).
os.environ.setdefault("HEATPROMPT_TRAINING__FIRST_MODEL_START", "scratch")


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


from tests.storage_fixtures import (  # noqa: E402
    NO_POSTGRES,
    engine,  # noqa: F401  (shared fixtures)
    postgres_required,
    repo,  # noqa: F401
)
from tests.webapp_fixtures import running_app  # noqa: E402,F401


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    """Under HEATPROMPT_REQUIRE_POSTGRES=1, a test skipped because PostgreSQL does not answer
    (a `skipif` mark included, which the fixtures cannot see) is reported as failed."""
    report = yield
    if report.skipped and postgres_required() and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if NO_POSTGRES in reason:
            report.outcome = "failed"
            report.longrepr = f"{reason}; HEATPROMPT_REQUIRE_POSTGRES=1 requires it"
    return report
