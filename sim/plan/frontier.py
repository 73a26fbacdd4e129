"""What a plan concludes from its trials: the feasible Pareto frontier, the recommended configuration
with its margin to each constraint, and how the choice moves when the load changes.

A trial row (one per candidate the search touched) is a dict with ``index``, ``params``,
``stage`` (``infeasible``, ``capacity``, ``stopped``, ``full``, ``failed``), ``reason``,
``point_id`` and ``row`` (the summary row of its longest run); only ``full`` rows can be feasible
and only feasible rows are on a frontier or recommended.
"""

from __future__ import annotations

import math

import pyarrow as pa

from sim.config.sweep import canonical_json
from sim.plan.metrics import check, metric_value
from sim.plan.spec import Objective, PlanSpec

__all__ = ["pareto", "frontiers", "recommend", "sensitivity_line", "trials_table"]


def _key(row: dict, axis: Objective) -> float:
    v = metric_value(row, axis.metric)
    if math.isnan(v):
        return math.inf
    v = float(f"{v:.12g}")  # equal up to summation order (the same questions' mean accuracy) ties
    return v if axis.goal == "min" else -v


def pareto(rows: list[dict], axes: list[Objective]) -> list[dict]:
    """The rows no other row dominates on ``axes`` (at least as good on all, better on one), in
    the order of the first axis (ties: input order). Rows with a missing axis value are dropped."""
    keyed = [(tuple(_key(r["row"], a) for a in axes), i, r) for i, r in enumerate(rows)]
    keyed = [k for k in keyed if all(math.isfinite(x) for x in k[0])]
    front = []
    for ki, i, r in keyed:
        dominated = any(all(a <= b for a, b in zip(kj, ki)) and kj != ki for kj, _, _ in keyed)
        if not dominated:
            front.append((ki, i, r))
    return [r for _, _, r in sorted(front, key=lambda t: (t[0], t[1]))]


def feasible(spec: PlanSpec, trials: list[dict]) -> list[dict]:
    return [t for t in trials if t["stage"] == "full" and check(spec, t["row"])["feasible"]]


def frontiers(spec: PlanSpec, trials: list[dict]) -> dict[str, tuple[list[Objective], list[dict]]]:
    """Named frontiers of the feasible rows: ``cost`` over the plan's frontier axes, and
    ``accuracy`` (the objective against answer accuracy) when the runs had jobs."""
    ok = feasible(spec, trials)
    out = {"cost": (spec.frontier_axes, pareto(ok, spec.frontier_axes))}
    named = [a.metric for a in [spec.objective, *spec.frontier_axes]]
    acc = "expected_accuracy" if "expected_accuracy" in named else "accuracy"
    if any(not math.isnan(metric_value(t["row"], acc)) for t in ok):
        cost = next((a for a in [spec.objective, *spec.frontier_axes] if a.goal == "min"), None)
        axes = [a for a in (cost, Objective(metric=acc, goal="max")) if a is not None]
        out["accuracy"] = (axes, pareto(ok, axes))
    return out


def recommend(spec: PlanSpec, trials: list[dict]) -> dict | None:
    """The feasible trial with the best objective, ties broken by the frontier axes in order (the
    cheaper of two equally accurate configurations), then by search order; None if none is feasible."""
    ok = feasible(spec, trials)
    if not ok:
        return None
    return min(ok, key=lambda t: tuple(_key(t["row"], a) for a in [spec.objective, *spec.frontier_axes]))


def _describe(params: dict) -> str:
    return ", ".join(f"{p.rsplit('.', 1)[-1]}={canonical_json(v) if isinstance(v, (dict, list)) else v}"
                     for p, v in params.items())


def sensitivity_line(spec: PlanSpec, rec: dict, top: list[dict], at: dict[float, list[dict]]) -> list[str]:
    """One sentence per load factor: whether the recommendation still holds, and which of the
    ``top`` candidates re-evaluated at that load is the best feasible one. ``at[f][i]`` is the
    summary row of ``top[i]`` at load x f."""
    lines = []
    obj = spec.objective.metric
    for f, rows in sorted(at.items()):
        checks = [check(spec, r) for r in rows]
        rec_i = next(i for i, t in enumerate(top) if t["index"] == rec["index"])
        still = checks[rec_i]["feasible"]
        worst = min(checks[rec_i]["margins"].items(), key=lambda kv: kv[1]) if checks[rec_i]["margins"] else None
        ok = [i for i, c in enumerate(checks) if c["feasible"]]
        axes = [spec.objective, *spec.frontier_axes]
        best = min(ok, key=lambda i: tuple(_key(rows[i], a) for a in axes)) if ok else None
        head = f"at {f:g}x load: the recommendation " + (
            "still meets every constraint" if still else f"misses {worst[0]} (margin {worst[1]:+.0%})")
        if best is None:
            tail = f"; none of the top {len(top)} candidates meets them at this load"
        elif best == rec_i:
            tail = f" and stays the best of the top {len(top)} ({obj} {metric_value(rows[best], obj):.4g})"
        else:
            tail = (f"; the best of the top {len(top)} becomes {_describe(top[best]['params'])} "
                    f"({obj} {metric_value(rows[best], obj):.4g})")
        lines.append(head + tail)
    return lines


def trials_table(spec: PlanSpec, paths: list[str], trials: list[dict]) -> pa.Table:
    """One row per candidate the search touched, in search order: its values, how far it got,
    and its objective, frontier axes and constraint margins."""
    from sim.sweep import arrow_column

    cols: dict[str, pa.Array] = {"trial": pa.array(range(len(trials)), pa.int64()),
                                 "point_id": pa.array([t.get("point_id") for t in trials], pa.string())}
    for p in paths:
        cols[p] = arrow_column([t["params"][p] for t in trials])
    cols["stage"] = pa.array([t["stage"] for t in trials], pa.string())
    cols["reason"] = pa.array([t.get("reason") or None for t in trials], pa.string())
    cols["simulations"] = pa.array([t.get("simulations", 0) for t in trials], pa.int64())
    checks = [check(spec, t.get("row") or {}) if t["stage"] in ("full", "stopped") else None for t in trials]
    cols["feasible"] = pa.array([bool(c and c["feasible"] and t["stage"] == "full") for c, t in zip(checks, trials)])
    names = list(dict.fromkeys([spec.objective.metric] + [a.metric for a in spec.frontier_axes]))
    for name in names:
        cols[name] = pa.array([metric_value(t.get("row") or {}, name) for t in trials], pa.float64())
    for c in spec.constraints:
        cols[f"margin:{c.label}"] = pa.array([ch["margins"][c.label] if ch else None for ch in checks], pa.float64())
    return pa.table(cols)
