"""A four-step pipeline, declared as docs/architecture.md ("Adding a step") tells a user to:
one registry entry (``concentration``, between optimize and archive) plus its plain function.

Imported by the worker that tests/integration/test_step_registry.py starts with
``PIPELINE_STEP_REGISTRY=tests.integration.four_steps:FOUR_STEPS``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from orchestrator.paths import write_json
from orchestrator.steps.context import StepContext
from orchestrator.steps.registry import PIPELINE, Step, StepRegistry
from orchestrator.steps.run import PORTFOLIO

CONCENTRATION = "concentration.json"


def run_concentration(ctx: StepContext) -> dict[str, Any]:
    """How concentrated the optimized portfolio is: the Herfindahl index of its weights and
    its effective number of holdings (1 / HHI)."""
    weights = json.loads((ctx.folder / PORTFOLIO).read_text())["weights"]
    hhi = sum(w * w for w in weights.values())
    ctx.progress(1.0)
    write_json(ctx.folder / CONCENTRATION, {"hhi": hhi, "effective_holdings": 1 / hhi})
    return {"effective_holdings": round(1 / hhi, 3)}


FOUR_STEPS = StepRegistry([
    PIPELINE["validate"],
    replace(PIPELINE["optimize"], progress=50),  # the built-in step, with a smaller share
    Step("concentration", f"{__name__}:run_concentration", progress=10,
         soft_time_limit=20, time_limit=30),
    PIPELINE["archive"],
])
