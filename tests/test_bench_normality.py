"""The normality benchmark runs end to end at a tiny scale (it is part of `make bench`)."""

from __future__ import annotations

from tests.benchmarks.bench_normality import main


def test_the_normality_benchmark_runs_and_reports_its_figures() -> None:
    args = ["--size", "64", "--image-size", "64"]
    args += ["--fit-count", "4", "--test-count", "9", "--large-count", "0"]
    figures = main(args)
    assert figures["test_images"] == 9 and figures["test_defective"] == 3
    assert 0.0 <= float(figures["image_auroc"]) <= 1.0  # type: ignore[arg-type]
    assert 0.0 <= float(figures["pixel_auroc"]) <= 1.0  # type: ignore[arg-type]
    assert int(figures["memory_bank"]) > 0  # type: ignore[call-overload]
