"""The `heatprompt` command line, run in-process through its real entry point."""

import io
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webapp.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A dataset written by `synth` and a sam_tiny checkpoint written by `train`."""
    root = tmp_path_factory.mktemp("cli")
    data, ckpt = root / "data", root / "model.pt"
    assert main(["synth", "--out", str(data), "--seed", "2", "--size", "64", "--count", "12"]) == 0
    code = main(
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(ckpt),
            "--encoder",
            "sam_tiny",
            "--input-size",
            "64",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--batch-size",
            "4",
        ]
    )
    assert code == 0 and ckpt.is_file()
    return data, ckpt


def test_synth_writes_the_requested_images(trained: tuple[Path, Path]) -> None:
    data, _ = trained
    images = list((data / "test").glob("*/*.png"))
    assert len(images) == 12
    assert Image.open(images[0]).size == (64, 64)


def test_eval_json_prints_one_object_with_the_documented_keys(trained, capsys) -> None:  # type: ignore[no-untyped-def]
    data, ckpt = trained
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    keys = {"miou", "dice", "empty_accuracy", "image_auroc", "pixel_auroc", "per_type", "no_prompt"}
    assert keys <= set(report)
    assert report["count"] == 12


def test_eval_table_is_readable(trained, capsys) -> None:  # type: ignore[no-untyped-def]
    data, ckpt = trained
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "no prompt" in out and "miou" in out and "per type:" in out


def test_predict_writes_every_output(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data, ckpt = trained
    image = sorted((data / "test").glob("*/*.png"))[0]
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(ckpt), "--out", str(out), str(image)]) == 0
    stem = image.stem
    for name in (f"{stem}_heatmap.png", f"{stem}_mask.png", f"{stem}_overlay.png"):
        assert Image.open(out / name).size == (64, 64)
    heat = np.load(out / f"{stem}_heatmap.npy")
    assert heat.dtype == np.float32 and heat.min() >= 0 and heat.max() <= 1
    rows = json.loads((out / "predictions.json").read_text())
    assert rows[0]["image"] == str(image) and 0 <= rows[0]["uncertainty"] <= 1
    mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
    assert set(np.unique(mask)) <= {0, 255}


def test_predict_on_compute_threads_writes_what_the_calling_thread_does(  # type: ignore[no-untyped-def]
    trained, tmp_path: Path, capsys
) -> None:
    data, ckpt = trained
    images = [str(p) for p in sorted((data / "test").glob("*/*.png"))[:3]]
    for workers in ("0", "2"):
        out = tmp_path / f"pred-{workers}"
        args = ["predict", "--checkpoint", str(ckpt), "--out", str(out), "--workers", workers]
        assert main([*args, *images]) == 0
    for image in images:
        stem = Path(image).stem
        alone = np.load(tmp_path / "pred-0" / f"{stem}_heatmap.npy")
        pooled = np.load(tmp_path / "pred-2" / f"{stem}_heatmap.npy")
        np.testing.assert_allclose(pooled, alone, atol=1e-5)
    capsys.readouterr()
    bad = tmp_path / "pred-bad"
    args = ["predict", "--checkpoint", str(ckpt), "--out", str(bad), "--workers", "-1"]
    assert main([*args, images[0]]) == 2
    assert "--workers must be 0 or more" in _error_line(capsys)
    assert not bad.exists()


def _error_line(capsys) -> str:  # type: ignore[no-untyped-def]
    """The error line: exactly one, and the last thing on stderr (after any progress bar)."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "heatprompt: error:" in line]
    assert len(errors) == 1 and err[-1] == errors[0] and errors[0].startswith("heatprompt"), err
    return errors[0]


def test_unreadable_image_fails_cleanly_and_writes_nothing(trained, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    data, ckpt = trained
    good = sorted((data / "test").glob("*/*.png"))[0]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    out = tmp_path / "pred"
    code = main(["predict", "--checkpoint", str(ckpt), "--out", str(out), str(good), str(bad)])
    assert code == 2
    line = _error_line(capsys)
    assert line.startswith("heatprompt: error:") and "broken.png" in line
    assert not out.exists() or not any(out.iterdir())


def test_empty_folder_and_missing_sam_file_are_one_line_errors(trained, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    _, ckpt = trained
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(empty)]) == 2
    assert "no images found" in _error_line(capsys)
    missing = tmp_path / "sam_vit_b.pth"
    code = main(
        [
            "train",
            "--data",
            str(trained[0]),
            "--out",
            str(tmp_path / "m.pt"),
            "--encoder",
            "sam_vit_b",
            "--sam-checkpoint",
            str(missing),
        ]
    )
    assert code == 2
    assert str(missing) in _error_line(capsys)
    assert not (tmp_path / "m.pt").exists()


