"""Users, roles and API tokens. Passwords are hashed with Argon2 (argon2-cffi); API
tokens are random 256-bit secrets stored only as their sha256, valid until they expire
or are revoked (a leaked token must not stay good forever)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, or_, select, update
from sqlalchemy.exc import IntegrityError

from storage.engine import make_sessionmaker
from storage.errors import NotFoundError, StorageError
from storage.schema import ApiToken, Role, User, utcnow

_hasher = PasswordHasher()
MIN_PASSWORD_LENGTH = 8
DEFAULT_TOKEN_DAYS = 90


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token (the only time its secret is known) and when it expires."""

    token: str
    expires_at: datetime | None  # None: never expires


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    """User accounts over one database."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._sessions = make_sessionmaker(engine)
        self._clock = clock  # injectable, so expiry can be tested without waiting

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

    def issue(self, name: str, *, days: int = DEFAULT_TOKEN_DAYS) -> IssuedToken:
        """A new API token for `name`, valid for `days` days (0: no expiry); only its hash
        is stored, so show it once."""
        if days < 0:
            raise StorageError(f"token lifetime must be 0 (no expiry) or more days, got {days}")
        user = self.get_user(name)
        token = secrets.token_urlsafe(32)
        expires_at = self._clock() + timedelta(days=days) if days else None
        with self._sessions() as s, s.begin():
            s.add(ApiToken(user_id=user.id, token_hash=_token_hash(token), expires_at=expires_at))
        return IssuedToken(token, expires_at)

    def issue_token(self, name: str, *, days: int = DEFAULT_TOKEN_DAYS) -> str:
        """The secret of `issue(name, days=days)`."""
        return self.issue(name, days=days).token

    def user_for_token(self, token: str) -> User | None:
        """The token's user while the token is neither expired nor revoked, else None."""
        now = self._clock()
        with self._sessions() as s:
            return s.scalar(
                select(User)
                .join(ApiToken, ApiToken.user_id == User.id)
                .where(
                    ApiToken.token_hash == _token_hash(token),
                    ApiToken.revoked_at.is_(None),
                    or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
                )
            )

    def revoke_tokens(self, name: str) -> int:
        """Revoke every token of `name` not revoked yet; returns how many were."""
        user = self.get_user(name)
        with self._sessions() as s, s.begin():
            result = s.execute(
                update(ApiToken)
                .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
            return int(result.rowcount)
