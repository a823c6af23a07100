"""The task policy (orchestrator/policy/) and the fault-point registry (orchestrator/faults.py):
what each error means for each task, the one backoff, the limits by task name."""

from __future__ import annotations

import errno
import random
import subprocess
import sys
from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError
from sqlalchemy.exc import OperationalError as SQLOperationalError

import celeryconfig
from orchestrator import faults, policy
from orchestrator.errors import DataError, IllegalTransition, SolverError, TransientError
from orchestrator.monitoring.notify import DeliveryError
from orchestrator.policy import Action, Kind
from orchestrator.policy.backoff import JITTER, attempts_within, nominal
from orchestrator.settings import Settings

STEP, ROTATION, NOTIFY = "pipeline.optimize", "pipeline.rotate_batch", "pipeline.notify"
ROOT = Path(__file__).resolve().parents[2]
DB_AWAY = SQLOperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


@pytest.fixture
def settings() -> Settings:
    return Settings(max_retries=3, outage_retries=30, disk_wait_seconds=900, notify_retries=5)


# ------------------------------------------------------------------------- classification
@pytest.mark.parametrize(("error", "kind"), [
    (DataError("row 3: not a number"), Kind.DATA),
    (SolverError("infeasible"), Kind.DATA),
    (SoftTimeLimitExceeded(), Kind.TIMEOUT),
    (DB_AWAY, Kind.OUTAGE),
    (OperationalError("broker connection lost"), Kind.OUTAGE),
    (OSError(errno.ENOSPC, "No space left on device"), Kind.DISK),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), Kind.DISK),
    (OSError(errno.EIO, "Input/output error"), Kind.DISK),
    (OSError(errno.ESTALE, "Stale file handle"), Kind.DISK),
    (TransientError("busy"), Kind.TRANSIENT),
    (ConnectionResetError("reset by peer"), Kind.TRANSIENT),
    (TimeoutError("read timed out"), Kind.TRANSIENT),
    (DeliveryError("HTTP 503"), Kind.TRANSIENT),
    (DeliveryError("HTTP 404", retry=False), Kind.UNEXPECTED),
    (OSError(errno.EACCES, "Permission denied"), Kind.UNEXPECTED),
    (IllegalTransition("completed -> processing"), Kind.UNEXPECTED),
    (KeyError("x"), Kind.UNEXPECTED),
])
def test_every_error_has_one_kind(error: BaseException, kind: Kind) -> None:
    assert policy.classify(error) is kind


@pytest.mark.parametrize(("error", "retries", "action", "limit"), [
    (DataError("bad file"), 0, Action.FAIL, 0),            # data errors never retry
    (KeyError("bug"), 0, Action.FAIL, 0),                   # nor do unexpected ones
    (TransientError("busy"), 0, Action.RETRY, 3),           # transient: max_retries
    (TransientError("busy"), 3, Action.FAIL, 3),
    (OSError(errno.ENOSPC, "full"), 3, Action.RETRY, 25),   # disk: ~disk_wait_seconds
    (OSError(errno.ENOSPC, "full"), 25, Action.FAIL, 25),
    (DB_AWAY, 29, Action.REDELIVER, 30),                    # outage: outage_retries
    (DB_AWAY, 30, Action.GIVE_UP, 30),
])
def test_a_step_fails_retries_or_redelivers_as_the_table_says(
        settings: Settings, error: BaseException, retries: int, action: Action, limit: int,
) -> None:
    decision = policy.decide(error, retries, STEP, settings)
    assert (decision.action, decision.limit) == (action, limit)
    assert (decision.delay > 0) is (action in (Action.RETRY, Action.REDELIVER))


def test_a_soft_time_limit_fails_the_step_saying_which_limit(settings: Settings) -> None:
    decision = policy.decide(SoftTimeLimitExceeded(), 0, STEP, settings)
    assert decision.action is Action.FAIL
    assert str(decision.error) == f"took longer than {settings.optimize_soft_time_limit} s"


