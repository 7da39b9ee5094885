"""Database fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL is the server at 127.0.0.1:5432, database `test` (override with
HEATPROMPT_TEST_POSTGRES_URL); each test gets its own schema, dropped afterwards. Where no
server answers, the PostgreSQL cases are skipped with the reason shown, or fail with it when
HEATPROMPT_REQUIRE_POSTGRES=1 (CI sets it, so a missing server cannot pass as green).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy import Engine, text

from storage.blobs import BlobStore
from storage.engine import make_engine, sqlite_url
from storage.migrate import upgrade
from storage.repository import Repository

POSTGRES_URL = os.environ.get(
    "HEATPROMPT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
NO_POSTGRES = "no PostgreSQL server answers at"  # every such skip reason starts with this
ENGINES = ["sqlite", "postgresql"]
_pg_error: str | None = None
_pg_probed = False


def postgres_required() -> bool:
    """True when HEATPROMPT_REQUIRE_POSTGRES asks for PostgreSQL cases to fail, not skip."""
    return os.environ.get("HEATPROMPT_REQUIRE_POSTGRES", "").strip().lower() in (
        "1",
        "true",
        "yes",
    )


def postgres_available() -> bool:
    """Whether the test server answers (probed once per run)."""
    global _pg_error, _pg_probed
    if not _pg_probed:
        _pg_probed = True
        try:
            probe = make_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
            try:
                with probe.connect() as conn:
                    conn.execute(text("select 1"))
            finally:
                probe.dispose()
        except Exception as exc:
            _pg_error = f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0]}"
    return _pg_error is None


def postgres_missing_reason() -> str:
    return f"{NO_POSTGRES} {POSTGRES_URL} ({_pg_error})"


def skip_or_fail_without_postgres() -> NoReturn:
    """Skip the PostgreSQL case, or fail it under HEATPROMPT_REQUIRE_POSTGRES=1."""
    reason = postgres_missing_reason()
    if postgres_required():
        pytest.fail(f"{reason}; HEATPROMPT_REQUIRE_POSTGRES=1 requires it", pytrace=False)
    pytest.skip(reason)


@contextmanager
def postgres_schema(prefix: str = "t") -> Iterator[str]:
    """A fresh schema on the test server, dropped afterwards; yields a database URL whose
    connections use that schema (search_path passed as a libpq option in the URL)."""
    if not postgres_available():
        skip_or_fail_without_postgres()
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        joiner = "&" if "?" in POSTGRES_URL else "?"
        yield f"{POSTGRES_URL}{joiner}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database (no tables) on each engine."""
    if request.param == "sqlite":
        eng = make_engine(sqlite_url(tmp_path / "heatprompt.db"))
        yield eng
        eng.dispose()
        return
    with postgres_schema() as url:
        eng = make_engine(url, pool_size=10, max_overflow=10)
        yield eng
        eng.dispose()


@pytest.fixture
def repo(engine: Engine, tmp_path: Path) -> Repository:
    """A repository on a migrated database with a blob store under tmp_path."""
    upgrade(engine)
    return Repository(engine, BlobStore(tmp_path / "blobs"))
