"""What each step does to a job folder: plain functions, no Celery, tested without a broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator import safeopen
from orchestrator.errors import DataError
from orchestrator.paths import write_json
from orchestrator.steps import archive, optimize, validate
from orchestrator.steps.context import StepContext

CLEAN = "prices.clean.csv"  # for people: the cleaned table, written once, fast
HANDOFF = "prices.npz"  # for the optimize step: binary, nothing formatted or parsed
QUALITY = "quality.json"
PORTFOLIO = "portfolio.json"


def input_csv(folder: Path) -> Path:
    candidates = [p for p in sorted((folder / "input").glob("*")) if p.suffix.lower() != ".json"]
    if not candidates:
        raise DataError("the job folder holds no price file", file=folder.name)
    return candidates[0]


def run_validate(ctx: StepContext) -> dict[str, Any]:
    rules = validate.ValidationRules(
        max_gap_days=ctx.settings.max_gap_days,
        max_missing_fraction=ctx.settings.max_missing_fraction,
        min_tickers=ctx.params.portfolio_size,
        max_input_bytes=ctx.settings.max_input_bytes,
        reference_tickers=_reference(ctx),
        separator=ctx.params.forced_separator(),
        decimal=ctx.params.forced_decimal(),
        late_listing=ctx.params.late_listing,
    )
    # Validation reads the file several times by its path: it reads a private copy, taken from
    # one descriptor opened by the share's rules, so that a link swapped in meanwhile is not read.
    with safeopen.private_copy(ctx.share.root, input_csv(ctx.folder),
                               ctx.settings.max_input_bytes) as private:
        prices, report = validate.validate_prices(private, rules, ctx.progress)
    validate.write_handoff(prices, ctx.folder / HANDOFF)
    validate.write_clean(prices, ctx.folder / CLEAN)
    write_json(ctx.folder / QUALITY, report.to_dict())
    return {"rows": report.rows_kept, "tickers": len(report.tickers_kept)}


def _reference(ctx: StepContext) -> frozenset[str] | None:
    if ctx.params.reference_file is None:
        return None
    path = ctx.share.resolve_inside(ctx.share.root, ctx.params.reference_file,
                                    file="job parameters", field="reference_file")
    with safeopen.private_copy(ctx.share.root, path, validate.MAX_REFERENCE_BYTES) as private:
        return validate.read_reference(private)


def run_optimize(ctx: StepContext) -> dict[str, Any]:
    prices = _read_handoff(ctx)
    request = ctx.params.request()
    optimize.check_request(request, prices.shape[1])
    portfolio = optimize.optimize(prices, request, ctx.progress)
    write_json(ctx.folder / PORTFOLIO, portfolio.to_dict())
    return {"holdings": len(portfolio.weights)}


def _read_handoff(ctx: StepContext) -> Any:
    """The validate step's hand-off, read from a private copy taken by the share's rules
    (orchestrator/safeopen.py): anyone who can write to processing/ could have swapped it for
    a link to a file outside the share. Float64 takes at most four times the bytes of the CSV
    cell it came from (at least "1,"), hence the limit."""
    path = ctx.folder / HANDOFF
    try:
        with safeopen.private_copy(ctx.share.root, path,
                                   4 * ctx.settings.max_input_bytes + (1 << 20)) as private:
            return validate.read_handoff(private)
    except FileNotFoundError:
        raise DataError(f"{HANDOFF} is missing: the validate step did not finish",
                        file=HANDOFF) from None


def run_archive(ctx: StepContext) -> dict[str, Any]:
    header = {"job_id": ctx.job_id, "input": ctx.input_name,
              "params": ctx.params.model_dump(mode="json"), "timings": ctx.timings,
              "created_at": ctx.created_at}
    return archive.write_outputs(ctx.folder, header, ctx.progress,  # progress: bytes written
                                 root=ctx.share.root)
