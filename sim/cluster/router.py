"""Routers: which replica of a pool serves a call. One small class per policy,
chosen by ``kind`` in the scenario (see :data:`ROUTERS`). A router is a class with
``pick(call) -> replica`` built as ``Router(replicas, rng, params)``; ``needs_kv`` says it reads
the replicas' KV caches (a diffusion pool has none). docs/extending.md adds one.

A router reads the list of replicas it was given on every pick; an autoscaler changes that
list in place (replicas switched on join it, replicas draining leave it), so no router keeps
a position or a random draw that assumes the list's length."""

from __future__ import annotations

import numpy as np


class RoundRobin:
    """Replicas in turn."""

    def __init__(self, replicas, rng: np.random.Generator, params):
        self.replicas = replicas
        self._next = 0

    def pick(self, call):
        n = len(self.replicas)
        r = self.replicas[self._next % n]
        self._next = (self._next % n + 1) % n
        return r


class Random:
    """A replica drawn uniformly at random (from the router's own stream)."""

    def __init__(self, replicas, rng: np.random.Generator, params):
        self.replicas = replicas
        self.rng = rng
        self._buf: list = []
        self._pos = 0
        self._n = 0

    def pick(self, call):
        n = len(self.replicas)
        if self._pos == len(self._buf) or self._n != n:
            self._buf, self._pos, self._n = self.rng.integers(0, n, size=4096).tolist(), 0, n
        r = self.replicas[self._buf[self._pos]]
        self._pos += 1
        return r


class ShortestQueue:
    """Join-shortest-queue: the fewest calls outstanding; ties go to the lowest index
    after the last pick, so equal replicas are filled in turn."""

    def __init__(self, replicas, rng: np.random.Generator, params):
        self.replicas = replicas
        self._start = 0

    def pick(self, call):
        # the first replica with the fewest calls outstanding at or after the start, wrapping
        # round: the loads read in one comprehension, the minimum found by min and list.index
        # (this scan is the per-call cost of a pool of many replicas)
        reps = self.replicas
        n = len(reps)
        loads = [r.outstanding for r in reps]
        low = min(loads)
        try:
            at = loads.index(low, self._start % n)
        except ValueError:  # none at or after the start: the first from the beginning
            at = loads.index(low)
        self._start = (at + 1) % n
        return reps[at]


class LeastKv:
    """The replica whose KV pool is least loaded (blocks in use plus blocks its waiting
    calls need, as a fraction of its pool)."""

    needs_kv = True

    def __init__(self, replicas, rng: np.random.Generator, params):
        self.replicas = replicas

    def pick(self, call):
        t = self.replicas[0].env.now  # now (a retried or transferred call arrived earlier)
        return min(self.replicas, key=lambda r: (r.kv_load(t), r.outstanding, r.index_in_pool))


class PowerOfTwo:
    """Power of two choices (Mitzenmacher 2001): two distinct replicas drawn at random, the
    one with fewer calls outstanding (ties: the first drawn). Nearly join-shortest-queue's
    balance for two probes per call instead of a scan of the pool."""

    def __init__(self, replicas, rng: np.random.Generator, params):
        self.replicas = replicas
        self.rng = rng
        self._buf: list = []
        self._pos = 0
        self._n = 0

    def pick(self, call):
        reps = self.replicas
        n = len(reps)
        if n == 1:
            return reps[0]
        if self._pos == len(self._buf) or self._n != n:
            a = self.rng.integers(0, n, size=4096)
            b = (a + self.rng.integers(1, n, size=4096)) % n  # a different replica
            self._buf, self._pos, self._n = np.stack([a, b], axis=1).tolist(), 0, n  # (Python ints: cheaper to read)
        i, j = self._buf[self._pos]
        self._pos += 1
        r, s = reps[i], reps[j]
        return s if s.outstanding < r.outstanding else r


class PrefixAffinity:
    """The replica whose prefix cache holds the longest leading part of the call's prompt
    (calls without a prefix, and ties, go to the least KV load), unless that replica's KV load
    is above ``max_load`` or it has more than ``balance_abs`` calls outstanding beyond the
    least-loaded one: then the least-loaded one (cache-aware routing with a load-balance
    guard, as in SGLang's router)."""

    needs_kv = True

    def __init__(self, replicas, rng: np.random.Generator, params):
        self.replicas = replicas
        self.max_load = params.max_load
        self.balance_abs = params.balance_abs

    def pick(self, call):
        t = self.replicas[0].env.now
        prefix = getattr(call, "prefix", None)
        load = {r.index: r.kv_load(t) for r in self.replicas}
        least = min(self.replicas, key=lambda r: (load[r.index], r.outstanding, r.index_in_pool))
        if prefix is None:
            return least
        best, best_hit = least, 0
        for r in self.replicas:
            hit = r.kv.cached_prefix(prefix)
            if hit > best_hit or (hit == best_hit and hit and load[r.index] < load[best.index]):
                best, best_hit = r, hit
        if not best_hit or load[best.index] > self.max_load or best.outstanding > least.outstanding + self.balance_abs:
            return least
        return best


class LeastWork:
    """Shortest expected work: the replica with the fewest tokens still to run for the calls it
    holds, each call's prompt tokens not yet in its KV cache plus the output tokens it is
    expected to have left (``expected_output_tokens`` less those generated, at least one: a
    router knows prompts, not how long answers will be). Counted as of each replica's last
    committed iteration; ties go to the fewest calls, then the lowest index. Unlike
    join-shortest-queue it sends a long prompt away from a replica already prefilling one."""

    def __init__(self, replicas, rng: np.random.Generator, params):
        self.replicas = replicas
        self.expected = params.expected_output_tokens

    def work(self, r) -> int:
        """Tokens replica ``r`` is expected to run for its calls."""
        e = self.expected
        w = 0
        sync = getattr(r, "sync_calls", None)  # running calls' decode progress is kept in aggregate
        if sync is not None:
            sync()
        for calls in (r.running, r.waiting):
            for c in calls:
                w += c.prompt_tokens - min(c.computed, c.prompt_tokens) + max(1, e - c.generated)
        return w

    def pick(self, call):
        return min(self.replicas, key=lambda r: (self.work(r), r.outstanding, r.index_in_pool))


ROUTERS = {"round_robin": RoundRobin, "random": Random, "jsq": ShortestQueue, "least_kv": LeastKv,
           "p2c": PowerOfTwo, "prefix_affinity": PrefixAffinity, "least_work": LeastWork}
