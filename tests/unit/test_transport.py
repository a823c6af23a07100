"""Unit tests of the embedded broker (orchestrator.runtime.transport) and result backend
(orchestrator.runtime.results), on real files: each test is a short story (given, when, then)."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from kombu import Connection

import orchestrator.runtime.transport
from orchestrator.runtime.results import FileBackend


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Connection]:
    options = orchestrator.runtime.transport.transport_options(str(tmp_path / "broker"), 0.01)
    with Connection("atomicfs://", transport_options=options) as connection:
        yield connection


def queue_folder(tmp_path: Path) -> Path:
    return tmp_path / "broker" / "queue"


def fresh(name: str) -> str:
    """A queue name no other test used, so tests cannot see each other's messages."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def drain(connection: Connection, name: str, count: int) -> list[object]:
    queue = connection.SimpleQueue(name)
    received = []
    try:
        for _ in range(count):
            message = queue.get(timeout=5)
            received.append(message.payload)
            message.ack()
    finally:
        queue.close()
    return received


# ----------------------------------------------------------------------------- broker


def test_transport_options_create_the_broker_folders(tmp_path: Path) -> None:
    options = orchestrator.runtime.transport.transport_options(str(tmp_path / "b"), 0.05)
    assert options["data_folder_in"] == options["data_folder_out"] == str(tmp_path / "b/queue")
    assert (tmp_path / "b" / "queue" / ".claimed").is_dir()
    assert (tmp_path / "b" / "control").is_dir()
    assert options["polling_interval"] == 0.05


def test_two_hundred_messages_all_come_back(broker: Connection, tmp_path: Path) -> None:
    # given 200 messages published to one queue
    name = fresh("jobs")
    queue = broker.SimpleQueue(name)
    for i in range(200):
        queue.put({"n": i})
    queue.close()
    # when they are read back, then none is lost or duplicated, and the folder is empty
    received = drain(broker, name, 200)
    assert sorted(p["n"] for p in received) == list(range(200))  # type: ignore[index]
    assert [n for n in os.listdir(queue_folder(tmp_path)) if n.endswith(".msg")] == []


def test_messages_sent_within_one_millisecond_come_back_in_order(
        broker: Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a fast producer: 200 messages published within one millisecond of the clock
    monkeypatch.setattr(orchestrator.runtime.transport, "monotonic_ns", lambda: 1_234_500_000_000)
    name = fresh("jobs")
    queue = broker.SimpleQueue(name)
    for i in range(200):
        queue.put({"n": i})
    queue.close()
    # when they are read back, then they come in the order they were sent
    assert [p["n"] for p in drain(broker, name, 200)] == list(range(200))  # type: ignore[index]


def test_messages_of_one_queue_are_not_read_from_another(broker: Connection) -> None:
    # given one message on "a.b" and one on "b" (a name that "a.b" ends with)
    short = fresh("b")
    long = f"a.{short}"
    for name in (long, short):
        queue = broker.SimpleQueue(name)
        queue.put({"queue": name})
        queue.close()
    # when each queue is read, then each gets its own message only
    assert drain(broker, short, 1) == [{"queue": short}]
    assert drain(broker, long, 1) == [{"queue": long}]


def test_a_message_file_is_never_seen_half_written(broker: Connection, tmp_path: Path) -> None:
    # given a writer publishing 5 MB messages and a reader parsing every *.msg file it sees
    folder = queue_folder(tmp_path)
    body = "x" * 5_000_000
    done = threading.Event()
    parsed: list[str] = []
    broken: list[tuple[str, int]] = []

    def reader() -> None:
        finished = False
        while not finished:
            finished = done.is_set()  # one last full look after the writer is done
            for name in os.listdir(folder):
                if not name.endswith(".msg"):
                    continue
                try:
                    data = (folder / name).read_bytes()
                except FileNotFoundError:
                    continue
                try:
                    json.loads(data)
                    parsed.append(name)
                except ValueError:
                    broken.append((name, len(data)))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        queue = broker.SimpleQueue(fresh("big"))
        for _ in range(8):
            queue.put({"body": body})
        queue.close()
    finally:
        done.set()
        thread.join()
    # then the reader saw messages, and every one it saw was whole
    assert broken == []
    assert parsed
    assert len([n for n in os.listdir(folder) if n.endswith(".msg")]) == 8


def test_a_second_broker_folder_in_one_process_gets_its_messages(tmp_path: Path) -> None:
    # (named exchanges only: kombu SimpleQueue, Celery's broadcast and reply exchanges; Celery
    # task messages go through the anonymous exchange and are not affected)
    # given a queue already used through one broker folder
    name = fresh("jobs")
    for folder in ("first", "second"):
        options = orchestrator.runtime.transport.transport_options(str(tmp_path / folder), 0.01)
        with Connection("atomicfs://", transport_options=options) as connection:
            # when the same queue is used through another folder (a new var/, or control/
            # cleared), then a published message is delivered there too
            queue = connection.SimpleQueue(name)
            queue.put({"folder": folder})
            queue.close()
            assert len(list((tmp_path / folder / "queue").glob("*.msg"))) == 1


# ----------------------------------------------------------------------------- results


def _count(backend: FileBackend, times: int, out: multiprocessing.Queue) -> None:
    out.put([backend.incr(b"chord-counter") for _ in range(times)])


def test_incr_counts_every_increment_of_four_processes(tmp_path: Path) -> None:
    # given the file result backend of a Celery app
    app = Celery(backend=f"atomicfile://{tmp_path}/results", set_as_current=False)
    backend = app.backend
    assert isinstance(backend, FileBackend)
    # when four processes increment one counter 250 times each, all at once
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    workers = [context.Process(target=_count, args=(backend, 250, out)) for _ in range(4)]
    for worker in workers:
        worker.start()
    returned = [n for _ in workers for n in out.get(timeout=60)]
    for worker in workers:
        worker.join(60)
    # then every increment got its own value, and the counter reached 1000
    assert sorted(returned) == list(range(1, 1001))
    assert backend.incr(b"chord-counter") == 1001


def test_results_are_stored_and_deleted(tmp_path: Path) -> None:
    # given a stored result and counter
    backend = Celery(backend=f"atomicfile://{tmp_path}/results", set_as_current=False).backend
    backend.set(b"celery-task-meta-1", b'{"status": "SUCCESS"}')
    backend.incr(b"celery-task-meta-1")
    assert backend.get(b"celery-task-meta-1") == b'{"status": "SUCCESS"}'
    # when it is deleted, then both files are gone and nothing partial is left
    backend.delete(b"celery-task-meta-1")
    assert backend.get(b"celery-task-meta-1") is None
    assert os.listdir(tmp_path / "results") == []

