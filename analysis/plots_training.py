"""Figures of runs whose pools lend devices to training jobs (a ``training`` table).

:func:`fleet_share` draws, for each point, the shared pools' devices by state over simulated
time (serving inference, idle, training, checkpointing, restarting, off) as stacked areas of
one point, and the inference share of the devices switched on for every point;
:func:`training_vs_slo` the training tokens a day of each point against its inference SLO
attainment. Each returns a :class:`matplotlib.figure.Figure` built without pyplot.
"""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg", force=False)
import numpy as np  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis import metrics as M  # noqa: E402
from analysis import summary as read_summary  # noqa: E402
from analysis.figstyle import legend  # noqa: E402
from analysis.labels import short_names  # noqa: E402
from sim.output.training import STATES, share_over_time  # noqa: E402

__all__ = ["fleet_share", "training_vs_slo", "point_labels"]

COLOURS = {"inference": "#1f77b4", "idle": "#aec7e8", "training": "#2ca02c", "checkpoint": "#ffbb78",
           "restart": "#d62728", "off": "#dddddd"}


def point_labels(out: str) -> dict[str, str]:
    """A short label per point: its swept values (by their shortest unique trailing names)."""
    axes = [k for k in M.swept_parameters(out) if k != "run"]
    short = short_names(axes)
    labels = {}
    for p in M.points(out):
        parts = []
        for k in axes:
            v = p.get(k)
            if isinstance(v, str) and v.startswith("{"):
                try:
                    v = json.loads(v)
                except ValueError:
                    pass
            if isinstance(v, dict) and "kind" in v:  # a policy: its kind and its one number, if any
                nums = [f"{x:g}" if isinstance(x, (int, float)) else "" for kk, x in v.items()
                        if kk != "kind" and not isinstance(x, list)]
                v = v["kind"] + (" " + " ".join(n for n in nums if n) if any(nums) else "")
            parts.append(f"{short.get(k, k)}={v}")
        labels[p["point_id"]] = ", ".join(parts) or p["point_id"]
    return labels


def _shared_pools(out: str, pid: str) -> list[tuple[str, int]]:
    """(pool, devices per replica) of the pools a point's training classes use."""
    sc = M.scenario(out, pid)
    pools = {p["name"]: p.get("tp", 1) * p.get("pp", 1) for p in sc["datacenter"]["pools"]}
    names = sorted({c["pool"] for c in sc["workload"]["classes"] if c.get("training")})
    return [(n, pools[n]) for n in names]


def _shares(out: str, pid: str, bins: int) -> dict:
    steps = M.read(out, "steps")
    training = M.read(out, "training")
    steps = steps.filter(pc.equal(steps["point_id"], pid))
    training = training.filter(pc.equal(training["point_id"], pid))
    t0, t1 = M.windows(out)[pid]
    total = None
    for pool, d in _shared_pools(out, pid):
        s = share_over_time(steps, training, pool, d, t0, t1, bins)
        total = s if total is None else {k: total[k] + s[k] if k != "t" else total[k] for k in s}
    return total


def fleet_share(out: str, point_id: str | None = None, bins: int = 96) -> Figure:
    """Top: the devices of the shared pools by state over time for one point (default: the
    last). Bottom: the share of the devices switched on that inference has (serving, idle or
    booting), every point."""
    ids = [pid for pid in M.windows(out) if _shared_pools(out, pid)]
    pid = point_id or ids[-1]
    labels = point_labels(out)
    fig = Figure(figsize=(10, 7.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    s = _shares(out, pid, bins)
    width = (s["t"][1] - s["t"][0]) if len(s["t"]) > 1 else 1.0
    hours = s["t"] / 3600
    devices = [s[k] / width for k in STATES]
    top.stackplot(hours, devices, labels=list(STATES), colors=[COLOURS[k] for k in STATES], step="post")
    top.set_ylabel("devices")
    top.set_title(f"devices by state: {labels.get(pid, pid)}", fontsize=10)
    legend(top, len(STATES), loc="upper left", ncols=3)
    for other in ids:
        o = _shares(out, other, bins)
        on = sum(o[k] for k in STATES) - o["off"]
        inf = o["inference"] + o["idle"] - o["idle_lent"]
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(on > 0, inf / on, math.nan)
        bottom.step(o["t"] / 3600, share, where="post", label=labels.get(other, other))
    bottom.set_ylim(0, 1.02)
    bottom.set_xlabel("simulated time (h)")
    bottom.set_ylabel("inference share of devices on")
    legend(bottom, len(ids), loc="lower left")
    return fig


def training_vs_slo(out: str) -> Figure:
    """Training tokens a day against inference SLO attainment, one marker per point."""
    rows = [r for r in read_summary(out).to_pylist() if r.get("training_tokens_per_day") is not None]
    labels = point_labels(out)
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    for r in rows:
        ax.plot(r["inference_slo_attainment"], r["training_tokens_per_day"] / 1e9, "o")
        ax.annotate(labels.get(r["point_id"], r["point_id"]), (r["inference_slo_attainment"],
                    r["training_tokens_per_day"] / 1e9), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xlabel("inference SLO attainment (share of calls)")
    ax.set_ylabel("training tokens a day (billions)")
    return fig
