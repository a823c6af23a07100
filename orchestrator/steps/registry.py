"""The job's steps, declared once: name, run function, queue, share of the progress bar, limits.

Everything else is made from this list (issue 15, item 3): the Celery tasks
(``pipeline.<name>``, tasks/steps.py), their queues, routes and time-limit annotations
(celeryconfig.py), the worker roles (cli/processes.py), the job's chain
(orchestrator/jobs/canvas.py),
where each step's progress starts (orchestrator/jobs/lifecycle.py), the per-step latency in
``pipeline stats`` and the choices of ``pipeline retry --from-step``. Before, the step list and
its queues were written in eight modules.

Adding a step is one :class:`Step` here plus its plain function ``(StepContext) -> metrics``
(docs/architecture.md, "Adding a step"). A deployment may name another registry with
``PIPELINE_STEP_REGISTRY=module:attribute`` (a test builds a four-step pipeline that way).

The run function is named by its import path, not imported: this module imports nothing from
the project, so the settings can read the steps' declared limits without an import cycle, and a
worker imports a step's code only when it registers the step's task.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

#: The queue of everything that is not a step (summaries, recovery, rotation, notifications).
MAINTENANCE_QUEUE = "maintenance"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


@dataclass(frozen=True)
class Step:
    """One step of every job.

    ``run``: "module:function", a plain function taking a ``StepContext`` and returning the
    step's metrics (a small JSON-able dict); it reads and writes the job's folder only.
    ``progress``: the step's share of the job's progress bar, in percent (the shares add to 100).
    ``soft_time_limit``/``time_limit``: seconds before the step is asked to stop / is killed
    (``PIPELINE_<NAME>_SOFT_TIME_LIMIT``/``_TIME_LIMIT`` override them for the built-in steps).
    ``queue``: the broker queue its messages go to; default: the step's name.
    ``role``: the worker role that serves its queue when workers are split by role
    (``pipeline up --workers-by-role``, deploy/): "steps" for light, file-bound steps, or a role
    of its own for a heavy one (the optimizer's), so that it can be scaled apart.
    """

    name: str
    run: str
    progress: float
    soft_time_limit: int
    time_limit: int
    queue: str = ""
    role: str = "steps"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"step name {self.name!r}: lower-case letters, digits and _, "
                             "starting with a letter")
        if ":" not in self.run:
            raise ValueError(f"step {self.name}: run must be 'module:function', not {self.run!r}")
        if not 0 < self.soft_time_limit < self.time_limit:
            raise ValueError(f"step {self.name}: soft_time_limit ({self.soft_time_limit}) must "
                             f"be positive and below time_limit ({self.time_limit})")
        if self.progress < 0:
            raise ValueError(f"step {self.name}: progress must not be negative")
        if not self.queue:
            object.__setattr__(self, "queue", self.name)

    @property
    def task_name(self) -> str:
        return f"pipeline.{self.name}"

    def function(self) -> Callable[..., dict[str, Any]]:
        """The plain function that does the step's work, imported on the first call and
        remembered (each task run asks for it)."""
        return _resolve(self.run)


@functools.cache
def _resolve(run: str) -> Callable[..., dict[str, Any]]:
    module, _, attribute = run.partition(":")
    found: Callable[..., dict[str, Any]] = getattr(importlib.import_module(module), attribute)
    return found


class StepRegistry:
    """The steps of a job, in the order they run."""

    def __init__(self, steps: Iterable[Step]) -> None:
        self._steps = tuple(steps)
        self._by_name = {step.name: step for step in self._steps}
        if not self._steps:
            raise ValueError("a pipeline needs at least one step")
        if len(self._by_name) != len(self._steps):
            raise ValueError("step names must be unique")
        if MAINTENANCE_QUEUE in self.queues:
            raise ValueError(f"the queue {MAINTENANCE_QUEUE!r} is not a step's")
        if abs(sum(step.progress for step in self._steps) - 100.0) > 1e-6:
            raise ValueError("the steps' progress shares must add up to 100")

    def __iter__(self) -> Iterator[Step]:
        return iter(self._steps)

    def __len__(self) -> int:
        return len(self._steps)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> Step:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no step named {name!r}; the steps are {', '.join(self.names)}"
                           ) from None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(step.name for step in self._steps)

    @property
    def first(self) -> str:
        return self._steps[0].name

    @property
    def last(self) -> str:
        return self._steps[-1].name

    @property
    def queues(self) -> tuple[str, ...]:
        """The steps' queues, each once, in step order."""
        return tuple(dict.fromkeys(step.queue for step in self._steps))

    @property
    def all_queues(self) -> tuple[str, ...]:
        """Every queue a worker of this pipeline consumes: the steps' and maintenance."""
        return (*self.queues, MAINTENANCE_QUEUE)

    def served_by(self, queues: Iterable[str]) -> tuple[Step, ...]:
        """The steps a worker consuming ``queues`` runs."""
        consumed = set(queues)
        return tuple(step for step in self._steps if step.queue in consumed)

    def roles(self) -> dict[str, tuple[str, ...]]:
        """Worker roles and the queues each serves, in step order, maintenance last."""
        found: dict[str, list[str]] = {}
        for step in self._steps:
            queues = found.setdefault(step.role, [])
            if step.queue not in queues:
                queues.append(step.queue)
        return {**{role: tuple(queues) for role, queues in found.items()},
                MAINTENANCE_QUEUE: (MAINTENANCE_QUEUE,)}

    def routes(self) -> dict[str, dict[str, str]]:
        """Celery ``task_routes``: each step's task to its queue, every other task to
        maintenance."""
        return {**{step.task_name: {"queue": step.queue} for step in self._steps},
                "pipeline.*": {"queue": MAINTENANCE_QUEUE}}

    def previous(self, name: str) -> str | None:
        index = self.names.index(self[name].name)
        return self.names[index - 1] if index else None

    def from_step(self, name: str) -> tuple[str, ...]:
        """``name`` and the steps after it: what a job started (or retried) there runs."""
        return self.names[self.names.index(self[name].name):]

    def progress_at(self, name: str, fraction: float) -> float:
        """The job's overall progress (percent) when step ``name`` is ``fraction`` done."""
        start = sum(step.progress for step in self._steps[: self.names.index(name)])
        return start + self[name].progress * min(max(fraction, 0.0), 1.0)


#: The pipeline every job runs.
PIPELINE = StepRegistry([
    Step("validate", "orchestrator.steps.run:run_validate", progress=30,
         soft_time_limit=120, time_limit=150),
    Step("optimize", "orchestrator.steps.run:run_optimize", progress=60,
         soft_time_limit=300, time_limit=360, role="optimize"),
    Step("archive", "orchestrator.steps.run:run_archive", progress=10,
         soft_time_limit=120, time_limit=150),
])


def load(path: str) -> StepRegistry:
    """The registry named ``module:attribute`` (PIPELINE_STEP_REGISTRY)."""
    module, _, attribute = path.partition(":")
    if not module or not attribute:
        raise ValueError(f"not module:attribute: {path!r}")
    found = getattr(importlib.import_module(module), attribute, None)
    if not isinstance(found, StepRegistry):
        raise ValueError(f"{path} is not a StepRegistry")
    return found