def test_mask_of_another_size_is_refused(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "pairs"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "masks" / "a.png")
    code = main(
        [
            "train",
            "--data",
            str(root),
            "--out",
            str(tmp_path / "m.pt"),
            "--encoder",
            "sam_tiny",
            "--input-size",
            "64",
            "--epochs",
            "1",
        ]
    )
    assert code == 2
    line = _error_line(capsys)
    assert "masks/a.png" in line and "32x32" in line
    assert not (tmp_path / "m.pt").exists()


def test_wrong_checkpoint_for_the_encoder_is_refused(trained, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    data, _ = trained
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"PK\x03\x04 not really")
    assert main(["eval", "--checkpoint", str(fake), "--data", str(data)]) == 2
    assert "fake.pt" in _error_line(capsys)


def test_db_upgrade_and_downgrade_on_the_data_dir(tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["db", "upgrade", "--data-dir", str(tmp_path)]) == 0
    assert f"revision {_head()}" in capsys.readouterr().out
    assert (tmp_path / "heatprompt.db").is_file()
    assert main(["db", "downgrade", "base", "--yes", "--data-dir", str(tmp_path)]) == 0
    assert "base (empty)" in capsys.readouterr().out


# ------------------------------------------------------------- db downgrade, user tokens
def _head() -> str:
    from alembic.script import ScriptDirectory

    from storage.migrate import MIGRATIONS_DIR

    return str(ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head())


def _tables(data_dir: Path) -> set[str]:
    import sqlite3

    with sqlite3.connect(data_dir / "heatprompt.db") as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


@pytest.fixture
def sqlite_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory with a migrated SQLite database (DATABASE_URL unset)."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("HEATPROMPT_DATABASE_URL", raising=False)
    assert main(["db", "upgrade", "--data-dir", str(tmp_path)]) == 0
    return tmp_path


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """stdin on a real pseudo-terminal; call it with what the person types."""
    import os
    import pty

    master, slave = pty.openpty()
    stdin = os.fdopen(slave, "r")
    monkeypatch.setattr("sys.stdin", stdin)
    yield lambda line: os.write(master, line.encode())
    stdin.close()
    os.close(master)


