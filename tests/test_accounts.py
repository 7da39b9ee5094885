"""User accounts on SQLite and PostgreSQL."""

import pytest
from sqlalchemy import Engine, select

from storage.accounts import Accounts
from storage.errors import NotFoundError, StorageError
from storage.migrate import upgrade
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
