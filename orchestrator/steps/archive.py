"""The archive step's files: weights.csv and report.json, each written atomically."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from orchestrator.errors import DataError
from orchestrator.paths import write_atomic, write_json


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
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


def write_outputs(job_dir: Path, header: dict[str, Any]) -> dict[str, Any]:
    """Write weights.csv and report.json from the earlier steps' files; return a summary."""
    portfolio = read_json(job_dir / "portfolio.json")
    quality = read_json(job_dir / "quality.json")
    write_atomic(job_dir / "weights.csv", weights_csv(portfolio["weights"]))
    report = {**header, "portfolio": portfolio, "quality": quality}
    write_json(job_dir / "report.json", report)
    return summary(portfolio)


def summary(portfolio: dict[str, Any]) -> dict[str, Any]:
    weights = portfolio["weights"]
    return {
        "holdings": len(weights),
        "expected_return": portfolio["expected_return"],
        "volatility": portfolio["volatility"],
        "sharpe": portfolio["sharpe"],
        "largest_weight": max(weights.values()),
    }
