"""calibration: standardisation sets, calibration results and settings, marker suspensions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 06:17:02.846795
"""
from alembic import op
import sqlalchemy as sa

from marking.models.base import UTCDateTime


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('calibration_setting',
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('params', sa.Text(), nullable=False),
    sa.Column('updated_by', sa.Integer(), nullable=True),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_calibration_setting_item_id_item')),
    sa.ForeignKeyConstraint(['updated_by'], ['app_user.id'], name=op.f('fk_calibration_setting_updated_by_app_user')),
    sa.PrimaryKeyConstraint('item_id', name=op.f('pk_calibration_setting'))
    )
    op.create_table('marker_suspension',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('cause', sa.Enum('validity', 'drift', 'manual', name='suspension_cause', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('suspended_by', sa.Integer(), nullable=True),
    sa.Column('suspended_at', UTCDateTime(), nullable=False),
    sa.Column('since_at', UTCDateTime(), nullable=True),
    sa.Column('requeued', sa.Integer(), nullable=False),
    sa.Column('resumed_by', sa.Integer(), nullable=True),
    sa.Column('resumed_at', UTCDateTime(), nullable=True),
    sa.CheckConstraint('requeued >= 0', name=op.f('ck_marker_suspension_requeued')),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_marker_suspension_item_id_item')),
    sa.ForeignKeyConstraint(['resumed_by'], ['app_user.id'], name=op.f('fk_marker_suspension_resumed_by_app_user')),
    sa.ForeignKeyConstraint(['suspended_by'], ['app_user.id'], name=op.f('fk_marker_suspension_suspended_by_app_user')),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_marker_suspension_user_id_app_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_marker_suspension'))
    )
    with op.batch_alter_table('marker_suspension', schema=None) as batch_op:
        batch_op.create_index('ix_marker_suspension_user_item', ['user_id', 'item_id'], unique=False)

    op.create_table('standardisation_response',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('response_id', sa.Integer(), nullable=False),
    sa.Column('purpose', sa.Enum('practice', 'qualification', 'seed', name='standardisation_purpose', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('definitive_cp', sa.Integer(), nullable=False),
    sa.Column('tolerance_cp', sa.Integer(), nullable=True),
    sa.Column('rationale', sa.Text(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('definitive_cp >= 0', name=op.f('ck_standardisation_response_definitive')),
    sa.CheckConstraint('tolerance_cp IS NULL OR tolerance_cp >= 0', name=op.f('ck_standardisation_response_tolerance')),
    sa.ForeignKeyConstraint(['created_by'], ['app_user.id'], name=op.f('fk_standardisation_response_created_by_app_user')),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_standardisation_response_item_id_item')),
    sa.ForeignKeyConstraint(['response_id'], ['response.id'], name=op.f('fk_standardisation_response_response_id_response')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_standardisation_response')),
    sa.UniqueConstraint('response_id', name=op.f('uq_standardisation_response_response_id'))
    )
    with op.batch_alter_table('standardisation_response', schema=None) as batch_op:
        batch_op.create_index('ix_standardisation_response_item_purpose', ['item_id', 'purpose'], unique=False)

    op.create_table('calibration_result',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('mark_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('seed', 'self_check', 'qualification', 'practice', name='calibration_result_kind', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('score_cp', sa.Integer(), nullable=False),
    sa.Column('reference_cp', sa.Integer(), nullable=False),
    sa.Column('tolerance_cp', sa.Integer(), nullable=False),
    sa.Column('within', sa.Boolean(), nullable=False),
    sa.Column('qualification_id', sa.Integer(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_calibration_result_item_id_item')),
    sa.ForeignKeyConstraint(['mark_id'], ['mark.id'], name=op.f('fk_calibration_result_mark_id_mark')),
    sa.ForeignKeyConstraint(['qualification_id'], ['qualification.id'], name=op.f('fk_calibration_result_qualification_id_qualification')),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_calibration_result_user_id_app_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_calibration_result')),
    sa.UniqueConstraint('mark_id', name=op.f('uq_calibration_result_mark_id'))
    )
    with op.batch_alter_table('calibration_result', schema=None) as batch_op:
        batch_op.create_index('ix_calibration_result_marker', ['user_id', 'item_id', 'kind', 'id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('calibration_result', schema=None) as batch_op:
        batch_op.drop_index('ix_calibration_result_marker')

    op.drop_table('calibration_result')
    with op.batch_alter_table('standardisation_response', schema=None) as batch_op:
        batch_op.drop_index('ix_standardisation_response_item_purpose')

    op.drop_table('standardisation_response')
    with op.batch_alter_table('marker_suspension', schema=None) as batch_op:
        batch_op.drop_index('ix_marker_suspension_user_item')

    op.drop_table('marker_suspension')
    op.drop_table('calibration_setting')
