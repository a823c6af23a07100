"""Table definitions (SQLAlchemy Core: the hot path uses Core, not the ORM)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

batches = Table(
    "batches",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("size", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("summary", JSON),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("batch_id", String(32), ForeignKey("batches.id"), index=True),
    Column("input_name", String(255), nullable=False),
    Column("input_sha256", String(64), nullable=False, index=True),
    Column("input_size", BigInteger, nullable=False),
    Column("params", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("step", String(16)),
    Column("progress", Float, nullable=False, default=0.0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("result", JSON),
    Column("error", JSON),
    Column("task_id", String(200)),
    Column("lease_until", DateTime(timezone=True)),
    Column("archive_path", String(1024), index=True),
    Column("archive_sha256", String(64)),
    Index("ix_jobs_state_updated", "state", "updated_at"),
    Index("ix_jobs_state_lease", "state", "lease_until"),
    Index("ix_jobs_state_finished", "state", "finished_at"),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), ForeignKey("jobs.id"), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("step", String(16)),
    Column("attempt", Integer, nullable=False, default=0),
    Column("worker", String(255)),
    Column("detail", Text),
    # None: a state change; "note": a remark that changes nothing (migration 0006s)
    Column("kind", String(8)),
)

# -- storage rotation and tokens (migration 0004) ----------------------------------------------

TS = DateTime(timezone=True)

rotation_runs = Table(
    "rotation_runs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("window_key", String(64), unique=True),
    Column("trigger", String(16), nullable=False),
    Column("actor", String(255)),
    Column("status", String(16), nullable=False),
    Column("started_at", TS, nullable=False),
    Column("dispatched_at", TS),
    Column("updated_at", TS, nullable=False),
    Column("finished_at", TS),
    Column("cutoffs", JSON, nullable=False),
    Column("job_limit", Integer),
    Column("settings", JSON),
    Column("planned_jobs", BigInteger, nullable=False, default=0),
    Column("planned_bytes", BigInteger, nullable=False, default=0),
    Column("planned_batches", Integer, nullable=False, default=0),
    Column("jobs_done", BigInteger, nullable=False, default=0),
    Column("bytes_done", BigInteger, nullable=False, default=0),
    Column("batches_done", Integer, nullable=False, default=0),
    Column("batches_failed", Integer, nullable=False, default=0),
    Column("error", JSON),
    Column("budget_clock", Float),  # the run's bytes-per-second budget: unix time booked to
)

rotation_batches = Table(
    "rotation_batches",
    metadata,
    Column("id", String(48), primary_key=True),
    Column("run_id", String(40), ForeignKey("rotation_runs.id"), nullable=False, index=True),
    Column("seq", Integer, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("archive_path", String(1024), nullable=False),
    Column("archive_sha256", String(64)),
    Column("jobs", Integer, nullable=False, default=0),
    Column("bytes", BigInteger, nullable=False, default=0),
    Column("started_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("worker", String(255)),
    Column("error", Text),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", TS, nullable=False),
    Column("created_by", String(255)),
    Column("revoked_at", TS),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", TS, nullable=False, index=True),
    Column("action", String(64), nullable=False),
    Column("actor", String(255)),
    Column("role", String(16)),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text),
)

#: Whether tokens are checked, once one exists: one row (id 1), changed by an admin only
#: (``pipeline auth set``, audited), so that no caller's environment decides (migration 0006s).
auth_policy = Table(
    "auth_policy",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("enforce", Boolean, nullable=False),
    Column("viewers", String(8), nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("updated_by", String(255)),
)

# -- monitoring (migration 0005) ---------------------------------------------------------------

heartbeats = Table(
    "heartbeats",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("at", TS, nullable=False),
    Column("detail", Text),
)
