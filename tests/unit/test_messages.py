"""Unit tests of orchestrator.runtime.messages: each test is a short story (given, when, then)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from orchestrator.runtime.messages import JobMessage


def test_a_message_survives_json_encoding_and_decoding() -> None:
    # given a message with metrics, when it travels as JSON (as Celery sends it)
    message = JobMessage("j1", batch_id="b1", outcome="failed", metrics={"validate_seconds": 1.5})
    travelled = json.loads(json.dumps(message.encode()))
    # then it decodes to an equal message
    assert JobMessage.decode(travelled) == message


def test_encode_gives_plain_fields() -> None:
    assert JobMessage("j1").encode() == {"job_id": "j1", "batch_id": None, "outcome": "ok",
                                         "metrics": {}}


def test_decode_accepts_a_message_as_it_is() -> None:
    message = JobMessage("j1")
    assert JobMessage.decode(message) is message


def test_decode_refuses_unknown_fields() -> None:
    with pytest.raises(TypeError):
        JobMessage.decode({"job_id": "j1", "data": [1, 2, 3]})


def test_a_message_cannot_be_changed() -> None:
    message = JobMessage("j1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.outcome = "failed"  # type: ignore[misc]


def test_with_metrics_adds_to_a_copy() -> None:
    # given a message with one metric, when another is added
    first = JobMessage("j1", metrics={"a": 1})
    second = first.with_metrics(b=2)
    # then the copy has both and the original is unchanged
    assert second.metrics == {"a": 1, "b": 2}
    assert first.metrics == {"a": 1}


def test_ended_sets_the_outcome_on_a_copy() -> None:
    message = JobMessage("j1", metrics={"a": 1})
    ended = message.ended("cancelled")
    assert (ended.outcome, ended.metrics, message.outcome) == ("cancelled", {"a": 1}, "ok")
