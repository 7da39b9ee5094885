"""defect types: defect_types (seeded with "unspecified"), type masks of predictions and
corrections, predicted_regions

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

Corrections and predictions stored before this revision get no type mask (NULL), which
reads as "every region is unspecified": old labels stay valid without rewriting a blob.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UNSPECIFIED = {"id": 1, "name": "unspecified", "color": "#ffcc00", "key": "0"}


def upgrade() -> None:
    defect_types = op.create_table(
        "defect_types",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("color", sa.String(length=7), nullable=False),
        sa.Column("key", sa.String(length=1), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_defect_types")),
        sa.UniqueConstraint("key", name=op.f("uq_defect_types_key")),
        sa.UniqueConstraint("name", name=op.f("uq_defect_types_name")),
    )
    op.bulk_insert(defect_types, [UNSPECIFIED | {"created_at": datetime.now(timezone.utc)}])
    if op.get_bind().dialect.name == "postgresql":
        # The row above names its id, so the serial sequence has not moved past it.
        op.execute(
            "SELECT setval(pg_get_serial_sequence('defect_types', 'id'), "
            "(SELECT max(id) FROM defect_types))"
        )
    op.create_table(
        "predicted_regions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prediction_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("type_id", sa.Integer(), nullable=False),
        sa.Column("area", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_predicted_regions_image_id_images")
        ),
        sa.ForeignKeyConstraint(
            ["prediction_id"],
            ["predictions.id"],
            name=op.f("fk_predicted_regions_prediction_id_predictions"),
        ),
        sa.ForeignKeyConstraint(
            ["type_id"], ["defect_types.id"], name=op.f("fk_predicted_regions_type_id_defect_types")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_predicted_regions")),
    )
    with op.batch_alter_table("predicted_regions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_predicted_regions_image_id"), ["image_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_predicted_regions_prediction_id"), ["prediction_id"], unique=False
        )
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("types_sha256", sa.String(length=64), nullable=True))
    with op.batch_alter_table("corrections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("types_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("corrections", schema=None) as batch_op:
        batch_op.drop_column("types_sha256")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_column("types_sha256")
    with op.batch_alter_table("predicted_regions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_predicted_regions_prediction_id"))
        batch_op.drop_index(batch_op.f("ix_predicted_regions_image_id"))
    op.drop_table("predicted_regions")
    op.drop_table("defect_types")
