"""Stories for the archive step's outputs: weights.csv, report.json and report.html."""

from __future__ import annotations

import csv
import json
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from orchestrator.steps import archive, validate
from orchestrator.steps.optimize import PortfolioRequest, optimize
from tests.conftest import SAMPLE

ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts"
HEADER = {"job_id": "3f2a9c0d", "input": "sp500_sample.csv",
          "params": {"objective": "max_sharpe", "portfolio_size": 20, "risk_free_rate": 0.02},
          "timings": {"validate_seconds": 0.21, "optimize_seconds": 0.05, "rows": 756},
          "created_at": "2026-01-05T09:30:00+00:00"}


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("job")
    prices, quality = validate.validate_prices(SAMPLE, validate.ValidationRules(min_tickers=20))
    portfolio = optimize(prices, PortfolioRequest(20, "max_sharpe"))
    (folder / "portfolio.json").write_text(json.dumps(portfolio.to_dict()))
    (folder / "quality.json").write_text(json.dumps(quality.to_dict()))
    archive.write_outputs(folder, HEADER)
    return folder


def test_weights_csv_lists_k_tickers_largest_first(job_dir):
    with open(job_dir / "weights.csv") as handle:
        rows = list(csv.DictReader(handle))
    weights = [float(r["weight"]) for r in rows]
    assert len(rows) == 20 and weights == sorted(weights, reverse=True)
    assert abs(sum(weights) - 1) < 1e-8


def test_report_json_holds_every_figure_the_issue_lists(job_dir):
    report = json.loads((job_dir / "report.json").read_text())
    p = report["portfolio"]
    for key in ("expected_return", "volatility", "sharpe", "holdings", "largest_weight",
                "effective_holdings", "max_drawdown", "weights", "method", "selection"):
        assert key in p, key
    assert p["holdings"] == 20 and p["largest_weight"] == max(p["weights"].values())
    assert report["params"]["objective"] == "max_sharpe"
    assert report["estimates"]["covariance"] == "ledoit_wolf"
    assert report["estimates"]["periods_per_year"] == 252
    assert report["quality"]["tickers_read"] == 60
    assert report["timings"]["validate_seconds"] == 0.21
    assert report["timings"]["optimize_stages"]["total_seconds"] > 0
    assert "dates" not in report["in_sample"]  # the daily series stay out of the JSON
    assert report["in_sample"]["equal_weight_max_drawdown"] > 0


def test_report_html_is_self_contained(job_dir):
    page = (job_dir / "report.html").read_text()
    # nothing to fetch: no scripts, stylesheets, images or fonts from anywhere
    assert not re.search(r"""(src|href)\s*=|<script|@import|url\(""", page, re.I)
    assert page.count("<svg") == 2 and "<polyline" in page
    assert "Effective number of holdings" in page and "Data quality" in page
    assert all(ticker in page for ticker in json.loads(
        (job_dir / "portfolio.json").read_text())["weights"])


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_report_renders_in_headless_chromium(job_dir):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); "
                    "CI installs it in .ci/run")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={shot}",
             "--window-size=1200,1600", (job_dir / "report.html").as_uri()],
            capture_output=True, timeout=120, check=True)
    shutil.copy(job_dir / "report.html", ARTIFACTS / "report.html")
    assert png_size(shot) == (1200, 1600)
    assert shot.stat().st_size > 30_000  # a blank page compresses to a few kB


def test_a_bounds_warning_reaches_report_json_html_and_the_cli(tmp_path):
    # given K = 100 at min_weight 0.01 (equal 1 % weights) and a validate step that dropped
    # leading rows to keep a late listing
    from types import SimpleNamespace

    from cli import render
    from tests.unit.optimizer.conftest import random_prices

    portfolio = optimize(random_prices(120, 300), PortfolioRequest(100, "min_volatility"))
    quality = {"rows_read": 300, "rows_kept": 164, "edge_rows_dropped": 136,
               "tickers_read": 120, "tickers_kept": [], "tickers_dropped": {}}
    (tmp_path / "portfolio.json").write_text(json.dumps(portfolio.to_dict()))
    (tmp_path / "quality.json").write_text(json.dumps(quality))
    # when the archive step writes the outputs
    result = archive.write_outputs(tmp_path, HEADER)
    # then report.json, report.html and the CLI's outcome line all carry the warning
    [warning] = json.loads((tmp_path / "report.json").read_text())["portfolio"]["warnings"]
    assert "the weight bounds decide the answer" in warning
    page = (tmp_path / "report.html").read_text()
    assert 'role="alert"' in page and "the weight bounds decide the answer" in page
    assert "Leading/trailing rows dropped (to keep late listings)" in page
    assert "136 of 300" in page
    line = render.outcome(SimpleNamespace(error=None, result=result))
    assert f"warning: {warning}" in line
