"""Storage rotation and tokens: where a job was archived, the rotation's journal, API tokens
and the audit log.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("archive_path", sa.String(1024)))
        batch.add_column(sa.Column("archive_sha256", sa.String(64)))
    op.create_index("ix_jobs_archive_path", "jobs", ["archive_path"])
    op.create_index("ix_jobs_state_finished", "jobs", ["state", "finished_at"])
    _rotation_tables()
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(255)),
        sa.Column("revoked_at", TS),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(255)),
        sa.Column("role", sa.String(16)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])


def _rotation_tables() -> None:
    op.create_table(
        "rotation_runs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("window_key", sa.String(64), unique=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(255)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("dispatched_at", TS),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("cutoffs", sa.JSON, nullable=False),
        sa.Column("job_limit", sa.Integer),
        sa.Column("settings", sa.JSON),
        sa.Column("planned_jobs", sa.BigInteger, nullable=False),
        sa.Column("planned_bytes", sa.BigInteger, nullable=False),
        sa.Column("planned_batches", sa.Integer, nullable=False),
        sa.Column("jobs_done", sa.BigInteger, nullable=False),
        sa.Column("bytes_done", sa.BigInteger, nullable=False),
        sa.Column("batches_done", sa.Integer, nullable=False),
        sa.Column("batches_failed", sa.Integer, nullable=False),
        sa.Column("error", sa.JSON),
        sa.Column("budget_clock", sa.Float),
    )
    op.create_table(
        "rotation_batches",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column("run_id", sa.String(40), sa.ForeignKey("rotation_runs.id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("archive_path", sa.String(1024), nullable=False),
        sa.Column("archive_sha256", sa.String(64)),
        sa.Column("jobs", sa.Integer, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("worker", sa.String(255)),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_rotation_batches_run_id", "rotation_batches", ["run_id"])
    op.create_index("ix_rotation_batches_status", "rotation_batches", ["status"])


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_table("api_tokens")
    op.drop_table("rotation_batches")
    op.drop_table("rotation_runs")
    op.drop_index("ix_jobs_state_finished", "jobs")
    op.drop_index("ix_jobs_archive_path", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("archive_sha256")
        batch.drop_column("archive_path")
