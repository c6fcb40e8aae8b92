"""indexes for lookups by state and time: uploads.state, events.created,
report_files.upload_id, reports (updated, id) for keyset paging

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.create_index("ix_uploads_state", ["state"], unique=False)
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_created", ["created"], unique=False)
    with op.batch_alter_table("report_files", schema=None) as batch_op:
        batch_op.create_index("ix_report_files_upload_id", ["upload_id"], unique=False)
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_index("ix_reports_updated")
        batch_op.create_index("ix_reports_updated_id", ["updated", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_index("ix_reports_updated_id")
        batch_op.create_index("ix_reports_updated", ["updated"], unique=False)
    with op.batch_alter_table("report_files", schema=None) as batch_op:
        batch_op.drop_index("ix_report_files_upload_id")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_created")
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_index("ix_uploads_state")
