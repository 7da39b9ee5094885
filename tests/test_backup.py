"""Backup and restore round trips on SQLite and PostgreSQL, through the library and the
`heatprompt backup` / `restore` commands."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import Engine, text

from storage.accounts import Accounts
from storage.backup import BackupError, Manifest, create_backup, restore_backup
from storage.blobs import BlobStore
from storage.engine import make_engine, sqlite_url
from storage.migrate import current_revision, upgrade
from storage.repository import Repository
from tests.storage_fixtures import POSTGRES_URL, postgres_available
from webapp.cli import main


@dataclass
class Site:
    """A deployment: its database and its data directory."""

    engine: Engine
    data_dir: Path

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    def repo(self) -> Repository:
        return Repository(self.engine, BlobStore(self.blob_dir))

    def backup(self, dest: Path) -> Manifest:
        return create_backup(
            self.engine,
            data_dir=self.data_dir,
            blob_dir=self.blob_dir,
            models_dir=self.models_dir,
            dest=dest,
        )

    def restore(self, src: Path, *, force: bool = False) -> Manifest:
        return restore_backup(
            src,
            self.engine,
            data_dir=self.data_dir,
            blob_dir=self.blob_dir,
            models_dir=self.models_dir,
            force=force,
        )


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def populate(site: Site) -> dict[str, object]:
    """Images, a prediction, corrections, a user with a token and two model versions (the
    second active, its checkpoint an absolute path inside the data directory)."""
    upgrade(site.engine)
    repo = site.repo()
    ids = [repo.images.ingest_image(png(i), width=32, height=24, format="PNG").id for i in range(3)]
    mask = np.zeros((24, 32), bool)
    mask[5:9, 4:20] = True
    repo.images.add_prediction(
        ids[0],
        mask=mask,
        heatmap=mask.astype(np.float32) * 0.8,
        defect_score=0.7,
        uncertainty=0.2,
        model_version_id=None,
    )
    repo.reviews.save_correction(ids[0], author="ines", action="corrected", mask=mask)
    repo.reviews.save_correction(ids[1], author="ines", action="defect_free")
    site.models_dir.mkdir(parents=True, exist_ok=True)
    versions = []
    for run in (1, 2):
        ckpt = (site.models_dir / f"run-{run}.pt").resolve()
        ckpt.write_bytes(f"checkpoint {run}".encode())
        versions.append(
            repo.registry.register_model_version(
                checkpoint_path=str(ckpt), checkpoint_sha256="0" * 64, encoder_id="sam_tiny"
            )
        )
    repo.registry.activate(versions[1])
    accounts = Accounts(site.engine)
    accounts.add_user("ines", "long enough", role="inspector")
    token = accounts.issue_token("ines")
    return {
        "counts": repo.images.counts(),
        "image_sha": repo.images.get_image(ids[2]).sha256,
        "image_bytes": png(2),
        "token": token,
    }


def check_restored(site: Site, before: dict[str, object]) -> None:
    repo = site.repo()
    assert repo.images.counts() == before["counts"]
    assert repo.blobs.get(str(before["image_sha"])) == before["image_bytes"]
    active = repo.registry.active_version()
    assert active is not None
    restored = Path(active.checkpoint_path)
    assert restored == (site.models_dir / "run-2.pt").resolve()
    assert restored.read_bytes() == b"checkpoint 2"
    user = Accounts(site.engine).user_for_token(str(before["token"]))
    assert user is not None and user.name == "ines"
    assert current_revision(site.engine) is not None


@pytest.fixture
def source(engine: Engine, tmp_path: Path) -> Site:
    return Site(engine, tmp_path / "old-data")


@pytest.fixture
def fresh_target(source: Site, tmp_path: Path) -> Iterator[Site]:
    """An empty deployment on the same kind of database, in a new data directory. With
    PostgreSQL it is the source's schema emptied (a dump restores into its own schema)."""
    if source.engine.dialect.name == "sqlite":
        engine = make_engine(sqlite_url(tmp_path / "new-data" / "heatprompt.db"))
        (tmp_path / "new-data").mkdir()
        yield Site(engine, tmp_path / "new-data")
        engine.dispose()
        return
    yield Site(source.engine, tmp_path / "new-data")


def _empty_schema(engine: Engine) -> None:
    """What a newly set-up PostgreSQL server gives: the schema, no tables."""
    with engine.begin() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()


def test_round_trip_keeps_rows_blobs_and_the_active_checkpoint(
    source: Site, fresh_target: Site, tmp_path: Path
) -> None:
    before = populate(source)
    manifest = source.backup(tmp_path / "backup")
    assert manifest.database == source.engine.dialect.name
    assert manifest.revision == current_revision(source.engine)
    assert manifest.counts["images"] == 3 and manifest.counts["corrections"] == 2
    assert manifest.blobs == len(list(BlobStore(source.blob_dir))) and manifest.blobs > 3
    on_disk = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert on_disk["format_version"] == 1 and on_disk["created_at"]
    if source.engine.dialect.name == "postgresql":
        _empty_schema(source.engine)
    restored = fresh_target.restore(tmp_path / "backup")
    assert restored == manifest
    check_restored(fresh_target, before)
    assert fresh_target.data_dir != source.data_dir


