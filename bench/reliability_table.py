"""Render artifacts/reliability.json (written by the fault suite, tests/fault) as Markdown.

    PIPELINE_FAULT_JOBS=200 pytest tests/fault && python -m bench.reliability_table
"""

from __future__ import annotations

import json
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "artifacts" / "reliability.json"


def main() -> None:
    rows = json.loads(SOURCE.read_text())
    print("| scenario | jobs | completed | failed (reason) | lost | duplicated | time s |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for r in rows:
        failed = ", ".join(f"{n} {why}" for why, n in r["failed"].items()) or "0"
        print(f"| {r['scenario']} | {r['jobs']} | {r['completed']} | {failed} | {r['lost']} "
              f"| {r['duplicated']} | {r['seconds']} |")


if __name__ == "__main__":
    main()
