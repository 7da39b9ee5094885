"""token expiry and revocation

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

Tokens issued before this revision had no end. They get one: 90 days after the upgrade,
so integrations keep working while their owners switch to fresh tokens.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

LEGACY_TOKEN_DAYS = 90


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    tokens = sa.table("api_tokens", sa.column("expires_at", sa.DateTime(timezone=True)))
    grace = datetime.now(timezone.utc) + timedelta(days=LEGACY_TOKEN_DAYS)
    op.execute(tokens.update().where(tokens.c.expires_at.is_(None)).values(expires_at=grace))


def downgrade() -> None:
    # Without the columns a revoked or expired token would work again: delete those first.
    tokens = sa.table(
        "api_tokens",
        sa.column("expires_at", sa.DateTime(timezone=True)),
        sa.column("revoked_at", sa.DateTime(timezone=True)),
    )
    now = datetime.now(timezone.utc)
    op.execute(
        tokens.delete().where(sa.or_(tokens.c.revoked_at.is_not(None), tokens.c.expires_at <= now))
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("expires_at")
