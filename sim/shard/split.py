"""How a scenario is cut into shards: each pool's replicas in contiguous groups, one per shard.

A pool of ``R`` replicas gives each of the ``N`` shards ``R // N`` or ``R // N + 1`` of them (the
extra ones rotated by the pool's position, so small pools do not all land on shard 0); a shard
that holds no replica of a pool leaves that pool and its workload classes out. Per shard:

* its own seed, drawn from the stream ``shard/<N>/<k>`` of the scenario's ``(seed, run)``, so
  its routers, failures, stragglers and units (jobs, sessions) draw from streams that depend
  on the shard count and index only, never on which worker runs it. With one shard the seed is
  the scenario's own: a one-shard run is the unsplit run. The arrival streams keep the
  scenario's seed in every shard (each shard generates its pools' whole arrival stream and keeps
  the calls the cross-shard router gives it: sim/shard/world.py).
* the parts of the pool-wide settings that scale with the replicas: an autoscaler's
  ``min_replicas`` and ``initial_replicas`` apportioned over the groups (largest remainder, so
  the shards' counts add up to the pool's; a ``schedule`` or ``rate`` policy's target is the
  whole pool's, apportioned the same way, sim/shard/world.py); the fleet's ``power_budget_w``
  as each pool's per-device cap (the budget's share per device does not depend on how the
  fleet is cut).

Refused (one-line ScenarioError naming the key): disaggregated pools, pools sharing devices,
diffusion pools and closed-loop arrivals, whose calls cannot be split between independent
worlds; more shards than replicas.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim import rng
from sim.config import Scenario
from sim.errors import ScenarioError
from sim.cluster.pools import budget_cap_w, pool_accelerator

MAX_SHARDS = 4096


@dataclass(frozen=True)
class Group:
    """Replicas ``start .. start + count - 1`` of pool ``pool`` (positions in the pool)."""

    pool: str
    start: int
    count: int


def apportion(total: int, weights: list[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainder; ties to the lower index)."""
    s = float(sum(weights))
    if s <= 0:
        return [0] * len(weights)
    exact = [total * w / s for w in weights]
    out = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def plan_groups(scenario: Scenario, n: int, source: str) -> list[list[Group]]:
    """The groups of each of ``n`` shards, in pool order."""
    check_shardable(scenario, n, source)
    shards: list[list[Group]] = [[] for _ in range(n)]
    offset = 0
    for pool in scenario.datacenter.pools:
        r = pool.replicas
        base, extra = divmod(r, n)
        start = 0
        for k in range(n):
            count = base + (1 if (k - offset) % n < extra else 0)
            if count:
                shards[k].append(Group(pool.name, start, count))
            start += count
        offset = (offset + r) % n
    for k, groups in enumerate(shards):
        if not groups:
            raise ScenarioError(source, "--shards", f"{n} shards for {sum(p.replicas for p in scenario.datacenter.pools)} "
                                                   f"replicas: shard {k} would hold none")
    return shards


def check_shardable(scenario: Scenario, n: int, source: str) -> None:
    """Refuse what a sharded run cannot split (ScenarioError naming the key)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SHARDS:
        raise ScenarioError(source, "--shards", f"must be from 1 to {MAX_SHARDS}, got {n!r}")
    total = sum(p.replicas for p in scenario.datacenter.pools)
    if n > total:
        raise ScenarioError(source, "--shards", f"{n} shards for {total} replicas: at most one shard per replica")
    if n == 1:
        return
    for p in scenario.datacenter.pools:
        key = f"datacenter.pools.{p.name}"
        if p.kind == "diffusion":
            raise ScenarioError(source, f"{key}.kind", "a sharded run splits LLM pools only (diffusion pool)")
        if p.decode_pool is not None:
            raise ScenarioError(source, f"{key}.decode_pool", "a sharded run cannot split disaggregated pools "
                                                              "(a call's prefill and decode would be in different worlds)")
        if p.share_with is not None:
            raise ScenarioError(source, f"{key}.share_with", "a sharded run cannot split pools that share devices")
    for c in scenario.workload.classes:
        if c.arrival.kind == "closed":
            raise ScenarioError(source, f"workload.classes.{c.name}.arrival.kind",
                                "a sharded run cannot split closed-loop clients (each waits on its own calls)")
        if getattr(c, "training", None) is not None:
            raise ScenarioError(source, f"workload.classes.{c.name}.training",
                                "a sharded run cannot split a gang-scheduled training job (its devices span the shards)")


def shard_seed(scenario: Scenario, n: int, k: int) -> int:
    """The seed of shard ``k`` of ``n`` (the scenario's own with one shard)."""
    if n == 1:
        return scenario.seed
    return int(rng.stream(scenario.seed, scenario.run, f"shard/{n}/{k}").integers(0, 2**62))


def shares(shards: list[list[Group]], pool: str) -> list[int]:
    """Replicas of ``pool`` in each shard."""
    return [next((g.count for g in gs if g.pool == pool), 0) for gs in shards]


def _autoscale(a, count: int, total: int, share: list[int], k: int):
    """The autoscaler of one group: the pool's counts apportioned, capacity per group."""
    if a is None:
        return None
    weights = share
    upd: dict = {"min_replicas": min(count, max(1, apportion(a.min_replicas, weights)[k]))}
    if a.initial_replicas is not None:
        upd["initial_replicas"] = min(count, max(1, apportion(a.initial_replicas, weights)[k]))
    return a.model_copy(update=upd)


def shard_scenario(scenario: Scenario, shards: list[list[Group]], k: int, source: str) -> Scenario:
    """The scenario shard ``k`` simulates: its groups as pools, their classes, its seed."""
    n = len(shards)
    if n == 1:
        return scenario
    dc = scenario.datacenter
    mine = {g.pool: g for g in shards[k]}
    pools = []
    for p in dc.pools:
        g = mine.get(p.name)
        if g is None:
            continue
        share = shares(shards, p.name)
        upd: dict = {"replicas": g.count, "autoscale": _autoscale(p.autoscale, g.count, p.replicas, share, k)}
        if dc.power_budget_w is not None:  # the budget's share per device, as in the whole fleet
            cap = budget_cap_w(scenario, pool_accelerator(p, source), source)
            upd["power_cap_w"] = cap if p.power_cap_w is None else min(cap, p.power_cap_w)
        pools.append(p.model_copy(update=upd))
    classes = [c for c in scenario.workload.classes if c.pool in mine]
    return scenario.model_copy(update={
        "seed": shard_seed(scenario, n, k),
        "datacenter": dc.model_copy(update={"pools": pools, "power_budget_w": None}),
        "workload": scenario.workload.model_copy(update={"classes": classes}),
    })


def global_replicas(scenario: Scenario, groups: list[Group]) -> list[int]:
    """For each replica of a shard (its index there), its index in the unsplit world."""
    first, at = {}, 0
    for p in scenario.datacenter.pools:
        first[p.name] = at
        at += p.replicas
    return [first[g.pool] + g.start + j for g in groups for j in range(g.count)]
