"""Unit tests of orchestrator.jobs.jobspec: each test is a short story (given, when, then)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import DataError, ParameterError
from orchestrator.jobs.jobspec import JobParams, make_params, read_job_file
from orchestrator.paths import Share
from orchestrator.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Default settings, whatever PIPELINE_* variables the shell running the tests has."""
    for key in list(os.environ):
        if key.startswith("PIPELINE_"):
            monkeypatch.delenv(key)
    return Settings(share_dir=tmp_path / "share", var_dir=tmp_path / "var")


@pytest.fixture
def share(settings: Settings) -> Share:
    return Share(settings.share_dir).ensure()


def bad_params(settings: Settings, **overrides: Any) -> str:
    with pytest.raises(ParameterError) as raised:
        make_params(settings, overrides, file="job.json")
    return str(raised.value)


def job_file(share: Share, content: str | dict[str, Any], name: str = "job.json") -> Path:
    path = share.input / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def bad_job_file(path: Path, share: Share, settings: Settings) -> DataError:
    with pytest.raises(DataError) as raised:
        read_job_file(path, share, settings)
    assert str(raised.value).startswith(f"file {path.name}")
    return raised.value


# ----------------------------------------------------------------------------- make_params


def test_make_params_without_overrides_gives_the_settings_defaults(settings: Settings) -> None:
    params = make_params(settings, {})
    assert params == JobParams(portfolio_size=20, objective="min_volatility", max_weight=0.25,
                               min_weight=0.01, risk_free_rate=0.02)


def test_make_params_overrides_win_over_defaults(settings: Settings) -> None:
    params = make_params(settings, {"portfolio_size": 40, "objective": "max_sharpe"})
    assert (params.portfolio_size, params.objective, params.max_weight) == (40, "max_sharpe", 0.25)


def test_portfolio_size_below_ten_is_refused(settings: Settings) -> None:
    message = bad_params(settings, portfolio_size=5)
    assert message.startswith("file job.json: ")
    assert "field 'portfolio_size'" in message
    assert "greater than or equal to 10" in message
    assert "(got 5)" in message


def test_portfolio_size_above_one_hundred_is_refused(settings: Settings) -> None:
    message = bad_params(settings, portfolio_size=500)
    assert "field 'portfolio_size'" in message
    assert "less than or equal to 100" in message
    assert "(got 500)" in message


def test_unknown_objective_lists_the_known_ones(settings: Settings) -> None:
    message = bad_params(settings, objective="max_return")
    assert "field 'objective'" in message
    assert "'min_volatility', 'max_sharpe'" in message and "or 'risk_parity'" in message
    assert "(got 'max_return')" in message


def test_max_weight_too_small_to_fill_the_portfolio_says_how_to_fix_it(settings: Settings,
                                                                       ) -> None:
    # given 20 holdings capped at 4 % each (80 % at most), when the parameters are made
    message = bad_params(settings, portfolio_size=20, max_weight=0.04)
    # then the message explains why and gives both ways out
    assert "cannot sum to 1" in message
    assert "raise max_weight to at least 0.05" in message
    assert "portfolio_size to at least 25" in message


def test_max_weight_exactly_one_over_size_is_feasible(settings: Settings) -> None:
    # 20 × 0.05 = 1: every holding at its cap is a valid portfolio
    assert make_params(settings, {"portfolio_size": 20, "max_weight": 0.05}).max_weight == 0.05


def test_min_weight_too_large_for_the_portfolio_is_refused(settings: Settings) -> None:
    message = bad_params(settings, portfolio_size=10, min_weight=0.2, max_weight=0.3)
    assert "lower min_weight to at most 0.1" in message


def test_portfolio_size_as_a_string_is_refused(settings: Settings) -> None:
    message = bad_params(settings, portfolio_size="20")
    assert "field 'portfolio_size'" in message
    assert "valid integer" in message
    assert "(got '20')" in message


def test_unknown_field_is_refused(settings: Settings) -> None:
    message = bad_params(settings, portfolio_sise=30)
    assert "field 'portfolio_sise'" in message
    assert "Extra inputs are not permitted" in message


def test_params_cannot_be_changed_once_made(settings: Settings) -> None:
    params = make_params(settings, {})
    with pytest.raises(Exception, match="frozen"):
        params.portfolio_size = 30  # type: ignore[misc]


# ----------------------------------------------------------------------------- job files


