"""queue block and agent on tickets

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 02:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queue", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("agent", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_tickets_agent"), ["agent"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tickets_agent"))
        batch_op.drop_column("agent")
        batch_op.drop_column("queue")
