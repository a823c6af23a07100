"""Fuzzing the upload's parameters against a real server: every answer is 202 (the model
accepts them) or 422 naming a field it was sent (it does not), never a 500, never a file
left behind.

Bounded by a count, not a clock: ``PIPELINE_API_FUZZ_EXAMPLES`` (default 25, a few seconds).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import ParameterError
from orchestrator.jobs.jobspec import make_params
from orchestrator.settings import get_settings
from tests.api.conftest import Api

pytestmark = [pytest.mark.slow]
EXAMPLES = int(os.environ.get("PIPELINE_API_FUZZ_EXAMPLES", "25"))
NAMES = ["portfolio_size", "objective", "max_weight", "min_weight", "risk_free_rate",
         "target_volatility", "target_return", "covariance", "ewma_span", "returns", "force",
         "bogus"]
TEXT = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["max_sharpe", "min_volatility", "risk_parity", "sample", "log", "true",
                     "", " ", "1e309", "0x10", "NaN", "30.0", "١٢"]),
    st.text(max_size=40))
FORMS = st.dictionaries(st.sampled_from(NAMES), TEXT, max_size=5)


def test_fuzzed_parameters_get_202_or_422_naming_the_field(api: Api, sample_csv: Path) -> None:
    data = sample_csv.read_bytes()
    answers: dict[int, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(form=FORMS)
    def check(form: dict[str, str]) -> None:
        form = {k: v.replace("\x00", "") for k, v in form.items()}
        with httpx.Client(base_url=api.url, timeout=30, headers={
                "Authorization": f"Bearer {api.tokens['submitter']}"}) as http:
            sent = http.post("/v1/jobs", files={"file": ("f.csv", data, "text/csv")},
                             data={**form, "force": "true"})
        answers[sent.status_code] = answers.get(sent.status_code, 0) + 1
        assert sent.status_code in (202, 422), (form, sent.status_code, sent.text)
        if sent.status_code == 422:
            message = sent.json()["error"]["message"]
            # a field's own check says "field 'x'"; a rule across fields names them
            assert any(name in message for name in form), (form, message)
        else:
            params = {k: v for k, v in form.items() if k != "force" and v.strip()}
            try:  # what the server accepted, the model accepts (with lax text reading)
                make_params(get_settings(), sent.json()["params"])
            except ParameterError as error:
                pytest.fail(f"{params} accepted, but the model says {error}")
        assert api.staged() == []

    check()
    assert answers.get(202, 0) > 0 and answers.get(422, 0) > 0, answers
