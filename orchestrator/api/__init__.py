"""The HTTP API (/v1) and the jobs page: ``orchestrator.api.app.create_app`` builds the app;
docs/api.md describes it. Nothing is imported here, so that the modules of this package can
import each other's names without going through the app (no import cycle)."""
