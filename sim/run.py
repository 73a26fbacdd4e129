"""One simulation point: build the world, run it, write its tables, summarize.

:func:`run_point` is what a sweep task executes and what a single run from the command line calls.
It writes, under the output location ``out`` (local path or object-store URI)::

    <out>/calls/point_id=<id>/part-0.parquet
    <out>/steps/point_id=<id>/part-0.parquet
    <out>/events/point_id=<id>/part-0.parquet
    <out>/economics/point_id=<id>/part-0.parquet   with datacenter.economics: per class and tier
    <out>/<id>/scenario.yaml      the resolved input
    <out>/<id>/manifest.json      versions, timings, engine counters

and returns the summary row (a flat dict of scalars).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydantic
import simpy  # (its __version__ and pydantic's VERSION: no distribution look-up, ~10 ms)
import yaml

import sim
from sim import native
from sim.output import economics
from sim.output import storage
from sim.models import uncertainty
from sim.config import Scenario
from sim.output.summary import finished_token_metrics, latency_metrics, resource_metrics
from sim.config.sweep import point_id_of
from sim.output.trace import SCHEMAS as TRACE_SCHEMAS, Recorder
from sim.workloads import WORKLOAD_KINDS
from sim.cluster.check import require_known_power  # noqa: F401 - also sim.run's, as before
from sim.cluster.world import build

# the engine's tables, then one per workload kind (jobs, videos, sessions, ...)
TABLES = ("calls", "steps", "events") + tuple(k.table for k in WORKLOAD_KINDS.values())
SCHEMAS = {**{t: TRACE_SCHEMAS[t] for t in ("calls", "steps", "events")}, **{k.table: k.schema for k in WORKLOAD_KINDS.values()}}


def written_tables(scenario: Scenario) -> tuple:
    """The tables a run of ``scenario`` writes: the engine's, and each workload kind's unless
    the kind writes none where no class is of it (training)."""
    unused = {K.table for K in WORKLOAD_KINDS.values()
              if not K.written_when_unused and not any(K.claims(c) for c in scenario.workload.classes)}
    return tuple(t for t in TABLES if t not in unused)


def scenario_point_id(scenario: Scenario) -> str:
    """Stable id of a scenario from its resolved configuration."""
    return point_id_of(scenario.model_dump(mode="json", exclude={"sweep"}))


@contextlib.contextmanager
def few_collections():
    """Run the simulation with Python's cyclic garbage collector mostly out of the way: what
    exists before it (modules, cards, the world) is frozen out of the collector's scans, and
    young objects are collected after 200,000 allocations instead of 700 (a run allocates
    many short-lived containers; collections took ~9% of a run). The loop makes almost no
    reference cycles, so the young generation holds live objects, whose scans a larger
    threshold makes rarer (50,000 -> 200,000: 0.6 -> 0.3 s of collections in the 1,024
    configuration's first 300 s, the same peak RSS). Restored afterwards."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(200_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def run_point(scenario: Scenario, out: str, point_id: str | None = None, source: str = "<scenario>") -> dict:
    """Simulate ``scenario`` and write its tables under ``out``; return its summary row."""
    require_known_power(scenario, source)
    wall0 = time.perf_counter()
    point_id = point_id or scenario_point_id(scenario)
    fs, base = storage.open_output(out)
    paths = table_paths(base, point_id, scenario)
    opts = scenario.trace
    recorder = Recorder({t: (fs, p) for t, p in paths.items()}, opts.row_group_rows, opts.compression, SCHEMAS)
    try:
        world = build(scenario, recorder, source)
        with few_collections():
            t_end = world.run()
        recorder.close()
    except BaseException:
        recorder.abort()
        raise
    engine = {"mode": scenario.engine_mode, "calls": world.calls_created, "jobs": world.units_created("job"),
              "iterations": sum(getattr(r, "iterations", 0) for r in world.replicas),
              "runs": sum(getattr(r, "runs", 0) for r in world.replicas)}
    return write_point(scenario, fs, base, point_id, world, t_end, {t: recorder.sinks[t].rows for t in paths},
                       engine, wall0, time.perf_counter() - wall0)


def table_paths(base: str, point_id: str, scenario: Scenario) -> dict:
    """Where the tables a run of ``scenario`` writes go: ``<base>/<table>/point_id=<id>/part-0.parquet``."""
    return {t: storage.join(storage.partition_dir(base, t, point_id), "part-0.parquet") for t in written_tables(scenario)}


def write_point(scenario: Scenario, fs, base: str, point_id: str, world, t_end: float, rows: dict, engine: dict,
                wall0: float, sim_wall: float, extra: dict | None = None) -> dict:
    """Summarize the tables a point wrote (and write its economics table, scenario.yaml and
    manifest.json); return the summary row. ``world`` gives the pools, rates and workload kinds
    and the count of calls created (checked against the calls table); ``rows`` the rows of each
    table, ``engine`` the engine's counters, ``extra`` more manifest entries."""
    paths = table_paths(base, point_id, scenario)
    opts = scenario.trace
    t0, t1 = scenario.warmup_s, scenario.duration_s
    # the summary reads the tables a row group at a time: its memory does not grow with run length
    calls = pq.ParquetFile(paths["calls"], filesystem=fs)
    steps = pq.ParquetFile(paths["steps"], filesystem=fs)
    summary = {"point_id": point_id, "scenario": scenario.name, "seed": scenario.seed, "run": scenario.run,
               "engine_mode": scenario.engine_mode, "warmup_s": t0, "duration_s": t1, "sim_end_s": t_end}
    summary.update(latency_metrics(calls, t0, t1))
    summary.update(resource_metrics(steps, t0, t1, world.specs, world.tariff))
    summary.update(finished_token_metrics(summary, t0, t1))
    tables = _Tables(paths, fs)
    if world.rates.configured:  # datacenter.economics: capex / facility / energy, time-of-day tariff
        pools = economics.pool_costs(tables.table("steps"), t0, t1, world.specs, world.rates)
        summary.update(economics.fleet_metrics(pools, t0, t1, summary["output_tokens_per_s"] * (t1 - t0)))
    kinds = [k for k in world.kinds if k.wrote_rows()]
    for kind in kinds:  # reasoning jobs, videos, agent sessions: each adds its own columns
        summary.update(kind.summarize(tables, calls, t0, t1, summary))
    call_rows = summary["calls_created"] + summary.get("calls_prefilled", 0)  # prefill rows of disaggregated calls
    if call_rows != world.calls_created:
        raise RuntimeError(f"calls table has {call_rows} rows but {world.calls_created} calls were created")
    if world.rates.configured:  # revenue, cost and margin per class and effort tier: the economics table
        units = {k.table: tables.table(k.table) for k in kinds}
        econ = economics.class_table(scenario, world.rates, pools, tables.table("calls"), units.get("jobs"),
                                     units.get("sessions"), units.get("videos"), t0, t1)
        storage.atomic_write_table(fs, storage.join(storage.partition_dir(base, "economics", point_id),
                                                    "part-0.parquet"), econ)
        summary.update(economics.class_summary(econ))
    # new columns last: 80% prediction intervals of the headline figures, from the validation's held-out errors
    llm = [(s.acc.name, s.model.params_billion) for s in world.specs if getattr(s, "model", None) is not None]
    summary.update(uncertainty.flat(uncertainty.figure_intervals(summary, llm, summary["mean_batch_seqs"])))
    calls.close()
    steps.close()
    for table in paths:
        if not getattr(opts, table, True):  # trace: {jobs: false, ...} leaves a table out
            fs.delete_file(paths[table])
    wall = time.perf_counter() - wall0

    manifest = {
        "point_id": point_id,
        "scenario": scenario.name,
        "versions": {"dcsim": sim.__version__, "python": platform.python_version(), "numpy": np.__version__,
                     "pyarrow": pa.__version__, "simpy": simpy.__version__, "pydantic": pydantic.VERSION,
                     "engine": native.build()},
        "source": source_provenance(),
        "timings": {"simulate_s": sim_wall, "total_s": wall},
        "engine": engine,
        "pools": [{"name": s.name, "accelerator": s.acc.name, "model": s.model.name if s.model else s.perf.card.name, "tp": s.tp, "pp": s.pp, "replicas": s.replicas,
                   "kv_blocks": s.kv_blocks, "kv_gib": s.kv_gib, "weight_gib": s.weight_gib} for s in world.specs],
        "rows": rows,
        **(extra or {}),
    }
    storage.write_text_atomic(fs, storage.join(base, point_id, "scenario.yaml"),
                              yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False))
    storage.write_text_atomic(fs, storage.join(base, point_id, "manifest.json"), json.dumps(manifest, indent=2))
    return summary


