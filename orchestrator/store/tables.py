"""Table definitions (SQLAlchemy Core: the hot path uses Core, not the ORM)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
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
    Index("ix_jobs_state_updated", "state", "updated_at"),
    Index("ix_jobs_state_lease", "state", "lease_until"),
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
)
