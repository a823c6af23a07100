"""``pipeline restore``: an archived job's folder back, byte for byte, or refused with a reason."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from click.testing import CliRunner

from cli.main import pipeline
from orchestrator.errors import CorruptArchive, IllegalTransition
from orchestrator.paths import Share
from orchestrator.rotation.restore import restore
from orchestrator.store import jobs as store
from orchestrator.store.jobs import now
from tests.rotation_support import days_ago, make_jobs, run_rotation, tree


def test_restore_round_trips_a_job_folder_byte_for_byte(share):
    # Given an old failed job whose folder has files at two levels, rotated into an archive
    ids = make_jobs(share.share, 8, finished_at=days_ago(40), state="failed")
    folder = share.share / "failed" / ids[3]
    (folder / "error.json").write_bytes(os.urandom(3000))  # incompressible, binary
    os.utime(folder / "error.json", (1_600_000_000, 1_600_000_000))
    before = tree(folder)
    run_rotation(share.settings)
    assert not folder.exists() and store.get_job(ids[3]).state == "archived"
    # When an operator restores it
    result = CliRunner().invoke(pipeline, ["restore", ids[3][:10]])
    # Then its folder is back in completed/, every byte as it was, and the job is completed
    assert result.exit_code == 0, result.output
    restored = share.share / "completed" / ids[3]
    assert tree(restored) == before
    assert (restored / "error.json").stat().st_mtime == 1_600_000_000
    job = store.get_job(ids[3])
    assert job.state == "completed"
    last = store.history(ids[3])[-1]
    assert (last.from_state, last.to_state) == ("archived", "completed")
    assert "state before archiving: failed" in last.detail
    # And the other jobs of the same archive stay archived
    assert store.get_job(ids[2]).state == "archived"


def test_a_changed_archive_is_refused_and_nothing_changes(share):
    # Given a rotated job whose archive was modified afterwards
    ids = make_jobs(share.share, 4, finished_at=days_ago(40))
    run_rotation(share.settings)
    archive = share.share / store.get_job(ids[0]).archive_path
    data = bytearray(archive.read_bytes())
    data[-30] ^= 0x01
    archive.write_bytes(bytes(data))
    # When it is restored
    with pytest.raises(CorruptArchive):
        restore(Share(share.share), ids[0])
    # Then the job is still archived and no folder (not even a staging one) is left
    assert store.get_job(ids[0]).state == "archived"
    assert list((share.share / "completed").iterdir()) == []
    # And the CLI says so with exit code 13
    result = CliRunner().invoke(pipeline, ["restore", ids[1]])
    assert result.exit_code == 13, result.output
    assert "archive" in result.output


def test_only_archived_jobs_can_be_restored(share):
    ids = make_jobs(share.share, 1, finished_at=now() - timedelta(days=1))
    with pytest.raises(IllegalTransition):
        restore(Share(share.share), ids[0])
    result = CliRunner().invoke(pipeline, ["restore", ids[0]])
    assert result.exit_code == 8 and "only archived jobs" in result.output
