"""A sharded run: N shard worlds advanced window by window, their tables merged at the end.

:func:`run_sharded` cuts the scenario (sim/shard/split.py), starts one :class:`ShardRunner` per
shard (in this process, or each a Ray actor) and advances them in conservative windows: every
shard simulates up to ``t + window_s``, reports its load (calls outstanding and replicas
serving, per pool), and the next window starts only when every report is in; each shard then
routes the window's arrivals on those reports (sim/shard/world.py). A shard never runs ahead of
another by more than one window, and what it computes depends only on the reports, so the
result is the same whichever shard finishes a window first and wherever each runs.

Tables: each shard writes its own, the same layout, into a hidden folder inside the point's
folder; once every shard has finished they are merged in shard order into the run's tables
(sim/shard/merge.py), the summary is computed from those as for any run (sim/run.py), and the
hidden folder is removed. A shard that fails (its worker killed, an error) stops the run with
:class:`ShardFailed`; nothing is merged, so no table of the run appears.
"""

from __future__ import annotations

import math
import time
import uuid

from sim.cluster.world import World
from sim.errors import ScenarioError
from sim.output import storage
from sim.output.trace import Recorder
from sim.run import SCHEMAS, few_collections, require_known_power, scenario_point_id, table_paths, write_point
from sim.shard.merge import merge_tables
from sim.shard.split import global_replicas, plan_groups, shard_scenario, shares
from sim.shard.world import ShardRouter, ShardWorld

MAX_WINDOWS = 10**8  # windows one run may take (a day at 1 ms)


class ShardFailed(RuntimeError):
    """A shard of a sharded run failed (its worker died or it raised): the run has no output."""


class ShardRunner:
    """One shard: its world, writing its tables under ``tmp`` (a folder of its own)."""

    def __init__(self, scenario, groups: list, k: int, tmp: str, point_id: str, source: str):
        members = {p.name: [j for j, gs in enumerate(groups) if any(g.pool == p.name for g in gs)]
                   for p in scenario.datacenter.pools}
        sc = shard_scenario(scenario, groups, k, source)
        fs, base = storage.open_output(tmp)
        opts = sc.trace
        self.paths = table_paths(base, point_id, sc)
        self.recorder = Recorder({t: (fs, p) for t, p in self.paths.items()}, opts.row_group_rows, opts.compression,
                                 SCHEMAS)
        self.horizon = scenario.duration_s + scenario.drain_s
        try:
            router = ShardRouter({p: m for p, m in members.items() if k in m})
            self.world = ShardWorld(sc, self.recorder, source, k, router, scenario.seed,
                                    {p.name: p for p in scenario.datacenter.pools},
                                    {p.name: shares(groups, p.name) for p in scenario.datacenter.pools})
            self.world.start()
        except BaseException:
            self.recorder.abort()
            raise

    def advance(self, until: float, reports: list[dict] | None) -> tuple:
        """Take the last reports, simulate to ``until``; return this shard's report, whether its
        work is done, its end time so far, and the wall and CPU seconds it took."""
        t0, c0 = time.perf_counter(), time.process_time()
        w = self.world
        if reports is not None:
            w.router.report(reports)
        w.advance(until)
        return w.report(), w.done, w.end_time(self.horizon), time.perf_counter() - t0, time.process_time() - c0

    def finish(self, t_end: float) -> dict:
        """Close the replicas at ``t_end`` and the tables; return the shard's counters."""
        w = self.world
        w.finish(t_end)
        self.recorder.close()
        return {"calls": w.calls_created, "units": {k.key: k.created for k in w.kinds},
                "rows": {t: s.rows for t, s in self.recorder.sinks.items()},
                "iterations": sum(getattr(r, "iterations", 0) for r in w.replicas),
                "runs": sum(getattr(r, "runs", 0) for r in w.replicas)}

    def abort(self) -> None:
        self.recorder.abort()

    def pid(self) -> int:
        import os

        return os.getpid()


