"""Commits on the decode clock: what a run of an all-decoding batch changes, applied in aggregate.

A decode run (or the decoding part of an admission iteration) decided and planned from the
:class:`~sim.engine.dclock.DecodeClock`'s aggregates is committed by moving the clock, logging
the run's energy and device-time shares once, taking the blocks the batch's offsets say it
needs, and touching only the calls that finish (brought up to date, then released in running
order, as the call-by-call commit releases them). Part of the replica's core.
"""

from __future__ import annotations

from typing import Optional

from sim.engine.call import Call
from sim.engine.dclock import DecodeClock, settled
from sim.engine.kvcache import KvPool
from sim.engine.scheduler import Decision


class ClockCommits:
    """The commits of :class:`~sim.engine.core.ReplicaCore` made on its decode clock ``dc``.

    The state and the call-by-call steps they use are the core's, declared here with their
    types so that the engine can be compiled (a compiled class knows its attributes)."""

    running: list[Call]
    dc: DecodeClock
    kv: KvPool
    block_size: int
    output_tokens: int

    def _admit(self, d: Decision, start: float, running: list[Call]) -> dict[int, int]:
        raise NotImplementedError

    def _join(self, c: Call, hit: int) -> None:
        raise NotImplementedError

    def _release(self, c: Call, final: bool) -> None:
        raise NotImplementedError

    def _end_call(self, c: Call, status: str, t: float) -> None:
        raise NotImplementedError

    def _commit_decode_lazy(self, m: int, end: float, cost: tuple[float, float], alloc: Optional[int]) -> None:
        """:meth:`_commit_decode` on the decode clock: the calls gain their tokens and shares in
        aggregate; only those finishing are touched. ``alloc``: the blocks they take (None: count them)."""
        running = self.running
        n = len(running)
        dc = self.dc
        if alloc is None:
            alloc = dc.need(m)
        done = dc.advance(m, n, cost[0] / n, cost[1] / n, running)
        if alloc:
            self.kv.take(alloc)
        self.output_tokens += n * m
        if done:
            self.running = still = running.copy()
            for c in done:
                still.remove(c)  # (by identity: calls have no __eq__)
            for c in done:
                self._release(c, final=True)
                self._end_call(c, c.done_status, end)

    def _commit_single_lazy(self, d: Decision, start: float, end: float, cost: tuple[float, float]) -> None:
        """:meth:`_commit_single` for a decision made in aggregate: every running call decodes one
        token (on the decode clock), then the admitted calls run their tokens one by one."""
        dc, kv, bs = self.dc, self.kv, self.block_size
        n = d.ones
        running = self.running
        joining = self._admit(d, start, [])
        total = n + sum([k for _, k in d.admit])
        share_j, share_s = cost[0] / total, cost[1] / total
        alloc = dc.need(1)
        done = dc.advance(1, n, share_j, share_s, running)
        if alloc:
            kv.take(alloc)
        still = running.copy()
        for c in done:
            still.remove(c)
        out = n
        for c, k in d.admit:  # as in _commit_single's loop (no speculation here)
            dc.join(c)
            c.energy_j += share_j * k
            c.device_s += share_s * k
            if joining and id(c) in joining:
                self._join(c, joining[id(c)])
            generated, computed = c.generated, c.computed
            sample = k == c.prompt_tokens + generated - computed
            computed = c.computed = computed + k
            blocks = -(-computed // bs)
            if blocks != c.blocks:
                kv.take(blocks - c.blocks)
                c.blocks = blocks
            if c.prefix is not None:
                c.shared += kv.register(c.prefix, c.shared, computed // bs)
            if sample:
                generated = c.generated = generated + 1
                out += 1
                if generated == 1:
                    c.first_token_s = end
                if generated >= c.output_tokens:
                    done.append(c)
                    continue
            still.append(c)
            if sample and dc.ok and settled(c, bs):
                dc.add(c)  # decoding from now on
            else:
                dc.ok = False
        self.output_tokens += out
        self.running = still
        for c in done:
            self._release(c, final=True)
            self._end_call(c, c.done_status, end)
