"""Alembic environment: runs on the connection that :func:`orchestrator.store.db.migrate` holds."""

from alembic import context

from orchestrator.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
context.run_migrations()
