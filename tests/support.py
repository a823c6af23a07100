"""Small helpers the integration tests share."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from orchestrator.store import jobs as store
from orchestrator.store.states import FINAL
from tests.conftest import REQUIRE

#: Screenshots the browser tests take, to look at (gitignored).
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def wait_final(job_ids: list[str], timeout: float = 90) -> list[store.Job]:
    """Poll the status store until every job has ended."""
    deadline = time.monotonic() + timeout
    jobs: list[store.Job] = []
    while time.monotonic() < deadline:
        jobs = [store.get_job(j) for j in job_ids]
        if all(j.state in FINAL for j in jobs):
            return jobs
        time.sleep(0.1)
    raise AssertionError(f"not final after {timeout} s: {[(j.id, j.state) for j in jobs]}")


def wait_path(pattern_root: Path, pattern: str, count: int = 1, timeout: float = 60) -> list[Path]:
    deadline = time.monotonic() + timeout
    found: list[Path] = []
    while time.monotonic() < deadline:
        found = sorted(pattern_root.glob(pattern))
        if len(found) >= count:
            return found
        time.sleep(0.1)
    return found


def bad_cell_copy(sample: Path, folder: Path, name: str = "bad.csv") -> Path:
    """The sample with a non-numeric cell on line 11 in column AMD: fails in validate."""
    lines = sample.read_text().splitlines()
    header, cells = lines[0].split(","), lines[10].split(",")
    cells[header.index("AMD")] = "n/a?"
    lines[10] = ",".join(cells)
    bad = folder / name
    bad.write_text("\n".join(lines) + "\n")
    return bad


def _chromedriver() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        message = ("chromium and chromedriver are needed (Debian: apt-get install chromium "
                   "chromium-driver)")
        if REQUIRE:
            pytest.fail(message)
        pytest.skip(message)
    return browser, driver


@contextmanager
def chromium(tmp_path: Path, window: str = "1600,900") -> Iterator[Any]:
    """Headless chromium driven by selenium, quit at the end (the Flower and jobs-page tests)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = _chromedriver()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--window-size={window}",
                 f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    os.environ.setdefault("SE_AVOID_STATS", "true")
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()
