"""One shard's SimPy world and the cross-shard router that decides which shard serves a call.

Arrivals: every shard holding part of a pool generates the pool's whole arrival stream (the
scenario's own arrival seed, so each sees the same calls as the unsplit run, at the same times,
with the same sizes) and keeps the calls the :class:`ShardRouter` gives it; the rest are never
created. All shards run the same router on the same inputs (the load reports of the last
window boundary and the calls given out since), so they agree on every decision without
talking within a window. This is the "one arrival generator routing in batches per window"
design, with the generator replicated instead of shipped: its cost is paid once per shard,
and no call crosses the network (docs/sharding.md measures both the error and that cost).

The router is a global join-shortest-queue on stale load: a call goes to the shard whose
part of the pool has the fewest calls per serving replica, counting the calls outstanding at
the last report plus those given to it since (ties: the lowest shard). A shard whose part of
the pool has no serving replica is skipped while another has one.
"""

from __future__ import annotations

from sim.cluster.world import World


class ShardRouter:
    """Which shard gets each call of each pool, from load reports at window boundaries."""

    def __init__(self, members: dict[str, list[int]]):
        self.members = members  # pool -> the shards holding part of it (ascending)
        self.load: dict = {p: {k: 0 for k in ks} for p, ks in members.items()}
        self.cap: dict = {p: {k: 1 for k in ks} for p, ks in members.items()}
        self.sent: dict = {p: {k: 0 for k in ks} for p, ks in members.items()}

    def report(self, reports: list[dict]) -> None:
        """Take every shard's report (``{pool: (outstanding, serving)}``) and reset the counts."""
        for pool, ks in self.members.items():
            for k in ks:
                self.load[pool][k], self.cap[pool][k] = reports[k][pool]
                self.sent[pool][k] = 0

    def pick(self, pool: str) -> int:
        """The shard that serves the next call of ``pool``."""
        ks = self.members[pool]
        if len(ks) == 1:
            return ks[0]
        load, cap, sent = self.load[pool], self.cap[pool], self.sent[pool]
        best, best_score = None, None
        for k in ks:
            c = cap[k]
            score = (0, (load[k] + sent[k]) / c) if c > 0 else (1, load[k] + sent[k])
            if best is None or score < best_score:
                best, best_score = k, score
        sent[best] += 1
        return best


class ShardWorld(World):
    """The world of one shard: its groups of replicas, and only the calls routed to it.

    ``arrival_seed``: the unsplit scenario's seed (the arrival streams every shard shares)."""

    def __init__(self, scenario, recorder, source: str, shard: int, router: ShardRouter, arrival_seed: int):
        super().__init__(scenario, recorder, source)
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
        """``{pool: (calls outstanding, replicas serving)}`` over this shard's part of each pool."""
        out = {}
        for pool, serving in self._serving.items():
            up = [r for r in serving if r.down_since is None and not r.draining]
            out[pool] = (sum(r.outstanding for r in serving), len(up))
        return out

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
