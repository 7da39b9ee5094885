"""zero-label anomaly: normality models, anomaly predictions, images.anomaly_score

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('normality_models',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('encoder_id', sa.String(length=50), nullable=False),
    sa.Column('good_images', sa.Integer(), nullable=False),
    sa.Column('path', sa.String(length=500), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_normality_models'))
    )
    op.create_table('anomaly_predictions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('normality_model_id', sa.Integer(), nullable=False),
    sa.Column('heatmap_sha256', sa.String(length=64), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], name=op.f('fk_anomaly_predictions_image_id_images')),
    sa.ForeignKeyConstraint(['normality_model_id'], ['normality_models.id'], name=op.f('fk_anomaly_predictions_normality_model_id_normality_models')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_anomaly_predictions'))
    )
    with op.batch_alter_table('anomaly_predictions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_anomaly_predictions_image_id'), ['image_id'], unique=False)
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('anomaly_score', sa.Float(), nullable=True))
        batch_op.create_index(batch_op.f('ix_images_anomaly_score'), ['anomaly_score'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_images_anomaly_score'))
        batch_op.drop_column('anomaly_score')
    with op.batch_alter_table('anomaly_predictions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_anomaly_predictions_image_id'))
    op.drop_table('anomaly_predictions')
    op.drop_table('normality_models')
