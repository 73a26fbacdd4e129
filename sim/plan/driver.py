"""The plan command's driver: search a scenario's ``plan:`` space on Ray Tune and write what it found.

Layout of ``--out`` (a sweep's, so the report and :mod:`analysis` read a plan as a sweep)::

    points.parquet        one row per full-horizon simulation (trials, then the sensitivity
                          runs): point_id, the plan's axes, load_scale, run, seed, status, ...
    summary.parquet       point_id + the summary row of every ok point
    calls/point_id=<id>/..., <id>/scenario.yaml, _commits/<id>.json   as a sweep point
    _short/...            the shortened-horizon runs (a sweep folder of their own)
    plan_trials.parquet   one row per candidate the search touched, in search order: its values,
                          stage (infeasible, capacity, stopped, full, failed), why, metrics, margins
    frontier.parquet      the feasible Pareto frontier(s) (column ``frontier``: cost, accuracy)
    plan.json             which scenario made this folder (checked by --resume)
    recommendation.json   the recommended configuration, its margins, the sensitivity lines, counts

An interrupted plan resumes with ``resume=True``: the seeded search replays, committed runs are
read back instead of simulated, and the rest runs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from sim.config.sweep import Point, canonical_json, point_id_of
from sim.errors import ScenarioError
from sim.output import storage
import sim.plan.frontier as F
import sim.plan.metrics as metrics
from sim.plan.space import Space, scale_load
from sim.plan.spec import PlanSpec, parse_plan
from sim.plan.trial import TrialContext, plan_point, trainable

__all__ = ["PlanResult", "run_plan", "PLAN_META"]

PLAN_META = "plan.json"


@dataclass
class PlanResult:
    out: str
    spec: PlanSpec
    paths: list[str]
    trials: list[dict]
    recommendation: dict | None
    fronts: dict
    sensitivity: list[str]
    simulations: int  # simulations run or read back (short + full + sensitivity)
    ran: int  # of which simulated by this call (not resumed)
    wall_s: float = 0.0
    counts: dict = field(default_factory=dict)


def _sha(obj: Any) -> str:
    import hashlib

    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def _check_refs(raw: dict, spec: PlanSpec, source: str) -> dict[str, tuple]:
    """Classes and pools the plan names exist; returns the classes' (ttft, tpot) SLOs."""
    classes = {c.get("name"): c for c in raw["workload"]["classes"]}
    pools = {p.get("name") for p in raw["datacenter"]["pools"]}
    for i, c in enumerate(spec.constraints):
        if c.class_ is not None and c.class_ not in classes:
            raise ScenarioError(source, f"plan.constraints[{i}].class", f"unknown class {c.class_!r} (classes: {', '.join(classes)})")
    cap = spec.capacity
    if cap is not None:
        if cap.pool not in pools:
            raise ScenarioError(source, "plan.capacity.pool", f"unknown pool {cap.pool!r} (pools: {', '.join(sorted(pools))})")
        if cap.class_ not in classes:
            raise ScenarioError(source, "plan.capacity.class", f"unknown class {cap.class_!r} (classes: {', '.join(classes)})")
        if classes[cap.class_]["arrival"].get("rate_per_s") is None:
            raise ScenarioError(source, "plan.capacity.class", f"class {cap.class_!r} has no arrival rate_per_s (the "
                                "capacity stage sizes replicas for an open arrival rate)")
    return {n: ((c.get("slo") or {}).get("ttft_s"), (c.get("slo") or {}).get("tpot_s")) for n, c in classes.items()}


def load_plan(scenario: str | Path | dict, source: str | None = None) -> tuple[dict, PlanSpec, str]:
    """(raw scenario, its validated plan, source name); ScenarioError if either is bad."""
    from sim.config.scenario import load_raw, validate

    if isinstance(scenario, (str, Path)):
        source = source or str(scenario)
        raw = load_raw(scenario)
    else:
        raw, source = scenario, source or "<scenario>"
    spec = parse_plan(raw.get("plan"), source)
    validate({k: v for k, v in raw.items() if k != "sweep"}, source, Path(source).parent)
    return raw, spec, source


