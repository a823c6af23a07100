"""A throwaway PostgreSQL database for one benchmark run (the machine's server, loopback)."""

from __future__ import annotations

import os
import uuid

POSTGRES = os.environ.get("PIPELINE_TEST_POSTGRES_URL",
                          "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin():
    import sqlalchemy as sa

    from orchestrator.store.db import normalize_url

    return sa.create_engine(normalize_url(POSTGRES), isolation_level="AUTOCOMMIT")


def create_database() -> str:
    """A new empty database; its URL."""
    import sqlalchemy as sa

    from orchestrator.store.db import normalize_url

    name = f"pipeline_bench_{uuid.uuid4().hex[:8]}"
    admin = _admin()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.engine.make_url(normalize_url(POSTGRES)).set(database=name).render_as_string(False)


def drop_database(url: str) -> None:
    import sqlalchemy as sa

    name = sa.engine.make_url(url).database
    admin = _admin()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
