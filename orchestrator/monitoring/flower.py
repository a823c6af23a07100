"""Running Flower against the app: its options from our settings, and the command line.

- bound to loopback (PIPELINE_FLOWER_ADDRESS, default 127.0.0.1), PIPELINE_FLOWER_PORT;
- basic auth from PIPELINE_FLOWER_USER + PIPELINE_FLOWER_PASSWORD and/or
  PIPELINE_FLOWER_BASIC_AUTH (``user:password[,user2:password2]``); passed to Flower in its
  environment (FLOWER_BASIC_AUTH), never on the command line where ``ps`` shows it;
- persistent: Flower's state (tasks and workers seen) in var/flower.db, saved every minute
  and at exit, so a restart does not forget the task list;
- the task list shows the job and input (the step tasks' ``argsrepr``) and start times.

Flower's ``/metrics`` (Prometheus) and ``/healthcheck`` answer without credentials, as
upstream Flower does: scrape over loopback, or put a proxy in front.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import socket
import sys
from pathlib import Path
from typing import Any

from orchestrator.settings import Settings, get_settings

CONFIG_FILE = Path(__file__).with_name("flowerconfig.py")
TASK_COLUMNS = "name,uuid,state,args,received,started,runtime,worker"


def credentials(settings: Settings) -> list[str]:
    """``user:password`` entries for Flower's basic auth."""
    out = [c for c in (settings.flower_basic_auth or "").split(",") if c]
    if settings.flower_user and settings.flower_password:
        out.append(f"{settings.flower_user}:{settings.flower_password}")
    return out


def options(settings: Settings | None = None) -> dict[str, Any]:
    """Flower options (its --conf file's globals)."""
    settings = settings or get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    return {
        "address": settings.flower_address,
        "port": settings.flower_port,
        "persistent": True,
        "db": str(settings.var_dir / "flower.db"),
        "state_save_interval": 60_000,  # ms: a crash loses at most a minute of history
        "tasks_columns": TASK_COLUMNS,
        "inspect_timeout": 2000.0,  # ms
        # Not purge_offline_workers: it also drops the task-sent counters from /metrics (the
        # publishers that send them, the watcher and the CLI, send no worker heartbeats).
    }


def is_loopback(address: str) -> bool:
    if address in ("localhost", ""):
        return address == "localhost"
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(address)).is_loopback
        except OSError:
            return False


#: Flower options that ``pipeline flower`` sets itself and checks: passed through after ``--``
#: they would override the checked values (Flower reads its command line last), so they are
#: refused there, with what to use instead.
OWN_OPTIONS = {
    "address": "pass `pipeline flower --address ADDRESS` (before `--`), which is checked",
    "port": "pass `pipeline flower --port PORT` (before `--`)",
    "conf": "pipeline flower sets Flower's configuration itself (PIPELINE_FLOWER_*)",
    "basic_auth": "a password on the command line is visible to every user in ps and "
                  "/proc/<pid>/cmdline: set PIPELINE_FLOWER_USER and PIPELINE_FLOWER_PASSWORD "
                  "(or PIPELINE_FLOWER_BASIC_AUTH) instead",
}


def option_name(arg: str) -> str | None:
    """The Flower option an argument sets, as Flower and tornado read it (any number of leading
    dashes, ``-`` or ``_`` between words, ``=value`` or none); None for a non-option."""
    if not arg.startswith("-"):
        return None
    return arg.lstrip("-").partition("=")[0].replace("-", "_").lower() or None


def passthrough_options(args: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Flower options set by pass-through arguments: name -> value (``""`` when none).

    Flower drops arguments that name none of its options and parses the rest, wherever they
    are, so every argument is looked at (not just those before the first positional one).
    """
    found: dict[str, str] = {}
    for arg in args:
        name = option_name(arg)
        if name is not None:
            found[name] = arg.partition("=")[2]
    return found


def refused_passthrough(args: tuple[str, ...] | list[str]) -> list[str]:
    """Why each pass-through argument that would override a checked setting is refused."""
    given = passthrough_options(args)
    return [f"--{name} cannot be passed through to Flower: {why}"
            for name, why in OWN_OPTIONS.items() if name in given]


def other_authentication(args: tuple[str, ...] | list[str], environ: dict[str, str]) -> bool:
    """Flower authenticates by other means: its OAuth (``--auth``, a non-empty pattern of
    accounts, passed through or as FLOWER_AUTH) or FLOWER_BASIC_AUTH in its environment."""
    auth = passthrough_options(args).get("auth") or environ.get("FLOWER_AUTH")
    return bool(auth) or bool(environ.get("FLOWER_BASIC_AUTH"))


def command(address: str | None, port: int | None, extra: tuple[str, ...] = ()) -> list[str]:
    args = [sys.executable, "-m", "celery", "-A", "orchestrator", "flower",
            f"--conf={CONFIG_FILE}"]
    if address is not None:
        args.append(f"--address={address}")
    if port is not None:
        args.append(f"--port={port}")
    return [*args, *extra]


# -- the embedded broker: what Flower leaves behind --------------------------------------------
# Flower binds an event queue (celeryev.<uuid>) to the events exchange. The filesystem broker
# keeps that binding in a file after Flower exits, and workers go on writing an event file
# every two seconds (heartbeats) into a queue nobody reads. `pipeline flower` notes the
# bindings before Flower starts and removes the ones Flower added, with their messages.

EVENTS_EXCHANGE = "celeryev"


def event_queues(broker_folder: Path) -> set[str]:
    path = broker_folder / "control" / f"{EVENTS_EXCHANGE}.exchange"
    try:
        with open(path) as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            return {row[2] for row in json.loads(handle.read() or "[]")}
    except FileNotFoundError:
        return set()


def drop_event_queues(broker_folder: Path, queues: set[str]) -> int:
    """Unbind ``queues`` from the events exchange and delete their messages; files removed."""
    path = broker_folder / "control" / f"{EVENTS_EXCHANGE}.exchange"
    if queues and path.exists():
        with open(path, "r+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            rows = [row for row in json.loads(handle.read() or "[]") if row[2] not in queues]
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(rows))
    removed = 0
    for queue in queues:
        for message in (broker_folder / "queue").glob(f"*.{queue}.msg"):
            message.unlink(missing_ok=True)
            removed += 1
    return removed
