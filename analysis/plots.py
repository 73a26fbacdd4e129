"""Figures of a run or sweep (matplotlib, Agg backend).

Every function takes the output folder ``out`` (plus what to draw) and returns a
:class:`matplotlib.figure.Figure`; none calls ``plt.show``. Save with ``fig.savefig(...)`` or
let a notebook display it. Figures are built with :class:`~matplotlib.figure.Figure`
directly (no pyplot state), so they are never left open.
"""

from __future__ import annotations

import math
from itertools import product

import matplotlib

matplotlib.use("Agg", force=False)
import numpy as np  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from analysis import metrics as M  # noqa: E402
from analysis import summary as read_summary  # noqa: E402
from analysis.figstyle import colour_limits, keep_inside, log_axis  # noqa: E402
from analysis.figstyle import legend as _legend  # noqa: E402
from analysis.frontier import pareto_front  # noqa: E402
from analysis.labels import metric_label, param_label, short_names, wrap  # noqa: E402
from analysis.plots_run import last_point, latency_cdf, latency_cdfs, timelines  # noqa: E402
from analysis.plots_training import fleet_share, training_vs_slo  # noqa: E402
from sim.output.headline import format_value  # noqa: E402

__all__ = [
    "sweep_rows",
    "numeric_axes",
    "latency_vs_load",
    "slo_attainment_vs_load",
    "utilization_timeline",
    "latency_cdf",
    "latency_cdfs",
    "timelines",
    "heatmap",
    "pareto_cost_latency",
    "pareto_accuracy_cost",
    "fleet_share",
    "training_vs_slo",
]


def names(out: str) -> dict[str, str]:
    """Swept path -> its shortest unique trailing part (:func:`analysis.labels.short_names`)."""
    return short_names(M.swept_parameters(out))


def _axis_label(out: str, path: str) -> str:
    """Axis label of a swept parameter: unique short name and unit."""
    return param_label(names(out).get(path, path), [p[path] for p in M.points(out) if path in p])


def sweep_rows(out: str) -> list[dict]:
    """One dict per summarised point: its swept parameters (from ``points.parquet``) and
    every summary metric, in expansion order."""
    params = {p["point_id"]: {k: v for k, v in p.items() if k not in M.NOT_SWEPT} for p in M.points(out)}
    rows = {s["point_id"]: s for s in read_summary(out).to_pylist()}
    return [{**params[pid], **rows[pid]} for pid in params if pid in rows]


def numeric_axes(out: str) -> list[str]:
    """Swept parameters with numeric values and more than one value."""
    pts = M.points(out)
    axes = []
    for k in M.swept_parameters(out):
        vals = {p[k] for p in pts}
        if len(vals) > 1 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            axes.append(k)
    return axes


def _pick_x(out: str, x: str | None) -> str:
    if x is not None:
        return x
    axes = numeric_axes(out)
    if not axes:
        raise ValueError(f"{out}: no numeric swept parameter to plot against")
    return axes[0]