def run_plan(scenario: str | Path | dict, out: str, *, source: str | None = None, address: str | None = None,
             num_cpus: int | None = None, resume: bool = False, point_fn: Callable | None = None,
             capacity_fn: Callable | None = None, trials: int | None = None, progress: bool = False) -> PlanResult:
    """Search the plan of ``scenario`` (a file or a raw dict) and write its tables to ``out``.

    ``point_fn(scenario, out, point_id) -> summary row`` runs one point (default: a simulation,
    :func:`sim.plan.trial.plan_point`); ``capacity_fn`` replaces the capacity stage's estimate
    (tests); ``trials`` overrides ``plan.search.trials``."""
    t_start = time.perf_counter()
    raw, spec, source = load_plan(scenario, source)
    if trials is not None:
        spec = spec.model_copy(update={"search": spec.search.model_copy(update={"trials": trials})})
    slos = _check_refs(raw, spec, source)
    space = Space(raw, spec, source, str(Path(source).parent), capacity_fn=capacity_fn)
    classes = tuple(sorted({c.class_ for c in spec.constraints if c.class_}
                           | {a.metric.split(".")[0] for a in spec.frontier_axes if "." in a.metric}))
    point_fn = point_fn or partial(plan_point, classes=classes, slos={c: slos[c] for c in classes})
    out = storage.normalize_out(out)
    fs, base = storage.open_output(out)
    from sim.sweep import claim_out

    claim_out(fs, base, {"source": source, "scenario_sha256": _sha(raw), "kind": "plan"}, resume, out, "plan", PLAN_META)

    from sim.sweep import init_ray

    started = init_ray(address, num_cpus)
    try:
        import ray

        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        ctx = TrialContext(space, out, point_fn)
        trials_rows = _search(ctx, spec.search.concurrency or cpus, progress)
        rec = F.recommend(spec, trials_rows)
        sens_rows, sens_lines = _sensitivity(ctx, spec, trials_rows, rec) if rec and spec.sensitivity else ([], [])
    finally:
        if started:
            import ray

            ray.shutdown()
    return _write(ctx, fs, base, trials_rows, rec, sens_rows, sens_lines, time.perf_counter() - t_start)


