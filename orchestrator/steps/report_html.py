"""report.html: one self-contained page (inline SVG and CSS, nothing fetched) per job."""

from __future__ import annotations

import html
import math
from typing import Any

WIDTH = 760
ACCENT, GREY = "#1f6feb", "#8b949e"


def _pct(value: float | None, places: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{places}f} %"


def _num(value: float | None, places: int = 2) -> str:
    return "–" if value is None else f"{value:.{places}f}"


def _esc(value: object) -> str:
    return html.escape(str(value))


def weights_chart(weights: dict[str, float]) -> str:
    """Horizontal bars, largest weight first, each labelled with ticker and percentage."""
    row, left, right = 18, 70, 70
    items = sorted(weights.items(), key=lambda item: (-item[1], item[0]))
    top = max(w for _, w in items)
    span = WIDTH - left - right
    height = row * len(items) + 10
    bars = []
    for i, (ticker, weight) in enumerate(items):
        y = 5 + i * row
        length = max(span * weight / top, 1.0)
        bars.append(
            f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{_esc(ticker)}</text>'
            f'<rect x="{left}" y="{y + 2}" width="{length:.1f}" height="{row - 5}" '
            f'fill="{ACCENT}" rx="2"><title>{_esc(ticker)} {_pct(weight, 2)}</title></rect>'
            f'<text x="{left + length + 6:.1f}" y="{y + 13}">{_pct(weight, 2)}</text>')
    return (f'<svg role="img" aria-label="Portfolio weights" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" font-size="12">{"".join(bars)}</svg>')


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw)) if raw > 0 else 0.1
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= step * factor:
            step *= factor
            break
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def _thin(values: list[float], limit: int = 800) -> list[tuple[int, float]]:
    stride = max(1, math.ceil(len(values) / limit))
    points = list(enumerate(values))[::stride]
    if points[-1][0] != len(values) - 1:
        points.append((len(values) - 1, values[-1]))
    return points


def growth_chart(dates: list[str], series: dict[str, list[float]]) -> str:
    """Cumulative return lines (growth of 1 − 1) with a labelled grid."""
    left, right, top, bottom, height = 60, 20, 15, 30, 300
    values = [v - 1.0 for line in series.values() for v in line]
    low, high = min([*values, 0.0]), max([*values, 0.0])
    pad = (high - low) * 0.05 or 0.05
    low, high = low - pad, high + pad
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    n = len(dates) - 1 or 1

    def x(i: int) -> float:
        return left + plot_w * i / n

    def y(v: float) -> float:
        return top + plot_h * (high - v) / (high - low)

    parts = []
    for tick in _ticks(low, high):
        stroke = 1.5 if abs(tick) < 1e-12 else 0.7  # the zero line stands out
        parts.append(f'<line x1="{left}" x2="{WIDTH - right}" y1="{y(tick):.1f}" '
                     f'y2="{y(tick):.1f}" stroke="#d0d7de" stroke-width="{stroke}"/>'
                     f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">'
                     f'{tick * 100:.0f} %</text>')
    years = sorted({d[:4] for d in dates})
    for year in years[1:] if len(years) > 1 else years:
        i = next(k for k, d in enumerate(dates) if d[:4] == year)
        parts.append(f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{top}" y2="{top + plot_h}" '
                     f'stroke="#eaeef2"/><text x="{x(i):.1f}" y="{height - 10}" '
                     f'text-anchor="middle">{year}</text>')
    for (name, line), colour in zip(series.items(), (ACCENT, GREY), strict=False):
        path = " ".join(f"{x(i):.1f},{y(v - 1.0):.1f}" for i, v in _thin(line))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                     f'points="{path}"><title>{_esc(name)}</title></polyline>')
    return (f'<svg role="img" aria-label="In-sample cumulative return" width="{WIDTH}" '
            f'height="{height}" viewBox="0 0 {WIDTH} {height}" font-size="12">'
            f'{"".join(parts)}</svg>')


def _rows(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in pairs)


def _figures_table(report: dict[str, Any]) -> str:
    p, est, params = report["portfolio"], report.get("estimates", {}), report.get("params", {})
    ins = report.get("in_sample", {})
    cov = "Ledoit–Wolf" if est.get("covariance") == "ledoit_wolf" else "sample"
    if "shrinkage" in est:
        cov += f" (shrinkage {est['shrinkage']:.3f})"
    mu = "mean historical" if est.get("expected_returns") == "mean" else \
        f"EWMA, span {est.get('ewma_span')} days"
    return _rows([
        ("Objective", p["objective"]),
        ("Expected annual return", _pct(p["expected_return"])),
        ("Annual volatility", _pct(p["volatility"])),
        ("Sharpe ratio", f"{_num(p['sharpe'])} (risk-free {_pct(params.get('risk_free_rate'))})"),
        ("Holdings", str(p["holdings"])),
        ("Largest weight", _pct(p["largest_weight"])),
        ("Effective number of holdings", _num(p["effective_holdings"], 1)),
        ("In-sample max drawdown", f"{_pct(p['max_drawdown'])} (equal weight "
                                   f"{_pct(ins.get('equal_weight_max_drawdown'))})"),
        ("In-sample total return", f"{_pct(ins.get('portfolio_total_return'))} (equal weight "
                                   f"{_pct(ins.get('equal_weight_total_return'))})"),
        ("Period", f"{est.get('first_date')} to {est.get('last_date')}, "
                   f"{est.get('observations')} daily {est.get('returns')} returns"),
        ("Estimates", f"{cov} covariance; {mu} returns; ×{est.get('periods_per_year')}"),
        ("Selection", p.get("selection", {}).get("method", "")),
    ])


