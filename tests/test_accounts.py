"""User accounts on SQLite and PostgreSQL."""

import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, select, text

from storage.accounts import DEFAULT_TOKEN_DAYS, Accounts
from storage.errors import NotFoundError, StorageError
from storage.migrate import downgrade, upgrade
from storage.schema import ApiToken, Role, User


@pytest.fixture
def accounts(engine: Engine) -> Accounts:
    upgrade(engine)
    return Accounts(engine)


def test_passwords_are_hashed_and_checked(accounts: Accounts, engine: Engine) -> None:
    accounts.add_user("ines", "correct horse", role="inspector")
    with engine.connect() as conn:
        stored = conn.execute(select(User.password_hash)).scalar_one()
    assert "correct horse" not in stored and stored.startswith("$argon2")
    user = accounts.authenticate("ines", "correct horse")
    assert user is not None and user.role is Role.inspector
    assert accounts.authenticate("ines", "wrong password") is None
    assert accounts.authenticate("nobody", "correct horse") is None


def test_tokens_are_stored_hashed_and_resolve_to_their_user(
    accounts: Accounts, engine: Engine
) -> None:
    accounts.add_user("line-7", "long enough", role="inspector")
    token = accounts.issue_token("line-7")
    with engine.connect() as conn:
        assert conn.execute(select(ApiToken.token_hash)).scalar_one() != token
    assert accounts.user_for_token(token).name == "line-7"  # type: ignore[union-attr]
    assert accounts.user_for_token(token + "x") is None


def test_bad_accounts_are_refused(accounts: Accounts) -> None:
    accounts.add_user("ada", "long enough")
    with pytest.raises(StorageError, match="exists already"):
        accounts.add_user("ada", "another one")
    with pytest.raises(StorageError, match="at least 8"):
        accounts.add_user("bob", "short")
    with pytest.raises(StorageError, match="unknown role"):
        accounts.add_user("cy", "long enough", role="king")
    with pytest.raises(NotFoundError):
        accounts.issue_token("nobody")


class Clock:
    """A settable clock, so expiry is tested without waiting."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clocked(engine: Engine) -> tuple[Accounts, Clock]:
    upgrade(engine)
    clock = Clock()
    accounts = Accounts(engine, clock=clock)
    accounts.add_user("ops", "long enough", role="admin")
    accounts.add_user("line", "long enough", role="inspector")
    return accounts, clock


def test_tokens_expire_after_their_days(clocked: tuple[Accounts, Clock]) -> None:
    accounts, clock = clocked
    issued = accounts.issue("ops", days=7)
    assert issued.expires_at == clock.now + timedelta(days=7)
    clock.now += timedelta(days=7) - timedelta(seconds=1)
    assert accounts.user_for_token(issued.token).name == "ops"  # type: ignore[union-attr]
    clock.now += timedelta(seconds=1)
    assert accounts.user_for_token(issued.token) is None


def test_default_lifetime_and_tokens_without_expiry(clocked: tuple[Accounts, Clock]) -> None:
    accounts, clock = clocked
    default = accounts.issue("ops")
    assert default.expires_at == clock.now + timedelta(days=DEFAULT_TOKEN_DAYS)
    forever = accounts.issue("ops", days=0)
    assert forever.expires_at is None
    clock.now += timedelta(days=3650)
    assert accounts.user_for_token(default.token) is None
    assert accounts.user_for_token(forever.token).name == "ops"  # type: ignore[union-attr]
    with pytest.raises(StorageError, match="0 \\(no expiry\\)"):
        accounts.issue("ops", days=-1)


def test_revoking_ends_every_token_of_that_user_only(clocked: tuple[Accounts, Clock]) -> None:
    accounts, _ = clocked
    ops = [accounts.issue_token("ops"), accounts.issue_token("ops", days=0)]
    line = accounts.issue_token("line")
    assert accounts.revoke_tokens("ops") == 2
    assert [accounts.user_for_token(t) for t in ops] == [None, None]
    assert accounts.user_for_token(line).name == "line"  # type: ignore[union-attr]
    assert accounts.revoke_tokens("ops") == 0  # already revoked: nothing more to do
    fresh = accounts.issue_token("ops")
    assert accounts.user_for_token(fresh).name == "ops"  # type: ignore[union-attr]
    with pytest.raises(NotFoundError):
        accounts.revoke_tokens("nobody")


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def test_migration_gives_old_tokens_an_end_and_drops_revoked_ones_going_down(
    engine: Engine,
) -> None:
    upgrade(engine, "0002")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, name, password_hash, role, created_at) "
                "VALUES (1, 'old', 'x', 'viewer', :t)"
            ),
            {"t": datetime.now(timezone.utc)},
        )
        conn.execute(
            text("INSERT INTO api_tokens (user_id, token_hash, created_at) VALUES (1, :h, :t)"),
            {"h": "a" * 64, "t": datetime.now(timezone.utc)},
        )
    before = datetime.now(timezone.utc)
    upgrade(engine)
    with engine.connect() as conn:
        expires = _aware(conn.execute(select(ApiToken.expires_at)).scalar_one())
    assert before + timedelta(days=89) < expires < before + timedelta(days=91)
    accounts = Accounts(engine)
    accounts.issue("old", days=0)
    assert accounts.revoke_tokens("old") == 2
    kept = accounts.issue_token("old")
    downgrade(engine, "0002")
    with engine.connect() as conn:
        hashes = conn.execute(text("SELECT token_hash FROM api_tokens")).scalars().all()
    assert hashes == [hashlib.sha256(kept.encode()).hexdigest()]
