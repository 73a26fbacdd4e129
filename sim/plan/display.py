"""Printing a plan's outcome: the feasible frontier as a table, the recommendation with its margin to
each constraint, and the sensitivity lines."""

from __future__ import annotations

import json

import sim.plan.metrics as metrics
from sim.plan.driver import PlanResult

__all__ = ["print_plan"]


def _value(v) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":")) if isinstance(v, (dict, list)) else str(v)


def _num(v: float) -> str:
    return "-" if v != v else f"{v:.4g}"


def print_plan(result: PlanResult, console, max_rows: int = 20) -> None:
    """Frontier table(s), recommendation, sensitivity and counts on a rich ``console``."""
    from rich.table import Table

    spec = result.spec
    short = {p: p.rsplit(".", 1)[-1] for p in result.paths}
    for name, (axes, rows) in result.fronts.items():
        title = "feasible Pareto frontier: " + " vs ".join(a.metric for a in axes)
        table = Table(title=title, title_justify="left")
        for p in result.paths:
            table.add_column(short[p])
        for a in axes:
            table.add_column(a.metric + (" (max)" if a.goal == "max" else ""), justify="right")
        for t in rows[:max_rows]:
            table.add_row(*[_value(t["params"][p]) for p in result.paths],
                          *[_num(metrics.metric_value(t["row"], a.metric)) for a in axes])
        console.print(table)
        if len(rows) > max_rows:
            console.print(f"... {len(rows) - max_rows} more rows in frontier.parquet", highlight=False)
    rec = result.recommendation
    if rec is None:
        console.print("no candidate met every constraint: widen the space (more replicas, larger devices) "
                      "or relax a bound; plan_trials.parquet says how close each came", highlight=False)
    else:
        chosen = ", ".join(f"{short[p]}={_value(v)}" for p, v in rec["params"].items())
        value = metrics.metric_value(rec["row"], spec.objective.metric)
        console.print(f"recommended: {chosen}  ({spec.objective.metric} {value:.4g})", highlight=False)
        for label, m in metrics.check(spec, rec["row"])["margins"].items():
            c = next(c for c in spec.constraints if c.label == label)
            bound = f"<= {c.max:g}" if c.max is not None else f">= {c.min:g}"
            console.print(f"  {label} = {_num(metrics.metric_value(rec['row'], label))} ({bound}): margin {m:+.1%}",
                          highlight=False)
        for line in result.sensitivity:
            console.print("  " + line, highlight=False)
    c = result.counts
    console.print(f"{c['touched']} of {c['candidates']} candidates considered: {c['infeasible']} do not fit or are "
                  f"invalid, {c['capacity']} pruned by capacity, {c['stopped']} stopped early, {c['full']} simulated "
                  f"in full, {c['failed']} failed; {c['simulations']} simulations ({result.ran} run now) "
                  f"in {result.wall_s:.1f} s; tables in {result.out}", highlight=False)
