"""Check a validated scenario fully without simulating it.

``dcsim validate``, ``dcsim run`` and every point of ``dcsim sweep`` go through
:func:`check_scenario` before anything runs or is written, so all three refuse the same
inputs with the same one-line error (exit 2): the schema has already passed (``sim.config``);
this adds what only the catalog and the input files can tell:

* seed and run within the range of the random streams and the int64 table columns;
* every pool resolved against the catalog (model, accelerator, tp / pp divisibility, memory
  fit, KV pool size, power known), prices (``datacenter.economics``), routers, disaggregation
  links, autoscalers, faults, job and session classes: the world is wired exactly as a run
  wires it (no SimPy process is started, no table written);
* every file the scenario names (arrival traces, rate schedules, empirical length and share
  CSVs, performance profiles) opened and parsed as the run will parse it.

Cost: wiring a world takes milliseconds; input files are parsed once per distinct
(file, parameters) when a :class:`CheckCache` is shared across the points of a sweep.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sim import rng
from sim import config as C
from sim.errors import ScenarioError
from sim.cluster.pools import pool_accelerator
from sim.cluster.world import World
from sim.workloads.arrivals import LengthSampler, RateSchedule, load_trace_with_hashes

__all__ = ["check_scenario", "CheckCache", "require_known_power", "MAX_SEED"]

MAX_SEED = 2**63 - 1  # seeds and runs are stored in int64 columns


class CheckCache:
    """Input files already parsed with given parameters, shared by the points of a sweep."""

    def __init__(self):
        self._seen: set = set()

    def once(self, kind: str, base_dir: Path, path: str | None, params, load) -> None:
        """Call ``load()`` unless the same file (same size and mtime) was loaded with ``params``."""
        target = Path(path) if path is not None and Path(path).is_absolute() else Path(base_dir) / (path or "")
        try:
            st = os.stat(target)
            stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        except OSError:
            stamp = None  # missing: load() raises the one-line error
        key = (kind, str(target), stamp, json.dumps(params, sort_keys=True, default=str))
        if path is None or stamp is None or key not in self._seen:
            load()
            if path is not None and stamp is not None:
                self._seen.add(key)


def require_known_power(scenario: C.Scenario, source: str) -> None:
    """ScenarioError naming the first pool whose accelerator card has no ``tdp_w`` (no public
    figure: TPU v5e/v5p, Trainium2, Inferentia2): its power, energy and energy cost would
    otherwise come out NaN in every summary. ``dcsim estimate`` still prices such cards' speed."""
    for pool in scenario.datacenter.pools:
        key = f"datacenter.pools.{pool.name}.accelerator"
        acc = pool_accelerator(pool, source)
        if acc.tdp_w != acc.tdp_w:  # NaN: the card leaves tdp_w out
            raise ScenarioError(source, key, f"{acc.name} has no tdp_w (hardware/accelerators/{acc.name}.yaml: no "
                                             "public figure), so this run's power, energy and energy cost would be "
                                             f"unknown; give the pool power.tdp_w, add a cited tdp_w to the card or "
                                             "use another accelerator")


def _check_seed(scenario: C.Scenario, source: str) -> None:
    for key in ("seed", "run"):
        v = getattr(scenario, key)
        if not 0 <= v <= MAX_SEED:
            raise ScenarioError(source, key, f"{v} is out of range: use an integer from 0 to 2**63 - 1")


def _check_inputs(scenario: C.Scenario, cache: CheckCache) -> None:
    """Parse every file a workload class's calls are drawn from, as the run will at its start."""
    base = scenario.base_dir
    for cls in scenario.workload.classes:
        key = f"workload.classes.{cls.name}"
        stream = rng.stream(scenario.seed, scenario.run, f"check/{cls.name}")
        for field in ("prompt_tokens", "output_tokens"):
            dist = getattr(cls, field, None)
            if dist is not None:
                cache.once("length", base, getattr(dist, "path", None), dist.model_dump(mode="json"),
                           lambda d=dist, f=field: LengthSampler(d, stream, base, f"{key}.{f}"))
        a = cls.arrival
        if isinstance(a, C.TraceArrivals):
            cache.once("trace", base, a.path, a.model_dump(mode="json"),
                       lambda a=a: load_trace_with_hashes(a, base, f"{key}.arrival"))
        elif isinstance(a, C.ScheduleArrivals):
            cache.once("schedule", base, a.path, a.model_dump(mode="json"),
                       lambda a=a: RateSchedule.of(a, base, f"{key}.arrival"))


def check_scenario(scenario: C.Scenario, source: str, cache: CheckCache | None = None) -> list:
    """Raise :class:`ScenarioError` for anything a run of ``scenario`` would refuse; else return
    its resolved pools (``PoolSpec`` list, for ``dcsim validate`` to print)."""
    _check_seed(scenario, source)
    require_known_power(scenario, source)
    world = World(scenario, None, source)  # every check the run makes while wiring its world
    _check_inputs(scenario, cache or CheckCache())
    _check_kv_fits(scenario, world.specs, source)
    return world.specs


def _check_kv_fits(scenario: C.Scenario, specs: list, source: str) -> None:
    """A pool's ``engine.num_gpu_blocks`` override must fit beside the weights in the device's
    memory (the engine would otherwise cache more than the device holds). Only the command line
    checks it: a test may model an unbounded cache on purpose through the API."""
    for pool, sp in zip(scenario.datacenter.pools, specs):
        if pool.engine.num_gpu_blocks is None or sp.model is None:
            continue
        if sp.kv_gib + sp.weight_gib > sp.acc.memory_gib:
            raise ScenarioError(source, f"datacenter.pools.{pool.name}.engine.num_gpu_blocks",
                                f"{pool.engine.num_gpu_blocks} blocks need {sp.kv_gib:.1f} GiB per device beside "
                                f"{sp.weight_gib:.1f} GiB of weights, but {sp.acc.name} has {sp.acc.memory_gib:g} GiB")
