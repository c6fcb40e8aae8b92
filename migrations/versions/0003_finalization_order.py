"""the order of finalizations: uploads.finalize_order, and the paths a later
upload took from an upload whose finalization was cut (superseded_paths)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("finalize_order", sa.BigInteger(), nullable=True))
        batch_op.create_index("ix_uploads_finalize_order", ["finalize_order"], unique=False)
    op.create_table(
        "superseded_paths",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("upload_id", sa.String(length=64), nullable=False),
        sa.Column("relpath", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["upload_id"], ["uploads.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("superseded_paths", schema=None) as batch_op:
        batch_op.create_index("ix_superseded_paths_upload_id", ["upload_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("superseded_paths", schema=None) as batch_op:
        batch_op.drop_index("ix_superseded_paths_upload_id")
    op.drop_table("superseded_paths")
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_index("ix_uploads_finalize_order")
        batch_op.drop_column("finalize_order")
