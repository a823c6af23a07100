"""A batch is known by its folder's name: in summary.json, `pipeline list`, `status`, and
`pipeline history <batch id>` answers with every member's history."""

from __future__ import annotations

import json
import subprocess
import sys

from orchestrator.jobs.batches import summarize_batch
from orchestrator.settings import get_settings
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState

BATCH = "c3" * 16


def run(env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env.environ(),
                          cwd=env.root, capture_output=True, text=True, timeout=120)


def recorded_batch() -> list[str]:
    """A batch as the watcher records a dropped folder 'march-prices' (one job ended)."""
    ids = ["d4" * 16, "e5" * 16]
    store.create_jobs([store.NewJob(j, f"p{n}.csv", "0" * 64, 10, {}, batch_id=BATCH)
                       for n, j in enumerate(ids)], batch_name="march-prices")
    store.transition(ids[0], JobState.CANCELLED, detail="cancelled by an operator")
    return ids


def test_the_folder_name_is_in_the_summary_list_and_status(env):
    ids = recorded_batch()
    summary = summarize_batch(BATCH)
    written = json.loads((get_settings().share_dir / "completed" / "batches" / BATCH /
                          "summary.json").read_text())
    assert summary["name"] == written["name"] == "march-prices"
    listed = run(env, "list")
    assert listed.stdout.count("march-prices") == 2, listed.stdout
    as_json = json.loads(run(env, "list", "--json").stdout)
    assert {j["id"]: j["batch_name"] for j in as_json} == dict.fromkeys(ids, "march-prices")
    assert "march-prices" in run(env, "status", BATCH[:8]).stdout


def test_history_of_a_batch_shows_each_members_history(env):
    ids = recorded_batch()
    shown = run(env, "history", BATCH[:8])
    assert shown.returncode == 0, shown.stderr
    assert f"batch {BATCH} (march-prices): 2 jobs" in shown.stdout
    for job_id in ids:
        assert f"job {job_id}" in shown.stdout
    assert "cancelled by an operator" in shown.stdout
    as_json = json.loads(run(env, "history", BATCH[:8], "--json").stdout)
    assert as_json["batch_id"] == BATCH and as_json["name"] == "march-prices"
    events = {m["job_id"]: [e["to_state"] for e in m["events"]] for m in as_json["jobs"]}
    assert events == {ids[0]: ["pending", "queued", "cancelled"],
                      ids[1]: ["pending", "queued"]}