class _Local:
    """Shards in this process, called one after the other."""

    def __init__(self, runners: list[ShardRunner]):
        self.runners = runners

    def call(self, method: str, args: list[tuple]) -> list:
        out = []
        for k, (r, a) in enumerate(zip(self.runners, args)):
            try:
                out.append(getattr(r, method)(*a))
            except ScenarioError:
                raise
            except Exception as exc:  # noqa: BLE001 - a shard's failure is the run's, named as on Ray
                text = str(exc).strip().splitlines()
                raise ShardFailed(f"shard {k} of {len(args)} failed: {type(exc).__name__}"
                                  f"{': ' + text[0][:300] if text else ''}") from exc
        return out

    def close(self) -> None:
        pass


class _OnRay:
    """Shards as Ray actors (one CPU each), called together; a dead actor is a failed shard."""

    def __init__(self, ray, handles: list):
        self.ray, self.handles = ray, handles

    def call(self, method: str, args: list[tuple]) -> list:
        from ray.exceptions import RayError

        refs = [getattr(h, method).remote(*a) for h, a in zip(self.handles, args)]
        try:
            return self.ray.get(refs)  # one wait for all (cheaper than one per shard)
        except RayError:
            pass
        for k, ref in enumerate(refs):  # which shard failed, the first in shard order
            try:
                self.ray.get(ref)
            except RayError as exc:
                text = str(exc).strip().splitlines()
                raise ShardFailed(f"shard {k} of {len(refs)} failed: {type(exc).__name__}"
                                  f"{': ' + text[0][:300] if text else ''}") from None
        raise ShardFailed(f"a shard of {len(refs)} failed")

    def close(self) -> None:
        for h in self.handles:
            try:
                self.ray.kill(h)
            except Exception:  # noqa: BLE001 - already dead
                pass


class _RayShard(ShardRunner):
    """A shard in its own worker process: the collector tuned as sim.run does for a whole run."""

    def __init__(self, *a):
        import gc

        gc.set_threshold(50_000, 20, 100)
        super().__init__(*a)


def check_window(window_s, source: str = "") -> float:
    """The exchange window in simulated seconds: finite and positive."""
    if isinstance(window_s, bool) or not isinstance(window_s, (int, float)) or not math.isfinite(window_s) \
            or not 1e-6 <= window_s <= 1e6:
        raise ScenarioError(source, "--window-s", f"must be a number from 1e-06 to 1e+06 simulated seconds, "
                                                  f"got {window_s!r}")
    return float(window_s)


