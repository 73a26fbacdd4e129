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
from matplotlib.figure import Figure  # noqa: E402

from analysis import metrics as M  # noqa: E402
from analysis import summary as read_summary  # noqa: E402
from analysis.frontier import pareto_front  # noqa: E402
from sim.output.headline import format_value  # noqa: E402

__all__ = [
    "sweep_rows",
    "numeric_axes",
    "latency_vs_load",
    "slo_attainment_vs_load",
    "utilization_timeline",
    "latency_cdf",
    "heatmap",
    "pareto_cost_latency",
    "pareto_accuracy_cost",
]


def _short(path: str) -> str:
    return path.rsplit(".", 1)[-1] if "." in path else path


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


def _label(keys: list[str], values: tuple, width: int = 40) -> str:
    text = ", ".join(f"{_short(k)}={format_value(v)}" for k, v in zip(keys, values))
    return text if len(text) <= width else text[: width - 1] + "…"


def _legend(ax, n: int) -> None:
    if 0 < n <= 12:
        ax.legend(fontsize=7)


def latency_vs_load(out: str, x: str | None = None, metrics=("ttft_p90_s", "e2e_p90_s")) -> Figure:
    """Summary latency metrics (one panel each) against a numeric swept axis ``x`` (default:
    the first one), one line per combination of the other swept values (replications apart)."""
    x = _pick_x(out, x)
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    rows = sweep_rows(out)
    others = [k for k in M.swept_parameters(out) if k not in (x, "run")]
    fig = Figure(figsize=(5.5 * len(metrics), 4), layout="constrained")
    for ax, metric in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics):
        for key, grp in _groups(rows, others).items():
            grp = sorted(grp, key=lambda r: r[x])
            ax.plot([r[x] for r in grp], [r.get(metric, math.nan) for r in grp], marker="o",
                    label=_label(others, key) or None)
        ax.set_xlabel(_short(x))
        ax.set_ylabel(metric)
        ax.set_yscale("log" if metric.endswith("_s") else "linear")
        ax.grid(alpha=0.3)
        if others:
            _legend(ax, len(_groups(rows, others)))
    fig.suptitle(f"latency vs {_short(x)}")
    return fig


def slo_attainment_vs_load(out: str, x: str | None = None) -> Figure:
    """SLO attainment per workload class (:func:`analysis.metrics.goodput`) against a numeric
    swept axis, one line per class and combination of the other swept values."""
    x = _pick_x(out, x)
    params = {p["point_id"]: p for p in M.points(out)}
    others = [k for k in M.swept_parameters(out) if k not in (x, "run")]
    rows = [{**params[r["point_id"]], **r} for r in M.goodput(out).to_pylist()]
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for key, grp in _groups(rows, ["class", *others]).items():
        grp = sorted(grp, key=lambda r: r[x])
        ax.plot([r[x] for r in grp], [r["slo_attainment"] for r in grp], marker="o", label=_label(["class", *others], key),
                linestyle="--" if key[0] == M.ALL else "-")
    ax.set_xlabel(_short(x))
    ax.set_ylabel("SLO attainment (share of calls)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    _legend(ax, len(_groups(rows, ["class", *others])))
    ax.set_title(f"SLO attainment vs {_short(x)}")
    return fig


def _point(out: str, point_id: str | None) -> str:
    ids = [r["point_id"] for r in sweep_rows(out)]
    return point_id or ids[-1]


def utilization_timeline(out: str, point_id: str | None = None, bin_s: float | None = None) -> Figure:
    """Busy fraction and average power per replica of every pool of one point (default: the
    last point) over time, in bins of ``bin_s`` (default: about 60 bins over the run). The
    measurement window is shaded."""
    pid = _point(out, point_id)
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
    ax1.set_ylabel("busy fraction")
    ax1.set_ylim(-0.02, 1.05)
    ax2.set_ylabel("avg power per replica (W)")
    ax2.set_xlabel("simulated time (s)")
    fig.suptitle(f"utilization and power, point {pid}")
    return fig


def latency_cdf(out: str, metric: str = "ttft", point_id: str | None = None) -> Figure:
    """Empirical CDF of a per-call latency (``ttft``, ``tpot``, ``e2e`` or ``wait``) of the
    finished calls that arrived in the window, one line per class, for one point (default: the
    last point) or, with ``point_id="all"``, one line per point and class."""
    calls = M.read(out, "calls")
    win = M.windows(out)
    ids = list(win) if point_id == "all" else [_point(out, point_id)]
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for pid in ids:
        c = calls.filter(pc.equal(calls["point_id"], pid))
        t0, t1 = win[pid]
        a = c["arrival_s"].to_numpy()
        lat = M.call_latencies(c)[metric]
        cls = c["class"].to_numpy(zero_copy_only=False)
        for name in sorted(set(cls.tolist())):
            x = np.sort(lat[(cls == name) & (a >= t0) & (a < t1) & ~np.isnan(lat)])
            if len(x):
                ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post",
                        label=f"{name} ({pid})" if len(ids) > 1 else name)
    ax.set_xscale("log")
    ax.set_xlabel(f"{metric} (s)")
    ax.set_ylabel("share of calls")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{metric} CDF" + ("" if len(ids) > 1 else f", point {ids[0]}"))
    return fig


