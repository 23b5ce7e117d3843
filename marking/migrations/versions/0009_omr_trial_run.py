"""omr trial runs (R-OMR-1): the recognition system is tested before live reading

A trial run reads a deck of cards with known markings by both recognition methods and
compares every field with the truth. ``create_batch`` refuses a live batch unless a
passed trial exists for exactly the batch's subject, template hash, recognition version
and settings hash.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22 17:00:00
"""
import sqlalchemy as sa
from alembic import op

from marking.models.base import UTCDateTime

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'omr_trial_run',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('subject_id', sa.Integer(), nullable=False),
        sa.Column('card_template_id', sa.Integer(), nullable=False),
        sa.Column('template_hash', sa.String(length=64), nullable=False),
        sa.Column('recognition_version', sa.String(length=40), nullable=False),
        sa.Column('settings_hash', sa.String(length=64), nullable=False),
        sa.Column('source', sa.Enum('synthetic', 'scans', name='trial_source', native_enum=False,
                                    create_constraint=True, length=24), nullable=False),
        sa.Column('cards_read', sa.Integer(), nullable=False),
        sa.Column('mismatches', sa.Integer(), nullable=False),
        sa.Column('cards_failed', sa.Integer(), nullable=False),
        sa.Column('passed', sa.Boolean(), nullable=False),
        sa.Column('report', sa.Text(), nullable=False),
        sa.Column('report_sha256', sa.String(length=64), nullable=False),
        sa.Column('run_by', sa.Integer(), nullable=False),
        sa.Column('started_at', UTCDateTime(), nullable=False),
        sa.Column('finished_at', UTCDateTime(), nullable=False),
        sa.CheckConstraint('cards_read > 0', name=op.f('ck_omr_trial_run_cards_read')),
        sa.CheckConstraint('mismatches >= 0', name=op.f('ck_omr_trial_run_mismatches')),
        sa.CheckConstraint('cards_failed >= 0 AND cards_failed <= cards_read',
                           name=op.f('ck_omr_trial_run_cards_failed')),
        sa.CheckConstraint('(passed AND mismatches = 0 AND cards_failed = 0) OR '
                           '(NOT passed AND mismatches > 0 AND cards_failed > 0)',
                           name=op.f('ck_omr_trial_run_passed_iff_clean')),
        sa.CheckConstraint('finished_at >= started_at', name=op.f('ck_omr_trial_run_finished_after_start')),
        sa.ForeignKeyConstraint(['subject_id'], ['subject.id'], name=op.f('fk_omr_trial_run_subject_id_subject')),
        sa.ForeignKeyConstraint(['card_template_id'], ['card_template.id'],
                                name=op.f('fk_omr_trial_run_card_template_id_card_template')),
        sa.ForeignKeyConstraint(['run_by'], ['app_user.id'], name=op.f('fk_omr_trial_run_run_by_app_user')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_omr_trial_run')),
    )
    op.create_index('ix_omr_trial_run_frozen', 'omr_trial_run',
                    ['subject_id', 'template_hash', 'recognition_version', 'settings_hash'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_omr_trial_run_frozen', table_name='omr_trial_run')
    op.drop_table('omr_trial_run')
