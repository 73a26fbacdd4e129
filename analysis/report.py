"""``dcsim report DIR``: one self-contained HTML page about a run or sweep.

:func:`build_report` writes ``<out>/report.html`` (or ``path``): the headline metrics (a
metric / value table for one point, a table of the points for a sweep, swept parameters named
by their shortest unique trailing part), per-class latency and SLO tables, queueing and
energy tables, the figures of :mod:`analysis.plots` that apply to what the run contains
(:func:`planned_figures` says which, each with a one-line caption), and every point's resolved
``scenario.yaml`` in a collapsed ``<details>``. Column headers and axes carry units. Figures
are embedded as base64 PNG ``<img>`` elements whose ``id`` names the figure; there is no
external CSS or JavaScript, so the file opens from disk with no server, and the page fits a
1,280 px window (wide tables scroll inside their own box).
"""

from __future__ import annotations

import base64
import html
import io
import math
import sys
from pathlib import Path

from analysis import metrics as M
from analysis.labels import metric_label, short_names
from sim.output import storage

__all__ = ["planned_figures", "build_report", "cmd_report"]

STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; padding: 0 1em; max-width: 1180px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; }
p.note { color: #555; font-size: 13px; max-width: 60em; }
div.scroll { max-width: 100%; overflow-x: auto; margin-bottom: 1.2em; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th { background: #f0f0f0; font-weight: 600; vertical-align: bottom; max-width: 9em; overflow-wrap: anywhere; }
td.t, th.t { text-align: left; }
table.kv td:first-child { text-align: left; }
figure { margin: 1.2em 0 2em 0; max-width: 100%; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #444; margin-top: 0.3em; }
pre { background: #f7f7f7; padding: 0.5em; font-size: 11px; overflow-x: auto; max-width: 100%; }
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


def planned_figures(out: str) -> dict[str, tuple[str, dict, str]]:
    """``{figure id: (plot function name, keyword arguments, caption)}`` of the figures that
    apply to the run at ``out``, in page order:

    * ``latency-vs-load`` and ``slo-attainment-vs-load``: a numeric swept axis with more than
      one value (SLO attainment also needs a class with an SLO target);
    * ``timelines``: queue, running batch, KV cache and power per pool of the last point
      (engine steps or calls were recorded);
    * ``latency-cdfs``: TTFT, TPOT and end-to-end CDFs per class of the last point (finished calls);
    * ``heatmap``: two swept axes with more than one value each;
    * ``pareto-cost-latency``: more than one point with calls;
    * ``pareto-accuracy-cost``: the run has test-time-compute jobs (an ``accuracy`` summary);
    * ``fleet-share`` and ``training-vs-slo`` (several points): pools lend devices to training
      jobs (a training table)."""
    from analysis import plots as P

    rows = P.sweep_rows(out)
    cols = set().union(*(r.keys() for r in rows)) if rows else set()
    short = P.names(out)
    figs: dict[str, tuple] = {}
    axes = P.numeric_axes(out)
    has_calls = any(r.get("calls_measured", 0) > 0 for r in rows)
    last = rows[-1]["point_id"] if rows else None
    which = f"point {last}" if len(rows) > 1 else "the run"
    if axes and has_calls:
        x = short.get(axes[0], axes[0])
        figs["latency-vs-load"] = ("latency_vs_load", {"x": axes[0]},
                                   f"TTFT p90 and end-to-end p90 latency of every point against {x}.")
        if any(any(v is not None for v in slo.values()) for slo in M.class_slos(out, rows[0]["point_id"]).values()):
            figs["slo-attainment-vs-load"] = ("slo_attainment_vs_load", {"x": axes[0]},
                                              f"Share of each class's calls that met all its SLO targets, against {x}.")
    steps, calls = M.read(out, "steps"), M.read(out, "calls")
    if (steps is not None and steps.num_rows) or (calls is not None and calls.num_rows):
        figs["timelines"] = ("timelines", {"point_id": last},
                             f"Calls waiting, sequences running, KV cache in use and device power of each pool "
                             f"over the simulated time of {which} (grey band: measurement window).")
    if has_calls:
        figs["latency-cdfs"] = ("latency_cdfs", {"point_id": last},
                                f"Distribution of TTFT, time per output token and end-to-end latency per class "
                                f"in {which} (dashed: the class's SLO target).")
    varied = _varied_axes(out)
    if len(varied) >= 2:
        metric = _heatmap_metric(rows)
        figs["heatmap"] = ("heatmap", {"x": varied[0], "y": varied[1], "metric": metric},
                           f"{metric_label(metric)} of every combination of {short.get(varied[0])} and "
                           f"{short.get(varied[1])} (mean over replications).")
    if len(rows) > 1 and has_calls:
        figs["pareto-cost-latency"] = ("pareto_cost_latency", {},
                                       "Cost per million output tokens against end-to-end p90 latency of every point; "
                                       "red: the points no other beats on both.")
    if "accuracy" in cols and any(not math.isnan(r.get("accuracy", math.nan)) for r in rows):
        figs["pareto-accuracy-cost"] = ("pareto_accuracy_cost", {},
                                        "Job accuracy against cost per 1k jobs of every point; red: the accuracy-vs-cost "
                                        "frontier.")
    if M.read(out, "training") is not None:
        figs["fleet-share"] = ("fleet_share", {},
                               f"Devices of the pools shared with training by state over the simulated time of {which} "
                               "(inference serving, idle or booting, training, checkpointing, restarting, off), and the "
                               "share of the devices switched on that inference has, every point.")
        if len(rows) > 1:
            figs["training-vs-slo"] = ("training_vs_slo", {},
                                       "Training tokens a day against inference SLO attainment of every point.")
    return figs


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return html.escape("" if v is None else str(v))


def _table(rows: list[dict], cols: list[str], text_cols=(), headers: dict[str, str] | None = None) -> str:
    """An HTML table of ``rows`` in its own horizontally scrolling box. Headers are
    ``headers[col]`` or :func:`metric_label` of the column; the column name is the tooltip."""
    if not rows:
        return "<p>(none)</p>"
    headers = headers or {}

    def th(c: str) -> str:
        cls = ' class="t"' if c in text_cols else ""
        text = html.escape(headers.get(c) or metric_label(c)).replace(".", ".<wbr>")  # dotted names break after dots
        return f'<th{cls} title="{html.escape(c)}">{text}</th>'

    head = "".join(th(c) for c in cols)
    body = "".join("<tr>" + "".join(f'<td class="t">{_cell(r.get(c))}</td>' if c in text_cols else f"<td>{_cell(r.get(c))}</td>"
                                    for c in cols) + "</tr>" for r in rows)
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def _metric_rows(s: dict) -> str:
    """The headline metrics of one point as metric / value rows (as ``dcsim run`` prints them)."""
    from sim.output.headline import ECON_HEADLINE, HEADLINE, INTERVAL_NOTE, JOB_HEADLINE, SESSION_HEADLINE, interval

    spec = list(HEADLINE)
    if "jobs_created" in s:
        s = {**s, "energy_per_correct_kj": s.get("energy_per_correct_j", math.nan) / 1000}
        spec += JOB_HEADLINE
    if "sessions_created" in s:
        s = {**s, "session_energy_kj_mean": s.get("session_energy_j_mean", math.nan) / 1000}
        spec += SESSION_HEADLINE
    if "capex_usd_per_hour" in s:
        spec += ECON_HEADLINE
    out, banded = [], False
    for label, keys, fmt in spec:
        keys = keys if isinstance(keys, tuple) else (keys,)
        vals = [s.get(k) for k in keys]
        if all(v is None for v in vals):
            continue
        text = " / ".join("" if not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v))
                          else fmt.format(v) for v in vals)
        band = interval(s, keys[0]) if len(keys) == 1 else None  # 80% prediction interval (docs/validation.md)
        if band is not None:
            text += f" [{fmt.format(band[0])} - {fmt.format(band[1])}]"
            banded = True
        out.append(f"<tr><td>{html.escape(label)}</td><td>{html.escape(text)}</td></tr>")
    note = f'<p class="note">{html.escape(INTERVAL_NOTE)}</p>' if banded else ""
    return f'<div class="scroll"><table class="kv"><tr><th class="t">metric</th><th>value</th></tr>{"".join(out)}</table></div>' + note


def build_report(out: str, path: str | Path | None = None) -> Path:
    """Write the HTML report of the run or sweep at ``out`` (a local folder) to ``path``
    (default ``<out>/report.html``) and return its path."""
    from analysis import plots as P

    rows = P.sweep_rows(out)
    if not rows:
        raise ValueError(f"{out}: no summarised points")
    cols = set().union(*(r.keys() for r in rows))
    swept = [k for k in M.swept_parameters(out) if k != "run" or len({r["run"] for r in rows}) > 1]
    short = short_names(swept)
    shown = [{**{short[k]: r.get(k) for k in swept}, **r} for r in rows]
    t0, t1 = rows[0].get("warmup_s"), rows[0].get("duration_s")
    parts = [f"<h1>dcsim report: {html.escape(str(rows[0].get('scenario', '')))}</h1>",
             f'<p class="note">{len(rows)} point(s) from <code>{html.escape(str(out))}</code>; metrics over each '
             f"point's measurement window, simulated time [{_cell(t0)} s, {_cell(t1)} s) "
             f"(warmup excluded). Hover a column header for its name in the Parquet tables.</p>"]
    if len(rows) == 1:
        parts += [f"<h2>Summary of point {html.escape(rows[0]['point_id'])}</h2>", _metric_rows(rows[0])]
    else:
        parts += ["<h2>Points</h2>",
                  _table(shown, ["point_id", *[short[k] for k in swept], *_summary_metrics(cols)],
                         text_cols={"point_id", *short.values()}, headers={"point_id": "point", **{v: v for v in short.values()}})]
    if any(r.get("calls_measured", 0) for r in rows):
        lat = {(r["point_id"], r["class"]): r for r in M.latency(out).to_pylist()}
        per_class = [{**lat.get((g["point_id"], g["class"]), {}), **g} for g in M.goodput(out).to_pylist()]
        pcols = (["point_id"] if len(rows) > 1 else []) + [
            "class", "calls_measured", "ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "tpot_p50_s", "tpot_p90_s",
            "e2e_p50_s", "e2e_p90_s", "slo_ttft_s", "slo_tpot_s", "slo_e2e_s", "slo_attainment", "goodput_per_s"]
        parts += ["<h2>Latency and SLOs per class</h2>",
                  _table(per_class, pcols, text_cols={"point_id", "class"}, headers={"point_id": "point"}),
                  "<h2>Queueing (Little's law: L against lambda x W)</h2>",
                  _table(M.littles_law_table(out).to_pylist(), ["point_id", "L", "lambda_per_s", "W_s", "lambda_W",
                                                                "rel_error"], text_cols={"point_id"},
                         headers={"point_id": "point"})]
    parts += ["<h2>Energy, cost and carbon per output token</h2>",
              _table(M.energy_per_token(out).to_pylist(), ["point_id", "output_tokens", "energy_per_output_token_j",
                                                           "device_energy_per_output_token_j", "usd_per_million_output_tokens",
                                                           "carbon_g_per_output_token"], text_cols={"point_id"},
                     headers={"point_id": "point"})]
    strat = M.jobs_by_strategy_table(out)
    if strat is not None and strat.num_rows:
        parts += ["<h2>Jobs by strategy</h2>",
                  _table(strat.to_pylist(), ["point_id", "strategy", "width", "jobs", "accuracy", "usd_per_1k_jobs",
                                             "accuracy_per_usd", "latency_p90_s"], text_cols={"point_id", "strategy"},
                         headers={"point_id": "point", "strategy": "strategy", "latency_p90_s": "job latency p90 (s)"})]
    parts.append("<h2>Figures</h2>")
    for fig_id, (fn, kwargs, caption) in planned_figures(out).items():
        fig = getattr(P, fn)(out, **kwargs)
        parts.append(f'<figure><img id="{fig_id}" alt="{html.escape(caption)}" src="data:image/png;base64,{_png(fig)}">'
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("<h2>Configuration</h2>")
    fs, base = storage.open_output(out)
    for r in rows:
        try:
            text = storage.read_text(fs, storage.join(base, r["point_id"], "scenario.yaml"))
        except OSError:
            text = "(scenario.yaml missing)"
        parts.append(f"<details><summary>{html.escape(r['point_id'])}</summary><pre>{html.escape(text)}</pre></details>")
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>dcsim report</title>"
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
