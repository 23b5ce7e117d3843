"""core schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa

from marking.models.base import UTCDateTime
from marking.ledger_guards import GENESIS_HASH, drop_statements, install_statements


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('app_user',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=120), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('qualification_level', sa.Integer(), nullable=False),
    sa.Column('school_code', sa.String(length=20), nullable=True),
    sa.Column('region_code', sa.String(length=20), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('totp_secret', sa.String(length=64), nullable=True),
    sa.Column('locale', sa.String(length=10), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('last_failed_at', UTCDateTime(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('failed_logins >= 0', name=op.f('ck_app_user_failed_logins')),
    sa.CheckConstraint('qualification_level BETWEEN 0 AND 3', name=op.f('ck_app_user_qualification_level')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_app_user')),
    sa.UniqueConstraint('username', name=op.f('uq_app_user_username'))
    )
    op.create_table('card_template',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=60), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_card_template')),
    sa.UniqueConstraint('code', 'version', name=op.f('uq_card_template_code_version')),
    sa.UniqueConstraint('content_hash', name=op.f('uq_card_template_content_hash'))
    )
    op.create_table('exam_session',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.Enum('self_taught', 'open_university', name='session_kind', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('sitting', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('setup', 'live', 'closed', name='session_status', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('sitting IN (1, 2, 3, 4)', name=op.f('ck_exam_session_sitting')),
    sa.CheckConstraint('year BETWEEN 2000 AND 2099', name=op.f('ck_exam_session_year')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_exam_session')),
    sa.UniqueConstraint('code', name=op.f('uq_exam_session_code'))
    )
    op.create_table('ledger_event',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('at', sa.String(length=32), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=48), nullable=False),
    sa.Column('entity', sa.String(length=32), nullable=False),
    sa.Column('entity_id', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=40), nullable=True),
    sa.Column('data', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.CheckConstraint('seq >= 1', name=op.f('ck_ledger_event_seq_positive')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_ledger_event')),
    sa.UniqueConstraint('hash', name=op.f('uq_ledger_event_hash'))
    )
    with op.batch_alter_table('ledger_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ledger_event_action'), ['action'], unique=False)

    op.create_table('ledger_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_ledger_head_single_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_head'))
    )
    op.create_table('outbox_event',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('topic', sa.String(length=60), nullable=False),
    sa.Column('name', sa.String(length=60), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_event'))
    )
    with op.batch_alter_table('outbox_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_event_topic'), ['topic'], unique=False)

    op.create_table('resolution_policy',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=60), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('params', sa.Text(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_resolution_policy')),
    sa.UniqueConstraint('name', 'version', name=op.f('uq_resolution_policy_name_version'))
    )
    op.create_table('candidate',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('candidate_no', sa.String(length=12), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('school_code', sa.String(length=20), nullable=True),
    sa.Column('region_code', sa.String(length=20), nullable=True),
    sa.Column('programme', sa.String(length=60), nullable=True),
    sa.CheckConstraint('length(candidate_no) = 12', name=op.f('ck_candidate_candidate_no_length')),
    sa.ForeignKeyConstraint(['session_id'], ['exam_session.id'], name=op.f('fk_candidate_session_id_exam_session')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_candidate')),
    sa.UniqueConstraint('session_id', 'candidate_no', name=op.f('uq_candidate_session_id_candidate_no'))
    )
    op.create_table('exclusion',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('school', 'region', 'candidate', name='exclusion_kind', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('value', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_exclusion_user_id_app_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_exclusion')),
    sa.UniqueConstraint('user_id', 'kind', 'value', name=op.f('uq_exclusion_user_id_kind_value'))
    )
    op.create_table('login_session',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('last_seen_at', UTCDateTime(), nullable=False),
    sa.Column('expires_at', UTCDateTime(), nullable=False),
    sa.Column('revoked_at', UTCDateTime(), nullable=True),
    sa.Column('revoked_reason', sa.String(length=40), nullable=True),
    sa.Column('mfa_passed', sa.Boolean(), nullable=False),
    sa.Column('ip', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=300), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_login_session_user_id_app_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_session'))
    )
    with op.batch_alter_table('login_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_login_session_user_id'), ['user_id'], unique=False)

    op.create_table('subject',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=20), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('card_template_id', sa.Integer(), nullable=True),
    sa.Column('pass_mark_cp', sa.Integer(), nullable=False),
    sa.Column('total_rounding', sa.Enum('half_up', 'half_even', 'floor', 'ceiling', name='total_rounding', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('total_places', sa.Integer(), nullable=False),
    sa.Column('process_weight_pm', sa.Integer(), nullable=True),
    sa.Column('double_pass', sa.Boolean(), nullable=False),
    sa.Column('pass_band_cp', sa.Integer(), nullable=False),
    sa.CheckConstraint('pass_mark_cp >= 0', name=op.f('ck_subject_pass_mark')),
    sa.CheckConstraint('process_weight_pm IS NULL OR process_weight_pm BETWEEN 0 AND 1000', name=op.f('ck_subject_process_weight')),
    sa.CheckConstraint('total_places BETWEEN 0 AND 2', name=op.f('ck_subject_total_places')),
    sa.ForeignKeyConstraint(['card_template_id'], ['card_template.id'], name=op.f('fk_subject_card_template_id_card_template')),
    sa.ForeignKeyConstraint(['session_id'], ['exam_session.id'], name=op.f('fk_subject_session_id_exam_session')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subject')),
    sa.UniqueConstraint('session_id', 'code', name=op.f('uq_subject_session_id_code'))
    )
    op.create_table('user_role',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.Enum('marker', 'team_leader', 'technician', 'key_officer', 'authority_officer', 'admin', name='role', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_user_role_user_id_app_user')),
    sa.PrimaryKeyConstraint('user_id', 'role', name=op.f('pk_user_role'))
    )
    op.create_table('answer_key',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('status', sa.Enum('draft', 'signed_off', 'locked', 'superseded', name='key_status', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('entered_by', sa.Integer(), nullable=False),
    sa.Column('locked_hash', sa.String(length=64), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('locked_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['entered_by'], ['app_user.id'], name=op.f('fk_answer_key_entered_by_app_user')),
    sa.ForeignKeyConstraint(['subject_id'], ['subject.id'], name=op.f('fk_answer_key_subject_id_subject')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_answer_key')),
    sa.UniqueConstraint('subject_id', 'version', name=op.f('uq_answer_key_subject_id_version'))
    )
    op.create_table('item',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=20), nullable=False),
    sa.Column('ordinal', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('objective', 'subjective', name='item_kind', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('max_cp', sa.Integer(), nullable=False),
    sa.Column('options', sa.String(length=26), nullable=True),
    sa.Column('multi_select', sa.Boolean(), nullable=False),
    sa.Column('multi_rule', sa.Enum('all_or_nothing', 'partial_subset', name='multi_rule', native_enum=False, create_constraint=True, length=24), nullable=True),
    sa.Column('partial_cp', sa.Integer(), nullable=True),
    sa.Column('step_cp', sa.Integer(), nullable=True),
    sa.Column('threshold_cp', sa.Integer(), nullable=True),
    sa.Column('double_marked', sa.Boolean(), nullable=False),
    sa.Column('policy_id', sa.Integer(), nullable=True),
    sa.Column('required_qualification', sa.Integer(), nullable=False),
    sa.Column('daily_cap', sa.Integer(), nullable=True),
    sa.CheckConstraint("(kind = 'objective' AND options IS NOT NULL AND length(options) >= 2) OR (kind = 'subjective' AND step_cp IS NOT NULL AND step_cp > 0  AND threshold_cp IS NOT NULL AND threshold_cp >= 0)", name=op.f('ck_item_kind_fields')),
    sa.CheckConstraint('daily_cap IS NULL OR daily_cap > 0', name=op.f('ck_item_daily_cap')),
    sa.CheckConstraint('max_cp > 0', name=op.f('ck_item_max_positive')),
    sa.CheckConstraint('partial_cp IS NULL OR (partial_cp >= 0 AND partial_cp <= max_cp)', name=op.f('ck_item_partial_range')),
    sa.CheckConstraint('required_qualification BETWEEN 0 AND 3', name=op.f('ck_item_qualification')),
    sa.ForeignKeyConstraint(['policy_id'], ['resolution_policy.id'], name=op.f('fk_item_policy_id_resolution_policy')),
    sa.ForeignKeyConstraint(['subject_id'], ['subject.id'], name=op.f('fk_item_subject_id_subject')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_item')),
    sa.UniqueConstraint('subject_id', 'code', name=op.f('uq_item_subject_id_code'))
    )
    op.create_table('process_score',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('candidate_id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.Column('score_cp', sa.Integer(), nullable=False),
    sa.Column('confirmed', sa.Boolean(), nullable=False),
    sa.Column('imported_by', sa.Integer(), nullable=True),
    sa.Column('imported_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('score_cp BETWEEN 0 AND 10000', name=op.f('ck_process_score_score_range')),
    sa.ForeignKeyConstraint(['candidate_id'], ['candidate.id'], name=op.f('fk_process_score_candidate_id_candidate')),
    sa.ForeignKeyConstraint(['imported_by'], ['app_user.id'], name=op.f('fk_process_score_imported_by_app_user')),
    sa.ForeignKeyConstraint(['subject_id'], ['subject.id'], name=op.f('fk_process_score_subject_id_subject')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_process_score')),
    sa.UniqueConstraint('candidate_id', 'subject_id', name=op.f('uq_process_score_candidate_id_subject_id'))
    )
    op.create_table('registration',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('candidate_id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['candidate_id'], ['candidate.id'], name=op.f('fk_registration_candidate_id_candidate')),
    sa.ForeignKeyConstraint(['subject_id'], ['subject.id'], name=op.f('fk_registration_subject_id_subject')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registration')),
    sa.UniqueConstraint('candidate_id', 'subject_id', name=op.f('uq_registration_candidate_id_subject_id'))
    )
    with op.batch_alter_table('registration', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_registration_subject_id'), ['subject_id'], unique=False)

    op.create_table('scan_batch',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('scanner_id', sa.String(length=40), nullable=True),
    sa.Column('status', sa.Enum('ingesting', 'reading', 'review', 'closed', name='batch_status', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('card_template_id', sa.Integer(), nullable=False),
    sa.Column('template_hash', sa.String(length=64), nullable=False),
    sa.Column('recognition_version', sa.String(length=40), nullable=False),
    sa.Column('settings_hash', sa.String(length=64), nullable=False),
    sa.Column('manifest_sha256', sa.String(length=64), nullable=True),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('closed_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['card_template_id'], ['card_template.id'], name=op.f('fk_scan_batch_card_template_id_card_template')),
    sa.ForeignKeyConstraint(['created_by'], ['app_user.id'], name=op.f('fk_scan_batch_created_by_app_user')),
    sa.ForeignKeyConstraint(['subject_id'], ['subject.id'], name=op.f('fk_scan_batch_subject_id_subject')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scan_batch')),
    sa.UniqueConstraint('subject_id', 'code', name=op.f('uq_scan_batch_subject_id_code'))
    )
    op.create_table('answer_key_signoff',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('as_role', sa.Enum('reviewer', 'authority_officer', name='signoff_role', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('signed_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['key_id'], ['answer_key.id'], name=op.f('fk_answer_key_signoff_key_id_answer_key')),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_answer_key_signoff_user_id_app_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_answer_key_signoff')),
    sa.UniqueConstraint('key_id', 'user_id', name=op.f('uq_answer_key_signoff_key_id_user_id'))
    )
    op.create_table('item_duty',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('duty', sa.Enum('marker', 'team_leader', 'reviewer', name='duty', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('status', sa.Enum('pending_qualification', 'active', 'suspended', name='duty_status', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('status_reason', sa.String(length=200), nullable=True),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_item_duty_item_id_item')),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_item_duty_user_id_app_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_item_duty')),
    sa.UniqueConstraint('item_id', 'user_id', 'duty', name=op.f('uq_item_duty_item_id_user_id_duty'))
    )
    op.create_table('marking_scheme',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('descriptors', sa.Text(), nullable=False),
    sa.Column('status', sa.Enum('draft', 'pending_approval', 'frozen', 'superseded', name='scheme_status', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=False),
    sa.Column('approved_by', sa.Integer(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('approved_at', UTCDateTime(), nullable=True),
    sa.CheckConstraint('approved_by IS NULL OR approved_by <> created_by', name=op.f('ck_marking_scheme_two_people')),
    sa.ForeignKeyConstraint(['approved_by'], ['app_user.id'], name=op.f('fk_marking_scheme_approved_by_app_user')),
    sa.ForeignKeyConstraint(['created_by'], ['app_user.id'], name=op.f('fk_marking_scheme_created_by_app_user')),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_marking_scheme_item_id_item')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_marking_scheme')),
    sa.UniqueConstraint('item_id', 'version', name=op.f('uq_marking_scheme_item_id_version'))
    )
    op.create_table('page_image',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('source_name', sa.String(length=400), nullable=False),
    sa.Column('source_page', sa.Integer(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('status', sa.Enum('accepted', 'rejected', 'duplicate', name='page_status', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('reject_reason', sa.String(length=200), nullable=True),
    sa.Column('duplicate_of_id', sa.Integer(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint("status <> 'rejected' OR reject_reason IS NOT NULL", name=op.f('ck_page_image_reject_reason')),
    sa.ForeignKeyConstraint(['batch_id'], ['scan_batch.id'], name=op.f('fk_page_image_batch_id_scan_batch')),
    sa.ForeignKeyConstraint(['duplicate_of_id'], ['page_image.id'], name=op.f('fk_page_image_duplicate_of_id_page_image')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_page_image'))
    )
    with op.batch_alter_table('page_image', schema=None) as batch_op:
        batch_op.create_index('ix_page_image_batch_sha', ['batch_id', 'sha256'], unique=False)

    op.create_table('qualification',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'passed', 'failed', 'revoked', name='qualification_status', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('decided_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_qualification_item_id_item')),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_qualification_user_id_app_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_qualification')),
    sa.UniqueConstraint('user_id', 'item_id', 'attempt', name=op.f('uq_qualification_user_id_item_id_attempt'))
    )
    op.create_table('script',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.Column('candidate_id', sa.Integer(), nullable=True),
    sa.Column('batch_id', sa.Integer(), nullable=True),
    sa.Column('anon_code', sa.String(length=24), nullable=False),
    sa.Column('status', sa.Enum('scanned', 'marking', 'complete', 'void', name='script_status', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('absent', sa.Boolean(), nullable=False),
    sa.Column('objective_cp', sa.Integer(), nullable=True),
    sa.Column('total_num', sa.Integer(), nullable=True),
    sa.Column('total_den', sa.Integer(), nullable=True),
    sa.Column('total_rounded', sa.String(length=12), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('total_den IS NULL OR total_den > 0', name=op.f('ck_script_total_den')),
    sa.ForeignKeyConstraint(['batch_id'], ['scan_batch.id'], name=op.f('fk_script_batch_id_scan_batch')),
    sa.ForeignKeyConstraint(['candidate_id'], ['candidate.id'], name=op.f('fk_script_candidate_id_candidate')),
    sa.ForeignKeyConstraint(['subject_id'], ['subject.id'], name=op.f('fk_script_subject_id_subject')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_script')),
    sa.UniqueConstraint('anon_code', name=op.f('uq_script_anon_code')),
    sa.UniqueConstraint('subject_id', 'candidate_id', name=op.f('uq_script_subject_id_candidate_id'))
    )
    with op.batch_alter_table('script', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_script_subject_id'), ['subject_id'], unique=False)

    op.create_table('card',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('page_image_id', sa.Integer(), nullable=False),
    sa.Column('page_code', sa.Integer(), nullable=True),
    sa.Column('status', sa.Enum('reading', 'agreed', 'exception', 'resolved', 'void', name='card_status', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('accepted_reading', sa.Text(), nullable=True),
    sa.Column('script_id', sa.Integer(), nullable=True),
    sa.Column('rescan_of_id', sa.Integer(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['scan_batch.id'], name=op.f('fk_card_batch_id_scan_batch')),
    sa.ForeignKeyConstraint(['page_image_id'], ['page_image.id'], name=op.f('fk_card_page_image_id_page_image')),
    sa.ForeignKeyConstraint(['rescan_of_id'], ['card.id'], name=op.f('fk_card_rescan_of_id_card')),
    sa.ForeignKeyConstraint(['script_id'], ['script.id'], name=op.f('fk_card_script_id_script')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_card')),
    sa.UniqueConstraint('page_image_id', name=op.f('uq_card_page_image_id'))
    )
    with op.batch_alter_table('card', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_card_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_card_script_id'), ['script_id'], unique=False)

    op.create_table('objective_answer',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('script_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('key_id', sa.Integer(), nullable=False),
    sa.Column('chosen', sa.String(length=26), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('score_cp', sa.Integer(), nullable=False),
    sa.CheckConstraint('score_cp >= 0', name=op.f('ck_objective_answer_score')),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_objective_answer_item_id_item')),
    sa.ForeignKeyConstraint(['key_id'], ['answer_key.id'], name=op.f('fk_objective_answer_key_id_answer_key')),
    sa.ForeignKeyConstraint(['script_id'], ['script.id'], name=op.f('fk_objective_answer_script_id_script')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_objective_answer')),
    sa.UniqueConstraint('script_id', 'item_id', 'key_id', name=op.f('uq_objective_answer_script_id_item_id_key_id'))
    )
    op.create_table('response',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('script_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('image_sha256', sa.String(length=64), nullable=True),
    sa.Column('ink_density_pm', sa.Integer(), nullable=True),
    sa.Column('preflags', sa.Text(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'marking', 'third', 'arbitration', 'resolved', 'problem', 'void', name='response_status', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('final_num', sa.Integer(), nullable=True),
    sa.Column('final_den', sa.Integer(), nullable=True),
    sa.Column('resolved_at', UTCDateTime(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint("(status = 'resolved') = (final_num IS NOT NULL)", name=op.f('ck_response_final_iff_resolved')),
    sa.CheckConstraint('final_den IS NULL OR final_den > 0', name=op.f('ck_response_final_den')),
    sa.CheckConstraint('final_num IS NULL OR final_num >= 0', name=op.f('ck_response_final_num')),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_response_item_id_item')),
    sa.ForeignKeyConstraint(['script_id'], ['script.id'], name=op.f('fk_response_script_id_script')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_response')),
    sa.UniqueConstraint('script_id', 'item_id', name=op.f('uq_response_script_id_item_id'))
    )
    with op.batch_alter_table('response', schema=None) as batch_op:
        batch_op.create_index('ix_response_item_status', ['item_id', 'status'], unique=False)

    op.create_table('review_request',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('script_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('open', 'closed', name='review_request_status', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('outcome', sa.Text(), nullable=True),
    sa.Column('recorded_by', sa.Integer(), nullable=True),
    sa.Column('handled_by', sa.Integer(), nullable=True),
    sa.Column('requested_at', UTCDateTime(), nullable=False),
    sa.Column('closed_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['handled_by'], ['app_user.id'], name=op.f('fk_review_request_handled_by_app_user')),
    sa.ForeignKeyConstraint(['recorded_by'], ['app_user.id'], name=op.f('fk_review_request_recorded_by_app_user')),
    sa.ForeignKeyConstraint(['script_id'], ['script.id'], name=op.f('fk_review_request_script_id_script')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_request'))
    )
    op.create_table('mark_task',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('response_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('slot', sa.Enum('first', 'second', 'third', 'arbitration', 'review', 'extra', 'seed', 'self_check', 'qualification', 'practice', 'trial', name='slot', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('status', sa.Enum('open', 'leased', 'done', 'cancelled', name='task_status', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('reserved_for', sa.Integer(), nullable=True),
    sa.Column('marker_id', sa.Integer(), nullable=True),
    sa.Column('lease_token', sa.String(length=36), nullable=True),
    sa.Column('leased_until', UTCDateTime(), nullable=True),
    sa.Column('claimed_at', UTCDateTime(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint("status <> 'leased' OR (lease_token IS NOT NULL AND marker_id IS NOT NULL)", name=op.f('ck_mark_task_lease_has_token')),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_mark_task_item_id_item')),
    sa.ForeignKeyConstraint(['marker_id'], ['app_user.id'], name=op.f('fk_mark_task_marker_id_app_user')),
    sa.ForeignKeyConstraint(['reserved_for'], ['app_user.id'], name=op.f('fk_mark_task_reserved_for_app_user')),
    sa.ForeignKeyConstraint(['response_id'], ['response.id'], name=op.f('fk_mark_task_response_id_response')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mark_task'))
    )
    with op.batch_alter_table('mark_task', schema=None) as batch_op:
        batch_op.create_index('ix_mark_task_dispatch', ['item_id', 'status', 'slot', 'id'], unique=False)
        batch_op.create_index('uq_mark_task_live_slot', ['response_id', 'slot'], unique=True, sqlite_where=sa.text("slot IN ('first', 'second', 'third', 'arbitration', 'review', 'extra') AND status <> 'cancelled'"), postgresql_where=sa.text("slot IN ('first', 'second', 'third', 'arbitration', 'review', 'extra') AND status <> 'cancelled'"))

    op.create_table('omr_read',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('card_id', sa.Integer(), nullable=False),
    sa.Column('read_no', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=1), nullable=False),
    sa.Column('node', sa.String(length=40), nullable=True),
    sa.Column('status', sa.Enum('pending', 'leased', 'done', 'failed', name='read_status', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('lease_token', sa.String(length=36), nullable=True),
    sa.Column('leased_until', UTCDateTime(), nullable=True),
    sa.Column('heartbeat_at', UTCDateTime(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('result', sa.Text(), nullable=True),
    sa.Column('result_sha256', sa.String(length=64), nullable=True),
    sa.Column('error', sa.String(length=400), nullable=True),
    sa.Column('completed_at', UTCDateTime(), nullable=True),
    sa.CheckConstraint("(read_no = 1 AND method = 'a') OR (read_no = 2 AND method = 'b')", name=op.f('ck_omr_read_method_per_read')),
    sa.CheckConstraint("status <> 'leased' OR (lease_token IS NOT NULL AND node IS NOT NULL)", name=op.f('ck_omr_read_lease_has_token')),
    sa.CheckConstraint('read_no IN (1, 2)', name=op.f('ck_omr_read_read_no')),
    sa.ForeignKeyConstraint(['card_id'], ['card.id'], name=op.f('fk_omr_read_card_id_card')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_omr_read')),
    sa.UniqueConstraint('card_id', 'node', name=op.f('uq_omr_read_card_id_node')),
    sa.UniqueConstraint('card_id', 'read_no', name=op.f('uq_omr_read_card_id_read_no'))
    )
    with op.batch_alter_table('omr_read', schema=None) as batch_op:
        batch_op.create_index('ix_omr_read_claim', ['status', 'leased_until'], unique=False)

    op.create_table('register_entry',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('register', sa.Enum('problem', 'abnormal', 'omr_exception', 'id_correction', 'damaged_card', 'rescan', 'review_dispute', name='register', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('status', sa.Enum('open', 'proposed', 'confirmed', 'decided', 'closed', name='register_status', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('reason_code', sa.String(length=40), nullable=False),
    sa.Column('card_id', sa.Integer(), nullable=True),
    sa.Column('script_id', sa.Integer(), nullable=True),
    sa.Column('response_id', sa.Integer(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('before', sa.Text(), nullable=True),
    sa.Column('after', sa.Text(), nullable=True),
    sa.Column('raised_by', sa.Integer(), nullable=True),
    sa.Column('proposed_by', sa.Integer(), nullable=True),
    sa.Column('confirmed_by', sa.Integer(), nullable=True),
    sa.Column('decided_by', sa.Integer(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('decided_at', UTCDateTime(), nullable=True),
    sa.CheckConstraint('confirmed_by IS NULL OR proposed_by IS NULL OR confirmed_by <> proposed_by', name=op.f('ck_register_entry_two_people')),
    sa.ForeignKeyConstraint(['card_id'], ['card.id'], name=op.f('fk_register_entry_card_id_card')),
    sa.ForeignKeyConstraint(['confirmed_by'], ['app_user.id'], name=op.f('fk_register_entry_confirmed_by_app_user')),
    sa.ForeignKeyConstraint(['decided_by'], ['app_user.id'], name=op.f('fk_register_entry_decided_by_app_user')),
    sa.ForeignKeyConstraint(['proposed_by'], ['app_user.id'], name=op.f('fk_register_entry_proposed_by_app_user')),
    sa.ForeignKeyConstraint(['raised_by'], ['app_user.id'], name=op.f('fk_register_entry_raised_by_app_user')),
    sa.ForeignKeyConstraint(['response_id'], ['response.id'], name=op.f('fk_register_entry_response_id_response')),
    sa.ForeignKeyConstraint(['script_id'], ['script.id'], name=op.f('fk_register_entry_script_id_script')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_register_entry'))
    )
    with op.batch_alter_table('register_entry', schema=None) as batch_op:
        batch_op.create_index('ix_register_entry_open', ['register', 'status'], unique=False)

    op.create_table('resolution',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('response_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('policy_id', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.Enum('single', 'agreed', 'third_resolved', 'arbitrated', 'review_changed', 'changed', 'requeued', name='resolution_outcome', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('inputs', sa.Text(), nullable=False),
    sa.Column('final_num', sa.Integer(), nullable=False),
    sa.Column('final_den', sa.Integer(), nullable=False),
    sa.Column('decided_by', sa.Integer(), nullable=True),
    sa.Column('decided_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('final_den > 0', name=op.f('ck_resolution_final_den')),
    sa.ForeignKeyConstraint(['decided_by'], ['app_user.id'], name=op.f('fk_resolution_decided_by_app_user')),
    sa.ForeignKeyConstraint(['policy_id'], ['resolution_policy.id'], name=op.f('fk_resolution_policy_id_resolution_policy')),
    sa.ForeignKeyConstraint(['response_id'], ['response.id'], name=op.f('fk_resolution_response_id_response')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_resolution')),
    sa.UniqueConstraint('response_id', 'version', name=op.f('uq_resolution_response_id_version'))
    )
    op.create_table('review_sample',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('response_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=40), nullable=False),
    sa.Column('seed', sa.String(length=64), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_review_sample_item_id_item')),
    sa.ForeignKeyConstraint(['response_id'], ['response.id'], name=op.f('fk_review_sample_response_id_response')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_sample')),
    sa.UniqueConstraint('response_id', name=op.f('uq_review_sample_response_id'))
    )
    with op.batch_alter_table('review_sample', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_sample_day'), ['day'], unique=False)

    op.create_table('score_change',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('script_id', sa.Integer(), nullable=False),
    sa.Column('response_id', sa.Integer(), nullable=True),
    sa.Column('item_id', sa.Integer(), nullable=True),
    sa.Column('before_num', sa.Integer(), nullable=False),
    sa.Column('before_den', sa.Integer(), nullable=False),
    sa.Column('after_num', sa.Integer(), nullable=False),
    sa.Column('after_den', sa.Integer(), nullable=False),
    sa.Column('reason_code', sa.String(length=32), nullable=False),
    sa.Column('note', sa.String(length=400), nullable=False),
    sa.Column('crosses_pass_mark', sa.Boolean(), nullable=False),
    sa.Column('status', sa.Enum('pending_authority', 'applied', 'rejected', name='change_status', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('requested_by', sa.Integer(), nullable=False),
    sa.Column('approved_by', sa.Integer(), nullable=True),
    sa.Column('requested_at', UTCDateTime(), nullable=False),
    sa.Column('decided_at', UTCDateTime(), nullable=True),
    sa.CheckConstraint('approved_by IS NULL OR approved_by <> requested_by', name=op.f('ck_score_change_two_people')),
    sa.CheckConstraint('before_den > 0 AND after_den > 0', name=op.f('ck_score_change_dens')),
    sa.ForeignKeyConstraint(['approved_by'], ['app_user.id'], name=op.f('fk_score_change_approved_by_app_user')),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_score_change_item_id_item')),
    sa.ForeignKeyConstraint(['requested_by'], ['app_user.id'], name=op.f('fk_score_change_requested_by_app_user')),
    sa.ForeignKeyConstraint(['response_id'], ['response.id'], name=op.f('fk_score_change_response_id_response')),
    sa.ForeignKeyConstraint(['script_id'], ['script.id'], name=op.f('fk_score_change_script_id_script')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_score_change'))
    )
    with op.batch_alter_table('score_change', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_score_change_script_id'), ['script_id'], unique=False)

    op.create_table('spot_check',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('card_id', sa.Integer(), nullable=False),
    sa.Column('checked_by', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.Enum('pending', 'confirmed', 'discrepancy', name='spot_outcome', native_enum=False, create_constraint=True, length=24), nullable=True),
    sa.Column('note', sa.String(length=400), nullable=False),
    sa.Column('checked_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['card_id'], ['card.id'], name=op.f('fk_spot_check_card_id_card')),
    sa.ForeignKeyConstraint(['checked_by'], ['app_user.id'], name=op.f('fk_spot_check_checked_by_app_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_spot_check')),
    sa.UniqueConstraint('card_id', name=op.f('uq_spot_check_card_id'))
    )
    op.create_table('mark',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('response_id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('marker_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('first', 'second', 'third', 'arbitration', 'review', 'extra', 'seed', 'self_check', 'qualification', 'practice', 'trial', name='mark_kind', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('score_cp', sa.Integer(), nullable=False),
    sa.Column('condition_code', sa.Enum('NR', 'OT', 'IL', 'RF', name='condition_code', native_enum=False, create_constraint=True, length=24), nullable=True),
    sa.Column('flags', sa.Text(), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('started_at', UTCDateTime(), nullable=True),
    sa.Column('submitted_at', UTCDateTime(), nullable=False),
    sa.Column('dwell_ms', sa.Integer(), nullable=True),
    sa.CheckConstraint('condition_code IS NULL OR score_cp = 0', name=op.f('ck_mark_code_means_zero')),
    sa.CheckConstraint('dwell_ms IS NULL OR dwell_ms >= 0', name=op.f('ck_mark_dwell')),
    sa.CheckConstraint('score_cp >= 0', name=op.f('ck_mark_score_non_negative')),
    sa.ForeignKeyConstraint(['marker_id'], ['app_user.id'], name=op.f('fk_mark_marker_id_app_user')),
    sa.ForeignKeyConstraint(['response_id'], ['response.id'], name=op.f('fk_mark_response_id_response')),
    sa.ForeignKeyConstraint(['task_id'], ['mark_task.id'], name=op.f('fk_mark_task_id_mark_task')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mark')),
    sa.UniqueConstraint('marker_id', 'request_id', name=op.f('uq_mark_marker_id_request_id')),
    sa.UniqueConstraint('task_id', name=op.f('uq_mark_task_id'))
    )
    with op.batch_alter_table('mark', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mark_marker_id'), ['marker_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_mark_response_id'), ['response_id'], unique=False)
        batch_op.create_index('uq_mark_response_marker', ['response_id', 'marker_id'], unique=True, sqlite_where=sa.text("kind <> 'self_check'"), postgresql_where=sa.text("kind <> 'self_check'"))


    # Ledger guards (R-SEC-2) and the genesis head row the first append locks.
    dialect = op.get_bind().dialect.name
    for statement in install_statements(dialect):
        op.execute(statement)
    op.execute(sa.text("INSERT INTO ledger_head (id, seq, hash) VALUES (1, 0, :h)").bindparams(h=GENESIS_HASH))


def downgrade() -> None:
    for statement in drop_statements(op.get_bind().dialect.name):
        op.execute(statement)
    with op.batch_alter_table('mark', schema=None) as batch_op:
        batch_op.drop_index('uq_mark_response_marker', sqlite_where=sa.text("kind <> 'self_check'"), postgresql_where=sa.text("kind <> 'self_check'"))
        batch_op.drop_index(batch_op.f('ix_mark_response_id'))
        batch_op.drop_index(batch_op.f('ix_mark_marker_id'))

    op.drop_table('mark')
    op.drop_table('spot_check')
    with op.batch_alter_table('score_change', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_score_change_script_id'))

    op.drop_table('score_change')
    with op.batch_alter_table('review_sample', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_review_sample_day'))

    op.drop_table('review_sample')
    op.drop_table('resolution')
    with op.batch_alter_table('register_entry', schema=None) as batch_op:
        batch_op.drop_index('ix_register_entry_open')

    op.drop_table('register_entry')
    with op.batch_alter_table('omr_read', schema=None) as batch_op:
        batch_op.drop_index('ix_omr_read_claim')

    op.drop_table('omr_read')
    with op.batch_alter_table('mark_task', schema=None) as batch_op:
        batch_op.drop_index('uq_mark_task_live_slot', sqlite_where=sa.text("slot IN ('first', 'second', 'third', 'arbitration', 'review', 'extra') AND status <> 'cancelled'"), postgresql_where=sa.text("slot IN ('first', 'second', 'third', 'arbitration', 'review', 'extra') AND status <> 'cancelled'"))
        batch_op.drop_index('ix_mark_task_dispatch')

    op.drop_table('mark_task')
    op.drop_table('review_request')
    with op.batch_alter_table('response', schema=None) as batch_op:
        batch_op.drop_index('ix_response_item_status')

    op.drop_table('response')
    op.drop_table('objective_answer')
    with op.batch_alter_table('card', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_card_script_id'))
        batch_op.drop_index(batch_op.f('ix_card_batch_id'))

    op.drop_table('card')
    with op.batch_alter_table('script', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_script_subject_id'))

    op.drop_table('script')
    op.drop_table('qualification')
    with op.batch_alter_table('page_image', schema=None) as batch_op:
        batch_op.drop_index('ix_page_image_batch_sha')

    op.drop_table('page_image')
    op.drop_table('marking_scheme')
    op.drop_table('item_duty')
    op.drop_table('answer_key_signoff')
    op.drop_table('scan_batch')
    with op.batch_alter_table('registration', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_registration_subject_id'))

    op.drop_table('registration')
    op.drop_table('process_score')
    op.drop_table('item')
    op.drop_table('answer_key')
    op.drop_table('user_role')
    op.drop_table('subject')
    with op.batch_alter_table('login_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_login_session_user_id'))

    op.drop_table('login_session')
    op.drop_table('exclusion')
    op.drop_table('candidate')
    op.drop_table('resolution_policy')
    with op.batch_alter_table('outbox_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_event_topic'))

    op.drop_table('outbox_event')
    op.drop_table('ledger_head')
    with op.batch_alter_table('ledger_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ledger_event_action'))

    op.drop_table('ledger_event')
    op.drop_table('exam_session')
    op.drop_table('card_template')
    op.drop_table('app_user')
