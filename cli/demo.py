"""``pipeline demo``: sample jobs through the real pipeline, with a worker started for them."""

from __future__ import annotations

import shutil
import time
from importlib import resources
from pathlib import Path

from rich.live import Live
from rich.table import Table

from cli import render
from cli.exit_codes import Exit
from cli.processes import start, stop, worker_command
from orchestrator.pipeline import Orchestrator
from orchestrator.store import jobs as store
from orchestrator.store.states import FINAL, JobState

#: (portfolio_size, objective, max_weight): the variations the demo shows.
VARIANTS = [(10, "min_volatility", 0.25), (20, "max_sharpe", 0.15), (30, "min_volatility", 0.1),
            (15, "max_sharpe", 0.2)]


def sample_csv() -> Path:
    return Path(str(resources.files("orchestrator") / "examples" / "sp500_sample.csv"))


def run_demo(orch: Orchestrator, count: int) -> int:
    worker = start(worker_command(orch.settings.worker_concurrency, name="demo",
                                  loglevel="WARNING"))
    try:
        job_ids = [_submit_variant(orch, i) for i in range(count)]
        jobs = _follow(job_ids)
    finally:
        stop([worker])
    render.console.print(_results_table(orch, jobs))
    render.console.print(f"history of one job: [bold]pipeline history {jobs[0].id[:12]}[/]")
    return Exit.OK if all(j.state is JobState.COMPLETED for j in jobs) else Exit.JOB_FAILED


def _submit_variant(orch: Orchestrator, index: int) -> str:
    size, objective, max_weight = VARIANTS[index % len(VARIANTS)]
    staged = orch.settings.var_dir / "demo" / f"sp500_sample_{index + 1:02d}.csv"
    staged.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sample_csv(), staged)
    params = {"portfolio_size": size, "objective": objective, "max_weight": max_weight}
    return orch.submit(staged, params)


def _follow(job_ids: list[str], timeout: float = 300) -> list[store.Job]:
    deadline = time.monotonic() + timeout
    with Live(console=render.console, refresh_per_second=8) as live:
        while True:
            jobs = [store.get_job(j) for j in job_ids]
            live.update(render.jobs_table(jobs))
            if all(j.state in FINAL for j in jobs) or time.monotonic() > deadline:
                return jobs
            time.sleep(0.1)


def _results_table(orch: Orchestrator, jobs: list[store.Job]) -> Table:
    table = Table("job", "params", "state", "holdings", "return", "volatility", "Sharpe",
                  "largest", "seconds", "results in", title="Demo results")
    for job in jobs:
        r = job.result or {}
        took = (job.finished_at - job.created_at).total_seconds() if job.finished_at else 0
        p = job.params
        table.add_row(job.id[:12], f"K={p['portfolio_size']} {p['objective']} "
                      f"max {p['max_weight']:.0%}", job.state.value, str(r.get("holdings", "")),
                      f"{r.get('expected_return', 0):.1%}", f"{r.get('volatility', 0):.1%}",
                      f"{r.get('sharpe', 0):.2f}", f"{r.get('largest_weight', 0):.1%}",
                      f"{took:.2f}", str(orch.share.locate(job.id) or ""))
    return table
