"""Backup and restore of a deployment: its database, blob store and model checkpoints.

A backup is a folder:

    manifest.json       format version, database kind, schema revision, counts, time,
                        and any blob a row names that the blob store lacked
    database.sqlite3    SQLite: a copy made through SQLite's online backup API
    database.pgdump     PostgreSQL: `pg_dump --format=custom` of the application's schema
    blobs/              the blob store, as it lies on disk (names are sha256s)
    data/               checkpoints, at their paths relative to the data directory

The database is copied first and its counts and checkpoint paths are read from that very
snapshot. Blobs and checkpoints are written before the rows that name them and are never
deleted while referenced, so files copied afterwards cover every row of the snapshot (at
worst a few newer, unreferenced files come along). The folder is written under a hidden
name and renamed when complete: a backup is either whole or absent.

Restore copies the files first and the database last, the order the application itself
writes in, and rewrites checkpoint paths that lay under the old data directory so they
name the same file under the new one. Stop the application while restoring.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, MetaData, create_engine, func, inspect, select, text

from storage.engine import sqlite_url
from storage.errors import StorageError
from storage.migrate import MIGRATIONS_DIR
from storage.schema import ModelVersion, blob_columns, utcnow

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SQLITE_FILE = "database.sqlite3"
PG_FILE = "database.pgdump"
BLOBS = "blobs"
DATA = "data"
# Bookkeeping, not data: a freshly started app fills them, so they never make a target
# "non-empty" and are not counted.
BOOKKEEPING_TABLES = frozenset({"alembic_version", "apscheduler_jobs"})
# Rows the migrations themselves insert (the "unspecified" defect type): a freshly
# migrated database holds them and is still empty.
SEEDED_ROWS = {"defect_types": 1}


class BackupError(StorageError):
    """A backup that cannot be written or restored; the message says why."""


@dataclass(frozen=True)
class Manifest:
    """What a backup holds, written beside it as manifest.json."""

    database: str  # "sqlite" or "postgresql"
    revision: str | None  # Alembic revision of the copied schema
    counts: dict[str, int]  # rows per table
    blobs: int
    created_at: str  # ISO 8601, UTC
    data_dir: str  # the data directory it was taken from (absolute)
    # Checkpoint paths as stored in model_versions -> path relative to the data directory.
    checkpoints: dict[str, str] = field(default_factory=dict)
    # Referenced checkpoints the backup does not hold (outside the data directory, missing).
    not_included: list[str] = field(default_factory=list)
    # Blobs rows of the snapshot name that the blob store did not have (damage found
    # while backing up; everything else is in the backup).
    missing_blobs: list[str] = field(default_factory=list)
    schema: str | None = None  # PostgreSQL schema the tables live in
    format_version: int = FORMAT_VERSION

    def write(self, folder: Path) -> None:
        (folder / MANIFEST).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise BackupError(f"{folder} is not a HeatPrompt backup (no {MANIFEST})") from exc
        except (OSError, ValueError) as exc:
            raise BackupError(f"cannot read {path}: {exc}") from exc
        if raw.get("format_version") != FORMAT_VERSION:
            raise BackupError(
                f"{path}: backup format {raw.get('format_version')!r} is not "
                f"{FORMAT_VERSION}, the one this version reads"
            )
        try:
            return cls(**raw)
        except TypeError as exc:
            raise BackupError(f"{path} is damaged: {exc}") from exc


# --------------------------------------------------------------------------- backup
def create_backup(
    engine: Engine, *, data_dir: Path, blob_dir: Path, models_dir: Path, dest: Path
) -> Manifest:
    """Write a backup of the database behind `engine` and the data directory's blobs and
    checkpoints to the new folder `dest`. `models_dir` lies inside `data_dir`."""
    data_dir = data_dir.resolve()
    if not models_dir.resolve().is_relative_to(data_dir):
        raise BackupError(f"model folder {models_dir} is not inside the data directory {data_dir}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} exists already and is not an empty folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial"))
    try:
        manifest = _write_backup(engine, data_dir, blob_dir.resolve(), models_dir.resolve(), stage)
        if dest.exists():
            dest.rmdir()
        stage.rename(dest)
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(exc, (OSError, sqlite3.Error)):  # a full disk, a locked file: say so
            raise BackupError(f"backup to {dest} failed: {exc}") from exc
        raise
    return manifest


def _write_backup(
    engine: Engine, data_dir: Path, blob_dir: Path, models_dir: Path, stage: Path
) -> Manifest:
    kind = engine.dialect.name
    schema = None
    if kind == "sqlite":
        described = _sqlite_dump(engine, stage / SQLITE_FILE)
    elif kind == "postgresql":
        schema, described = _pg_dump(engine, stage / PG_FILE)
    else:
        raise BackupError(f"cannot back up a {kind} database (SQLite and PostgreSQL only)")
    revision, counts, paths, referenced = described
    copied: set[str] = set()
    for blob in _files(blob_dir):
        _copy(blob, stage / BLOBS / blob.relative_to(blob_dir), sha256=blob.name)
        copied.add(blob.name)
    blobs = len(copied)
    out = stage / DATA
    for checkpoint in _files(models_dir):
        _copy(checkpoint, out / checkpoint.relative_to(data_dir))
    checkpoints: dict[str, str] = {}
    not_included: list[str] = []
    for stored in sorted(paths):
        path = Path(stored).resolve()  # relative paths are relative to the working folder
        if path.is_file() and path.is_relative_to(data_dir):
            rel = path.relative_to(data_dir)
            if not (out / rel).is_file():  # a checkpoint kept elsewhere in the data dir
                _copy(path, out / rel)
            checkpoints[stored] = rel.as_posix()
        else:
            not_included.append(stored)
    manifest = Manifest(
        database=kind,
        revision=revision,
        counts=counts,
        blobs=blobs,
        created_at=utcnow().isoformat(),
        data_dir=str(data_dir),
        checkpoints=checkpoints,
        not_included=not_included,
        missing_blobs=sorted(referenced - copied),
        schema=schema,
    )
    manifest.write(stage)
    return manifest


class Described(NamedTuple):
    """What a database holds, as one connection sees it."""

    revision: str | None
    counts: dict[str, int]  # rows per table
    checkpoints: list[str]  # checkpoint paths of model_versions
    blobs: set[str]  # blobs its rows name (every column the schema marks as one)


def _describe(conn: Connection) -> Described:
    """Schema revision, rows per table, checkpoint paths and referenced blobs, as `conn`
    sees them."""
    names = set(inspect(conn).get_table_names())
    revision = None
    if "alembic_version" in names:
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    meta = MetaData()
    meta.reflect(conn, only=sorted(names - BOOKKEEPING_TABLES))
    counts = {
        name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
        for name, table in sorted(meta.tables.items())
    }
    paths: list[str] = []
    if ModelVersion.__tablename__ in names:
        paths = list(conn.execute(select(ModelVersion.checkpoint_path)).scalars())
    blobs: set[str] = set()
    for column in blob_columns():  # those of this snapshot's revision only
        table = meta.tables.get(column.table.name)
        if table is not None and column.name in table.c:
            blobs |= {v for v in conn.execute(select(table.c[column.name])).scalars() if v}
    return Described(revision, counts, paths, blobs)


def _sqlite_dump(engine: Engine, target: Path) -> Described:
    raw = engine.raw_connection()
    try:
        copy = sqlite3.connect(target)
        try:
            raw.driver_connection.backup(copy)  # type: ignore[union-attr]
            # One self-contained file: no -wal / -shm companions beside the copy.
            copy.execute("PRAGMA journal_mode=DELETE")
        finally:
            copy.close()
    finally:
        raw.close()
    snapshot = create_engine(sqlite_url(target))
    try:
        with snapshot.connect() as conn:
            return _describe(conn)
    finally:
        snapshot.dispose()


def _pg_dump(engine: Engine, target: Path) -> tuple[str, Described]:
    """pg_dump of the current schema, sharing this transaction's snapshot: the counts,
    paths and blobs read here are exactly those of the dump."""
    uri, env = _libpq(engine)
    repeatable = engine.execution_options(isolation_level="REPEATABLE READ")
    with repeatable.connect() as conn, conn.begin():
        schema = _current_schema(conn)
        snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
        described = _describe(conn)
        _run(
            [
                _tool("pg_dump"),
                "--format=custom",
                f"--schema={schema}",
                f"--snapshot={snapshot}",
                f"--file={target}",
                f"--dbname={uri}",
            ],
            env,
        )
    return schema, described


# --------------------------------------------------------------------------- restore
def restore_backup(
    src: Path,
    engine: Engine,
    *,
    data_dir: Path,
    blob_dir: Path,
    models_dir: Path,
    force: bool = False,
) -> Manifest:
    """Restore the backup folder `src` into the database behind `engine` and `data_dir`.

    A target that holds rows, blobs or checkpoints is refused unless `force`; then its
    database is replaced and the backup's files are added to (and overwrite) its own.
    """
    manifest = Manifest.read(src)
    kind = engine.dialect.name
    if manifest.database != kind:
        raise BackupError(f"{src} holds a {manifest.database} database; this one is {kind}")
    _check_revision(manifest, src)
    dump = src / (SQLITE_FILE if kind == "sqlite" else PG_FILE)
    if not dump.is_file():
        raise BackupError(f"{src} is incomplete: {dump.name} is missing")
    data_dir = data_dir.resolve()
    if kind == "postgresql":
        _check_schema(engine, manifest)
        _tool("pg_restore")
    if not force:
        _refuse_non_empty(engine, blob_dir, models_dir)
    for blob in _files(src / BLOBS):
        _copy(blob, blob_dir / blob.relative_to(src / BLOBS), sha256=blob.name)
    for path in _files(src / DATA):
        _copy(path, data_dir / path.relative_to(src / DATA))
    if kind == "sqlite":
        _sqlite_restore(dump, engine)
    else:
        _pg_restore(dump, engine, manifest)
    _rewrite_checkpoints(engine, manifest, data_dir)
    revision, counts, _, _ = _described(engine)
    if (revision, counts) != (manifest.revision, manifest.counts):
        raise BackupError(
            f"restored database does not match {src / MANIFEST}: revision {revision}, "
            f"rows {counts} instead of {manifest.revision}, {manifest.counts}"
        )
    return manifest


def _check_revision(manifest: Manifest, src: Path) -> None:
    if manifest.revision is None:
        return
    try:
        ScriptDirectory(str(MIGRATIONS_DIR)).get_revision(manifest.revision)
    except CommandError as exc:
        raise BackupError(
            f"{src} is at schema revision {manifest.revision}, which this version of "
            "HeatPrompt does not know; restore it with the version that wrote it"
        ) from exc


def _check_schema(engine: Engine, manifest: Manifest) -> None:
    """A dump restores into the schema it was taken from (pg_restore cannot rename)."""
    with engine.connect() as conn:
        schema = _current_schema(conn)
    if schema != manifest.schema:
        raise BackupError(
            f"the backup's tables live in schema {manifest.schema!r}, the configured "
            f"database uses {schema!r}; restore into a database whose search_path "
            f"starts with {manifest.schema!r}"
        )


def _refuse_non_empty(engine: Engine, blob_dir: Path, models_dir: Path) -> None:
    counts = _described(engine).counts
    found = [f"{name}: {n} rows" for name, n in counts.items() if n > SEEDED_ROWS.get(name, 0)]
    blobs = sum(1 for _ in _files(blob_dir))
    if blobs:
        found.append(f"{blobs} blobs in {blob_dir}")
    checkpoints = sum(1 for _ in _files(models_dir))
    if checkpoints:
        found.append(f"{checkpoints} files in {models_dir}")
    if found:
        raise BackupError(
            f"the target is not empty ({', '.join(found)}); pass --force to replace it"
        )


def _described(engine: Engine) -> Described:
    with engine.connect() as conn:
        return _describe(conn)


def _sqlite_restore(dump: Path, engine: Engine) -> None:
    source = sqlite3.connect(f"{dump.resolve().as_uri()}?mode=ro", uri=True)
    try:
        engine.dispose()  # no pooled connection may keep the old schema cached
        raw = engine.raw_connection()
        try:
            source.backup(raw.driver_connection)  # type: ignore[arg-type]
        finally:
            raw.close()
    finally:
        source.close()
    engine.dispose()


def _pg_restore(dump: Path, engine: Engine, manifest: Manifest) -> None:
    uri, env = _libpq(engine)
    with engine.begin() as conn:
        # The schema exists; everything in it is replaced by the dump's tables.
        existing = MetaData()
        existing.reflect(conn)
        existing.drop_all(conn)
    listing = _run([_tool("pg_restore"), "--list", str(dump)], env)
    # The schema exists already and may belong to another role: leave out its own entries.
    entries = [
        line
        for line in listing.splitlines()
        if " SCHEMA - " not in line and " COMMENT - SCHEMA " not in line
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".list", delete=False) as fh:
        fh.write("\n".join(entries) + "\n")
    try:
        _run(
            [
                _tool("pg_restore"),
                "--single-transaction",
                "--exit-on-error",
                "--no-owner",
                "--no-acl",
                f"--use-list={fh.name}",
                f"--dbname={uri}",
                str(dump),
            ],
            env,
        )
    finally:
        os.unlink(fh.name)
    engine.dispose()


def _rewrite_checkpoints(engine: Engine, manifest: Manifest, data_dir: Path) -> None:
    """Point checkpoint paths that lay under the old data directory at the new one."""
    if not manifest.checkpoints:
        return
    table = ModelVersion.__table__
    with engine.begin() as conn:
        rows = conn.execute(select(table.c.id, table.c.checkpoint_path)).all()
        for version_id, stored in rows:
            rel = manifest.checkpoints.get(stored)
            if rel is not None:
                conn.execute(
                    table.update()
                    .where(table.c.id == version_id)
                    .values(checkpoint_path=str(data_dir / rel))
                )


# --------------------------------------------------------------------------- helpers
def _files(root: Path) -> Iterator[Path]:
    """Regular files under `root`, leaving out hidden ones (temporary, half-written)."""
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _copy(src: Path, dest: Path, *, sha256: str | None = None) -> None:
    """Copy through a hidden temporary file renamed into place; with `sha256`, refuse a
    blob whose bytes no longer match its name (a damaged blob is not backed up as good)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".", suffix=".tmp")
    try:
        digest = hashlib.sha256()
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            while chunk := fin.read(1 << 20):
                digest.update(chunk)
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        if sha256 is not None and digest.hexdigest() != sha256:
            raise BackupError(f"blob {src} is damaged: its bytes hash to {digest.hexdigest()}")
        shutil.copystat(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _current_schema(conn: Connection) -> str:
    schema = conn.execute(text("SELECT current_schema()")).scalar()
    if schema is None:
        raise BackupError("the database's search_path names no existing schema")
    return str(schema)


def _libpq(engine: Engine) -> tuple[str, dict[str, str]]:
    """A libpq URI for the engine's database (password in the environment, not argv)."""
    url = engine.url
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    uri = url.set(drivername="postgresql", password=None)
    return uri.render_as_string(hide_password=False), env


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"{name} is not installed (it comes with the PostgreSQL client)")
    return path


def _run(argv: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        detail = message[-1] if message else f"exit status {result.returncode}"
        raise BackupError(f"{Path(argv[0]).name} failed: {detail}")
    return result.stdout
