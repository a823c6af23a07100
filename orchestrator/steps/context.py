"""What a step's run function is given, apart from the step functions themselves.

Its own module so the task layer (tasks/base.py) can name it without importing the step
functions (orchestrator/steps/run.py), which bring pandas, pyarrow and SciPy: a worker that
serves only the maintenance queue (rotation) never loads them, and stays within issue 7's
200 MB. A worker that serves steps imports their functions before it forks its pool
(orchestrator/celery.py, ``_import_served_steps``), so its processes share those pages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.jobs.jobspec import JobParams
from orchestrator.paths import Share
from orchestrator.settings import Settings


@dataclass(frozen=True)
class StepContext:
    """What a step's run function is given: its job, the job's folder and parameters, the
    settings, a progress callback (fraction done, 0..1), and what the job did so far."""

    job_id: str
    folder: Path
    params: JobParams
    settings: Settings
    progress: Callable[[float], None]
    input_name: str = ""
    created_at: str = ""  # ISO 8601, when the job was submitted
    timings: dict[str, Any] = field(default_factory=dict)  # seconds per step run so far

    @property
    def share(self) -> Share:
        return Share(self.settings.share_dir)
