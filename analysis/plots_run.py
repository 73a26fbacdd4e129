"""Figures of one point of a run or sweep: its timelines and its latency distributions.

:func:`timelines` draws :func:`analysis.timelines.pool_timelines` (queue, running batch, KV
cache, power per pool, the measurement window shaded, preemptions and drops marked);
:func:`latency_cdfs` the empirical CDFs of TTFT, TPOT and end-to-end latency per class with
each class's SLO target; :func:`latency_cdf` one of them. Each returns a
:class:`matplotlib.figure.Figure` built without pyplot.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg", force=False)
import numpy as np  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis import metrics as M  # noqa: E402
from analysis import timelines as T  # noqa: E402
from analysis.figstyle import legend, log_axis  # noqa: E402

__all__ = ["last_point", "timelines", "latency_cdfs", "latency_cdf", "LATENCY_NAMES"]

LATENCY_NAMES = {"ttft": "TTFT", "tpot": "TPOT (time per output token)", "e2e": "end-to-end latency",
                 "wait": "queue wait"}
_MARKED_EVENTS = ("preempted", "dropped", "failure", "retried")


def last_point(out: str, point_id: str | None = None) -> str:
    """``point_id``, or the last summarised point of ``out`` (the busiest of a load sweep)."""
    if point_id:
        return point_id
    ids = list(M.windows(out))
    if not ids:
        raise ValueError(f"{out}: no summarised points")
    return ids[-1]


def timelines(out: str, point_id: str | None = None, bin_s: float | None = None) -> Figure:
    """Four panels over simulated time for one point (default: the last), one line per pool:
    calls waiting for admission, sequences in the running batches, KV cache in use (share of
    the pool's blocks, or blocks without a manifest) and device power (kW). The measurement
    window is shaded; preemptions, drops and failures are ticks along the queue panel."""
    pid = last_point(out, point_id)
    tl = T.pool_timelines(out, pid, bin_s).to_pylist()
    t0, t1 = M.windows(out)[pid]
    pools = sorted({r["pool"] for r in tl})
    has_share = any(not math.isnan(r["kv_used_share"]) for r in tl)
    fig = Figure(figsize=(9, 8.4), layout="constrained")
    axes = fig.subplots(4, 1, sharex=True)
    panels = [("queue_calls", "waiting calls (calls)", 1.0),
              ("running_seqs", "running batch (sequences)", 1.0),
              ("kv_used_share" if has_share else "kv_blocks_used",
               "KV cache in use (% of blocks)" if has_share else "KV cache in use (blocks)", 100.0 if has_share else 1.0),
              ("power_kw", "device power (kW)", 1.0)]
    for ax, (key, ylabel, scale) in zip(axes, panels):
        for i, pool in enumerate(pools):
            rows = [r for r in tl if r["pool"] == pool]
            t = [r["t_s"] + r["bin_s"] / 2 for r in rows]
            ax.plot(t, [r[key] * scale for r in rows], color=f"C{i}",
                    label=f"{pool} ({rows[0]['replicas']} replicas)" if rows else pool)
        ax.axvspan(t0, t1, color="grey", alpha=0.12, lw=0, label="measurement window" if ax is axes[0] else None)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    if has_share:
        axes[2].set_ylim(0, 105)
    events = T.event_times(out, pid)
    for j, kind in enumerate(k for k in _MARKED_EVENTS if k in events):
        axes[0].plot(events[kind], np.zeros(len(events[kind])), linestyle="none", marker="|", markersize=9,
                     color=f"C{len(pools) + j}", label=f"{kind} ({len(events[kind])})", clip_on=False)
    axes[0].legend(fontsize=7, loc="best")
    axes[-1].set_xlabel("simulated time (s)")
    fig.suptitle(f"queue, running batch, KV cache and power per pool, point {pid}", fontsize=10)
    return fig


def _class_latencies(out: str, pid: str, metric: str) -> dict[str, np.ndarray]:
    """``{class: sorted latencies (s)}`` of the finished calls that arrived in the window."""
    calls = M.read(out, "calls")
    if calls is None:
        return {}
    c = calls.filter(pc.equal(calls["point_id"], pid))
    t0, t1 = M.windows(out)[pid]
    a = M._np(c, "arrival_s")
    lat = M.call_latencies(c)[metric]
    cls = M._np(c, "class")
    res = {}
    for name in sorted(set(cls.tolist())):
        x = np.sort(lat[(cls == name) & (a >= t0) & (a < t1) & ~np.isnan(lat)])
        if len(x):
            res[name] = x
    return res


def _cdf_panel(ax, data: dict[str, np.ndarray], metric: str, slos: dict[str, dict], colours: dict[str, str]) -> None:
    values = []
    for name, x in data.items():
        ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", color=colours[name], label=f"{name} ({len(x)} calls)")
        values.append(x)
        target = (slos.get(name) or {}).get(f"{metric}_s")
        if target:
            ax.axvline(target, color=colours[name], linestyle="--", lw=1, label=f"{name} target {target:g} s")
            values.append(np.array([target]))
    if values:
        log_axis(ax, np.concatenate(values), "x")
    ax.set_xlabel(f"{LATENCY_NAMES.get(metric, metric)} (s)")
    ax.set_ylabel("share of calls (0-1)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3, which="major")


def latency_cdfs(out: str, point_id: str | None = None, metrics=("ttft", "tpot", "e2e")) -> Figure:
    """Empirical CDFs of per-call latencies (one panel per metric, one line per class) of the
    finished calls that arrived in the window of one point (default: the last), with each
    class's SLO target as a dashed line."""
    pid = last_point(out, point_id)
    slos = M.class_slos(out, pid)
    data = {m: _class_latencies(out, pid, m) for m in metrics}
    names = sorted(set().union(*(d.keys() for d in data.values())))
    colours = {n: f"C{i}" for i, n in enumerate(names)}
    fig = Figure(figsize=(4.3 * len(metrics), 3.8), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, m in zip(axes, metrics):
        _cdf_panel(ax, data[m], m, slos, colours)
    legend(axes[0], len(axes[0].get_lines()), loc="lower right")
    fig.suptitle(f"latency distributions per class, point {pid}", fontsize=10)
    return fig


def latency_cdf(out: str, metric: str = "ttft", point_id: str | None = None) -> Figure:
    """Empirical CDF of one per-call latency (``ttft``, ``tpot``, ``e2e`` or ``wait``), one line
    per class, for one point (default: the last) or, with ``point_id="all"``, per point and class."""
    ids = list(M.windows(out)) if point_id == "all" else [last_point(out, point_id)]
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    values = []
    for pid in ids:
        for name, x in _class_latencies(out, pid, metric).items():
            ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post",
                    label=f"{name} ({pid})" if len(ids) > 1 else name)
            values.append(x)
    if values:
        log_axis(ax, np.concatenate(values), "x")
    ax.set_xlabel(f"{LATENCY_NAMES.get(metric, metric)} (s)")
    ax.set_ylabel("share of calls (0-1)")
    ax.grid(alpha=0.3)
    legend(ax, len(ax.get_lines()))
    ax.set_title(f"{LATENCY_NAMES.get(metric, metric)} CDF" + ("" if len(ids) > 1 else f", point {ids[0]}"), fontsize=10)
    return fig
