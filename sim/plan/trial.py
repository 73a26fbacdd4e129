"""One Tune trial of a plan: a candidate simulated first on a shortened horizon, then (unless it is
hopeless) on the scenario's own, each run written and committed like a sweep point.

The full-horizon run is a point of the plan folder (``<out>/calls/point_id=<id>/...``,
``<out>/_commits/<id>.json``, via :func:`sim.sweep.execute_point`); the shortened run is a point
of ``<out>/_short/`` (same layout, hidden from dataset scans by its leading underscore). A run
whose commit marker exists is read back instead of simulated, which is how an interrupted plan
resumes: the search replays (it is deterministic) and only what was not committed runs.

The trial reports to Tune twice: ``stage`` 1 after the short run and ``stage`` 2 after the full
one, each with ``score`` (what the searcher minimizes), ``objective`` and ``feasible``. With the
``hopeless`` rule the trial ends after stage 1 when a constraint misses by more than
``slo_factor`` or the objective is beyond ``1 + cost_margin`` times the best feasible one known
when the trial was suggested; with ``asha`` Tune's ASHA scheduler decides on the stage-1 scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from sim.output import storage
from sim.plan.metrics import INFEASIBLE_SCORE, check, class_metrics, metric_value, score
from sim.plan.space import Space

__all__ = ["TrialContext", "plan_point", "shortened", "hopeless", "trainable"]

SHORT_DIR = "_short"


def shortened(raw: dict, horizon: float) -> dict:
    """The scenario over ``horizon`` x its duration and warm-up (drain kept)."""
    out = dict(raw)
    out["duration_s"] = raw["duration_s"] * horizon
    out["warmup_s"] = raw.get("warmup_s", 0.0) * horizon
    return out


def plan_point(scenario, out: str, point_id: str, classes: tuple = (), slos: dict | None = None) -> dict:
    """:func:`sim.run.run_point` plus the per-class metrics the plan's constraints read (computed
    from the point's calls table before the trace options may delete it)."""
    from sim.run import run_point

    fs, base = storage.open_output(out)
    calls = storage.join(storage.partition_dir(base, "calls", point_id), "part-0.parquet")
    keep_calls = scenario.trace.calls
    if classes and not keep_calls:
        scenario = scenario.model_copy(update={"trace": scenario.trace.model_copy(update={"calls": True})})
    row = run_point(scenario, out, point_id)
    if classes:
        row.update(class_metrics(calls, fs, list(classes), slos or {}, scenario.warmup_s, scenario.duration_s))
        if not keep_calls:
            fs.delete_file(calls)
    if row.get("usd_per_correct") is not None:
        row["usd_per_1k_correct"] = 1000 * row["usd_per_correct"]
    return row


@dataclass
class TrialContext:
    """What every trial needs, shipped to Tune's workers once (``tune.with_parameters``)."""

    space: Space
    out: str
    point_fn: Callable[[Any, str, str], dict]

    @property
    def spec(self):
        return self.space.spec

    def run(self, raw: dict, out: str) -> dict:
        """The committed record of the point ``raw`` in ``out``, simulated if not yet committed."""
        from sim.config.sweep import point_id_of
        from sim.sweep import execute_point

        pid = point_id_of(raw)
        fs, base = storage.open_output(out)
        if storage.is_committed(fs, base, pid):
            return {**storage.read_commit(fs, base, pid), "point_id": pid, "resumed": True}
        record = execute_point(self.point_fn, self.space.scenario(raw), out, pid)
        return {**record, "point_id": pid, "resumed": False}

    def result(self, record: dict, stage: int) -> dict:
        """What a trial reports to Tune for a run record."""
        row = record.get("summary") or {}
        spec = self.spec
        if record["status"] != "ok":
            return {"stage": stage, "score": INFEASIBLE_SCORE / 100, "objective": math.nan, "feasible": False,
                    "point_id": record["point_id"], "status": "failed"}
        chk = check(spec, row)
        obj = metric_value(row, spec.objective.metric)
        return {"stage": stage, "score": score(spec, row), "feasible": chk["feasible"],
                "objective": obj if spec.objective.goal == "min" else -obj, "point_id": record["point_id"],
                "status": "ok"}


def hopeless(spec, row: dict, objective: float, best: float) -> str | None:
    """Why a short-horizon result is hopeless (None if it is not)."""
    rule = spec.search.early_stop
    for c in spec.constraints:
        v = metric_value(row, c.label)
        if c.max is not None and c.max > 0 and v > rule.slo_factor * c.max:
            return f"{c.label} = {v:.3g} > {rule.slo_factor:g} x {c.max:g} on the short horizon"
        if c.min is not None and c.min > 0 and v < c.min / rule.slo_factor:
            return f"{c.label} = {v:.3g} < {c.min:g} / {rule.slo_factor:g} on the short horizon"
    if math.isfinite(best) and objective == objective:
        limit = best + abs(best) * rule.cost_margin
        if objective > limit:
            return f"{spec.objective.metric} {objective:.4g} beyond the best feasible {best:.4g} + {rule.cost_margin:.0%}"
    return None


def trainable(config: dict, ctx: TrialContext) -> None:
    """Tune's function trainable: short run, stage-1 report, then the full run unless hopeless."""
    from ray import tune

    spec = ctx.spec
    cand = ctx.space.candidate(tuple(config["index"]))
    rule = spec.search.early_stop
    new = 0  # runs simulated by this trial (not read back from a commit marker)
    if rule.rule != "none":
        short = ctx.run(shortened(cand.raw, rule.horizon), storage.join(ctx.out, SHORT_DIR))
        new += not short["resumed"]
        res = ctx.result(short, 1)
        why = hopeless(spec, short.get("summary") or {}, res["objective"],
                                   math.inf if config["best"] is None else config["best"]) if rule.rule == "hopeless" else None
        if why is not None or res["status"] != "ok":
            tune.report({**res, "stopped": why or "failed on the short horizon", "new_runs": new})
            return
        tune.report({**res, "stopped": "", "new_runs": new})
    full = ctx.run(cand.raw, ctx.out)
    new += not full["resumed"]
    tune.report({**ctx.result(full, 2), "stopped": "", "new_runs": new})
