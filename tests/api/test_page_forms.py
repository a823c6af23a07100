"""The page's forms refuse what another site could send: no CSRF value, a wrong one; a bad
token at login; and it sends users without a token to the login form when reads need one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from orchestrator.store import jobs as store
from tests.api.conftest import Api, make_tokens, start_api
from tests.conftest import Env, Process

pytestmark = [pytest.mark.slow]


def test_forms_need_their_csrf_value(api: Api, sample_csv: Path) -> None:
    with httpx.Client(base_url=api.url) as browser:
        # given a signed-in browser (the login form carries its CSRF value)
        browser.get("/login")
        csrf = browser.cookies["pipeline_csrf"]
        signed = browser.post("/login", data={"csrf": csrf, "token": api.tokens["submitter"]})
        assert signed.status_code == 303 and "pipeline_token" in browser.cookies
        data = sample_csv.read_bytes()
        # when a form arrives without the value, or with another one (a forged request)
        for query in ("", "?csrf=forged"):
            forged = browser.post(f"/upload{query}", files={"file": ("x.csv", data)})
            # then it is refused and nothing is recorded
            assert forged.status_code == 403 and "another site" in forged.text
        assert store.list_jobs(limit=5) == []
        # with it, the upload goes through and lands on the job's page
        sent = browser.post(f"/upload?csrf={csrf}", files={"file": ("x.csv", data)})
        assert sent.status_code == 303 and sent.headers["location"].startswith("/jobs/")
        # a bad parameter comes back as the page's message, in the API's words
        bad = browser.post(f"/upload?csrf={csrf}", files={"file": ("y.csv", data)},
                           data={"portfolio_size": "5"})
        assert bad.status_code == 422 and "field &#39;portfolio_size&#39;" in bad.text
        # logging in with a wrong token says so
        wrong = browser.post("/login", data={"csrf": csrf, "token": "pot_0_x"})
        assert wrong.status_code == 401 and "unknown or revoked" in wrong.text


def test_reads_that_need_a_token_show_the_login_form(env: Env,
                                                     spawn: Callable[..., Process]) -> None:
    api = start_api(spawn, env, make_tokens(viewers="token"))
    page = httpx.get(api.url + "/")
    assert page.status_code == 401 and 'id="token"' in page.text
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
