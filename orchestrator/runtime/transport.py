"""The embedded broker: kombu's filesystem transport, made safe for concurrent readers.

Why a subclass (kombu has no transport that does this): the stock ``_put`` creates the message
file under its final name and then fills it, so a consumer polling the folder can read it
half-written, fail to decode it and lose it (kombu issue 1551, reproduced here). We write to a
dot-name the consumers ignore and ``os.replace`` it into place. The stock ``_get`` also moves each
message to the system temp folder, a copy when that is another filesystem; we claim it with a
rename inside the broker folder instead. Registered as the ``atomicfs://`` scheme.
"""

from __future__ import annotations

import itertools
import os
import uuid
from time import monotonic_ns

from kombu.transport import TRANSPORT_ALIASES, filesystem, virtual
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

SCHEME = "atomicfs"
_sequence = itertools.count()
_states: dict[str, virtual.BrokerState] = {}


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: dict, **kwargs: object) -> None:
        # Sorted names are the delivery order: time, then publisher and its own sequence.
        name = (f"{monotonic_ns():020d}_{os.getpid():07d}_{next(_sequence):010d}_"
                f"{uuid.uuid4().hex[:8]}.{queue}.msg")
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        with open(partial, "wb") as handle:
            handle.write(str_to_bytes(dumps(payload)))
        os.replace(partial, final)

    def _get(self, queue: str) -> dict:
        suffix = f".{queue}.msg"
        claimed_dir = os.path.join(self.data_folder_in, ".claimed")
        for name in sorted(n for n in os.listdir(self.data_folder_in) if n.endswith(suffix)):
            if name.partition(".")[2] != suffix[1:]:
                continue
            claimed = os.path.join(claimed_dir, f"{os.getpid()}-{name}")
            try:
                os.rename(os.path.join(self.data_folder_in, name), claimed)
            except FileNotFoundError:
                continue  # another consumer took it first
            with open(claimed, "rb") as handle:
                payload = handle.read()
            os.remove(claimed)
            return loads(bytes_to_str(payload))
        raise virtual.Empty()


class Transport(filesystem.Transport):
    Channel = Channel
    driver_type = driver_name = SCHEME

    def __init__(self, client: object, **kwargs: object) -> None:
        super().__init__(client, **kwargs)
        # One broker state per control folder: kombu keeps one per class, so a second broker
        # folder in the same process would skip writing its exchange bindings.
        folder = str(self.client.transport_options.get("control_folder", "control"))
        self.state = _states.setdefault(os.path.abspath(folder), virtual.BrokerState())


def transport_options(folder: str, polling_interval: float) -> dict[str, object]:
    """kombu options for the embedded broker rooted at ``folder`` (created here)."""
    for sub in ("queue", "queue/.claimed", "control"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    queue = os.path.join(folder, "queue")
    return {
        "data_folder_in": queue,
        "data_folder_out": queue,
        "control_folder": os.path.join(folder, "control"),
        "polling_interval": polling_interval,
    }


def register() -> None:
    TRANSPORT_ALIASES[SCHEME] = "orchestrator.runtime.transport:Transport"


register()
