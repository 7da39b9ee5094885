"""Defect types in storage on SQLite and PostgreSQL: the seeded "unspecified" type, adding
and editing types, and the migration of databases that hold corrections already."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, text

from storage.blobs import BlobStore
from storage.defect_types import PALETTE, UNSPECIFIED_ID
from storage.errors import DuplicateError, NotFoundError, StorageError
from storage.migrate import downgrade, upgrade
from storage.repository import Repository


def test_a_new_database_has_unspecified_as_type_1(repo: Repository) -> None:
    [unspecified] = repo.types.list()
    assert (unspecified.id, unspecified.name, unspecified.color, unspecified.key) == (
        UNSPECIFIED_ID,
        "unspecified",
        "#ffcc00",
        "0",
    )


def test_types_are_added_with_ids_after_the_seed_and_palette_colours(repo: Repository) -> None:
    scratch = repo.types.add("scratch", key="1")
    stain = repo.types.add(" stain ", color="#00AA11")
    dent = repo.types.add("dent")
    assert (scratch.id, stain.id, dent.id) == (2, 3, 4)  # PostgreSQL's sequence moved past 1
    assert scratch.color == PALETTE[0] and dent.color == PALETTE[1]
    assert (stain.name, stain.color, stain.key) == ("stain", "#00aa11", None)
    assert [t.name for t in repo.types.list()] == ["unspecified", "scratch", "stain", "dent"]
    assert repo.types.by_name("Scratch").id == scratch.id  # type: ignore[union-attr]
    assert repo.types.by_name("crack") is None
    assert repo.types.get(stain.id).name == "stain"
    with pytest.raises(NotFoundError):
        repo.types.get(99)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "SCRATCH"}, "exists already"),
        ({"name": "crack", "key": "1"}, "key '1' is taken by defect type 'scratch'"),
        ({"name": "crack", "key": "0"}, "taken by defect type 'unspecified'"),
    ],
)
def test_duplicates_are_refused(repo: Repository, kwargs: dict[str, str], message: str) -> None:
    repo.types.add("scratch", key="1")
    with pytest.raises(DuplicateError, match=message):
        repo.types.add(**kwargs)
    assert len(repo.types.list()) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "  "}, "needs a name"),
        ({"name": "x" * 51}, "longer than 50"),
        ({"name": "crack", "color": "red"}, "#rrggbb"),
        ({"name": "crack", "color": "#12345"}, "#rrggbb"),
        ({"name": "crack", "key": "ab"}, "one printable character"),
        ({"name": "crack", "key": " "}, "one printable character"),
        ({"name": "crack", "key": "\n"}, "one printable character"),
    ],
)
def test_bad_input_is_refused_and_stores_nothing(
    repo: Repository, kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(StorageError, match=message):
        repo.types.add(**kwargs)
    assert [t.name for t in repo.types.list()] == ["unspecified"]


def test_update_changes_only_the_given_fields(repo: Repository) -> None:
    scratch = repo.types.add("scratch", key="1")
    repo.types.add("stain", key="t")
    changed = repo.types.update(scratch.id, color="#112233")
    assert (changed.name, changed.color, changed.key) == ("scratch", "#112233", "1")
    changed = repo.types.update(scratch.id, name="Scratch", key=None)  # its own name, recased
    assert (changed.name, changed.key) == ("Scratch", None)
    with pytest.raises(DuplicateError, match="key 't'"):
        repo.types.update(scratch.id, key="t")
    with pytest.raises(DuplicateError, match="'stain' exists"):
        repo.types.update(scratch.id, name="stain")
    with pytest.raises(StorageError, match="cannot be renamed"):
        repo.types.update(UNSPECIFIED_ID, name="other")
    assert repo.types.update(UNSPECIFIED_ID, color="#ffffff", key="u").key == "u"
    with pytest.raises(NotFoundError):
        repo.types.update(42, color="#ffffff")
    assert repo.types.get(scratch.id).name == "Scratch"


def test_ensure_adds_only_the_missing_names(repo: Repository) -> None:
    scratch = repo.types.add("scratch")
    ids = repo.types.ensure(["scratch", "crack", "unspecified", "crack"])
    assert ids == {"scratch": scratch.id, "crack": 3, "unspecified": UNSPECIFIED_ID}
    assert repo.types.ensure(["crack"]) == {"crack": 3}
    assert len(repo.types.list()) == 3


def test_type_ids_stop_at_255(repo: Repository) -> None:
    with repo.session() as s, s.begin():
        s.execute(
            text(
                "INSERT INTO defect_types (id, name, color, created_at) VALUES "
                "(255, 'last', '#000000', CURRENT_TIMESTAMP)"
            )
        )
    if repo.engine.dialect.name == "postgresql":
        with repo.session() as s, s.begin():
            s.execute(text("SELECT setval(pg_get_serial_sequence('defect_types', 'id'), 255)"))
    with pytest.raises(StorageError, match="at most 255"):
        repo.types.add("one too many")
    assert repo.types.by_name("one too many") is None


def test_migration_keeps_old_corrections_as_unspecified_and_downgrades(
    engine: Engine, tmp_path: Path
) -> None:
    upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO images (id, sha256, width, height, format, size_bytes, source, "
                "arrived_at, status, holdout) VALUES (1, :sha, 4, 4, 'PNG', 1, 'test', "
                "CURRENT_TIMESTAMP, 'reviewed', false)"
            ),
            {"sha": "a" * 64},
        )
        conn.execute(
            text(
                "INSERT INTO corrections (image_id, author, action, mask_sha256, created_at) "
                "VALUES (1, 'ines', 'corrected', :sha, CURRENT_TIMESTAMP)"
            ),
            {"sha": "b" * 64},
        )
    upgrade(engine)
    repo = Repository(engine, BlobStore(tmp_path / "blobs"))
    [labelled] = repo.reviews.labelled_since(0)
    assert labelled.correction.types_sha256 is None  # reads as "all unspecified"
    assert repo.types.add("scratch").id == 2
    downgrade(engine, "0004")
    names = set(inspect(engine).get_table_names())
    assert "defect_types" not in names and "predicted_regions" not in names
    columns = {c["name"] for c in inspect(engine).get_columns("corrections")}
    assert "types_sha256" not in columns
    upgrade(engine)  # and up again: the seed is back, the old correction too
    repo = Repository(engine, BlobStore(tmp_path / "blobs"))
    assert [t.name for t in repo.types.list()] == ["unspecified"]
    assert len(repo.reviews.labelled_since(0)) == 1


def test_review_shortcut_keys_cannot_name_a_type(repo: Repository) -> None:
    for key in ("a", "S", "d", "K", "n"):
        with pytest.raises(StorageError, match="review shortcut"):
            repo.types.add(f"type-{key}", key=key)
    assert repo.types.add("scratch", key="1").key == "1"
    with pytest.raises(StorageError, match="review shortcut"):
        repo.types.update(repo.types.by_name("scratch").id, key="a")  # type: ignore[union-attr]