def _quality_table(quality: dict[str, Any], timings: dict[str, Any]) -> str:
    dropped = quality.get("tickers_dropped", {})
    stages = timings.get("optimize_stages", {})
    steps = ", ".join(f"{k.removesuffix('_seconds')} {v:.2f} s" for k, v in timings.items()
                      if k.endswith("_seconds") and isinstance(v, int | float))
    inner = ", ".join(f"{k.removesuffix('_seconds')} {v * 1000:.0f} ms"
                      for k, v in stages.items() if k != "total_seconds")
    return _rows([
        ("Rows kept / read", f"{quality.get('rows_kept')} / {quality.get('rows_read')}"),
        ("Tickers kept / read", f"{len(quality.get('tickers_kept', []))} / "
                                f"{quality.get('tickers_read')}"),
        ("Tickers dropped", ", ".join(f"{t} ({why})" for t, why in dropped.items()) or "none"),
        ("Duplicate dates removed", str(quality.get("duplicate_dates_removed", 0))),
        *([("Leading/trailing rows dropped (to keep late listings)",
            f"{quality['edge_rows_dropped']} of {quality.get('rows_read')}")]
          if "edge_rows_dropped" in quality else []),
        ("Missing cells filled", str(quality.get("cells_filled", 0))),
        ("Dates dropped for late listings", " ".join(quality.get("warnings") or []) or "none"),
        ("Step times", steps or "–"),
        ("Optimizer stages", inner or "–"),
    ])


def _warnings(warnings: list[str]) -> str:
    """Warnings first, where they cannot be missed (e.g. the bounds decided the weights)."""
    items = "".join(f"<li>{_esc(w)}</li>" for w in warnings)
    return f'<div class="warning" role="alert"><b>Warning</b><ul>{items}</ul></div>\n' \
        if warnings else ""


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;
margin:24px auto;max-width:820px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.meta{color:#57606a;margin:0 0 16px}table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}
th{width:38%;font-weight:600;color:#57606a}svg text{fill:#1f2328}
.legend span{display:inline-block;margin-right:16px}
.swatch{display:inline-block;width:14px;height:3px;vertical-align:middle;margin-right:6px}
.method{color:#57606a;font-size:12px}
.warning{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:8px 12px;
margin:16px 0}.warning ul{margin:4px 0 0;padding-left:20px}
"""


def render(report: dict[str, Any], in_sample: dict[str, Any]) -> str:
    """The page for one job: key figures, weights chart, in-sample cumulative return."""
    p = report["portfolio"]
    chart = growth_chart(in_sample["dates"], {"Portfolio": in_sample["portfolio"],
                                              "Equal weight (universe)":
                                                  in_sample["equal_weight"]})
    n_universe = len(report.get("quality", {}).get("tickers_kept", [])) or "all"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Portfolio report {_esc(report.get('job_id', ''))}</title>
<style>{STYLE}</style></head><body>
<h1>Portfolio: {_esc(p['objective'].replace('_', ' '))}, {p['holdings']} holdings</h1>
<p class="meta">Job {_esc(report.get('job_id', ''))} · input {_esc(report.get('input', ''))}
 · created {_esc(str(report.get('created_at', ''))[:19])}</p>
{_warnings(p.get('warnings') or [])}<h2>Key figures</h2>
<table>{_figures_table(report)}</table>
<h2>Weights</h2>
{weights_chart(p['weights'])}
<h2>In-sample cumulative return</h2>
<p class="legend"><span><i class="swatch" style="background:{ACCENT}"></i>Portfolio
 (rebalanced daily)</span><span><i class="swatch" style="background:{GREY}"></i>Equal weight
 of the {n_universe} tickers</span></p>
{chart}
<p class="method">In sample: the same data the weights were estimated from, so this is no
forecast.</p>
<h2>Data quality and timings</h2>
<table>{_quality_table(report.get('quality', {}), report.get('timings', {}))}</table>
<p class="method">{_esc(p.get('method', ''))}</p>
</body></html>
"""