def run_sharded(scenario, out: str, point_id: str | None = None, *, shards: int, window_s: float = 0.1,
                executor: str = "serial", address: str | None = None, num_cpus: int | None = None,
                source: str = "<scenario>", observer=None) -> dict:
    """Simulate ``scenario`` in ``shards`` shards and write its tables under ``out`` as
    :func:`sim.run.run_point` does; return the summary row.

    ``executor``: ``serial`` (this process) or ``ray`` (an actor per shard, on the Ray at
    ``address``, else an embedded loopback-only one). ``observer(window, pids)``, if given, is
    called after each window with the shards' process ids (monitoring, fault drills)."""
    require_known_power(scenario, source)
    window_s = check_window(window_s, source)
    if executor not in ("serial", "ray"):
        raise ScenarioError(source, "--executor", f"unknown executor {executor!r} (ray or serial)")
    groups = plan_groups(scenario, shards, source)
    horizon = scenario.duration_s + scenario.drain_s
    if horizon / window_s > MAX_WINDOWS:
        raise ScenarioError(source, "--window-s", f"{window_s:g} s makes more than {MAX_WINDOWS} windows of a "
                                                  f"{horizon:g} s run")
    wall0 = time.perf_counter()
    point_id = point_id or scenario_point_id(scenario)
    fs, base = storage.open_output(out)
    tmp_dir = storage.join(base, point_id, f".shards.tmp-{uuid.uuid4().hex}")
    tmp = tmp_dir if "://" not in out else out.rstrip("/") + tmp_dir[len(base):]
    args = [(scenario, groups, k, storage.join(tmp, f"shard-{k}"), point_id, source) for k in range(shards)]
    ray_handle = pool = None
    try:
        if executor == "ray":
            from sim.sweep import init_ray

            ray_handle = init_ray(address, num_cpus)
            import ray

            # one CPU a shard where the cluster has them, else a share (more shards than CPUs
            # still run, taking turns); spread over the nodes
            cpus = max(1.0, float(ray.cluster_resources().get("CPU", 1)))
            actor = ray.remote(_RayShard).options(num_cpus=min(1.0, cpus / shards), max_restarts=0,
                                                  scheduling_strategy="SPREAD")
            pool = _OnRay(ray, [actor.remote(*a) for a in args])
        else:
            pool = _Local([ShardRunner(*a) for a in args])
        with few_collections():
            t_end, windows, stats = _advance_all(pool, shards, window_s, horizon, scenario.duration_s, observer)
            counters = pool.call("finish", [(t_end,)] * shards)
        sim_wall = time.perf_counter() - wall0
        paths = [table_paths(storage.join(tmp_dir, f"shard-{k}"), point_id, scenario) for k in range(shards)]
        rows = merge_tables(fs, paths, table_paths(base, point_id, scenario), [global_replicas(scenario, g) for g in groups],
                            scenario.trace)
    except BaseException:
        if pool is not None and isinstance(pool, _Local):
            for r in pool.runners:
                r.abort()
        raise
    finally:
        if pool is not None:
            pool.close()
        if ray_handle is not None:
            ray_handle.stop()
        storage._delete_quietly(fs, tmp_dir)
    whole = World(scenario, None, source)  # the unsplit fleet: pools, rates, workload kinds for the summary
    whole.calls_created = sum(c["calls"] for c in counters)
    for kind in whole.kinds:
        kind.created = sum(c["units"].get(kind.key, 0) for c in counters)
    engine = {"mode": scenario.engine_mode, "calls": whole.calls_created, "jobs": whole.units_created("job"),
              "iterations": sum(c["iterations"] for c in counters), "runs": sum(c["runs"] for c in counters)}
    extra = {"shards": {"count": shards, "window_s": window_s, "executor": executor, "windows": windows, **stats,
                        "groups": [[[g.pool, g.start, g.count] for g in gs] for gs in groups]}}
    return write_point(scenario, fs, base, point_id, whole, t_end, rows, engine, wall0, sim_wall, extra)


def _advance_all(pool, n: int, window_s: float, horizon: float, duration_s: float, observer):
    """Advance every shard window by window until all are done (or the horizon); return the end
    time, the windows taken and timing counters: wall and CPU seconds of the busiest shard per
    window (summed), CPU seconds of all shards, and the wall seconds beyond the busiest shard's
    (the exchange: calls, transfers, waiting)."""
    windows, busiest, busiest_cpu, cpu, exchange = 0, 0.0, 0.0, 0.0, 0.0
    pids = pool.call("pid", [()] * n) if observer is not None else None
    reports = [g[0] for g in pool.call("advance", [(0.0, None)] * n)]  # each shard's start: who serves
    while True:
        until = min(horizon, (windows + 1) * window_s)
        t0 = time.perf_counter()
        got = pool.call("advance", [(until, reports)] * n)
        wall = time.perf_counter() - t0
        windows += 1
        compute = [g[3] for g in got]
        busiest += max(compute)
        busiest_cpu += max(g[4] for g in got)
        cpu += sum(g[4] for g in got)
        exchange += max(0.0, wall - (max(compute) if isinstance(pool, _OnRay) else sum(compute)))
        reports = [g[0] for g in got]
        if observer is not None:
            observer(windows, pids)
        if all(g[1] for g in got) or until >= horizon:
            break
    t_end = max(duration_s, max(g[2] for g in got))
    return t_end, windows, {"busiest_shard_s": busiest, "busiest_shard_cpu_s": busiest_cpu, "shards_cpu_s": cpu,
                            "exchange_s": exchange}
