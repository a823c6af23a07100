"""What the benchmarks share: a throwaway PostgreSQL database (the machine's server, on
loopback), and a measured setup run in a child process that prints its figures as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

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


def run_measured(module: str, args: list[str], env: dict[str, str], cwd: Path,
              timeout: float) -> dict[str, Any]:
    """``python -m module args…`` in its own environment; its last stdout line, as JSON."""
    out = subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise SystemExit(f"{module} {' '.join(args)} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
