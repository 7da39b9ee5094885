"""Defect types: the classes a mask region can have (names, colours, keyboard keys).

A type's id is the pixel value of type masks (`storage.masks`), so ids are small (at most
255) and never reused: types are renamed or recoloured, never deleted, because stored
masks keep naming them. Id 1, "unspecified", is seeded by the migration and is what every
region is until someone says otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import DuplicateError, NotFoundError, StorageError
from storage.schema import DefectType

UNSPECIFIED_ID = 1
UNSPECIFIED_NAME = "unspecified"
MAX_TYPE_ID = 255  # type masks are 8-bit
MAX_NAME_LENGTH = 50
# Colours for types added without one: distinct on images and on each other.
PALETTE = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#fabed4",
    "#469990",
    "#dcbeff",
    "#9a6324",
    "#800000",
    "#aaffc3",
    "#808000",
    "#000075",
)
_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
_UNSET: Any = object()


def check_name(name: str) -> str:
    """The name as stored (trimmed); StorageError when empty or too long."""
    name = name.strip() if isinstance(name, str) else ""
    if not name:
        raise StorageError("a defect type needs a name")
    if len(name) > MAX_NAME_LENGTH:
        raise StorageError(f"defect type name is longer than {MAX_NAME_LENGTH} characters")
    return name


def check_color(color: str) -> str:
    """The colour as stored ("#rrggbb", lower case); StorageError otherwise."""
    if not isinstance(color, str) or not _COLOR.fullmatch(color.strip()):
        raise StorageError(f"colour must look like #rrggbb, got {color!r}")
    return color.strip().lower()


# Keys the review page already binds (accept, save, defect-free, skip, next), either case.
RESERVED_KEYS = frozenset("asdknASDKN")


def check_key(key: str | None) -> str | None:
    """The keyboard key as stored (None: none); StorageError unless it is one printable,
    non-blank character that the review page does not already use."""
    if key is None or key == "":
        return None
    if not isinstance(key, str) or len(key) != 1 or not key.isprintable() or key.isspace():
        raise StorageError(f"key must be one printable character, got {key!r}")
    if key in RESERVED_KEYS:
        raise StorageError(
            f"key {key!r} is a review shortcut (A accept, S save, D defect-free, K skip, "
            "N next); choose another"
        )
    return key


class DefectTypeStore:
    """The defect_types table: listed, looked up, added and edited."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def list(self) -> list[DefectType]:
        """Every type, ordered by id ("unspecified" first)."""
        with self._sessions() as s:
            return list(s.scalars(select(DefectType).order_by(DefectType.id)))

    def ids(self) -> set[int]:
        with self._sessions() as s:
            return known_type_ids(s)

    def get(self, type_id: int) -> DefectType:
        with self._sessions() as s:
            row = s.get(DefectType, type_id)
            if row is None:
                raise NotFoundError(f"no defect type with id {type_id}")
            return row

    def by_name(self, name: str) -> DefectType | None:
        """The type called `name`, ignoring case and surrounding blanks (None: no such)."""
        with self._sessions() as s:
            return _by_name(s, name)

    def add(self, name: str, color: str | None = None, key: str | None = None) -> DefectType:
        """A new type; a palette colour when `color` is None. DuplicateError when the name
        (ignoring case) or the key is taken, StorageError for a bad colour or key."""
        name, key = check_name(name), check_key(key)
        color = None if color is None else check_color(color)
        try:
            with self._sessions() as s, s.begin():
                _refuse_taken(s, name=name, key=key)
                row = DefectType(name=name, color=color or _free_color(s), key=key)
                s.add(row)
                s.flush()
                if row.id > MAX_TYPE_ID:
                    raise StorageError(f"at most {MAX_TYPE_ID} defect types can exist")
                return row
        except IntegrityError as exc:  # taken by a concurrent add
            raise DuplicateError(f"defect type {name!r} or key {key!r} exists already") from exc

    def update(
        self, type_id: int, *, name: str = _UNSET, color: str = _UNSET, key: str | None = _UNSET
    ) -> DefectType:
        """Rename, recolour or re-key a type (a field left out stays; `key=None` removes the
        key). "unspecified" keeps its name: models and old masks mean it by that name."""
        fields: dict[str, Any] = {}
        if name is not _UNSET:
            fields["name"] = check_name(name)
        if color is not _UNSET:
            fields["color"] = check_color(color)
        if key is not _UNSET:
            fields["key"] = check_key(key)
        try:
            with self._sessions() as s, s.begin():
                row = s.get(DefectType, type_id)
                if row is None:
                    raise NotFoundError(f"no defect type with id {type_id}")
                if row.id == UNSPECIFIED_ID and fields.get("name", row.name) != row.name:
                    raise StorageError(f"the type {UNSPECIFIED_NAME!r} cannot be renamed")
                _refuse_taken(s, name=fields.get("name"), key=fields.get("key"), but=type_id)
                for field, value in fields.items():
                    setattr(row, field, value)
                s.flush()
                return row
        except IntegrityError as exc:
            raise DuplicateError(f"defect type {type_id}: name or key taken meanwhile") from exc

    def ensure(self, names: Iterable[str]) -> dict[str, int]:
        """{name: id} for `names`, adding the missing ones with palette colours (a model
        may predict a type the table lacks)."""
        out: dict[str, int] = {}
        for name in dict.fromkeys(names):
            found = self.by_name(name)
            if found is None:
                try:
                    found = self.add(name)
                except DuplicateError:  # added by another process meanwhile
                    found = self.by_name(name)
                    if found is None:
                        raise
            out[name] = found.id
        return out


def known_type_ids(s: Session) -> set[int]:
    """The ids a type mask may hold (besides 0, the background)."""
    return set(s.scalars(select(DefectType.id)))


def type_named(s: Session, name: str) -> DefectType:
    """The type called `name` (as `by_name`); StorageError naming the known ones."""
    found = _by_name(s, name)
    if found is None:
        known = ", ".join(s.scalars(select(DefectType.name).order_by(DefectType.id)))
        raise StorageError(f"no defect type called {name!r}; known: {known}")
    return found


def _by_name(s: Session, name: str) -> DefectType | None:
    wanted = name.strip().lower()
    return s.scalar(select(DefectType).where(func.lower(DefectType.name) == wanted).limit(1))


def _refuse_taken(s: Session, *, name: str | None, key: str | None, but: int = 0) -> None:
    if name is not None:
        other = _by_name(s, name)
        if other is not None and other.id != but:
            raise DuplicateError(f"a defect type called {other.name!r} exists already")
    if key is not None:
        holder = s.scalar(select(DefectType).where(DefectType.key == key, DefectType.id != but))
        if holder is not None:
            raise DuplicateError(f"key {key!r} is taken by defect type {holder.name!r}")


def _free_color(s: Session) -> str:
    """The first palette colour no type has; when all are used, one by position."""
    used = set(s.scalars(select(DefectType.color)))
    free = [c for c in PALETTE if c not in used]
    return free[0] if free else PALETTE[len(used) % len(PALETTE)]
