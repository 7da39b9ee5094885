"""Users, roles and API tokens. Passwords are hashed with Argon2 (argon2-cffi); API
tokens are random 256-bit secrets stored only as their sha256."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from storage.engine import make_sessionmaker
from storage.errors import NotFoundError, StorageError
from storage.schema import ApiToken, Role, User

_hasher = PasswordHasher()
MIN_PASSWORD_LENGTH = 8


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    """User accounts over one database."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = make_sessionmaker(engine)

    def add_user(self, name: str, password: str, *, role: Role | str = Role.viewer) -> int:
        """Create a user; StorageError for a taken name, a short password or a bad role."""
        name = name.strip()
        if not name:
            raise StorageError("user name must not be empty")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise StorageError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
        try:
            role = Role(role)
        except ValueError as exc:
            raise StorageError(f"unknown role {role!r}; choose viewer, inspector or admin") from exc
        try:
            with self._sessions() as s, s.begin():
                user = User(name=name, password_hash=_hasher.hash(password), role=role)
                s.add(user)
                s.flush()
                return user.id
        except IntegrityError as exc:
            raise StorageError(f"user {name!r} exists already") from exc

    def get_user(self, name: str) -> User:
        with self._sessions() as s:
            user = s.scalar(select(User).where(User.name == name))
            if user is None:
                raise NotFoundError(f"no user named {name!r}")
            return user

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when the password is right, else None (same answer for unknown names)."""
        with self._sessions() as s:
            user = s.scalar(select(User).where(User.name == name))
        if user is None:
            _hasher.hash(password)  # spend the same time as a real check
            return None
        try:
            _hasher.verify(user.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        return user

    def issue_token(self, name: str) -> str:
        """A new API token for `name`; only its hash is stored, so show it once."""
        user = self.get_user(name)
        token = secrets.token_urlsafe(32)
        with self._sessions() as s, s.begin():
            s.add(ApiToken(user_id=user.id, token_hash=_token_hash(token)))
        return token

    def user_for_token(self, token: str) -> User | None:
        with self._sessions() as s:
            return s.scalar(
                select(User)
                .join(ApiToken, ApiToken.user_id == User.id)
                .where(ApiToken.token_hash == _token_hash(token))
            )
