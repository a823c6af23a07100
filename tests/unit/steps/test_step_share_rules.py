"""The optimize and archive steps read their job folder's intermediate files (the hand-off,
quality.json, portfolio.json) by the share's rules (orchestrator/safeopen.py): anyone who can
write to processing/ could swap one for a link to a file outside the share, or a FIFO. Such a
file is refused with its name and the reason; nothing outside the share is read into the job,
and a FIFO never blocks the step.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import DataError
from orchestrator.jobs.jobspec import JobParams
from orchestrator.settings import Settings
from orchestrator.steps import run
from tests.conftest import SAMPLE

BOUND = 120.0  # seconds: each step takes well under one here; a blocked read never ends


@pytest.fixture
def ctx(tmp_path: Path) -> run.StepContext:
    """A job in processing/ of a share, its validate step done."""
    settings = Settings(share_dir=tmp_path / "share", var_dir=tmp_path / "var")
    folder = settings.share_dir / "processing" / "job"
    (folder / "input").mkdir(parents=True)
    shutil.copyfile(SAMPLE, folder / "input" / SAMPLE.name)
    context = run.StepContext("job", folder, JobParams(portfolio_size=20), settings,
                              lambda _fraction: None)
    run.run_validate(context)
    return context


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


def moved_out(ctx: run.StepContext, name: str, outside: Path,
              change: Callable[[Any], Any] | None = None) -> Path:
    """The job's ``name`` moved outside the share (``change``d, for a JSON file), and in its
    place a link to it: what a share user could do between two steps."""
    target = outside / name
    shutil.move(ctx.folder / name, target)
    if change is not None:
        target.write_text(json.dumps(change(json.loads(target.read_text()))))
    (ctx.folder / name).symlink_to(target)
    return target


def within_bound(step: Callable[[], object], fifo: Path) -> BaseException | None:
    """What ``step`` raised (None: nothing), run in a thread that must end within BOUND
    seconds; else the FIFO is opened for writing (freeing a reader stuck on it) and the test
    fails."""
    caught: list[BaseException | None] = []

    def go() -> None:
        try:
            step()
            caught.append(None)
        except BaseException as error:  # handed to the test
            caught.append(error)

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(BOUND)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(BOUND)
        pytest.fail(f"the step did not end within {BOUND:.0f} s: blocked on a FIFO")
    return caught[0]


def test_optimize_refuses_a_hand_off_swapped_for_a_link_outside_the_share(ctx, outside):
    # Given the hand-off replaced by a link to a price table outside the share
    moved_out(ctx, run.HANDOFF, outside)
    # When the optimize step runs, then it refuses it by name and reason, and writes nothing
    with pytest.raises(DataError, match=r"prices\.npz: a symbolic link"):
        run.run_optimize(ctx)
    assert not (ctx.folder / run.PORTFOLIO).exists()


@pytest.mark.parametrize("name", [run.PORTFOLIO, run.QUALITY])
def test_archive_refuses_a_step_file_swapped_for_a_link_outside_the_share(ctx, outside, name):
    # Given optimize done, then one of the files the archive step reads replaced by a link to
    # a file outside the share that holds a secret
    run.run_optimize(ctx)
    secret = f"TOP-SECRET-{uuid.uuid4().hex}"
    moved_out(ctx, name, outside, lambda data: {**data, "note": secret})
    # When the archive step runs, then it refuses that file by name and reason
    with pytest.raises(DataError, match=f"{name}: a symbolic link") as refused:
        run.run_archive(ctx)
    # And the secret is in no file of the job and not in the error
    assert secret not in str(refused.value)
    for path in ctx.folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert secret.encode() not in path.read_bytes(), path


def test_a_fifo_in_place_of_a_step_file_is_refused_and_never_blocks(ctx):
    # Given the hand-off replaced by a FIFO
    handoff = ctx.folder / run.HANDOFF
    handoff.unlink()
    os.mkfifo(handoff)
    # When the optimize step runs, then it ends at once, refusing it by name and reason
    error = within_bound(lambda: run.run_optimize(ctx), handoff)
    assert isinstance(error, DataError), error
    assert "prices.npz: not a regular file (a FIFO (named pipe))" in str(error)


def test_a_missing_hand_off_still_says_which_step_did_not_finish(ctx):
    (ctx.folder / run.HANDOFF).unlink()
    with pytest.raises(DataError, match="the validate step did not finish"):
        run.run_optimize(ctx)