# --------------------------------------------------------------------------- the search
def _search(ctx: TrialContext, concurrency: int, progress: bool) -> list[dict]:
    """Run the Tune experiment; one dict per candidate touched, in search order."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import warnings

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from sim.plan.search import make_searcher

    spec, space = ctx.spec, ctx.space
    order: list[tuple] = []
    screened: dict[tuple, tuple[str, str]] = {}

    def screen(index):
        order.append(index)
        return space.screen(space.candidate(index))

    def on_screened(index, stage, reason):
        screened[index] = (stage, reason)

    limiter, searcher = make_searcher(space, screen, on_screened, concurrency)
    rule = spec.search.early_stop.rule
    scheduler = (ASHAScheduler(metric="score", mode="min", time_attr="stage", max_t=2, grace_period=1,
                               reduction_factor=2) if rule == "asha" else FIFOScheduler())
    last: dict[tuple, dict] = {}
    storage_dir = tempfile.mkdtemp(prefix="dcsim-plan-")
    try:
        with warnings.catch_warnings(), _progress_bar(progress) as bar:
            warnings.simplefilter("ignore")
            task = bar.add_task("trials", total=spec.search.trials)
            tuner = tune.Tuner(
                tune.with_resources(tune.with_parameters(trainable, ctx=ctx), {"cpu": 1}),
                tune_config=tune.TuneConfig(search_alg=limiter, scheduler=scheduler, num_samples=spec.search.trials,
                                            reuse_actors=True),
                run_config=tune.RunConfig(name="plan", storage_path=storage_dir, verbose=0, log_to_file=False,
                                          callbacks=[_LastResult(last, lambda: bar.advance(task))]),
            )
            tuner.fit()
    finally:
        shutil.rmtree(storage_dir, ignore_errors=True)
    return [_trial_row(ctx, index, screened.get(index), last.get(index)) for index in dict.fromkeys(order)]


def _callback_base():
    from ray.tune import Callback

    return Callback


def _progress_bar(enabled: bool):
    """A bar of simulated trials on stderr (Tune's own status tables stay off)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]plan[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled)


class _LastResult(_callback_base()):
    """Keeps each trial's last reported result (and error), keyed by its candidate index, and
    calls ``on_done`` as each trial ends."""

    def __init__(self, last: dict, on_done: Callable[[], None] = lambda: None):
        self.last = last
        self.on_done = on_done

    def __getstate__(self):  # Tune pickles its callbacks with the experiment; a bar does not pickle
        return {"last": self.last}

    def __setstate__(self, state):
        self.__init__(state["last"])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.last[tuple(trial.config["index"])] = dict(result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.on_done()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.last.setdefault(tuple(trial.config["index"]), {})["error"] = str(trial.error_file or "the trial failed")
        self.on_done()


def _trial_row(ctx: TrialContext, index: tuple, screened, result: dict | None) -> dict:
    """A trial's row from the runs its markers hold (its longest run's summary)."""
    from sim.plan.trial import SHORT_DIR, shortened

    cand = ctx.space.candidate(index)
    row = {"index": list(index), "params": cand.params, "point_id": cand.point_id, "row": {}, "simulations": 0,
           "new_runs": int((result or {}).get("new_runs", 0))}
    if screened is not None:
        return {**row, "stage": screened[0], "reason": screened[1]}
    fs, base = storage.open_output(ctx.out)
    sfs, sbase = storage.open_output(storage.join(ctx.out, SHORT_DIR))
    rule = ctx.spec.search.early_stop
    short_id = point_id_of(shortened(cand.raw, rule.horizon)) if rule.rule != "none" else None
    if storage.is_committed(fs, base, cand.point_id):
        row["simulations"] = 1 + (short_id is not None)
        return {**row, "stage": "full", "reason": "", "row": storage.read_commit(fs, base, cand.point_id)["summary"]}
    if short_id and storage.is_committed(sfs, sbase, short_id):
        why = (result or {}).get("stopped") or "stopped by the scheduler on the short horizon"
        return {**row, "stage": "stopped", "reason": why, "simulations": 1,
                "row": storage.read_commit(sfs, sbase, short_id)["summary"]}
    why = (result or {}).get("error") or "the run failed (see _failures/)"
    return {**row, "stage": "failed", "reason": why, "simulations": 1}


# --------------------------------------------------------------------------- sensitivity
def _sensitivity(ctx: TrialContext, spec: PlanSpec, trials: list[dict], rec: dict):
    """Re-run the best ``top`` feasible candidates at each load factor (Ray tasks, committed)."""
    import ray

    from sim.sweep import execute_point

    axes = [spec.objective, *spec.frontier_axes]
    ok = sorted(F.feasible(spec, trials), key=lambda t: tuple(F._key(t["row"], a) for a in axes))[: spec.sensitivity.top]
    if rec not in ok:
        ok = [rec, *ok[:-1]]
    task = ray.remote(execute_point).options(num_cpus=1, name="dcsim-plan-load")
    fs, base = storage.open_output(ctx.out)
    jobs = []
    for f in spec.sensitivity.loads:
        for t in ok:
            raw = scale_load(ctx.space.candidate(tuple(t["index"])).raw, f)
            pid = point_id_of(raw)
            ref = (storage.read_commit(fs, base, pid) if storage.is_committed(fs, base, pid)
                   else task.remote(ctx.point_fn, ctx.space.scenario(raw), ctx.out, pid))
            jobs.append((f, t, raw, pid, ref))
    rows = []
    for f, t, raw, pid, ref in jobs:
        record = ref if isinstance(ref, dict) else ray.get(ref)
        rows.append({"load": f, "trial": t, "raw": raw, "point_id": pid, "record": record, "new": not isinstance(ref, dict)})
    at = {f: [r["record"].get("summary") or {} for r in rows if r["load"] == f] for f in spec.sensitivity.loads}
    return rows, F.sensitivity_line(spec, rec, ok, at)


# --------------------------------------------------------------------------- tables
def _write(ctx, fs, base, trials, rec, sens_rows, sens_lines, wall) -> PlanResult:
    from sim.sweep import points_table, summary_table

    spec, space = ctx.spec, ctx.space
    points, records = [], []
    for t in trials:
        if t["stage"] == "full":
            cand = space.candidate(tuple(t["index"]))
            points.append(Point(cand.point_id, {**cand.params, "load_scale": 1.0, "run": cand.raw.get("run", 0)},
                                cand.raw, len(points)))
            records.append(storage.read_commit(fs, base, cand.point_id))
    for s in sens_rows:
        params = {**s["trial"]["params"], "load_scale": s["load"], "run": s["raw"].get("run", 0)}
        points.append(Point(s["point_id"], params, s["raw"], len(points)))
        records.append(s["record"])
    swept = [*space.paths, "load_scale"]
    storage.atomic_write_table(fs, storage.join(base, "points.parquet"), points_table(points, records, swept))
    storage.atomic_write_table(fs, storage.join(base, "summary.parquet"), summary_table(points, records))
    storage.atomic_write_table(fs, storage.join(base, "plan_trials.parquet"), F.trials_table(spec, space.paths, trials))
    fronts = F.frontiers(spec, trials)
    parts = []
    for name, (axes, rows) in fronts.items():
        tab = F.trials_table(spec, space.paths, rows)
        parts.append(tab.append_column("frontier", pa.array([name] * len(rows), pa.string())).select(
            ["frontier", *tab.column_names]))
    if parts:
        storage.atomic_write_table(fs, storage.join(base, "frontier.parquet"), pa.concat_tables(parts, promote_options="default"))
    sims = sum(t.get("simulations", 0) for t in trials) + len(sens_rows)
    counts = {"candidates": spec.size(), "touched": len(trials),
              **{s: sum(1 for t in trials if t["stage"] == s) for s in ("infeasible", "capacity", "stopped", "full", "failed")},
              "simulations": sims, "sensitivity_runs": len(sens_rows)}
    ran = sum(t.get("new_runs", 0) for t in trials) + sum(1 for s in sens_rows if s["new"])
    summary = None
    if rec is not None:
        chk = metrics.check(spec, rec["row"])
        summary = {"params": rec["params"], "point_id": rec["point_id"], "objective": spec.objective.metric,
                   "value": metrics.metric_value(rec["row"], spec.objective.metric), "margins": chk["margins"]}
    doc = {"recommendation": summary, "sensitivity": sens_lines, "counts": counts}
    storage.write_text_atomic(fs, storage.join(base, "recommendation.json"), json.dumps(doc, indent=1, default=str))
    return PlanResult(ctx.out, spec, space.paths, trials, rec, fronts, sens_lines, sims, ran, wall, counts)
