"""Unit tests of orchestrator.store.states: each test is a short story (given, when, then)."""

from __future__ import annotations

import pytest

from orchestrator.store.states import ACTIVE, FINAL, LEGAL, STEPS, JobState, is_legal, sources_of

S = JobState


def test_a_completed_job_cannot_start_processing_again() -> None:
    assert not is_legal(S.COMPLETED, S.PROCESSING)


@pytest.mark.parametrize(("source", "target"), [
    (None, S.PENDING), (S.PENDING, S.QUEUED), (S.QUEUED, S.PROCESSING),
    (S.PROCESSING, S.PROCESSING), (S.PROCESSING, S.COMPLETED), (S.PROCESSING, S.FAILED),
    (S.FAILED, S.QUEUED), (S.CANCELLED, S.QUEUED), (S.COMPLETED, S.ARCHIVED),
])
def test_the_pipeline_s_own_moves_are_legal(source: JobState | None, target: JobState) -> None:
    assert is_legal(source, target)


@pytest.mark.parametrize(("source", "target"), [
    (None, S.QUEUED), (S.PENDING, S.COMPLETED), (S.QUEUED, S.COMPLETED),
    (S.COMPLETED, S.FAILED), (S.ARCHIVED, S.PROCESSING), (S.FAILED, S.COMPLETED),
])
def test_shortcuts_and_rewrites_of_history_are_illegal(source: JobState | None,
                                                       target: JobState) -> None:
    assert not is_legal(source, target)


def test_every_state_has_its_list_of_next_states() -> None:
    assert set(LEGAL) == {None, *JobState}


def test_every_state_is_either_final_or_active() -> None:
    assert FINAL.isdisjoint(ACTIVE)
    assert set(JobState) == FINAL | ACTIVE


def test_every_state_can_be_reached_from_some_state() -> None:
    reachable = set().union(*LEGAL.values())
    assert reachable == set(JobState)


def test_sources_of_processing_are_queued_and_processing() -> None:
    assert sources_of(S.PROCESSING) == {S.QUEUED, S.PROCESSING}


def test_sources_of_are_exactly_the_states_that_may_move_there() -> None:
    for target in JobState:
        for source in sources_of(target):
            assert is_legal(source, target)
        for source in set(JobState) - sources_of(target):
            assert not is_legal(source, target)


def test_steps_run_validate_optimize_archive() -> None:
    assert STEPS == ("validate", "optimize", "archive")