def test_downgrade_needs_an_explicit_revision(sqlite_data_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exit_:
        main(["db", "downgrade", "--yes", "--data-dir", str(sqlite_data_dir)])
    assert exit_.value.code == 2
    assert "revision" in capsys.readouterr().err
    assert "images" in _tables(sqlite_data_dir)


def test_downgrade_without_a_terminal_is_refused(sqlite_data_dir, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("sys.stdin", io.StringIO("downgrade\n"))
    assert main(["db", "downgrade", "base", "--data-dir", str(sqlite_data_dir)]) == 2
    assert "not a terminal" in _error_line(capsys)
    assert "images" in _tables(sqlite_data_dir)


def test_downgrade_asks_for_the_word_on_a_terminal(sqlite_data_dir, terminal, capsys) -> None:  # type: ignore[no-untyped-def]
    terminal("yes\n")
    assert main(["db", "downgrade", "base", "--data-dir", str(sqlite_data_dir)]) == 2
    assert "not confirmed" in _error_line(capsys)
    assert "images" in _tables(sqlite_data_dir)
    terminal("downgrade\n")
    assert main(["db", "downgrade", "base", "--data-dir", str(sqlite_data_dir)]) == 0
    captured = capsys.readouterr()
    assert "Type 'downgrade'" in captured.err and "base (empty)" in captured.out
    assert "images" not in _tables(sqlite_data_dir)


def test_token_days_expiry_and_revocation(sqlite_data_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from storage.accounts import Accounts
    from storage.engine import make_engine, sqlite_url

    d = str(sqlite_data_dir)
    assert (
        main(
            ["user", "add", "ops", "--role", "admin", "--password", "long enough", "--data-dir", d]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["user", "token", "ops", "--days", "3", "--data-dir", d]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    expected = (datetime.now(timezone.utc) + timedelta(days=3)).strftime("%Y-%m-%d")
    assert len(out.splitlines()) == 1 and f"expires {expected}" in err
    assert main(["user", "token", "ops", "--days", "0", "--data-dir", d]) == 0
    out, err = capsys.readouterr()
    forever = out.strip()
    assert "never expires" in err
    accounts = Accounts(make_engine(sqlite_url(sqlite_data_dir / "heatprompt.db")))
    assert accounts.user_for_token(token).name == "ops"  # type: ignore[union-attr]
    assert main(["user", "revoke-token", "ops", "--data-dir", d]) == 0
    assert capsys.readouterr().out.strip() == "revoked 2 tokens of ops"
    assert accounts.user_for_token(token) is None and accounts.user_for_token(forever) is None
    assert main(["user", "token", "ops", "--days", "-1", "--data-dir", d]) == 2
    assert "no expiry" in _error_line(capsys)
    assert main(["user", "revoke-token", "nobody", "--data-dir", d]) == 2
    assert "nobody" in _error_line(capsys)


# ---------------------------------------------------------------------- defect types
def test_types_add_and_list_on_the_data_dirs_database(sqlite_data_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    d = ["--data-dir", str(sqlite_data_dir)]
    assert main(["types", "add", "scratch", "--color", "#FF0000", "--key", "1", *d]) == 0
    assert capsys.readouterr().out.strip() == "defect type 2 'scratch' added (#ff0000, key 1)"
    assert main(["types", "add", "long stain", *d]) == 0
    capsys.readouterr()
    assert main(["types", "list", *d]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines] == [
        ["1", "unspecified", "#ffcc00", "0"],
        ["2", "scratch", "#ff0000", "1"],
        ["3", "long", "stain", "#e6194b", "-"],  # the first free palette colour
    ]
    for argv, fragment in (
        (["scratch"], "exists already"),
        (["dent", "--key", "1"], "key '1' is taken by defect type 'scratch'"),
        (["dent", "--color", "blue"], "#rrggbb"),
        (["dent", "--key", "ab"], "one printable character"),
    ):
        assert main(["types", "add", *argv, *d]) == 2
        assert fragment in _error_line(capsys)
    assert main(["types", "list", *d]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3  # nothing stored by the refusals


def test_types_use_database_url_like_the_other_commands(tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tests.storage_fixtures import postgres_schema

    with postgres_schema("cli") as url:
        monkeypatch.setenv("DATABASE_URL", url)
        assert main(["types", "add", "pit", "--data-dir", str(tmp_path)]) == 0
        assert "defect type 2 'pit'" in capsys.readouterr().out
        assert main(["types", "list", "--data-dir", str(tmp_path)]) == 0
        assert "pit" in capsys.readouterr().out
        assert not (tmp_path / "heatprompt.db").exists()  # PostgreSQL, not the SQLite file


def test_backup_warns_about_a_missing_type_mask(sqlite_data_dir: Path, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from storage.blobs import BlobStore
    from storage.engine import make_engine, sqlite_url
    from storage.repository import Repository

    engine = make_engine(sqlite_url(sqlite_data_dir / "heatprompt.db"))
    repo = Repository(engine, BlobStore(sqlite_data_dir / "blobs"))
    image_id = repo.images.ingest_image(b"image", width=4, height=3, format="PNG").id
    mask = np.zeros((3, 4), bool)
    mask[1, 1:3] = True
    scratch = repo.types.add("scratch").id
    repo.reviews.save_correction(
        image_id, author="ines", action="corrected", mask=mask, types=mask * scratch
    )
    sha = repo.reviews.labelled_since(0)[0].correction.types_sha256
    assert sha is not None
    repo.blobs.path(sha).unlink()
    engine.dispose()
    assert main(["backup", str(tmp_path / "b"), "--data-dir", str(sqlite_data_dir)]) == 0
    err = capsys.readouterr().err
    assert f"warning: blob {sha} is named by a row but missing" in err


# ------------------------------------------------------------------------- bench-image
@pytest.fixture(scope="module")
def scaled_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained effnet_lite0 checkpoint at pixel scale 1.0 with 64 px tiles (the
    smallest multiple of 32 with a useful grid): speed figures need no training."""
    from model.checkpoint import save_checkpoint
    from model.encoders import build_encoder
    from model.training_task import fresh_bundle

    bundle = fresh_bundle(build_encoder("effnet_lite0", input_size=64), seed=0, scale=1.0)
    return save_checkpoint(tmp_path_factory.mktemp("bench-image") / "scaled.pt", bundle)


def _tiles(width: int, height: int, tile: int = 64) -> int:
    """Tiles a scale-1.0 model with `tile` px tiles cuts a width×height image into."""
    from model.geometry import Geometry
    from model.tiling import TilePlan

    return len(TilePlan((height, width), tile, Geometry(tile, 1.0).overlap))


def test_bench_image_json_rows_have_the_plans_tiles_and_times(scaled_checkpoint, capsys) -> None:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    args = ["bench-image", "--checkpoint", str(scaled_checkpoint), "--device", "cpu"]
    assert main([*args, "--sizes", "100x60,300x200", "--repeat", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["rows"]
    assert report["workers"] >= 1  # the app's compute threads by default on a CPU
    assert [(r["width"], r["height"]) for r in rows] == [(100, 60), (300, 200)]
    assert report["views"] == ["identity"]
    for r in rows:
        assert r["tiles"] == _tiles(r["width"], r["height"]) > 1
        assert r["views"] == 1 and r["repeats"] == 2 and r["device"] == "cpu"
        assert r["encode_ms_per_tile"] > 0 and r["heads_ms_per_tile"] > 0
        assert r["stitch_ms"] > 0 and r["total_s"] > 0
        assert r["peak_rss_mib"] is not None and r["peak_rss_mib"] >= 0
        assert r["peak_gpu_mib"] is None


def test_bench_image_on_the_calling_thread_or_a_pool_cuts_the_same_tiles(  # type: ignore[no-untyped-def]
    scaled_checkpoint, capsys
) -> None:
    args = ["bench-image", "--checkpoint", str(scaled_checkpoint), "--device", "cpu"]
    reports = {}
    for workers in (0, 3):
        capsys.readouterr()
        assert main([*args, "--sizes", "300x200", "--workers", str(workers), "--json"]) == 0
        reports[workers] = json.loads(capsys.readouterr().out)
    assert reports[0]["workers"] == 0 and reports[3]["workers"] == 3
    assert reports[0]["rows"][0]["tiles"] == reports[3]["rows"][0]["tiles"] == _tiles(300, 200)
    assert main([*args, "--workers", "-1"]) == 2
    assert "--workers" in _error_line(capsys)


def test_bench_image_table_for_image_files(scaled_checkpoint, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "wide.png"
    Image.fromarray(np.full((70, 130, 3), 128, np.uint8)).save(path)
    capsys.readouterr()
    assert main(["bench-image", str(path), "--checkpoint", str(scaled_checkpoint)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("compute threads:")
    assert "enc ms/tile" in lines[1] and "total s" in lines[1]
    fields = lines[2].split()
    assert fields[0] == "…" + str(path)[-19:] and fields[1] == "130x70"
    assert int(fields[4]) == _tiles(130, 70)


def test_bench_image_user_errors_are_one_line(scaled_checkpoint, capsys) -> None:  # type: ignore[no-untyped-def]
    args = ["bench-image", "--checkpoint", str(scaled_checkpoint)]
    assert main([*args, "--views", "2"]) == 2  # the checkpoint has one view
    assert "test-time views" in _error_line(capsys)
    assert main([*args, "--sizes", "100by60"]) == 2
    assert "100by60" in _error_line(capsys)


def test_peak_rss_sees_an_allocation_inside_the_block() -> None:
    import time

    from webapp.image_benchmark import PeakRss

    with PeakRss() as rss:
        block = np.ones(200 << 20, np.uint8)  # written, so its pages are resident
        time.sleep(0.05)
        del block
    assert rss.growth_mib is not None and rss.growth_mib >= 150
    with PeakRss() as idle:
        time.sleep(0.02)
    assert idle.growth_mib is not None and idle.growth_mib < 50


def test_eval_reports_defect_types_of_a_typed_model(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from tests.benchmarks.unseen_synth import DEFECT_TYPES, write_unseen_dataset

    data = write_unseen_dataset(tmp_path / "typed", seed=4, count=40, size=64)
    ckpt = tmp_path / "typed.pt"
    args = ["--encoder", "sam_tiny", "--input-size", "64", "--epochs", "1", "--device", "cpu"]
    assert main(["train", "--data", str(data), "--out", str(ckpt), *args]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--json"]) == 0
    types = json.loads(capsys.readouterr().out)["types"]
    assert {"type_accuracy", "type_macro_f1", "confusion", "per_type"} <= set(types)
    assert set(types["confusion"]["labels"]) <= {*DEFECT_TYPES, "unspecified"}
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(data)]) == 0
    assert "defect types (" in capsys.readouterr().out
