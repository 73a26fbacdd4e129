"""Accuracy-vs-cost frontiers of test-time-compute sweeps.

A policy is on the frontier when no other point is at least as accurate for no more
money (and strictly better in one of the two). :func:`pareto_front` works on any rows;
:func:`frontier` joins a sweep's points (the swept parameters) with its summary and
marks the frontier within each group of a grouping parameter (e.g. the accelerator).
"""

from __future__ import annotations

import math
from typing import Iterable

from analysis import summary as read_summary
from sim.output import storage


def pareto_front(rows: Iterable[dict], cost: str = "usd_per_1k_jobs", quality: str = "accuracy") -> list[dict]:
    """Rows not dominated by any other (lower-or-equal cost and higher-or-equal quality, one
    strictly), sorted by cost. Rows with a NaN in either metric are left out."""
    rows = [r for r in rows if not (math.isnan(r[cost]) or math.isnan(r[quality]))]
    front = []
    for r in sorted(rows, key=lambda r: (r[cost], -r[quality])):
        if not front or r[quality] > front[-1][quality]:
            front.append(r)
    return front


def frontier(out: str, group_by: str | None = None, cost: str = "usd_per_1k_jobs", quality: str = "accuracy") -> list[dict]:
    """One row per point of the sweep at ``out``: its swept parameters, ``cost``, ``quality``,
    ``job_latency_p90_s`` and ``on_frontier`` (within its ``group_by`` value), sorted by group
    then cost."""
    import pyarrow.parquet as pq

    fs, base = storage.open_output(out)
    points = {r["point_id"]: r for r in pq.read_table(storage.join(base, "points.parquet"), filesystem=fs).to_pylist()}
    rows = []
    for s in read_summary(out).to_pylist():
        p = points[s["point_id"]]
        params = {k: v for k, v in p.items() if k not in ("point_id", "run", "seed", "status", "error", "node_id", "wall_s")}
        rows.append({"point_id": s["point_id"], **params, cost: s[cost], quality: s[quality],
                     "job_latency_p90_s": s.get("job_latency_p90_s", math.nan)})
    groups: dict = {}
    for r in rows:
        groups.setdefault(r.get(group_by) if group_by else None, []).append(r)
    result = []
    for key in sorted(groups, key=str):
        front = {id(r) for r in pareto_front(groups[key], cost, quality)}
        for r in sorted(groups[key], key=lambda r: r[cost]):
            result.append({**r, "on_frontier": id(r) in front})
    return result
