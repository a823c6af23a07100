"""The Celery app. ``celery -A orchestrator …`` finds it here."""

from __future__ import annotations

from celery import Celery

from orchestrator import results, transport

transport.register()
results.register()

app = Celery("orchestrator")
app.config_from_object("celeryconfig")
app.conf.imports = ("tasks.steps", "tasks.batch", "tasks.maintenance")
