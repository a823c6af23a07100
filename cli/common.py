"""What every ``pipeline`` command module shares: the group class that turns errors into exit
codes, the orchestrator (settings checked, schema current), and ``--since`` values.

Its own module so that cli/main.py (which registers the commands) and the command modules
(cli/monitor.py, cli/rotate.py, cli/api.py, cli/remote.py) import it instead of each other.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import click
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError as DatabaseError

from cli.exit_codes import Exit, for_error
from orchestrator.errors import PipelineError
from orchestrator.store import jobs as store


class PipelineGroup(click.Group):
    """Turns known errors into one clear line and a named exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # `pipeline list | head`: the reader went away, not an error
            quiet_broken_pipe()
        except PipelineError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(for_error(error))
        except (DatabaseError, BrokerError, ConnectionError) as error:
            click.echo(f"error: unavailable: {str(error).splitlines()[0]}", err=True)
            ctx.exit(Exit.UNAVAILABLE)
        except KeyboardInterrupt:
            ctx.exit(Exit.INTERRUPTED)
        finally:
            from orchestrator.runtime.results import release_result_subscriptions  # Celery: lazily

            release_result_subscriptions()


def quiet_broken_pipe() -> None:
    """Exit as a tool killed by SIGPIPE is reported (141), silently: further writes to the
    closed pipe, including Python's flush at exit, go to /dev/null instead."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(Exit.BROKEN_PIPE)


@cache
def orchestrator() -> Any:
    """The orchestrator, with settings validated and the database schema current."""
    from orchestrator.jobs.canvas import Orchestrator
    from orchestrator.settings import get_settings
    from orchestrator.store.db import migrate

    settings = get_settings()
    migrate()
    return Orchestrator(settings)


def parse_since(text: str | None) -> datetime | None:
    if text is None:
        return None
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match[2]]
        return store.now() - timedelta(**{unit: int(match[1])})
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use 30m, 12h, 7d or an ISO date") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=store.now().tzinfo)
