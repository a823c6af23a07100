"""GET /v1/jobs/{id}/files/{name} serves a job's result file by the share's rules
(orchestrator/safeopen.py): a result file a share user replaced by a link to a file outside the
share, a hard link or a FIFO is refused with the reason, never served or waited on.

In-process (the app over Starlette's test client): the point is what the route reads, not the
server around it, which tests/api covers with a real ``pipeline api``.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.paths import Share
from orchestrator.store.jobs import now
from tests.rotation_support import make_jobs

BOUND = 120.0  # seconds: one small GET; a read blocked on a FIFO never ends


@pytest.fixture
def job(env) -> tuple[TestClient, Path]:  # type: ignore[no-untyped-def]
    """A client of the API, and a completed job's folder (weights.csv, report.json, input/)."""
    Share(env.settings.share_dir).ensure()
    [job_id] = make_jobs(env.share, 1, finished_at=now())
    with TestClient(create_app(env.settings)) as client:
        yield client, env.share / "completed" / job_id


@pytest.fixture
def secret(tmp_path: Path) -> bytes:
    content = f"TOP-SECRET-{uuid.uuid4().hex}".encode()
    (tmp_path / "secret.txt").write_bytes(content)
    return content


def get(client: TestClient, folder: Path, name: str):  # type: ignore[no-untyped-def]
    return client.get(f"/v1/jobs/{folder.name}/files/{name}")


def test_a_result_file_is_served_as_before(job):
    client, folder = job
    answer = get(client, folder, "weights.csv")
    assert answer.status_code == 200
    assert answer.content == (folder / "weights.csv").read_bytes()
    assert answer.headers["content-type"].startswith("text/csv")
    assert 'filename="weights.csv"' in answer.headers["content-disposition"]


@pytest.mark.parametrize("how", ["symlink", "hard link"])
def test_a_result_file_linked_to_a_file_outside_the_share_is_not_served(job, secret, tmp_path,
                                                                        how):
    # Given a share user who replaced a completed job's report.json by a link to a secret
    client, folder = job
    (folder / "report.json").unlink()
    if how == "symlink":
        (folder / "report.json").symlink_to(tmp_path / "secret.txt")
    else:
        os.link(tmp_path / "secret.txt", folder / "report.json")
    # When anyone asks for it, then it is refused with the reason, and the secret is not sent
    answer = get(client, folder, "report.json")
    assert answer.status_code == 404
    assert secret not in answer.content
    says = "a symbolic link" if how == "symlink" else "2 hard links"
    message = answer.json()["error"]["message"]
    assert says in message and "report.json" in message


def test_a_result_file_swapped_for_a_fifo_after_the_look_never_blocks(job, monkeypatch):
    # Given a share user who swaps weights.csv for a FIFO right after the route has looked at
    # it (and found a regular file): the race made exact
    client, folder = job
    fifo = folder / "weights.csv"
    real_is_file = Path.is_file

    def is_file(self: Path) -> bool:
        found = real_is_file(self)
        if self == fifo and found:
            fifo.unlink()
            os.mkfifo(fifo)
        return found

    monkeypatch.setattr(Path, "is_file", is_file)
    # When it is asked for, then the answer comes at once: refused, with the reason
    answers: list[object] = []

    def ask() -> None:
        try:
            answers.append(get(client, folder, "weights.csv"))
        except Exception as error:  # the app raised instead of answering: handed to the test
            answers.append(error)

    worker = threading.Thread(target=ask, daemon=True)
    worker.start()
    worker.join(BOUND)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # frees the blocked reader
        worker.join(BOUND)
        pytest.fail(f"the request did not end within {BOUND:.0f} s: blocked on a FIFO")
    [answer] = answers
    assert not isinstance(answer, Exception), f"the app raised {answer!r}"
    assert answer.status_code == 404  # type: ignore[attr-defined]
    assert "not a regular file (a FIFO" in answer.json()["error"]["message"]  # type: ignore[attr-defined]
