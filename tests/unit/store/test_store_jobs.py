"""Unit tests of orchestrator.store.jobs on a real database: stories (given, when, then).

Every story runs twice: on SQLite, the embedded default (the ``env`` fixture migrates it), and
on a real PostgreSQL, where a state change is a single statement (UPDATE, history INSERT and
the previous state in one CTE) and compare-and-set relies on row locks.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta, timezone

import pytest

from orchestrator.errors import IllegalTransition, JobNotFound
from orchestrator.settings import reset_settings
from orchestrator.store import db
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState
from orchestrator.store.tables import batches, job_events, jobs

S = JobState


@pytest.fixture(autouse=True, params=["sqlite", pytest.param("postgres",
                                                              marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, env, monkeypatch: pytest.MonkeyPatch) -> str:
    """The store under test: SQLite from ``env``, or the session's PostgreSQL, emptied."""
    if request.param == "postgres":
        monkeypatch.setenv("PIPELINE_DATABASE_URL", request.getfixturevalue("postgres_database"))
        reset_settings()
        db._forget_after_fork()
        db.migrate()
        with db.transaction() as conn:
            names = ", ".join(t.name for t in (job_events, jobs, batches))
            conn.exec_driver_sql(f"TRUNCATE {names} CASCADE")
    return db.get_engine().dialect.name


def new_job(job_id: str | None = None, **fields: object) -> store.NewJob:
    return store.NewJob(id=job_id or uuid.uuid4().hex, input_name="prices.csv",
                        input_sha256="ab" * 32, input_size=1234,
                        params={"portfolio_size": 20}, **fields)  # type: ignore[arg-type]


def created(job_id: str | None = None, *, queued: bool = True) -> str:
    job = new_job(job_id)
    store.create_jobs([job], queued=queued)
    return job.id


def moves(job_id: str) -> list[tuple[str | None, str]]:
    return [(e.from_state, e.to_state) for e in store.history(job_id)]


def completed_job() -> str:
    job_id = created()
    store.transition(job_id, S.PROCESSING, sources={S.QUEUED}, step="archive")
    store.transition(job_id, S.COMPLETED, sources={S.PROCESSING}, step="archive")
    return job_id


# ----------------------------------------------------------------------------- creating


def test_create_jobs_records_pending_then_queued(env) -> None:
    # given a new job, when it is created for immediate publishing
    job_id = created()
    # then it is queued, and its history says it went through pending
    job = store.get_job(job_id)
    assert (job.state, job.step, job.progress, job.attempts) == (S.QUEUED, None, 0.0, 0)
    assert (job.input_name, job.input_size, job.params) == ("prices.csv", 1234,
                                                            {"portfolio_size": 20})
    assert moves(job_id) == [(None, "pending"), ("pending", "queued")]
    assert job.created_at.tzinfo is not None


def test_create_jobs_not_queued_stays_pending(env) -> None:
    job_id = created(queued=False)
    assert store.get_job(job_id).state is S.PENDING
    assert moves(job_id) == [(None, "pending")]


def test_create_jobs_with_a_batch_records_the_batch(env) -> None:
    batch_id = uuid.uuid4().hex
    store.create_jobs([new_job(batch_id=batch_id), new_job(batch_id=batch_id)],
                      batch_name="monday")
    assert len(store.list_jobs(batch_id=batch_id)) == 2
    assert store.count_by_state() == {"queued": 2}


def test_the_first_event_keeps_the_creation_detail(env) -> None:
    job = new_job(detail={"source": "/share/input/prices.csv"})
    store.create_jobs([job])
    assert store.history(job.id)[0].detail == '{"source": "/share/input/prices.csv"}'


# ----------------------------------------------------------------------------- transitions


def test_transition_records_from_to_step_attempt_and_worker(env) -> None:
    # given a queued job, when a worker starts its first step
    job_id = created()
    job = store.transition(job_id, S.PROCESSING, sources={S.QUEUED}, step="validate",
                           new_attempt=True, detail="go")
    # then the row and the new history entry both tell it
    assert (job.state, job.step, job.attempts) == (S.PROCESSING, "validate", 1)
    assert job.started_at is not None
    event = store.history(job_id)[-1]
    assert (event.from_state, event.to_state, event.step, event.attempt, event.detail) == (
        "queued", "processing", "validate", 1, "go")
    assert event.worker == store.worker_name()


