"""Notes in a job's history (a notification's outcome) are told apart from state changes:
readers saw them as ``completed → completed`` transitions."""

from __future__ import annotations

import json
import uuid

from click.testing import CliRunner

from cli.main import pipeline
from orchestrator.jobs.lifecycle import begin_step, complete
from orchestrator.paths import Share
from orchestrator.store import jobs as store


def test_a_note_is_shown_as_a_note_not_a_transition(env) -> None:  # type: ignore[no-untyped-def]
    # given a completed job, and a notification's outcome noted on it
    share = Share(env.share).ensure()
    job_id = uuid.uuid4().hex
    store.create_jobs([store.NewJob(job_id, "prices.csv", "0" * 64, 10, {})])
    (share.processing / job_id).mkdir()
    for step in ("validate", "optimize", "archive"):
        assert begin_step(job_id, step, f"{job_id}.{step}.0", 60) is not None
    assert complete(share, job_id, {})
    store.note(job_id, "notified webhook: 200")
    # then the history marks it as a note, and `pipeline history` shows it as one
    events = store.history(job_id)
    assert [e.kind for e in events][-2:] == [None, "note"]
    shown = CliRunner().invoke(pipeline, ["history", job_id], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    line = next(row for row in shown.output.splitlines() if "notified webhook" in row)
    assert " note " in line and "completed" not in line
    as_json = json.loads(CliRunner().invoke(pipeline, ["history", job_id, "--json"]).stdout)
    assert as_json[-1]["kind"] == "note" and as_json[-2]["kind"] is None
    # and state-change counts do not count it: one event reached completed
    assert [e.to_state for e in events if not e.is_note].count("completed") == 1