def test_a_target_with_data_is_refused_unless_forced(source: Site, tmp_path: Path) -> None:
    before = populate(source)
    source.backup(tmp_path / "backup")
    source.repo().images.ingest_image(png(99), width=32, height=24, format="PNG")
    with pytest.raises(BackupError, match=r"not empty .*images: 4 rows.*--force"):
        source.restore(tmp_path / "backup")
    assert source.repo().images.counts()["images"] == 4  # untouched
    source.restore(tmp_path / "backup", force=True)
    check_restored(source, before)


def test_blobs_or_checkpoints_alone_make_a_target_non_empty(
    source: Site, fresh_target: Site, tmp_path: Path
) -> None:
    populate(source)
    source.backup(tmp_path / "backup")
    if source.engine.dialect.name == "postgresql":
        _empty_schema(source.engine)
    upgrade(fresh_target.engine)  # tables without rows are no data
    BlobStore(fresh_target.blob_dir).put(b"left over")
    with pytest.raises(BackupError, match=r"not empty \(1 blobs in"):
        fresh_target.restore(tmp_path / "backup")
    BlobStore(fresh_target.blob_dir).path(hashlib.sha256(b"left over").hexdigest()).unlink()
    fresh_target.models_dir.mkdir(parents=True)
    (fresh_target.models_dir / "run-1.pt").write_bytes(b"another model")
    with pytest.raises(BackupError, match=r"not empty \(1 files in"):
        fresh_target.restore(tmp_path / "backup")
    assert (fresh_target.models_dir / "run-1.pt").read_bytes() == b"another model"


def test_backup_refuses_an_existing_folder_and_a_damaged_blob(source: Site, tmp_path: Path) -> None:
    populate(source)
    dest = tmp_path / "backup"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(BackupError, match="exists already"):
        source.backup(dest)
    sha = next(iter(BlobStore(source.blob_dir)))
    BlobStore(source.blob_dir).path(sha).write_bytes(b"rot")
    with pytest.raises(BackupError, match="damaged"):
        source.backup(tmp_path / "second")
    assert not (tmp_path / "second").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_restore_refuses_a_foreign_or_unknown_backup(source: Site, tmp_path: Path) -> None:
    populate(source)
    manifest = source.backup(tmp_path / "backup")
    with pytest.raises(BackupError, match="not a HeatPrompt backup"):
        source.restore(tmp_path)
    raw = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    raw["revision"] = "9999"
    (tmp_path / "backup" / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BackupError, match=r"9999.*does not know"):
        source.restore(tmp_path / "backup", force=True)
    if manifest.database == "postgresql":
        raw.update(revision=manifest.revision, schema="elsewhere")
        (tmp_path / "backup" / "manifest.json").write_text(json.dumps(raw))
        target = Site(source.engine, tmp_path / "untouched")
        with pytest.raises(BackupError, match="schema 'elsewhere'"):
            target.restore(tmp_path / "backup", force=True)
        assert not target.data_dir.exists()  # refused before anything was copied
        raw["schema"] = manifest.schema
    other = "postgresql" if manifest.database == "sqlite" else "sqlite"
    raw.update(revision=manifest.revision, database=other)
    (tmp_path / "backup" / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BackupError, match=f"holds a {other} database"):
        source.restore(tmp_path / "backup", force=True)


# --------------------------------------------------------------------------- commands
@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str | None]:
    """DATABASE_URL for the commands: unset (SQLite in the data directory) or a fresh
    PostgreSQL schema named in the URL's search_path."""
    monkeypatch.delenv("HEATPROMPT_DATABASE_URL", raising=False)
    if request.param == "sqlite":
        monkeypatch.delenv("DATABASE_URL", raising=False)
        yield None
        return
    if not postgres_available():
        pytest.skip(f"no PostgreSQL server answers at {POSTGRES_URL}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    monkeypatch.setenv("DATABASE_URL", url)
    yield url
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("heatprompt: error: "), err
    return err[0]


def test_backup_and_restore_commands(
    database_url: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    url = database_url or sqlite_url(old / "heatprompt.db")
    old.mkdir()
    engine = make_engine(url)
    before = populate(Site(engine, old))
    engine.dispose()
    assert main(["backup", str(tmp_path / "b"), "--data-dir", str(old)]) == 0
    out = capsys.readouterr().out
    assert "3 images, 2 corrections, 2 model versions" in out and "2 checkpoints" in out
    assert main(["backup", str(tmp_path / "b"), "--data-dir", str(old)]) == 2
    assert "exists already" in _error_line(capsys)
    if database_url is None:
        target = make_engine(sqlite_url(new / "heatprompt.db"))
    else:  # one schema serves as both old and new server: the new one starts empty
        target = make_engine(url)
        assert main(["restore", str(tmp_path / "b"), "--data-dir", str(new)]) == 2
        assert "--force" in _error_line(capsys)
        _empty_schema(target)
    assert main(["restore", str(tmp_path / "b"), "--data-dir", str(new)]) == 0
    assert "restored" in capsys.readouterr().out
    check_restored(Site(target, new), before)
    assert main(["restore", str(tmp_path / "b"), "--data-dir", str(new)]) == 2
    assert "not empty" in _error_line(capsys)
    assert main(["restore", str(tmp_path / "b"), "--data-dir", str(new), "--force"]) == 0
    target.dispose()