def test_valid_job_file_gives_its_csv_and_parameters(share: Share, settings: Settings) -> None:
    # given a CSV and a job file naming it with one parameter
    csv = share.input / "prices.csv"
    csv.write_text("date,A\n2024-01-02,1\n")
    path = job_file(share, {"input_file": "prices.csv", "portfolio_size": 15})
    # when it is read
    found, params = read_job_file(path, share, settings)
    # then the CSV is found and the parameter overrides the defaults
    assert found == csv.resolve()
    assert params.portfolio_size == 15
    assert params.objective == "min_volatility"


def test_job_file_may_name_a_csv_in_a_sub_folder(share: Share, settings: Settings) -> None:
    (share.input / "sub").mkdir()
    (share.input / "sub" / "p.csv").write_text("x\n")
    found, _ = read_job_file(job_file(share, {"input_file": "sub/p.csv"}), share, settings)
    assert found == (share.input / "sub" / "p.csv").resolve()


def test_json_syntax_error_gives_the_line(share: Share, settings: Settings) -> None:
    path = job_file(share, '{\n  "input_file": "prices.csv",\n  "portfolio_size": 20,\n}\n')
    error = bad_job_file(path, share, settings)
    assert "JSON syntax error" in str(error)
    assert "row 4" in str(error)
    assert error.row == 4


def test_job_file_that_is_not_an_object_is_refused(share: Share, settings: Settings) -> None:
    error = bad_job_file(job_file(share, '["prices.csv"]'), share, settings)
    assert "must hold a JSON object, got list" in str(error)


def test_job_file_that_is_not_utf8_is_refused(share: Share, settings: Settings) -> None:
    path = share.input / "job.json"
    path.write_bytes('{"input_file": "pr\u00e9ces.csv"}'.encode("latin-1"))
    assert "not a UTF-8 JSON job file" in str(bad_job_file(path, share, settings))


def test_job_file_without_input_file_is_refused(share: Share, settings: Settings) -> None:
    error = bad_job_file(job_file(share, {"portfolio_size": 20}), share, settings)
    assert isinstance(error, ParameterError)
    assert "field 'input_file': Field required" in str(error)


def test_job_file_with_a_field_of_the_wrong_type_is_refused(share: Share, settings: Settings,
                                                            ) -> None:
    (share.input / "prices.csv").write_text("x\n")
    path = job_file(share, {"input_file": "prices.csv", "portfolio_size": "twenty"})
    error = bad_job_file(path, share, settings)
    assert isinstance(error, ParameterError)
    assert "field 'portfolio_size'" in str(error)
    assert "valid integer" in str(error)


def test_job_file_with_infeasible_parameters_is_refused(share: Share, settings: Settings,
                                                        ) -> None:
    (share.input / "prices.csv").write_text("x\n")
    path = job_file(share, {"input_file": "prices.csv", "max_weight": 0.01})
    assert "cannot sum to 1" in str(bad_job_file(path, share, settings))


def test_input_file_that_climbs_out_of_the_share_is_refused(share: Share, settings: Settings,
                                                           ) -> None:
    path = job_file(share, {"input_file": "../../etc/passwd"})
    error = bad_job_file(path, share, settings)
    assert "input_file '../../etc/passwd' is a path outside the share" in str(error)


def test_absolute_input_file_is_refused(share: Share, settings: Settings) -> None:
    inside = share.input / "prices.csv"
    inside.write_text("x\n")
    # even an absolute path that points inside the share: job files use relative paths
    error = bad_job_file(job_file(share, {"input_file": str(inside)}), share, settings)
    assert "input_file must be a path relative to the job file" in str(error)


def test_symlink_in_input_pointing_outside_the_share_is_refused(
        share: Share, settings: Settings, tmp_path: Path) -> None:
    # given a secret outside the share and a link to it dropped in input/
    secret = tmp_path / "secret.csv"
    secret.write_text("password\n")
    (share.input / "prices.csv").symlink_to(secret)
    # when a job file names the link, then it is refused as a link, which is never followed
    path = job_file(share, {"input_file": "prices.csv"})
    error = bad_job_file(path, share, settings)
    assert "input_file 'prices.csv' is refused: a symbolic link; links are never followed" \
        in str(error)
    assert "password" not in str(error)


def test_input_file_that_does_not_exist_is_refused(share: Share, settings: Settings) -> None:
    error = bad_job_file(job_file(share, {"input_file": "missing.csv"}), share, settings)
    assert "input_file 'missing.csv' does not exist in the share" in str(error)


def test_input_file_that_is_a_folder_is_refused(share: Share, settings: Settings) -> None:
    (share.input / "prices.csv").mkdir()
    error = bad_job_file(job_file(share, {"input_file": "prices.csv"}), share, settings)
    assert "input_file 'prices.csv' is refused: not a regular file (a folder)" in str(error)