def _groups(rows: list[dict], keys: list[str]) -> dict[tuple, list[dict]]:
    """Rows grouped by their values of ``keys`` (insertion order)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(str(r.get(k)) for k in keys), []).append(r)
    return groups


def _label(keys: list[str], values: tuple, short: dict[str, str], width: int = 72) -> str:
    text = ", ".join(f"{short.get(k, k)}={format_value(v)}" for k, v in zip(keys, values))
    return text if len(text) <= width else text[: width - 1] + "…"


def latency_vs_load(out: str, x: str | None = None, metrics=("ttft_p90_s", "e2e_p90_s")) -> Figure:
    """Summary latency metrics (one panel each, each with its own labelled y axis) against a
    numeric swept axis ``x`` (default: the first one), one line per combination of the other
    swept values (replications apart)."""
    x = _pick_x(out, x)
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    rows = sweep_rows(out)
    short = names(out)
    others = [k for k in M.swept_parameters(out) if k not in (x, "run")]
    groups = _groups(rows, others)
    fig = Figure(figsize=(4.6 * len(metrics), 3.8), layout="constrained")
    for ax, metric in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics):
        values = []
        for key, grp in groups.items():
            grp = sorted(grp, key=lambda r: r[x])
            ys = [r.get(metric, math.nan) for r in grp]
            values += ys
            ax.plot([r[x] for r in grp], ys, marker="o", label=_label(others, key, short) or None)
        ax.set_xlabel(_axis_label(out, x))
        ax.set_ylabel(metric_label(metric))
        if metric.endswith("_s"):
            log_axis(ax, values, "y")
        ax.grid(alpha=0.3)
        ax.set_title(metric_label(metric).split(" (")[0], fontsize=9)
        if others:
            _legend(ax, len(groups))
    fig.suptitle(f"latency vs {short.get(x, x)}", fontsize=10)
    return fig


def slo_attainment_vs_load(out: str, x: str | None = None) -> Figure:
    """SLO attainment per workload class (:func:`analysis.metrics.goodput`) against a numeric
    swept axis, one line per class and combination of the other swept values."""
    x = _pick_x(out, x)
    params = {p["point_id"]: p for p in M.points(out)}
    short = {**names(out), "class": "class"}
    others = [k for k in M.swept_parameters(out) if k not in (x, "run")]
    rows = [{**params[r["point_id"]], **r} for r in M.goodput(out).to_pylist()]
    if len({r["class"] for r in rows} - {M.ALL}) <= 1:  # one class: "(all)" would repeat it
        rows = [r for r in rows if r["class"] != M.ALL]
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    groups = _groups(rows, ["class", *others])
    for key, grp in groups.items():
        grp = sorted(grp, key=lambda r: r[x])
        ax.plot([r[x] for r in grp], [r["slo_attainment"] for r in grp], marker="o",
                label=_label(["class", *others], key, short), linestyle="--" if key[0] == M.ALL else "-")
    ax.set_xlabel(_axis_label(out, x))
    ax.set_ylabel(metric_label("slo_attainment"))
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    _legend(ax, len(groups))
    ax.set_title(f"SLO attainment vs {short.get(x, x)}", fontsize=10)
    return fig


def utilization_timeline(out: str, point_id: str | None = None, bin_s: float | None = None) -> Figure:
    """Busy fraction and average power per replica of every pool of one point (default: the
    last point) over time, in bins of ``bin_s`` (default: about 60 bins over the run). The
    measurement window is shaded."""
    pid = last_point(out, point_id)
    steps = M.read(out, "steps")
    steps = steps.filter(pc.equal(steps["point_id"], pid))
    t0, t1 = M.windows(out)[pid]
    end = float(pc.max(steps["end_s"]).as_py() or t1)
    bin_s = bin_s or max(end / 60, 1e-3)
    tl = M.step_timeline(steps, bin_s, 0.0, end).to_pylist()
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    for pool, grp in _groups(tl, ["pool"]).items():
        t = [r["t_s"] + bin_s / 2 for r in grp]
        ax1.plot(t, [r["busy_fraction"] for r in grp], label=pool[0])
        ax2.plot(t, [r["avg_replica_power_w"] for r in grp], label=pool[0])
    for ax in (ax1, ax2):
        ax.axvspan(t0, t1, color="grey", alpha=0.1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax1.set_ylabel("busy fraction (0-1)")
    ax1.set_ylim(-0.02, 1.05)
    ax2.set_ylabel("avg power per replica (W)")
    ax2.set_xlabel("simulated time (s)")
    fig.suptitle(f"utilization and power, point {pid}")
    return fig


def heatmap(out: str, x: str, y: str, metric: str = "ttft_p90_s") -> Figure:
    """A summary metric over two swept axes (mean over points sharing a cell, e.g.
    replications). Values equal up to rounding noise get one colour
    (:func:`analysis.figstyle.colour_limits`); every cell is labelled with its value."""
    rows = sweep_rows(out)
    short = names(out)
    xs = sorted({format_value(r[x]) for r in rows}, key=lambda v: (_num(v), v))
    ys = sorted({format_value(r[y]) for r in rows}, key=lambda v: (_num(v), v))
    grid = np.full((len(ys), len(xs)), np.nan)
    for i, j in product(range(len(ys)), range(len(xs))):
        vals = [r.get(metric, math.nan) for r in rows if format_value(r[x]) == xs[j] and format_value(r[y]) == ys[i]]
        vals = [v for v in vals if isinstance(v, (int, float)) and not math.isnan(v)]
        if vals:
            grid[i, j] = float(np.mean(vals))
    fig = Figure(figsize=(min(1.1 * len(xs) + 3.5, 12), max(0.5 * len(ys) + 2.6, 4.2)), layout="constrained")
    ax = fig.subplots()
    vmin, vmax = colour_limits(grid)
    log = vmin > 0 and vmax / vmin > 20  # e.g. latencies from 0.5 s to 20 s: a log colour scale
    norm = LogNorm(vmin, vmax) if log else Normalize(vmin, vmax)
    im = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis", norm=norm)
    ax.set_xticks(range(len(xs)), [v[:24] for v in xs], rotation=30 if max(map(len, xs)) > 6 else 0,
                  ha="right" if max(map(len, xs)) > 6 else "center", fontsize=8)
    ax.set_yticks(range(len(ys)), [wrap(v[:80], 32) for v in ys], fontsize=8)
    ax.set_xlabel(wrap(param_label(short.get(x, x), [r[x] for r in rows]), 60))
    ax.set_ylabel(wrap(param_label(short.get(y, y), [r[y] for r in rows])))
    for i, j in product(range(len(ys)), range(len(xs))):
        if not math.isnan(grid[i, j]):
            ax.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center", color="w" if norm(grid[i, j]) < 0.6 else "k",
                    fontsize=8)
    bar = fig.colorbar(im, ax=ax, label=metric_label(metric))
    if log:
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.set_title(wrap(f"{metric_label(metric)} by {short.get(x, x)} and {short.get(y, y)}", 60), fontsize=9)
    return fig


def _num(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return math.inf


def _front_plot(rows: list[dict], xk: str, yk: str, front: list[dict], title: str, label_keys: list[str],
                short: dict[str, str]) -> Figure:
    """Every point in grey, the front in red; each front point numbered (the number kept inside
    the axes) and described in a legend under the axes."""
    fig = Figure(figsize=(7, 4.8 + 0.16 * len(front)), layout="constrained")
    ax = fig.subplots()
    ax.scatter([r[xk] for r in rows], [r[yk] for r in rows], color="grey", alpha=0.6, label="points")
    ax.plot([r[xk] for r in front], [r[yk] for r in front], color="C3", marker="o", label="Pareto front")
    ax.margins(0.08)
    ax.set_xlabel(metric_label(xk))
    ax.set_ylabel(metric_label(yk))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title, fontsize=10)
    ax.autoscale_view()  # fixes the limits, so numbers can be placed inside them
    handles = []
    for n, r in enumerate(front, 1):
        ax.annotate(str(n), (r[xk], r[yk]), fontsize=7, color="C3", annotation_clip=True, **keep_inside(ax, r[xk], r[yk]))
        text = _label(label_keys, tuple(format_value(r.get(k)) for k in label_keys), short, width=110) or r["point_id"]
        handles.append(Line2D([], [], linestyle="none", marker=f"${n}$", color="C3", label=text))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", fontsize=7, ncols=1 if len(handles) > 4 else 2,
                   title="front points", title_fontsize=7, frameon=False)
    return fig


def pareto_cost_latency(out: str, cost: str = "usd_per_million_output_tokens", latency: str = "e2e_p90_s") -> Figure:
    """Every point's cost against a latency metric, with the front of points no other beats on
    both (lower cost and lower latency)."""
    rows = [r for r in sweep_rows(out) if not (math.isnan(r.get(cost, math.nan)) or math.isnan(r.get(latency, math.nan)))]
    neg = [{**r, "_neg": -r[latency]} for r in rows]
    front = pareto_front(neg, cost=cost, quality="_neg")
    return _front_plot(rows, cost, latency, front, f"{metric_label(latency)} vs cost", _varied(out), names(out))


def pareto_accuracy_cost(out: str, cost: str = "usd_per_1k_jobs", quality: str = "accuracy") -> Figure:
    """Job accuracy against cost per 1k jobs, with :func:`analysis.frontier.pareto_front`."""
    rows = [r for r in sweep_rows(out) if quality in r and cost in r]
    front = pareto_front(rows, cost=cost, quality=quality)
    return _front_plot(rows, cost, quality, front, f"{metric_label(quality)} vs cost", _varied(out), names(out))


def _varied(out: str) -> list[str]:
    """Swept parameters taking more than one value (labels of points)."""
    pts = M.points(out)
    return [k for k in M.swept_parameters(out) if k != "run" and len({str(p[k]) for p in pts}) > 1]
