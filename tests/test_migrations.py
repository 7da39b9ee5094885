"""Alembic migrations on both engines: empty → head → base → head, and no drift."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from storage.migrate import current_revision, downgrade, upgrade
from storage.schema import Base

TABLES = {
    "images",
    "predictions",
    "corrections",
    "users",
    "api_tokens",
    "model_versions",
    "training_runs",
    "promotions",
    "normality_models",
    "anomaly_predictions",
    "defect_types",
    "predicted_regions",
}


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade(engine: Engine) -> None:
    assert current_revision(engine) is None
    upgrade(engine)
    assert _tables(engine) == TABLES
    head = current_revision(engine)
    assert head is not None
    downgrade(engine, "base")
    assert _tables(engine) == set()
    upgrade(engine)
    assert current_revision(engine) == head and _tables(engine) == TABLES


def test_orm_metadata_matches_the_migrations(engine: Engine) -> None:
    upgrade(engine)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []
