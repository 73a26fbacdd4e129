"""``dcsim report DIR``: one self-contained HTML page about a run or sweep.

:func:`build_report` writes ``<out>/report.html`` (or ``path``): a table of the points (swept
parameters and headline metrics), per-class latency and SLO tables, the figures of
:mod:`analysis.plots` that apply to what the run contains (:func:`planned_figures` says
which), and every point's resolved ``scenario.yaml`` in a collapsed ``<details>``. Figures are
embedded as base64 PNG ``<img>`` elements whose ``id`` and ``alt`` name the figure; there is
no external CSS or JavaScript, so the file opens from disk with no server.
"""

from __future__ import annotations

import base64
import html
import io
import math
import sys
from pathlib import Path

from analysis import metrics as M
from sim.output import storage

__all__ = ["planned_figures", "build_report", "cmd_report"]

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 12px; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f0f0f0; }
td.t, th.t { text-align: left; }
figure { margin: 1em 0; }
img { max-width: 100%; }
pre { background: #f7f7f7; padding: 0.5em; font-size: 11px; }
"""


def _summary_metrics(cols: set[str]) -> list[str]:
    from sim.output.headline import HEADLINE_METRICS, JOB_METRICS, SESSION_METRICS

    keys = list(HEADLINE_METRICS) + ["output_tokens_per_s", "avg_device_power_w"]
    if "jobs_created" in cols:
        keys += JOB_METRICS
    if "sessions_created" in cols:
        keys += SESSION_METRICS
    seen: list[str] = []
    for k in keys:
        if k in cols and k not in seen:
            seen.append(k)
    return seen


def _varied_axes(out: str) -> list[str]:
    pts = M.points(out)
    return [k for k in M.swept_parameters(out) if k != "run" and len({str(p[k]) for p in pts}) > 1]


def _heatmap_metric(rows: list[dict]) -> str:
    """The first of accuracy, session and call latency that some point has a value of."""
    for k in ("accuracy", "session_e2e_p90_s", "turn_ttft_p90_s", "ttft_p90_s"):
        if any(isinstance(r.get(k), (int, float)) and not math.isnan(r[k]) for r in rows):
            return k
    return "utilization"


def planned_figures(out: str) -> dict[str, tuple]:
    """``{figure id: (plot function name, keyword arguments)}`` of the figures that apply to
    the run at ``out``, in page order:

    * ``latency-vs-load`` and ``slo-attainment-vs-load``: a numeric swept axis with more than
      one value (SLO attainment also needs a class with an SLO target);
    * ``utilization-timeline``: engine steps were recorded;
    * ``ttft-cdf``: finished calls were recorded;
    * ``heatmap``: two swept axes with more than one value each;
    * ``pareto-cost-latency``: more than one point with calls;
    * ``pareto-accuracy-cost``: the run has test-time-compute jobs (an ``accuracy`` summary)."""
    from analysis import plots as P

    rows = P.sweep_rows(out)
    cols = set().union(*(r.keys() for r in rows)) if rows else set()
    figs: dict[str, tuple] = {}
    axes = P.numeric_axes(out)
    has_calls = any(r.get("calls_measured", 0) > 0 for r in rows)
    if axes and has_calls:
        figs["latency-vs-load"] = ("latency_vs_load", {"x": axes[0]})
        if any(any(v is not None for v in slo.values()) for slo in M.class_slos(out, rows[0]["point_id"]).values()):
            figs["slo-attainment-vs-load"] = ("slo_attainment_vs_load", {"x": axes[0]})
    steps = M.read(out, "steps")
    if steps is not None and steps.num_rows:
        figs["utilization-timeline"] = ("utilization_timeline", {})
    if has_calls:
        figs["ttft-cdf"] = ("latency_cdf", {"metric": "ttft"})
    varied = _varied_axes(out)
    if len(varied) >= 2:
        figs["heatmap"] = ("heatmap", {"x": varied[0], "y": varied[1], "metric": _heatmap_metric(rows)})
    if len(rows) > 1 and has_calls:
        figs["pareto-cost-latency"] = ("pareto_cost_latency", {})
    if "accuracy" in cols and any(not math.isnan(r.get("accuracy", math.nan)) for r in rows):
        figs["pareto-accuracy-cost"] = ("pareto_accuracy_cost", {})
    return figs


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return html.escape("" if v is None else str(v))


def _table(rows: list[dict], cols: list[str], text_cols=()) -> str:
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f'<th class="t">{html.escape(c)}</th>' if c in text_cols else f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f'<td class="t">{_cell(r.get(c))}</td>' if c in text_cols else f"<td>{_cell(r.get(c))}</td>"
                                    for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _short(k: str) -> str:
    return k.rsplit(".", 1)[-1]


def build_report(out: str, path: str | Path | None = None) -> Path:
    """Write the HTML report of the run or sweep at ``out`` (a local folder) to ``path``
    (default ``<out>/report.html``) and return its path."""
    from analysis import plots as P

    rows = P.sweep_rows(out)
    if not rows:
        raise ValueError(f"{out}: no summarised points")
    cols = set().union(*(r.keys() for r in rows))
    swept = [k for k in M.swept_parameters(out) if k != "run" or len({r["run"] for r in rows}) > 1]
    shown = [{**{_short(k): r.get(k) for k in swept}, **r} for r in rows]
    parts = [f"<h1>dcsim report: {html.escape(str(rows[0].get('scenario', '')))}</h1>",
             f"<p>{len(rows)} point(s) from <code>{html.escape(str(out))}</code>; metrics over each point's "
             f"measurement window [warmup_s, duration_s).</p>",
             "<h2>Points</h2>", _table(shown, ["point_id", *[_short(k) for k in swept], *_summary_metrics(cols)],
                                       text_cols={"point_id", *[_short(k) for k in swept]})]
    if any(r.get("calls_measured", 0) for r in rows):
        lat = {(r["point_id"], r["class"]): r for r in M.latency(out).to_pylist()}
        per_class = [{**lat.get((g["point_id"], g["class"]), {}), **g} for g in M.goodput(out).to_pylist()]
        parts += ["<h2>Latency and SLOs per class</h2>",
                  _table(per_class, ["point_id", "class", "calls_measured", "ttft_p50_s", "ttft_p90_s", "tpot_p50_s",
                                     "e2e_p90_s", "slo_ttft_s", "slo_tpot_s", "slo_e2e_s", "slo_attainment",
                                     "goodput_per_s"], text_cols={"point_id", "class"}),
                  "<h2>Queueing (Little's law: L against lambda x W)</h2>",
                  _table(M.littles_law_table(out).to_pylist(), ["point_id", "L", "lambda_per_s", "W_s", "lambda_W",
                                                                "rel_error"], text_cols={"point_id"})]
    parts += ["<h2>Energy, cost and carbon per output token</h2>",
              _table(M.energy_per_token(out).to_pylist(), ["point_id", "output_tokens", "energy_per_output_token_j",
                                                           "device_energy_per_output_token_j", "usd_per_million_output_tokens",
                                                           "carbon_g_per_output_token"], text_cols={"point_id"})]
    strat = M.jobs_by_strategy_table(out)
    if strat is not None and strat.num_rows:
        parts += ["<h2>Jobs by strategy</h2>",
                  _table(strat.to_pylist(), ["point_id", "strategy", "width", "jobs", "accuracy", "usd_per_1k_jobs",
                                             "accuracy_per_usd", "latency_p90_s"], text_cols={"point_id", "strategy"})]
    parts.append("<h2>Figures</h2>")
    for fig_id, (fn, kwargs) in planned_figures(out).items():
        fig = getattr(P, fn)(out, **kwargs)
        parts.append(f'<figure><img id="{fig_id}" alt="{fig_id}" src="data:image/png;base64,{_png(fig)}">'
                     f"<figcaption>{html.escape(fig_id)}</figcaption></figure>")
    parts.append("<h2>Configuration</h2>")
    fs, base = storage.open_output(out)
    for r in rows:
        try:
            text = storage.read_text(fs, storage.join(base, r["point_id"], "scenario.yaml"))
        except OSError:
            text = "(scenario.yaml missing)"
        parts.append(f"<details><summary>{html.escape(r['point_id'])}</summary><pre>{html.escape(text)}</pre></details>")
    page = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>dcsim report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    target = Path(path) if path else Path(base) / "report.html"
    target.write_text(page, encoding="utf-8")
    return target


def cmd_report(args) -> int:
    """``dcsim report DIR [--out FILE]``."""
    if not (Path(args.dir) / "summary.parquet").exists():
        print(f"error: {args.dir}: not a dcsim run or sweep folder (no summary.parquet)", file=sys.stderr)
        return 2
    print(build_report(args.dir, args.out))
    return 0
