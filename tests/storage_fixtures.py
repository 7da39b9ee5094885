"""Database fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL is the server at 127.0.0.1:5432, database `test` (override with
HEATPROMPT_TEST_POSTGRES_URL); each test gets its own schema, dropped afterwards. Where no
server answers, the PostgreSQL cases are skipped with the reason shown.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from storage.blobs import BlobStore
from storage.engine import make_engine, sqlite_url
from storage.migrate import upgrade
from storage.repository import Repository

POSTGRES_URL = os.environ.get(
    "HEATPROMPT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
_pg_available: bool | None = None


def postgres_available() -> bool:
    global _pg_available
    if _pg_available is None:
        try:
            probe = make_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
            with probe.connect() as conn:
                conn.execute(text("select 1"))
            probe.dispose()
            _pg_available = True
        except Exception:
            _pg_available = False
    return _pg_available


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database (no tables) on each engine."""
    if request.param == "sqlite":
        eng = make_engine(sqlite_url(tmp_path / "heatprompt.db"))
        yield eng
        eng.dispose()
        return
    if not postgres_available():
        pytest.skip(f"no PostgreSQL server answers at {POSTGRES_URL}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng = make_engine(
        POSTGRES_URL,
        connect_args={"options": f"-csearch_path={schema}"},
        pool_size=10,
        max_overflow=10,
    )
    yield eng
    eng.dispose()
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def repo(engine: Engine, tmp_path: Path) -> Repository:
    """A repository on a migrated database with a blob store under tmp_path."""
    upgrade(engine)
    return Repository(engine, BlobStore(tmp_path / "blobs"))
