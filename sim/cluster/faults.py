"""Failures and stragglers: replicas that fail and are repaired, and replicas that run slow.

A :class:`FaultInjector` is a SimPy process per replica of a pool with ``faults:``: it
draws a time to failure (exponential, or Weibull with the same mean), fails the replica
(the iteration in flight and the KV cache are lost), hands its calls to the world to retry
elsewhere or fail, waits out an exponential repair time and puts the replica back. A
replica lent to a training job fails likewise: the job's gang stops and restarts from its last
checkpoint without it, and the replica is lent again once repaired. Every failure and repair
is an event in the events table. :class:`Slowed` wraps a replica's
performance model for stragglers.
"""

from __future__ import annotations

import math

import numpy as np

from sim.models.perf import IterationCost


class Slowed:
    """A performance model whose iterations take ``factor`` times longer (same work)."""

    def __init__(self, perf, factor: float):
        self.perf = perf
        self.factor = factor

    def cost(self, batch) -> IterationCost:
        return IterationCost(*self._slowed(self.perf.cost(batch)))

    def cost_one(self, *batch) -> tuple:
        """:meth:`cost` of one iteration in floats (the wrapped model's ``cost_one``, slowed alike)."""
        return self._slowed(self.perf.cost_one(*batch))

    def _slowed(self, c) -> tuple:
        """Every duration of a step (the whole, its compute, collective, stall and per-sequence
        parts) ``factor`` times longer, so each phase keeps its share of the step; work unchanged."""
        t, f, b, *parts = c
        return (t * self.factor, f, b, *(None if x is None else x * self.factor for x in parts))

    def __getattr__(self, name):  # everything else (weights, KV sizes) is the wrapped model's
        return getattr(self.perf, name)


def stragglers(replicas: list, spec, rng: np.random.Generator) -> list:
    """Slow down ``round(fraction x replicas)`` replicas drawn from ``rng``; returns them."""
    n = int(round(spec.fraction * len(replicas)))
    chosen = sorted(rng.choice(len(replicas), size=n, replace=False).tolist()) if n else []
    for i in chosen:
        replicas[i].perf = Slowed(replicas[i].perf, spec.slowdown)
    return [replicas[i] for i in chosen]


class FaultInjector:
    """Fails and repairs the replicas of one pool."""

    def __init__(self, world, pool: str, faults, rng: np.random.Generator):
        self.world, self.env, self.pool, self.faults, self.rng = world, world.env, pool, faults, rng
        f = faults
        # Weibull with shape k and the same mean: scale = mtbf / Gamma(1 + 1/k)
        self._scale = f.mtbf_s / math.gamma(1 + 1 / f.weibull_shape) if f.distribution == "weibull" else f.mtbf_s

    def _time_to_failure(self) -> float:
        if self.faults.distribution == "weibull":
            return float(self._scale * self.rng.weibull(self.faults.weibull_shape))
        return float(self.rng.exponential(self.faults.mtbf_s))

    def run(self, replica):
        """SimPy process: fail, repair, repeat."""
        env, rec = self.env, self.world.recorder
        while True:
            yield env.timeout(self._time_to_failure())
            if replica.down_since is not None:  # switched off or booting (autoscaling): nothing to lose,
                lender = self.world.lenders.get(self.pool)
                if lender is not None and lender.holds(replica):  # unless a training job runs on it
                    rec.event(env.now, "failure", self.pool, replica.index, -1, "training")
                    lender.fail(replica)
                    yield env.timeout(float(self.rng.exponential(self.faults.mttr_s)))
                    lender.repair(replica)
                    rec.event(env.now, "repair", self.pool, replica.index, -1, "training")
                continue
            calls = replica.fail()
            rec.event(env.now, "failure", self.pool, replica.index, -1, f"{len(calls)} calls on it")
            for c in calls:
                if self.faults.on_failure == "retry":
                    rec.event(env.now, "retried", self.pool, replica.index, c.call_id, "")
                    self.world.resubmit(c)
                else:
                    replica.end_failed(c)
            yield env.timeout(float(self.rng.exponential(self.faults.mttr_s)))
            replica.repair()
            rec.event(env.now, "repair", self.pool, replica.index, -1, "")
