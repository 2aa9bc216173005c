"""wider caller, called and status: a Voice SDK identity or a SIP URI is longer than 64

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 12:15:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.alter_column("caller", type_=sa.String(255), existing_type=sa.String(64), existing_nullable=False)
        batch_op.alter_column("called", type_=sa.String(255), existing_type=sa.String(64), existing_nullable=False)
        batch_op.alter_column("status", type_=sa.String(32), existing_type=sa.String(16), existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.alter_column("status", type_=sa.String(16), existing_type=sa.String(32), existing_nullable=True)
        batch_op.alter_column("called", type_=sa.String(64), existing_type=sa.String(255), existing_nullable=False)
        batch_op.alter_column("caller", type_=sa.String(64), existing_type=sa.String(255), existing_nullable=False)