def test_the_disk_wait_lasts_about_the_setting_and_never_less_than_max_retries() -> None:
    # a short disk wait still gets the quick retries every transient error gets
    short = Settings(max_retries=5, disk_wait_seconds=0)
    assert policy.decide(OSError(errno.EIO, "io"), 4, STEP, short).action is Action.RETRY
    # a long one: the mean pauses of its retries add up to the wait
    limit = attempts_within(900)
    mean = sum(nominal(n) * (1 - JITTER / 2) for n in range(limit))
    assert mean >= 900 > mean - nominal(limit - 1)


def test_a_rotation_batch_is_retried_only_while_the_database_is_away(settings: Settings) -> None:
    assert policy.decide(DB_AWAY, 0, ROTATION, settings).action is Action.REDELIVER
    assert policy.decide(DB_AWAY, 3, ROTATION, settings).action is Action.GIVE_UP  # max_retries
    # its I/O errors are counted by the run and redone by the next one, not retried here
    assert policy.decide(TransientError("io"), 0, ROTATION, settings).action is Action.FAIL


def test_a_notification_retries_what_the_receiver_may_accept_later(settings: Settings) -> None:
    retry = policy.decide(DeliveryError("HTTP 503"), 4, NOTIFY, settings)
    assert (retry.action, retry.limit) == (Action.RETRY, 5)
    assert policy.decide(DeliveryError("HTTP 503"), 5, NOTIFY, settings).action is Action.FAIL
    assert policy.decide(DeliveryError("HTTP 404", retry=False), 0, NOTIFY,
                         settings).action is Action.FAIL
    # its pauses grow to 5 minutes, a task's to one
    assert policy.decide(DeliveryError("HTTP 503"), 4, NOTIFY, Settings(notify_retries=50)
                         ).delay <= 16
    assert max(policy.decide(DeliveryError("x"), 20, NOTIFY, Settings(notify_retries=50)).delay
               for _ in range(50)) > 60