def test_transition_from_any_legal_state_records_the_real_previous_one(env) -> None:
    # given a job in processing, when it is cancelled without naming the source state
    job_id = created()
    store.transition(job_id, S.PROCESSING, sources={S.QUEUED}, step="optimize")
    job = store.transition(job_id, S.CANCELLED, detail="operator")
    # then the history shows where it came from, and the job has finished
    assert store.history(job_id)[-1].from_state == "processing"
    assert job.finished_at is not None


def test_transition_stores_extra_values(env) -> None:
    job_id = created()
    store.transition(job_id, S.PROCESSING, sources={S.QUEUED}, step="archive")
    store.transition(job_id, S.COMPLETED, sources={S.PROCESSING}, step="archive",
                     progress=100.0, result={"sharpe": 1.2})
    job = store.get_job(job_id)
    assert (job.state, job.progress, job.result) == (S.COMPLETED, 100.0, {"sharpe": 1.2})


def test_illegal_transition_raises_and_writes_nothing(env) -> None:
    # given a completed job
    job_id = completed_job()
    before, events = store.get_job(job_id), store.history(job_id)
    # when something tries to run it again
    with pytest.raises(IllegalTransition, match="is completed"):
        store.transition(job_id, S.PROCESSING, step="validate", new_attempt=True)
    # then neither the row nor the history changed
    assert store.get_job(job_id) == before
    assert store.history(job_id) == events


def test_a_source_state_that_cannot_lead_to_the_target_is_refused_up_front(env) -> None:
    job_id = completed_job()
    events = store.history(job_id)
    with pytest.raises(IllegalTransition, match="completed -> processing is not a legal"):
        store.transition(job_id, S.PROCESSING, sources={S.COMPLETED})
    assert store.history(job_id) == events


def test_from_step_only_matches_a_job_at_that_step(env) -> None:
    # given a job processing at validate, when a move expects it at optimize
    job_id = created()
    store.transition(job_id, S.PROCESSING, sources={S.QUEUED}, step="validate")
    # then it is refused, with the actual step in the message
    with pytest.raises(IllegalTransition, match="at step validate"):
        store.transition(job_id, S.PROCESSING, sources={S.PROCESSING}, step="archive",
                         from_step="optimize")
    assert store.get_job(job_id).step == "validate"


def test_transition_of_an_unknown_job_raises_job_not_found(env) -> None:
    with pytest.raises(JobNotFound, match="no job nope"):
        store.transition("nope", S.PROCESSING, sources={S.QUEUED})
    assert store.history("nope") == []


# ----------------------------------------------------------------------------- reading


def test_state_of_a_job_is_its_state_and_step(env) -> None:
    # given a job at its optimize step, then state_of reads just those two
    job_id = created()
    store.transition(job_id, S.PROCESSING, sources={S.QUEUED}, step="optimize")
    assert store.state_of(job_id) == (S.PROCESSING, "optimize")
    # and a job that does not exist is not found, as with get_job
    with pytest.raises(JobNotFound, match="no job nope"):
        store.state_of("nope")


def test_get_job_of_an_unknown_id_raises(env) -> None:
    with pytest.raises(JobNotFound):
        store.get_job("nope")


def test_find_job_by_unique_prefix(env) -> None:
    job_id = created("abc123" + "0" * 26)
    created("abd456" + "0" * 26)
    assert store.find_job("abc").id == job_id
    assert store.find_job(job_id).id == job_id


def test_find_job_with_an_ambiguous_prefix_asks_for_more(env) -> None:
    created("abc123" + "0" * 26)
    created("abd456" + "0" * 26)
    with pytest.raises(JobNotFound, match="matches several jobs"):
        store.find_job("ab")


def test_find_job_with_no_match_raises(env) -> None:
    created("abc123" + "0" * 26)
    with pytest.raises(JobNotFound, match="no job ff"):
        store.find_job("ff")


