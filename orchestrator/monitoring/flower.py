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
