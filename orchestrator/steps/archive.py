"""The archive step's files: weights.csv, report.json and report.html, each written atomically."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator import safeopen
from orchestrator.errors import DataError
from orchestrator.paths import write_atomic
from orchestrator.steps import report_html

#: portfolio.json and quality.json hold figures and two daily series: a few MB at most.
MAX_STEP_JSON = 256 << 20
PORTFOLIO_KEYS = ("objective", "expected_return", "volatility", "sharpe", "holdings",
                  "largest_weight", "effective_holdings", "max_drawdown", "weights",
                  "risk_contributions", "method", "solver_status", "selection", "warnings")


def read_json(root: Path, path: Path) -> dict[str, Any]:
    """An earlier step's JSON file in the job folder, read by the share's rules
    (orchestrator/safeopen.py; ``root``: the share): a share user who can write to processing/
    could have swapped it for a link to a file outside the share, whose content would then be
    copied into report.json."""
    try:
        return json.loads(safeopen.read_all(root, path, MAX_STEP_JSON))
    except FileNotFoundError:
        raise DataError(f"{path.name} is missing: the step before did not finish",
                        file=path.name) from None


def weights_csv(weights: dict[str, float]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["ticker", "weight"])
    for ticker, weight in sorted(weights.items(), key=lambda item: (-item[1], item[0])):
        writer.writerow([ticker, f"{weight:.10f}"])
    return out.getvalue()


def build_report(header: dict[str, Any], portfolio: dict[str, Any], quality: dict[str, Any],
                 ) -> dict[str, Any]:
    """report.json: parameters, estimates, figures, quality, timings (no daily series)."""
    series = portfolio.get("in_sample", {})
    mine, equal = series.get("portfolio") or [1.0], series.get("equal_weight") or [1.0]
    timings = dict(header.get("timings") or {})
    timings["optimize_stages"] = portfolio.get("timings", {})
    return {
        **{k: v for k, v in header.items() if k != "timings"},
        "estimates": portfolio.get("estimates", {}),
        "portfolio": {k: portfolio[k] for k in PORTFOLIO_KEYS if k in portfolio},
        "in_sample": {"portfolio_total_return": mine[-1] - 1.0,
                      "equal_weight_total_return": equal[-1] - 1.0,
                      "equal_weight_max_drawdown": series.get("equal_weight_max_drawdown")},
        "quality": quality,
        "timings": timings,
    }


def write_outputs(job_dir: Path, header: dict[str, Any],
                  progress: Callable[[float], None] | None = None, *,
                  root: Path | None = None) -> dict[str, Any]:
    """Write weights.csv, report.json and report.html from the earlier steps' files;
    ``progress`` hears the fraction of their bytes written after each file. ``root``: the
    share the job folder is in (default: the job folder itself is the boundary)."""
    portfolio = read_json(root or job_dir, job_dir / "portfolio.json")
    quality = read_json(root or job_dir, job_dir / "quality.json")
    report = build_report(header, portfolio, quality)
    files = {"weights.csv": weights_csv(portfolio["weights"]).encode(),
             "report.json": json_text(report).encode()}
    if portfolio.get("in_sample", {}).get("dates"):
        files["report.html"] = report_html.render(report, portfolio["in_sample"]).encode()
    total, written = sum(len(data) for data in files.values()), 0
    for name, data in files.items():
        write_atomic(job_dir / name, data)
        written += len(data)
        if progress is not None:
            progress(written / total)
    return summary(portfolio)


def json_text(payload: Any) -> str:
    """As orchestrator.paths.write_json writes it."""
    return json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"


def summary(portfolio: dict[str, Any]) -> dict[str, Any]:
    weights = portfolio["weights"]
    return {
        "holdings": len(weights),
        "expected_return": portfolio["expected_return"],
        "volatility": portfolio["volatility"],
        "sharpe": portfolio["sharpe"],
        "largest_weight": max(weights.values()),
        "effective_holdings": portfolio.get("effective_holdings"),
        "max_drawdown": portfolio.get("max_drawdown"),
        "warnings": portfolio.get("warnings", []),
    }
