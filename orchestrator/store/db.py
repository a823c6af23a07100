"""One engine per process, created lazily, forgotten after fork; schema migrations.

SQLite (the embedded default) runs in WAL mode and takes its write lock at BEGIN
(``BEGIN IMMEDIATE``) so concurrent workers queue on the lock instead of failing with
"database is locked" when a read transaction tries to become a write one.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

_engines: dict[str, Engine] = {}


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (psycopg2 is not a dependency)."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def get_engine(url: str | None = None) -> Engine:
    if url is None:
        from orchestrator.settings import get_settings

        url = get_settings().database
    url = normalize_url(url)
    if url not in _engines:
        _engines[url] = _create(url)
    return _engines[url]


def _create(url: str) -> Engine:
    engine = _create_engine(url)
    if os.environ.get("PIPELINE_SQL_STATS_DIR"):
        _count_statements(engine)
    return engine


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    # No pool_pre_ping: it costs a round trip per checkout. A connection that died (server
    # restart) fails its statement, SQLAlchemy empties the pool, and the step's outage retry
    # runs it again on a fresh one.
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_size=2, max_overflow=4, connect_args=_postgres_options())
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_size=2, max_overflow=4)
    if parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 60, "isolation_level": None})
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    return engine


def _postgres_options() -> dict[str, str]:
    """PIPELINE_DB_SYNCHRONOUS_COMMIT=false: commits return before the WAL is on disk. Safe for
    the database's consistency; a PostgreSQL crash may forget the last fraction of a second of
    transitions, whose steps then run again (they are idempotent). Off by default."""
    from orchestrator.settings import get_settings

    if get_settings().db_synchronous_commit:
        return {}
    return {"options": "-c synchronous_commit=off"}


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@contextmanager
def transaction(url: str | None = None) -> Iterator[Connection]:
    """A connection in one transaction: committed on success, rolled back on error."""
    with get_engine(url).begin() as conn:
        yield conn


@contextmanager
def statement(url: str | None = None) -> Iterator[Connection]:
    """A connection for one statement, which is atomic by itself.

    On PostgreSQL in autocommit: one round trip instead of three (BEGIN, the statement,
    COMMIT), which is most of what a state change costs. Elsewhere a transaction as usual
    (SQLite takes its write lock at BEGIN).
    """
    engine = get_engine(url)
    if engine.dialect.name != "postgresql":
        with engine.begin() as conn:
            yield conn
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        yield conn


def _forget_after_fork() -> None:
    # A forked child must not share the parent's sockets; dispose without closing them.
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def migrate(url: str | None = None) -> None:
    """Bring the schema to the newest revision; safe to call from several processes at once."""
    from alembic import command
    from alembic.config import Config

    engine = get_engine(url)
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with _migration_lock(engine) as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "heads")


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(744210001)"))
            yield conn
        return
    database = engine.url.database or ":memory:"
    lock_path = Path(database + ".migrate.lock") if database != ":memory:" else None
    handle = open(lock_path, "a") if lock_path else None  # noqa: SIM115
    try:
        if handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
        with engine.begin() as conn:
            yield conn
    finally:
        if handle:
            handle.close()


# -- statement counts, for the throughput benchmark (PIPELINE_SQL_STATS_DIR) ------------------

_stats = {"statements": 0, "commits": 0}


def _count_statements(engine: Engine) -> None:
    def statement(conn: Connection, _cursor: object, sql: str, *_: object) -> None:
        _stats["statements"] += 1
        # In autocommit a write is its own transaction: counted as a commit too.
        if (conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
                and not sql.lstrip().upper().startswith("SELECT")):
            _stats["commits"] += 1

    def commit(*_: object) -> None:
        _stats["commits"] += 1

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)


def flush_statement_counts() -> None:
    """Write this process's counts to PIPELINE_SQL_STATS_DIR/<pid>.json (bench only)."""
    folder = os.environ.get("PIPELINE_SQL_STATS_DIR")
    if folder and any(_stats.values()):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{os.getpid()}.json").write_text(json.dumps(_stats))
