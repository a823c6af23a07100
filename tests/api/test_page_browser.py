"""The jobs page in headless Chromium: log in with a token, upload a file through the form,
watch it complete live, open its report. Screenshots go to artifacts/ (gitignored)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import make_tokens, prices, start_api
from tests.conftest import Env, Process
from tests.support import ARTIFACTS, chromium

pytestmark = [pytest.mark.slow]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path, window="1400,1000") as driver:
        yield driver


def test_upload_through_the_form_watch_it_complete_and_open_the_report(
        env: Env, spawn: Callable[..., Process], worker: Callable[..., Process],
        browser: Any, sample_csv: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    worker(env)
    tokens = make_tokens()
    api = start_api(spawn, env, tokens)
    csv = prices(sample_csv, tmp_path, "browser.csv", salt=42)
    ARTIFACTS.mkdir(exist_ok=True)
    wait = WebDriverWait(browser, 90)
    # given a user who logs in with a submitter's token
    browser.get(api.url + "/login")
    browser.find_element(By.ID, "token").send_keys(tokens["submitter"])
    browser.find_element(By.ID, "login").click()
    wait.until(lambda d: d.find_elements(By.ID, "upload"))
    cookie = browser.get_cookie("pipeline_token")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # when they upload a file through the form with parameters
    browser.find_element(By.ID, "file").send_keys(str(csv))
    browser.find_element(By.ID, "portfolio_size").send_keys("25")
    Select(browser.find_element(By.ID, "objective")).select_by_value("max_sharpe")
    browser.find_element(By.ID, "submit").click()
    # then the job's page follows it live to completed, with its history
    wait.until(lambda d: d.find_elements(By.ID, "job"))
    assert "browser.csv" in browser.find_element(By.ID, "job").text
    wait.until(lambda d: d.find_element(By.ID, "state").text == "completed"
               and d.find_elements(By.ID, "report"))
    history = browser.find_element(By.ID, "history").text
    for state in ("pending", "queued", "processing", "completed"):
        assert state in history
    browser.save_screenshot(str(ARTIFACTS / "api-job-page.png"))
    # and its report opens
    browser.switch_to.frame(browser.find_element(By.ID, "report"))
    wait.until(lambda d: "max_sharpe" in d.find_element(By.TAG_NAME, "body").text)
    browser.switch_to.default_content()
    browser.get(api.url + "/")
    wait.until(lambda d: "completed" in d.find_element(By.ID, "jobs").text)
    browser.save_screenshot(str(ARTIFACTS / "api-jobs-list.png"))
    assert "test-submitter (submitter)" in browser.find_element(By.TAG_NAME, "header").text
    assert (ARTIFACTS / "api-job-page.png").stat().st_size > 10_000
