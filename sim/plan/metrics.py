"""What a plan reads from one simulated point: per-class latency and SLO attainment from its calls
table, and whether (and by how much) the point meets the plan's constraints.

A point's *margin* to a constraint is the relative slack: ``(bound - value) / bound`` for ``max``
bounds and ``(value - bound) / bound`` for ``min`` bounds; positive means the bound holds. The
*score* the searcher minimizes is the objective (negated when maximized) scaled up by the sum of
the violations, so points just outside the feasible region still rank by their cost.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sim.plan.spec import PlanSpec

__all__ = ["class_metrics", "check", "score", "metric_value", "INFEASIBLE_SCORE"]

# Score of a configuration that never ran (does not fit in memory, or too few replicas for the
# load): worse than any simulated point.
INFEASIBLE_SCORE = 1e12
CALL_COLUMNS = ["class", "status", "arrival_s", "first_token_s", "finish_s", "generated_tokens"]


def class_metrics(calls_path: str, fs, classes: list[str], slos: dict[str, tuple], t0: float, t1: float) -> dict:
    """``{"<class>.<metric>": value}`` for each class in ``classes``: TTFT/TPOT/E2E percentiles of
    its finished calls that arrived in ``[t0, t1)``, the share that finished, and its SLO
    attainment (share of its calls in the window that finished within the class's ``slo``
    TTFT and TPOT; unfinished calls miss). ``slos`` maps class -> (ttft_s, tpot_s), None = no bound."""
    table = pq.read_table(calls_path, filesystem=fs, columns=CALL_COLUMNS)
    status = table["status"]
    table = table.filter(pc.not_equal(status, "prefilled"))  # a disaggregated call's prefill-only row
    out: dict[str, float] = {}
    for name in classes:
        part = table.filter(pc.equal(table["class"], name))
        a = part["arrival_s"].to_numpy()
        win = (a >= t0) & (a < t1)
        fin = win & (part["status"].to_numpy(zero_copy_only=False) == "finished")
        first, finish = part["first_token_s"].to_numpy(), part["finish_s"].to_numpy()
        gen = part["generated_tokens"].to_numpy()
        ttft = (first - a)[fin]
        e2e = (finish - a)[fin]
        multi = fin & (gen > 1)
        tpot = ((finish - first)[multi] / (gen[multi] - 1)) if multi.any() else np.empty(0)
        for m, x in (("ttft", ttft), ("tpot", tpot), ("e2e", e2e)):
            for q in (50, 90, 99):
                out[f"{name}.{m}_p{q}_s"] = float(np.percentile(x, q)) if len(x) else math.nan
        n = int(win.sum())
        out[f"{name}.completed_share"] = int(fin.sum()) / n if n else math.nan
        ttft_slo, tpot_slo = slos.get(name, (None, None))
        ok = fin.copy()
        if ttft_slo is not None:
            ok &= (first - a) <= ttft_slo
        if tpot_slo is not None:
            per = np.where(gen > 1, (finish - first) / np.maximum(gen - 1, 1), 0.0)
            ok &= per <= tpot_slo
        out[f"{name}.slo_attainment"] = int(ok.sum()) / n if n else math.nan
    return out


def metric_value(row: dict, name: str) -> float:
    """``row[name]`` as a float (NaN when absent or not a number)."""
    v = row.get(name)
    if isinstance(v, bool) or v is None:
        return math.nan if v is None else float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def check(spec: PlanSpec, row: dict) -> dict[str, Any]:
    """Margins to every constraint, whether all hold, and the summed violation.

    Returns ``{"feasible": bool, "violation": float, "margins": {label: margin}}``; a metric
    that is NaN (no calls finished, or a column the run does not have) counts as a violation
    of 1 (the bound missed by 100%)."""
    margins: dict[str, float] = {}
    violation = 0.0
    for c in spec.constraints:
        v = metric_value(row, c.label)
        sides = []
        if c.max is not None:
            sides.append((c.max - v) / abs(c.max) if c.max else -v)
        if c.min is not None:
            sides.append((v - c.min) / abs(c.min) if c.min else v)
        m = -1.0 if math.isnan(v) else min(sides)
        margins[c.label] = m
        violation += max(0.0, -m)
    return {"feasible": violation == 0.0, "violation": violation, "margins": margins}


def score(spec: PlanSpec, row: dict) -> float:
    """What the searcher minimizes: the objective (negated if maximized) times 1 + 10 x violation
    (a positive objective), plus the violation, so a missing objective still ranks by violation."""
    v = metric_value(row, spec.objective.metric)
    viol = check(spec, row)["violation"]
    if math.isnan(v):
        return INFEASIBLE_SCORE / 10 * (1 + viol)
    v = v if spec.objective.goal == "min" else -v
    return (v * (1 + 10 * viol) if v > 0 else v / (1 + 10 * viol)) + viol
