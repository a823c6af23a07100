"""Job parameters are declared once (orchestrator/jobs/params.py), and every door shows them alike.

Issue 15, item 3, as a user meets it: a parameter a job file takes can be given to
``pipeline submit`` (five could not), with the bounds the job file obeys, and a value out of
bounds reads the same on the command line, in a job file and through the HTTP API. The first
test walks the model, so a parameter added later cannot be forgotten on the command line.
"""

from __future__ import annotations

import enum
import json
import typing
from pathlib import Path
from typing import Any

import annotated_types
import click
import pytest
from click.testing import CliRunner
from pydantic import Field
from starlette.testclient import TestClient

from cli import main as local
from cli import params as options
from cli import remote
from cli.main import pipeline
from orchestrator.api.app import create_app
from orchestrator.api.submit import form_params
from orchestrator.errors import ParameterError
from orchestrator.jobs import params
from orchestrator.jobs.jobspec import JobParams, make_params, read_job_file
from orchestrator.jobs.params import Parameters
from orchestrator.paths import Share

#: `pipeline submit` options that are not job parameters.
CONTROLS = {"batch", "wait", "force", "as_json", "token", "token_file"}


def submit_options() -> dict[str, click.Option]:
    command = pipeline.commands["submit"]
    return {p.name: p for p in command.params if isinstance(p, click.Option) and p.name}


def declared_range(name: str) -> tuple[Any, Any, bool, bool]:
    """(min, max, min_open, max_open) as the field's own metadata says (gt/ge/lt/le)."""
    low = high = None
    low_open = high_open = False
    for item in JobParams.model_fields[name].metadata:
        if isinstance(item, annotated_types.Gt):
            low, low_open = item.gt, True
        elif isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Lt):
            high, high_open = item.lt, True
        elif isinstance(item, annotated_types.Le):
            high = item.le
    return low, high, low_open, high_open


def declared_choices(name: str) -> tuple[str, ...]:
    annotation = JobParams.model_fields[name].annotation
    return typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()


# ----------------------------------------------------------------------- one option per field


def test_every_job_parameter_is_a_submit_option_with_its_bounds_and_choices() -> None:
    options = submit_options()
    # given every field of the job parameter model, then each is an option of `submit`
    missing = set(JobParams.model_fields) - set(options)
    assert not missing, f"job parameters missing from `pipeline submit`: {sorted(missing)}"
    assert set(options) - set(JobParams.model_fields) == CONTROLS
    for name, field in JobParams.model_fields.items():
        option = options[name]
        assert f"--{name.replace('_', '-')}" in option.opts, option.opts
        assert option.default is None, f"--{name} has a default: the settings' would be lost"
        assert field.description and field.description in (option.help or ""), name
        kind = option.type
        if declared_choices(name):
            assert isinstance(kind, click.Choice), name
            assert tuple(kind.choices) == declared_choices(name), name
        elif isinstance(kind, click.IntRange | click.FloatRange):
            shown = (kind.min, kind.max, kind.min_open, kind.max_open)
            assert shown == declared_range(name), name
            assert isinstance(kind, click.IntRange) == (field.annotation is int), name
        else:  # text: reference_file, a path in the share
            assert kind is click.STRING and declared_range(name) == (None, None, False, False)


def test_the_former_size_option_is_kept_beside_portfolio_size() -> None:
    assert set(submit_options()["portfolio_size"].opts) == {"--portfolio-size", "--size"}


# ----------------------------------------------------------- only what the user gave is sent


def given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str,
          ) -> tuple[dict[str, Any], dict[str, str]]:
    """What `pipeline submit` hands the intake locally, and what it sends the API remotely."""
    csv = tmp_path / "prices.csv"
    csv.write_text("date,A\n")
    seen: dict[str, Any] = {}
    monkeypatch.setattr(local, "orchestrator", lambda: None)
    monkeypatch.setattr(local, "_submit", lambda orch, files, params, batch, dedupe: (
        seen.update(local=params), ([], [], []))[1])
    monkeypatch.setattr(remote, "_send", lambda api, files, batch, form: (
        seen.update(remote=form), ([], [], []))[1])
    for group in (pipeline, remote._group(pipeline)):
        done = CliRunner().invoke(group, ["submit", str(csv), *args],
                                  env={"PIPELINE_API_URL": "http://127.0.0.1:9"})
        assert done.exit_code == 0, done.output
    return seen["local"], seen["remote"]


