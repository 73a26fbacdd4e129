"""One shard's SimPy world and the cross-shard router that decides which shard serves a call.

Arrivals: every shard holding part of a pool generates the pool's whole arrival stream (the
scenario's own arrival seed, so each sees the same calls as the unsplit run, at the same times,
with the same sizes) and keeps the calls the :class:`ShardRouter` gives it; the rest are never
created. All shards run the same router on the same inputs (the load reports of the last
window boundary and the calls given out since), so they agree on every decision without
talking within a window. This is the "one arrival generator routing in batches per window"
design, with the generator replicated instead of shipped: its cost is paid once per shard,
and no call crosses the network (docs/sharding.md measures both the error and that cost).

The router is a global join-shortest-queue on a stale snapshot (:class:`ShardRouter`); within
the shard, the pool's own router picks the replica.
"""

from __future__ import annotations

import heapq
import math

from sim.cluster.world import World
from sim.shard.split import apportion


class ShardRouter:
    """Which shard gets each call of each pool, from load snapshots at window boundaries.

    Global join-shortest-queue on the snapshot: every shard reports the calls outstanding at each
    of its serving replicas; the router keeps them as one heap per shard and sends a call to the
    shard holding the least-loaded replica, counting the call on that replica. Ties go to the
    first shard after the last one picked: equal shards take calls in turn, so none receives the
    window's arrivals in bursts (lowest-shard-first ties would hand each shard a run of
    consecutive arrivals, and bursts queue). With fresh snapshots this is join-shortest-queue over the whole pool; between them it
    misses only the calls that ended since (and replicas that failed since)."""

    def __init__(self, members: dict[str, list[int]]):
        self.members = members  # pool -> the shards holding part of it (ascending)
        self.heaps: dict = {p: {k: [0] for k in ks} for p, ks in members.items()}
        self.reported: dict = {p: {k: 0 for k in ks} for p, ks in members.items()}  # calls outstanding, as reported
        self._start = {p: 0 for p in members}  # ties go to the first shard after the last pick

    def report(self, reports: list[dict]) -> None:
        """Take every shard's report (``{pool: sorted loads of its serving replicas}``)."""
        for pool, ks in self.members.items():
            for k in ks:
                self.heaps[pool][k] = list(reports[k][pool])  # sorted: already a heap
                self.reported[pool][k] = sum(reports[k][pool])

    def pick(self, pool: str) -> int:
        """The shard that serves the next call of ``pool``."""
        ks = self.members[pool]
        if len(ks) == 1:
            return ks[0]
        heaps = self.heaps[pool]
        n = len(ks)
        start = self._start[pool]
        best, best_load, at = None, None, 0
        for j in range(n):
            i = (start + j) % n
            h = heaps[ks[i]]
            if h and (best is None or h[0] < best_load):
                best, best_load, at = ks[i], h[0], i
        if best is None:  # no replica serving anywhere (all down): in turn, to fail where they land
            self._start[pool] = (start + 1) % n
            return ks[start]
        self._start[pool] = (at + 1) % n
        heapq.heapreplace(heaps[best], best_load + 1)
        return best


class ShardWorld(World):
    """The world of one shard: its groups of replicas, and only the calls routed to it.

    ``arrival_seed``: the unsplit scenario's seed (the arrival streams every shard shares)."""

    def __init__(self, scenario, recorder, source: str, shard: int, router: ShardRouter, arrival_seed: int,
                 whole_pools: dict | None = None, shares: dict | None = None):
        super().__init__(scenario, recorder, source)
        for name, scaler in self.autoscalers.items():  # a plan of the whole pool: its target, apportioned
            if scaler.cfg.policy in ("schedule", "rate", "queue") and whole_pools is not None:
                scaler.target = _apportioned(scaler, whole_pools[name], shares[name], shard, router)
        self.shard = shard
        self.router = router
        self.arrival_seed = arrival_seed
        self.done_at: float | None = None
        self._done.callbacks.append(self._mark_done)

    def _mark_done(self, _ev) -> None:
        self.done_at = self.env.now

    def make_call(self, cls, t: float, prompt: int, output: int, on_done=None, hashes: tuple | None = None):
        if self.router.pick(cls.pool) != self.shard:
            return None  # another shard's call
        return super().make_call(cls, t, prompt, output, on_done, hashes)

    def report(self) -> dict:
        """``{pool: sorted calls outstanding at each serving replica that is up}`` over this
        shard's part of each pool."""
        return {pool: tuple(sorted(r.outstanding for r in serving if r.down_since is None and not r.draining))
                for pool, serving in self._serving.items()}

    def advance(self, until: float) -> None:
        """Simulate up to ``until`` (or until this shard's work is done, whichever is first)."""
        if self._done.triggered or until <= self.env.now:
            return
        self.env.run(until=self.env.any_of([self._done, self.env.timeout(until - self.env.now)]))

    @property
    def done(self) -> bool:
        return self._done.triggered

    def end_time(self, horizon: float) -> float:
        """When this shard's run ended (its work done, else the horizon), as World.run counts it."""
        t = self.done_at if self.done_at is not None else horizon
        return max(t, max((r.clock for r in self.replicas), default=0.0))


def _apportioned(scaler, whole, share: list[int], k: int, router: ShardRouter):
    """The target of shard ``k``'s autoscaler: the whole pool's, apportioned over the shards by
    their replicas, so the shards together serve what the unsplit pool would. ``schedule`` and
    ``rate`` read the pool's classes (every shard has them whole); ``queue`` the calls
    outstanding in this shard now and in the others at their last report."""

    def target() -> int:
        if scaler.cfg.policy == "queue":
            load = sum(r.outstanding for r in scaler.serving) + sum(r.outstanding for r in scaler.draining)
            load += sum(v for j, v in router.reported.get(scaler.name, {}).items() if j != k)
            n = math.ceil(load / scaler.cfg.target_queue)
        else:
            n = scaler.demand()
        n = max(whole.autoscale.min_replicas, min(whole.replicas, n))
        return max(scaler.cfg.min_replicas, min(len(scaler.replicas), apportion(n, share)[k]))

    return target
