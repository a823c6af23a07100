"""Step leases: which task holds a job's step, and until when.

A live step never outlives its hard time limit, so a lease of that length (renewed by progress)
tells a redelivery of the same message, or an abandoned step, from a duplicate run.

Revision ID: 0003
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("task_id", sa.String(200)))
    op.add_column("jobs", sa.Column("lease_until", sa.DateTime(timezone=True)))
    op.create_index("ix_jobs_state_lease", "jobs", ["state", "lease_until"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state_lease", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("task_id")