def test_the_new_options_are_sent_as_given_locally_and_through_the_api(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # when the options missing until now are given
    local_params, form = given(monkeypatch, tmp_path, "--covariance", "sample", "--returns",
                               "log", "--expected-returns", "ewma", "--ewma-span", "60",
                               "--reference-file", "reference/tickers.txt", "--separator",
                               "tab", "--decimal", ",", "--late-listing", "drop_ticker",
                               "--size", "30")
    # then exactly those are overrides, typed, and the API reads the same from the form
    assert local_params == {"covariance": "sample", "returns": "log",
                            "expected_returns": "ewma", "ewma_span": 60,
                            "reference_file": "reference/tickers.txt", "separator": "tab",
                            "decimal": ",", "late_listing": "drop_ticker", "portfolio_size": 30}
    assert form_params(form, "prices.csv") == (local_params, False)


def test_options_not_given_are_not_sent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # so the defaults stay the settings' (PIPELINE_PORTFOLIO_SIZE...) on both sides
    assert given(monkeypatch, tmp_path) == ({}, {})


def test_a_tab_separator_reaches_the_api_as_a_tab(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    # a form field of one tab was taken for an empty field and dropped
    local_params, form = given(monkeypatch, tmp_path, "--separator", "\t")
    assert form_params(form, "prices.csv") == (local_params, False) == ({"separator": "\t"},
                                                                          False)


# --------------------------------------------------- a bound reads the same on every door


@pytest.mark.parametrize(("option", "text", "name", "value", "words"), [
    ("--size", "5", "portfolio_size", 5, "Input should be greater than or equal to 10"),
    ("--portfolio-size", "500", "portfolio_size", 500, "Input should be less than or equal to 100"),
    ("--ewma-span", "1", "ewma_span", 1, "Input should be greater than or equal to 2"),
    ("--min-weight", "1", "min_weight", 1, "Input should be less than 1"),
    ("--max-weight", "0", "max_weight", 0, "Input should be greater than 0"),
    ("--target-volatility", "6", "target_volatility", 6, "Input should be less than or equal to 5"),
    ("--covariance", "shrunk", "covariance", "shrunk", "Input should be 'ledoit_wolf' or 'sample'"),
])
def test_an_out_of_bounds_value_is_refused_in_the_same_words_by_cli_job_file_and_api(
        env: Any, tmp_path: Path, sample_csv: Path, option: str, text: str, name: str,
        value: Any, words: str) -> None:
    share = Share(env.settings.share_dir).ensure()
    # the command line: exit 2 (usage), naming the option
    cli = CliRunner().invoke(pipeline, ["submit", str(sample_csv), option, text])
    assert cli.exit_code == 2, cli.output
    assert f"Invalid value for '{option}'" in cli.output or f"/ '{option}'" in cli.output
    assert words in cli.output
    # a job file: refused naming the field, with the same words
    job = share.input / "job.json"
    job.write_text(json.dumps({"input_file": "prices.csv", name: value}))
    with pytest.raises(ParameterError) as refused:
        read_job_file(job, share, env.settings)
    assert f"field {name!r}: {words}" in str(refused.value)
    # the API: 422, the same words
    with TestClient(create_app(env.settings)) as client:
        answer = client.post("/v1/jobs", files={"file": ("prices.csv", sample_csv.read_bytes())},
                             data={name: text})
    assert answer.status_code == 422, answer.text
    assert f"field {name!r}: {words}" in answer.json()["error"]["message"]


def test_the_optimizer_and_the_model_refuse_weights_that_cannot_sum_to_one_alike(env: Any,
                                                                                ) -> None:
    # one check, the optimizer's, asked by the model: the same sentence from both
    with pytest.raises(ParameterError) as refused:
        make_params(env.settings, {"portfolio_size": 20, "max_weight": 0.04})
    assert ("max_weight 0.04 × portfolio_size 20 = 0.8 < 1, so the weights cannot sum to 1: "
            "raise max_weight to at least 0.05 or portfolio_size to at least 25"
            ) in str(refused.value)


# ------------------------------------------------------------------- the API's schema


def test_the_openapi_document_shows_the_declared_bounds_choices_and_help(env: Any) -> None:
    Share(env.settings.share_dir).ensure()
    with TestClient(create_app(env.settings)) as client:
        document = client.get("/openapi.json").json()
    body = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    upload = body["multipart/form-data"]["schema"]["properties"]
    on_share = body["application/json"]["schema"]["properties"]
    for fields in (upload, on_share):
        assert set(JobParams.model_fields) <= set(fields)
        size = fields["portfolio_size"]
        assert (size["minimum"], size["maximum"]) == declared_range("portfolio_size")[:2]
        assert size["description"] == JobParams.model_fields["portfolio_size"].description
        assert fields["max_weight"]["exclusiveMinimum"] == 0
        assert tuple(fields["covariance"]["enum"]) == declared_choices("covariance")
    batch = document["paths"]["/v1/batches"]["post"]["requestBody"]["content"]
    assert batch["multipart/form-data"]["schema"]["properties"]["ewma_span"]["maximum"] == 100_000


# ------------------------------------------------- kinds no parameter has yet: flag, Enum


class Mode(enum.Enum):
    FAST = "fast"
    EXACT = "exact"


class Extended(Parameters):
    dry_run: bool = Field(False, description="plan only")
    mode: Mode = Field(Mode.FAST, description="how hard to try")


def test_a_future_bool_is_a_flag_and_an_enum_a_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a model with a bool and an Enum field (none of today's parameters is either)
    monkeypatch.setattr(params, "Parameters", Extended)

    @click.command()
    @options.option("dry_run")
    @options.option("mode")
    def command(**given: Any) -> None:
        click.echo(json.dumps(given))

    def run(*args: str) -> Any:
        done = CliRunner().invoke(command, list(args))
        return json.loads(done.output) if done.exit_code == 0 else (done.exit_code, done.output)

    # then a flag not given stays unset (None), and both spellings are honoured
    assert run() == {"dry_run": None, "mode": None}
    assert run("--dry-run", "--mode", "exact") == {"dry_run": True, "mode": "exact"}
    assert run("--no-dry-run")["dry_run"] is False
    # and an Enum value it does not have is refused in the field's words
    code, output = run("--mode", "slow")
    assert code == 2 and "Input should be 'fast' or 'exact'" in output
