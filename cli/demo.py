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
from orchestrator.jobs.canvas import Orchestrator
from orchestrator.store import jobs as store
from orchestrator.store.states import FINAL, JobState

#: (portfolio_size, objective, max_weight): the variations the demo shows.
VARIANTS = [(10, "min_volatility", 0.25), (20, "max_sharpe", 0.15), (30, "min_volatility", 0.1),
            (15, "max_sharpe", 0.2)]


def sample_csv() -> Path:
    return Path(str(resources.files("orchestrator") / "examples" / "sp500_sample.csv"))


def run_demo(orch: Orchestrator, count: int) -> int:
    log = orch.settings.var_dir / "demo" / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    render.console.print(f"starting a worker (log: {log})")
    worker = start(worker_command(orch.settings.worker_concurrency, name="demo",
                                  loglevel="WARNING"), log=log)
    try:
        job_ids = [_submit_variant(orch, i) for i in range(count)]
        jobs = _follow(job_ids)
    finally:
        stop([worker])
    render.console.print(_results_table(jobs))
    render.console.print(f"results in {orch.share.completed}/<job>/ (weights.csv, report.json)")
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


def _results_table(jobs: list[store.Job]) -> Table:
    table = Table("job", "K", "objective", "state", "return", "vol", "Sharpe", "largest", "s",
                  title="Demo results")
    for job in jobs:
        r = job.result or {}
        took = (job.finished_at - job.created_at).total_seconds() if job.finished_at else 0
        p = job.params
        table.add_row(job.id[:8], str(p["portfolio_size"]), p["objective"], job.state.value,
                      f"{r.get('expected_return', 0):.1%}", f"{r.get('volatility', 0):.1%}",
                      f"{r.get('sharpe', 0):.2f}", f"{r.get('largest_weight', 0):.1%}",
                      f"{took:.1f}")
    return table
