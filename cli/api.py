"""``pipeline api``: serve the HTTP API and the jobs page with uvicorn.

It binds 127.0.0.1 unless told otherwise, and refuses a public address while auth is not in
force (no token exists yet, or auth is switched off): the API would then let anyone on the
network submit and cancel jobs.
"""

from __future__ import annotations

import click

from cli.auth import requires
from cli.exit_codes import Exit, epilog
from orchestrator.access.auth import Role
from orchestrator.errors import ConfigError
from orchestrator.settings import Settings

#: Seconds a stop waits for open requests (an event stream never ends by itself).
GRACE = 5


def refuse_public(host: str) -> str | None:
    """Why ``host`` may not be bound now, or None."""
    from orchestrator.access.auth import in_force
    from orchestrator.api.security import is_loopback
    from orchestrator.settings import get_settings

    if is_loopback(host) or in_force(get_settings()):
        return None
    return (f"refusing to serve on {host}, a non-loopback address, while auth is not in "
            "force: anyone who can reach it could submit and cancel jobs. Create a token "
            "first (pipeline token create --role admin) and keep PIPELINE_AUTH at auto or on, "
            "or bind 127.0.0.1")


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def for_up(settings: Settings) -> list[str]:
    """The API's command line for ``pipeline up`` (cli/processes.py), or [] when
    PIPELINE_API_ENABLED is off. ``pipeline up`` already checked the operator's token, so the
    child is uvicorn itself; the address rule is checked here first."""
    import sys

    if not settings.api_enabled:
        return []
    why = refuse_public(settings.api_host)
    if why is not None:
        raise ConfigError(why)
    print(f"pipeline api: {url_of(settings.api_host, settings.api_port)} (API under /v1, "
          "docs at /docs; PIPELINE_API_ENABLED=false turns it off)", flush=True)
    return [sys.executable, "-m", "uvicorn", "--factory", "orchestrator.api.app:factory",
            "--host", settings.api_host, "--port", str(settings.api_port),
            "--workers", str(settings.api_workers), "--log-level", "warning",
            "--no-access-log", "--timeout-graceful-shutdown", str(GRACE)]


@click.command("api", epilog=epilog())
@click.option("--host", help="Address to bind (PIPELINE_API_HOST, default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65_535), help="Port (PIPELINE_API_PORT, 8000).")
@click.option("--workers", type=click.IntRange(1, 64),
              help="uvicorn worker processes (PIPELINE_API_WORKERS, 1).")
@requires(Role.OPERATOR)
def api(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the HTTP API (/v1, /docs) and the jobs page. Ctrl-C stops it.

    Example: pipeline api --port 8000
    """
    import uvicorn

    from cli.common import orchestrator

    settings = orchestrator().settings
    host = host or settings.api_host
    port = settings.api_port if port is None else port
    why = refuse_public(host)
    if why is not None:
        click.echo(f"error: {why}", err=True)
        raise SystemExit(Exit.CONFIG)
    click.echo(f"pipeline api: {url_of(host, port)} (API under /v1, docs at /docs)", err=True)
    uvicorn.run("orchestrator.api.app:factory", factory=True, host=host, port=port,
                workers=workers or settings.api_workers, log_level="warning",
                access_log=False, proxy_headers=False, timeout_graceful_shutdown=GRACE)
