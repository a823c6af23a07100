"""The HTTP API (/v1) and the jobs page: see orchestrator/api/app.py and docs/api.md."""

from orchestrator.api.app import create_app

__all__ = ["create_app"]