def test_find_job_treats_the_prefix_literally(env) -> None:
    created("abc123" + "0" * 26)
    with pytest.raises(JobNotFound):
        store.find_job("a_c")


def test_list_jobs_newest_first_with_a_limit(env) -> None:
    ids = []
    for _ in range(3):
        ids.append(created())
        time.sleep(0.002)
    assert [j.id for j in store.list_jobs(limit=2)] == [ids[2], ids[1]]


def test_list_jobs_filters_by_state(env) -> None:
    queued, done = created(), completed_job()
    assert [j.id for j in store.list_jobs(S.COMPLETED)] == [done]
    assert [j.id for j in store.list_jobs(S.QUEUED)] == [queued]
    assert store.list_jobs(S.FAILED) == []


def test_list_jobs_since_a_moment_leaves_out_older_jobs(env) -> None:
    created()
    time.sleep(0.01)
    moment = store.now()
    newer = created()
    assert [j.id for j in store.list_jobs(since=moment)] == [newer]


def test_list_jobs_since_a_moment_in_another_time_zone(env) -> None:
    # given a job, and a moment one minute before it written in UTC+02:00
    # (what `pipeline list --since 2025-06-01T12:00+02:00` passes)
    job_id = created()
    moment = (store.get_job(job_id).created_at - timedelta(minutes=1)).astimezone(
        timezone(timedelta(hours=2)))
    # when jobs since that moment are listed, then the job is there
    assert [j.id for j in store.list_jobs(since=moment)] == [job_id]


def test_history_is_in_order_of_events(env) -> None:
    job_id = created()
    for step in ("validate", "optimize", "archive"):
        store.transition(job_id, S.PROCESSING, step=step)
    store.transition(job_id, S.COMPLETED, sources={S.PROCESSING}, step="archive")
    assert [(e.to_state, e.step) for e in store.history(job_id)] == [
        ("pending", None), ("queued", None), ("processing", "validate"),
        ("processing", "optimize"), ("processing", "archive"), ("completed", "archive")]
    ats = [e.at for e in store.history(job_id)]
    assert ats == sorted(ats)


def test_set_progress_only_while_processing(env) -> None:
    # given a queued job, progress is not recorded
    job_id = created()
    store.set_progress(job_id, 50)
    assert store.get_job(job_id).progress == 0.0
    # when it is processing, progress is recorded, rounded, without a history entry
    store.transition(job_id, S.PROCESSING, sources={S.QUEUED}, step="validate")
    events = len(store.history(job_id))
    store.set_progress(job_id, 12.345)
    assert store.get_job(job_id).progress == 12.3
    assert len(store.history(job_id)) == events


def test_count_by_state_counts_only_the_given_jobs(env) -> None:
    a, b, _ = created(), completed_job(), created()
    assert store.count_by_state([a, b]) == {"queued": 1, "completed": 1}


def test_job_to_dict_is_json_friendly(env) -> None:
    data = store.get_job(created()).to_dict()
    assert data["state"] == "queued"
    assert isinstance(data["created_at"], str)


# ----------------------------------------------------------------------------- races


def race_to_processing(job_id: str, contenders: int = 8) -> list[str]:
    """``contenders`` threads start the job at the same instant; each says won or refused."""
    barrier = threading.Barrier(contenders)
    outcomes: list[str] = []

    def contender() -> None:
        barrier.wait()
        try:
            store.transition(job_id, S.PROCESSING, sources={S.QUEUED}, step="validate",
                             new_attempt=True)
            outcomes.append("won")
        except IllegalTransition:
            outcomes.append("refused")
        except Exception as error:  # any other outcome fails the test below
            outcomes.append(repr(error))

    threads = [threading.Thread(target=contender) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def assert_one_winner(job_id: str, outcomes: list[str]) -> None:
    assert sorted(outcomes) == ["refused"] * 7 + ["won"]
    assert moves(job_id).count(("queued", "processing")) == 1
    assert store.get_job(job_id).attempts == 1


def test_of_eight_workers_starting_one_job_exactly_one_wins(env) -> None:
    # given a queued job; when eight threads start it at once, then exactly one does
    job_id = created()
    assert_one_winner(job_id, race_to_processing(job_id))
