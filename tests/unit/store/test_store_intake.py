"""Recording submissions (``orchestrator.store.intake.record``) on both stores.

A lone submission with nothing to check is the path of every ``pipeline submit`` of one file:
on PostgreSQL its row and its two creation events are one statement in autocommit (one round
trip instead of BEGIN, row, events, COMMIT); what is recorded is the same on both stores.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid

import pytest
from sqlalchemy import event

from orchestrator.store import db
from orchestrator.store import intake as records
from orchestrator.store import jobs as store
from orchestrator.store.states import JobState
from tests.unit.store.test_store_jobs import database  # noqa: F401 - the autouse parametrization


def new_job(**fields: object) -> store.NewJob:
    return store.NewJob(id=uuid.uuid4().hex, input_name="prices.csv", input_sha256="cd" * 32,
                        input_size=99, params={"portfolio_size": 5}, **fields)  # type: ignore[arg-type]


def test_a_lone_submission_is_queued_after_pending_with_its_note(env) -> None:
    # Given one submission with a note, when it is recorded
    job = new_job(detail={"note": "from the share"})
    assert records.record([job]) == {}
    # Then the job is queued with what was submitted, and its history says pending, then queued
    row = store.get_job(job.id)
    assert (row.state, row.step, row.attempts, row.params) == (
        JobState.QUEUED, None, 0, {"portfolio_size": 5})
    assert row.created_at == row.updated_at
    history = store.history(job.id)
    assert [(e.from_state, e.to_state, e.step, e.attempt) for e in history] == [
        (None, "pending", None, 0), ("pending", "queued", None, 0)]
    assert json.loads(history[0].detail or "{}") == {"note": "from the share"}
    assert history[1].detail is None
    assert history[0].at == history[1].at == row.created_at


def test_on_postgresql_a_lone_submission_is_one_statement(env, database: str) -> None:  # noqa: F811
    if database != "postgresql":
        pytest.skip("SQLite has no data-modifying CTE: a transaction of two statements there")
    sent: list[str] = []
    engine = db.get_engine()
    listener = lambda *args: sent.append(args[2])  # noqa: E731 - the statement's text
    event.listen(engine, "before_cursor_execute", listener)
    try:
        records.record([new_job()])
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len(sent) == 1 and sent[0].lstrip().upper().startswith("WITH")


def test_a_lone_submission_is_still_checked_for_a_duplicate(env) -> None:
    # Given a job recorded with the duplicate check
    first = new_job()
    assert records.record([first], dedupe_window=3600) == {}
    # When the same content and parameters are submitted again, checked
    again = new_job()
    duplicates = records.record([again], dedupe_window=3600)
    # Then it is found a duplicate of the first and left pending with the reason
    assert duplicates[again.id].id == first.id
    row = store.get_job(again.id)
    assert row.state is JobState.PENDING and row.error["type"] == "DuplicateInput"


def test_on_sqlite_a_lone_submission_is_one_transaction(env, database: str) -> None:  # noqa: F811
    if database != "sqlite":
        pytest.skip("PostgreSQL: one statement in autocommit (above)")
    begun: list[object] = []
    engine = db.get_engine()
    listener = lambda *args: begun.append(args)  # noqa: E731
    event.listen(engine, "begin", listener)
    try:
        records.record([new_job()])
    finally:
        event.remove(engine, "begin", listener)
    assert len(begun) == 1  # no empty transaction (each takes SQLite's write lock) before it


def test_a_group_without_the_duplicate_check_is_two_statements_and_the_same_records(
        env) -> None:
    # Given forty jobs submitted at once (`pipeline submit *.csv`), two of them refused
    group = [new_job(detail={"source": f"in/{i}.csv"}) for i in range(40)]
    refused = {group[3].id: {"type": "DataError", "message": "bad", "step": None},
               group[30].id: {"type": "DataError", "message": "worse", "step": None}}
    sent: list[str] = []
    engine = db.get_engine()
    listener = lambda *args: sent.append(args[2])  # noqa: E731 - the statement's text
    event.listen(engine, "before_cursor_execute", listener)
    try:
        # When they are recorded without the duplicate check
        assert records.record(group, refused=refused) == {}
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    # Then the rows and their events went in as two statements, not two or three per job
    # (SQLite's transaction opens with a BEGIN of its own)
    written = [s for s in sent if not s.startswith("BEGIN")]
    assert len(written) == 2 and all(s.startswith("INSERT") for s in written), sent
    # And each job is recorded as it was one by one: queued, or pending with its reason
    for job in group:
        row = store.get_job(job.id)
        events = [(e.from_state, e.to_state) for e in store.history(job.id)]
        if job.id in refused:
            assert (row.state, row.error) == (JobState.PENDING, refused[job.id])
            assert events == [(None, "pending")]
        else:
            assert (row.state, row.error) == (JobState.QUEUED, None)
            assert events == [(None, "pending"), ("pending", "queued")]
        assert json.loads(store.history(job.id)[0].detail or "{}") == job.detail


def record_side_by_side(groups: list[list[store.NewJob]]) -> tuple[
        list[dict[str, records.Original]], list[BaseException]]:
    """Each group recorded with the duplicate check in its own thread, at the same time: each
    pausing after its first content lock until the other holds one too (or 2 s passed)."""
    met = threading.Barrier(len(groups))
    paused: set[int] = set()

    def pause(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "pg_advisory_xact_lock" in statement and threading.get_ident() not in paused:
            paused.add(threading.get_ident())
            with contextlib.suppress(threading.BrokenBarrierError):
                met.wait(timeout=2)

    found: list[dict[str, records.Original]] = []
    errors: list[BaseException] = []

    def submit(group: list[store.NewJob]) -> None:
        try:
            found.append(records.record(group, dedupe_window=3600))
        except BaseException as error:
            errors.append(error)

    engine = db.get_engine()
    event.listen(engine, "after_cursor_execute", pause)
    try:
        threads = [threading.Thread(target=submit, args=(g,)) for g in groups]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        event.remove(engine, "after_cursor_execute", pause)
    return found, errors


def content(mark: str) -> store.NewJob:
    return store.NewJob(id=uuid.uuid4().hex, input_name=f"{mark}.csv", input_sha256=mark * 64,
                        input_size=9, params={})


def test_two_checked_groups_of_the_same_contents_in_opposite_orders_do_not_deadlock(
        env, database: str) -> None:  # noqa: F811
    if database != "postgresql":
        pytest.skip("SQLite: one writer at a time, from BEGIN")
    # Given two submitters with the same two contents, listed in opposite orders
    groups = [[content("a"), content("b")], [content("b"), content("a")]]
    # When both record their group with the duplicate check at the same time
    found, errors = record_side_by_side(groups)
    # Then neither was aborted as a deadlock, and each content ran once: the other a duplicate
    assert errors == []
    assert len({d for f in found for d in f}) == 2
    assert {o.input_name for f in found for o in f.values()} == {"a.csv", "b.csv"}
