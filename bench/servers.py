"""What the benchmarks share: a throwaway PostgreSQL database (the machine's server, on
loopback), and a measured setup run in a child process that prints its figures as JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

POSTGRES = os.environ.get("PIPELINE_TEST_POSTGRES_URL",
                          "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("PIPELINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
ROOT = Path(__file__).resolve().parents[1]


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


def run_on_servers(module: str, args: list[str], timeout: float) -> Any:
    """``run_measured`` on the pipeline with noop steps (prefetch 4), a flushed Redis database
    as broker and result backend, a throwaway PostgreSQL database and a fresh share under /tmp;
    the child can read the database's URL from PIPELINE_DATABASE_URL. All removed afterwards."""
    import redis

    redis.Redis.from_url(REDIS).flushdb()  # a previous run's leftover messages are not ours
    database = create_database()
    root = Path(tempfile.mkdtemp(prefix=f"bench-{module.rsplit('.', 1)[-1]}-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIPELINE_SHARE_DIR": str(root / "share"),
           "PIPELINE_VAR_DIR": str(root / "var"), "PIPELINE_STEP_WORK": "noop",
           "PIPELINE_PREFETCH_MULTIPLIER": "4", "PIPELINE_LOG_LEVEL": "WARNING",
           "PIPELINE_BROKER_URL": REDIS, "PIPELINE_RESULT_BACKEND": REDIS,
           "PIPELINE_DATABASE_URL": database}
    try:
        return run_measured(module, args, env, root, timeout)
    finally:
        drop_database(database)
        shutil.rmtree(root, ignore_errors=True)