class _Tables:
    """The tables a run wrote, read back for its summary: as a Parquet file (read a row group
    at a time) or whole."""

    def __init__(self, paths: dict, fs):
        self.paths, self.fs = paths, fs

    def file(self, name: str) -> pq.ParquetFile:
        return pq.ParquetFile(self.paths[name], filesystem=self.fs)

    def table(self, name: str):
        # one file: ParquetFile.read gives the table pq.read_table would, without importing
        # pyarrow.dataset (which imports pandas where it is installed: ~0.5 s a run)
        return self.file(name).read()


@functools.lru_cache(maxsize=1)
def source_provenance() -> dict:
    """Which dcsim made a run: the git commit (and whether tracked files differ from it) when
    ``sim`` is imported from a git checkout of the project, else the installed distribution's
    version. Never fails: where git is missing or slow the commit is None."""
    root = Path(sim.__file__).resolve().parents[1]
    if (root / ".git").exists() and (root / "pyproject.toml").is_file():  # a checkout, not a venv inside one
        def git(*args: str) -> str | None:
            try:
                done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
            except (OSError, subprocess.SubprocessError):
                return None
            return done.stdout.strip() if done.returncode == 0 else None

        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no") if commit else None
        return {"kind": "git checkout", "git_commit": commit, "git_dirty": None if status is None else bool(status)}
    return {"kind": "installed package", "distribution_version": _version("dcsim"), "git_commit": None}


def _version(mod: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(mod)
    except PackageNotFoundError:
        return "unknown"