def heatmap(out: str, x: str, y: str, metric: str = "ttft_p90_s") -> Figure:
    """A summary metric over two swept axes (mean over points sharing a cell, e.g. replications)."""
    rows = sweep_rows(out)
    xs = sorted({format_value(r[x]) for r in rows}, key=lambda v: (_num(v), v))
    ys = sorted({format_value(r[y]) for r in rows}, key=lambda v: (_num(v), v))
    grid = np.full((len(ys), len(xs)), np.nan)
    for i, j in product(range(len(ys)), range(len(xs))):
        vals = [r.get(metric, math.nan) for r in rows if format_value(r[x]) == xs[j] and format_value(r[y]) == ys[i]]
        if vals:
            grid[i, j] = float(np.nanmean(vals)) if not all(map(math.isnan, vals)) else math.nan
    fig = Figure(figsize=(1.2 * len(xs) + 3, 0.6 * len(ys) + 2.5), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis")
    ax.set_xticks(range(len(xs)), [v[:24] for v in xs], rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(ys)), [v[:40] for v in ys], fontsize=7)
    ax.set_xlabel(_short(x))
    ax.set_ylabel(_short(y))
    for i, j in product(range(len(ys)), range(len(xs))):
        if not math.isnan(grid[i, j]):
            ax.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center", color="w", fontsize=7)
    fig.colorbar(im, ax=ax, label=metric)
    ax.set_title(metric)
    return fig


def _num(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return math.inf


def _front_plot(rows: list[dict], xk: str, yk: str, front: list[dict], title: str, label_keys: list[str]) -> Figure:
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.scatter([r[xk] for r in rows], [r[yk] for r in rows], color="grey", alpha=0.6, label="points")
    ax.plot([r[xk] for r in front], [r[yk] for r in front], color="C3", marker="o", label="Pareto front")
    for r in front:
        text = _label(label_keys, tuple(format_value(r.get(k)) for k in label_keys), width=60)
        ax.annotate(text, (r[xk], r[yk]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(xk)
    ax.set_ylabel(yk)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title)
    return fig


def pareto_cost_latency(out: str, cost: str = "usd_per_million_output_tokens", latency: str = "e2e_p90_s") -> Figure:
    """Every point's cost against a latency metric, with the front of points no other beats on
    both (lower cost and lower latency)."""
    rows = [r for r in sweep_rows(out) if not (math.isnan(r.get(cost, math.nan)) or math.isnan(r.get(latency, math.nan)))]
    neg = [{**r, "_neg": -r[latency]} for r in rows]
    front = pareto_front(neg, cost=cost, quality="_neg")
    return _front_plot(rows, cost, latency, front, f"{latency} vs {cost}", _varied(out))


def pareto_accuracy_cost(out: str, cost: str = "usd_per_1k_jobs", quality: str = "accuracy") -> Figure:
    """Job accuracy against cost per 1k jobs, with :func:`analysis.frontier.pareto_front`."""
    rows = [r for r in sweep_rows(out) if quality in r and cost in r]
    front = pareto_front(rows, cost=cost, quality=quality)
    return _front_plot(rows, cost, quality, front, f"{quality} vs {cost}", _varied(out))


def _varied(out: str) -> list[str]:
    """Swept parameters taking more than one value (labels of points)."""
    pts = M.points(out)
    return [k for k in M.swept_parameters(out) if k != "run" and len({str(p[k]) for p in pts}) > 1]
