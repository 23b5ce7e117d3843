"""marking engine: assignments (claim history), process parts and changes, dispatch indexes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa

from marking.models.base import UTCDateTime


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('process_part',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('candidate_id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.Column('part', sa.String(length=40), nullable=False),
    sa.Column('score_cp', sa.Integer(), nullable=False),
    sa.Column('weight_pm', sa.Integer(), nullable=False),
    sa.Column('imported_by', sa.Integer(), nullable=True),
    sa.Column('imported_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('score_cp BETWEEN 0 AND 10000', name=op.f('ck_process_part_score_range')),
    sa.CheckConstraint('weight_pm BETWEEN 0 AND 1000', name=op.f('ck_process_part_weight_range')),
    sa.ForeignKeyConstraint(['candidate_id'], ['candidate.id'], name=op.f('fk_process_part_candidate_id_candidate')),
    sa.ForeignKeyConstraint(['imported_by'], ['app_user.id'], name=op.f('fk_process_part_imported_by_app_user')),
    sa.ForeignKeyConstraint(['subject_id'], ['subject.id'], name=op.f('fk_process_part_subject_id_subject')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_process_part')),
    sa.UniqueConstraint('candidate_id', 'subject_id', 'part', name=op.f('uq_process_part_candidate_id_subject_id_part'))
    )
    op.create_table('process_score_change',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('process_score_id', sa.Integer(), nullable=False),
    sa.Column('before_cp', sa.Integer(), nullable=False),
    sa.Column('after_cp', sa.Integer(), nullable=False),
    sa.Column('reason_code', sa.String(length=32), nullable=False),
    sa.Column('note', sa.String(length=400), nullable=False),
    sa.Column('status', sa.Enum('pending', 'applied', 'rejected', name='process_change_status', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('requested_by', sa.Integer(), nullable=False),
    sa.Column('approved_by', sa.Integer(), nullable=True),
    sa.Column('requested_at', UTCDateTime(), nullable=False),
    sa.Column('decided_at', UTCDateTime(), nullable=True),
    sa.CheckConstraint('after_cp BETWEEN 0 AND 10000', name=op.f('ck_process_score_change_after_range')),
    sa.CheckConstraint('approved_by IS NULL OR approved_by <> requested_by', name=op.f('ck_process_score_change_two_people')),
    sa.ForeignKeyConstraint(['approved_by'], ['app_user.id'], name=op.f('fk_process_score_change_approved_by_app_user')),
    sa.ForeignKeyConstraint(['process_score_id'], ['process_score.id'], name=op.f('fk_process_score_change_process_score_id_process_score')),
    sa.ForeignKeyConstraint(['requested_by'], ['app_user.id'], name=op.f('fk_process_score_change_requested_by_app_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_process_score_change'))
    )
    with op.batch_alter_table('process_score_change', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_process_score_change_process_score_id'), ['process_score_id'], unique=False)

    op.create_table('mark_assignment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('response_id', sa.Integer(), nullable=False),
    sa.Column('marker_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('slot', sa.Enum('first', 'second', 'third', 'arbitration', 'review', 'extra', 'seed', 'self_check', 'qualification', 'practice', 'trial', name='assignment_slot', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('claimed_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_mark_assignment_item_id_item')),
    sa.ForeignKeyConstraint(['marker_id'], ['app_user.id'], name=op.f('fk_mark_assignment_marker_id_app_user')),
    sa.ForeignKeyConstraint(['response_id'], ['response.id'], name=op.f('fk_mark_assignment_response_id_response')),
    sa.ForeignKeyConstraint(['task_id'], ['mark_task.id'], name=op.f('fk_mark_assignment_task_id_mark_task')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mark_assignment')),
    sa.UniqueConstraint('response_id', 'marker_id', name=op.f('uq_mark_assignment_response_id_marker_id'))
    )
    with op.batch_alter_table('mark_assignment', schema=None) as batch_op:
        batch_op.create_index('ix_mark_assignment_cap', ['marker_id', 'item_id', 'day'], unique=False)

    with op.batch_alter_table('mark_task', schema=None) as batch_op:
        batch_op.create_index('ix_mark_task_response', ['response_id'], unique=False)
        batch_op.create_index('uq_mark_task_lease_token', ['lease_token'], unique=True)

    with op.batch_alter_table('response', schema=None) as batch_op:
        batch_op.create_index('ix_response_resolved_at', ['resolved_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('response', schema=None) as batch_op:
        batch_op.drop_index('ix_response_resolved_at')

    with op.batch_alter_table('mark_task', schema=None) as batch_op:
        batch_op.drop_index('uq_mark_task_lease_token')
        batch_op.drop_index('ix_mark_task_response')

    with op.batch_alter_table('mark_assignment', schema=None) as batch_op:
        batch_op.drop_index('ix_mark_assignment_cap')

    op.drop_table('mark_assignment')
    with op.batch_alter_table('process_score_change', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_process_score_change_process_score_id'))

    op.drop_table('process_score_change')
    op.drop_table('process_part')