# ------------------------------------------------------------------------------- backoff
def test_backoff_doubles_up_to_its_cap() -> None:
    assert [nominal(n) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert [nominal(n, base=0.5, cap=30) for n in (0, 1, 2, 10)] == [0.5, 1, 2, 30]
    assert nominal(10_000) == 60  # no overflow however many retries


def test_backoff_jitters_below_the_nominal_pause_and_never_above_the_cap() -> None:
    pauses = [policy.backoff(20, cap=60) for _ in range(2000)]
    assert all(30 < p <= 60 for p in pauses)  # default jitter: the top half of the range
    assert max(pauses) - min(pauses) > 20  # spread out, not all at the cap
    full = [policy.backoff(3, jitter=1.0) for _ in range(2000)]  # Celery's full jitter
    assert all(0 <= p <= 8 for p in full) and min(full) < 1
    assert {policy.backoff(3, jitter=0) for _ in range(10)} == {8.0}


def test_backoff_is_reproducible_with_a_seeded_random() -> None:
    first = [policy.backoff(n, rng=random.Random(42)) for n in range(6)]
    again = [policy.backoff(n, rng=random.Random(42)) for n in range(6)]
    assert first == again
    assert first != [policy.backoff(n, rng=random.Random(43)) for n in range(6)]


# -------------------------------------------------------------------------------- limits
def test_each_step_and_the_rotation_batch_have_their_limits_by_name() -> None:
    settings = Settings(optimize_soft_time_limit=50, optimize_time_limit=70,
                        rotation_time_limit=100)
    assert policy.time_limits("pipeline.optimize", settings) == (50, 70)
    assert policy.time_limits("pipeline.rotate_batch", settings) == (90, 100)
    assert policy.time_limits(NOTIFY, settings) is None
    assert policy.time_limits("optimize", settings) is None  # task names, not step names


def test_the_annotations_carry_every_limit_and_the_rotation_rate() -> None:
    settings = Settings(validate_soft_time_limit=5, validate_time_limit=9,
                        rotation_time_limit=3600, rotation_task_rate_limit="30/m")
    annotations = policy.task_annotations(settings)
    assert annotations["pipeline.validate"] == {"soft_time_limit": 5, "time_limit": 9}
    assert annotations["pipeline.rotate_batch"] == {
        "soft_time_limit": 3540, "time_limit": 3600, "rate_limit": "30/m"}
    assert set(annotations) == {"pipeline.validate", "pipeline.optimize", "pipeline.archive",
                                "pipeline.rotate_batch"}
    assert "rate_limit" not in policy.task_annotations(Settings())["pipeline.rotate_batch"]


def test_the_celery_configuration_lists_the_rotation_batch_limits_with_the_steps() -> None:
    # before, the batch's limits were decorator arguments, absent from task_annotations
    annotations = celeryconfig.build(Settings(rotation_time_limit=100))["task_annotations"]
    assert annotations["pipeline.rotate_batch"] == {"soft_time_limit": 90, "time_limit": 100}
    assert annotations["pipeline.archive"] == {"soft_time_limit": 120, "time_limit": 150}


def test_the_bound_tasks_get_their_limits_from_the_annotations(tmp_path: Path) -> None:
    script = ("from orchestrator.celery import app\nimport tasks.rotation, tasks.steps\n"
              "app.finalize()\n"
              "for name in ('pipeline.rotate_batch', 'pipeline.validate'):\n"
              "    task = app.tasks[name]\n"
              "    print(task.soft_time_limit, task.time_limit, task.rate_limit)\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "PIPELINE_VAR_DIR": str(tmp_path),
           "PIPELINE_SHARE_DIR": str(tmp_path / "share"), "PIPELINE_ROTATION_TIME_LIMIT": "100",
           "PIPELINE_ROTATION_TASK_RATE_LIMIT": "2/s", "PIPELINE_VALIDATE_TIME_LIMIT": "40",
           "PIPELINE_VALIDATE_SOFT_TIME_LIMIT": "30"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.stdout.split() == ["90", "100", "2/s", "30", "40", "None"], out.stderr


# ------------------------------------------------------------------------ fault registry
def test_an_unknown_fault_point_or_action_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"unknown fault point 'step\.optimise'"):
        faults.reach("step.optimise")
    with pytest.raises(ValueError, match="unknown fault point 'optimize'"):
        faults.parse("sleep:optimize:3")  # the old, unqualified names
    with pytest.raises(ValueError, match="unknown action 'crash'"):
        faults.parse("crash:intake.after_claim")
    monkeypatch.setenv("PIPELINE_FAULTS", "exit:after_rows")
    with pytest.raises(ValueError, match="unknown fault point 'after_rows'"):
        faults.reach(faults.ROTATION_AFTER_ROWS)


def test_fault_specs_name_action_point_seconds_and_subject_prefix() -> None:
    assert faults.parse("sleep:step.optimize:3, hang:step.archive@slow,exit:intake.after_claim"
                        ) == [faults.Fault("sleep", "step.optimize", 3.0),
                              faults.Fault("hang", "step.archive", 1.0, "slow"),
                              faults.Fault("exit", "intake.after_claim")]
    assert faults.parse("") == []


def test_every_point_is_inert_unless_armed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPELINE_FAULTS", raising=False)
    for point in sorted(faults.POINTS):
        faults.reach(point, "prices.csv")
    slept: list[float] = []
    monkeypatch.setattr(faults.time, "sleep", slept.append)
    monkeypatch.setenv("PIPELINE_FAULTS", "sleep:step.optimize:2@slow")
    faults.reach("step.optimize", "fast.csv")
    faults.reach("step.validate", "slow.csv")
    faults.reach("step.optimize", "slow.csv")
    assert slept == [2.0]


@pytest.mark.parametrize("point", ["intake.after_claim", "rotation.after_rows", "step.validate"])
def test_an_exit_fault_kills_the_process_with_the_documented_status(point: str,
                                                                   tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "PIPELINE_FAULTS": f"exit:{point}"}
    script = f"from orchestrator import faults\nfaults.reach({point!r})\nprint('survived')\n"
    died = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert died.returncode == faults.CRASH_EXIT == 137, died.stderr
    assert "survived" not in died.stdout
