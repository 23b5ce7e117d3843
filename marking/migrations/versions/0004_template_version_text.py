"""card_template.version as text: templates declare versions such as "1.0"

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('card_template', schema=None) as batch_op:
        batch_op.alter_column('version', existing_type=sa.Integer(), type_=sa.String(length=20),
                              existing_nullable=False, postgresql_using='version::text')


def downgrade() -> None:
    with op.batch_alter_table('card_template', schema=None) as batch_op:
        batch_op.alter_column('version', existing_type=sa.String(length=20), type_=sa.Integer(),
                              existing_nullable=False, postgresql_using='version::integer')
