"""The state of one replica's engine and how committed iterations change it.

:class:`ReplicaCore` holds the running calls, the waiting queue, the paged KV pool, the clock of
the last committed iteration boundary and the counters, and applies a committed run: calls gain
tokens, take and release KV blocks, are preempted, finish and are recorded, and the run's energy
is shared among the calls it served. It schedules nothing: the SimPy process that decides when
iterations end is :class:`~sim.engine.replica.Replica`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from typing import Callable, Optional

from sim.engine.call import Call
from sim.engine.dclock import DecodeClock
from sim.engine.lazy import ClockCommits
from sim.engine.kvcache import KvPool, Pin
from sim.engine.plan import Plan, energy_sum
from sim.engine.scheduler import BatcherParams, Decision


class ReplicaCore(ClockCommits):
    """Calls, KV pool and accounting of one model instance on ``tp`` devices."""

    def __init__(self, index: int, pool: str, tp: int, kv_blocks: int, block_size: int, batcher: BatcherParams,
                 recorder, max_context: int, on_end: Optional[Callable[[Call], None]], cuts: tuple[float, ...],
                 prefix_caching: bool, idle_w: float):
        self.index = index  # global replica number (trace column)
        self.index_in_pool = index
        self.pool = pool
        self.tp = tp
        self.total_blocks = kv_blocks
        self.kv = KvPool(kv_blocks, block_size, prefix_caching)
        self.block_size = block_size
        self.batcher = batcher
        self.recorder = recorder
        self.max_context = max_context
        self.on_end = on_end
        self.cuts = cuts
        self.spec_step = 0  # decode iterations committed (S): speculative gains follow it
        self.waiting: deque[Call] = deque()
        self.running: list[Call] = []
        self._cancels = 0  # cancelled calls not yet removed
        self.clock = 0.0  # exact time of the last committed boundary
        self.busy_s = 0.0
        self.energy_j = 0.0
        self.iterations = 0
        self.runs = 0
        self.plans = 0  # decisions made (committed, cut or dropped)
        self.output_tokens = 0
        self._idle_w = idle_w  # the whole replica's devices, idle
        self._lent_until: Optional[float] = None  # the devices run a diffusion batch until then
        self.dc = DecodeClock(block_size, False)  # running calls' decode progress, kept once (enabled by the engine)

    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.running)

    def sync_calls(self) -> None:
        """Bring every running call's tokens, blocks and energy up to date (see
        :class:`~sim.engine.dclock.DecodeClock`), for a reader outside the engine."""
        self.dc.sync_all(self.running)

    def _enqueue(self, call: Call, front: bool = False) -> None:
        """Queue a call: at the back (``front``: the front, for a preempted call); with priority
        scheduling, at the back or front of its priority among the waiting calls."""
        w = self.waiting
        if not self.batcher.priority:
            w.appendleft(call) if front else w.append(call)
            return
        p = call.priority
        if front:
            i = 0
            while i < len(w) and w[i].priority > p:
                i += 1
        else:
            i = len(w)
            while i > 0 and w[i - 1].priority < p:
                i -= 1
        w.insert(i, call)

    @staticmethod
    def end_unserved(call: Call, recorder, on_end, t: float, status: str = "failed") -> None:
        """A call no replica can take (its whole pool is down) fails at once (or ends as
        ``status`` on its way to one)."""
        call.status, call.finish_s = status, t
        recorder.call(call)
        on_end(call)
        if call.on_done is not None:
            call.on_done(call)

    def _purge_cancelled(self) -> None:
        """Remove cancelled calls (at a decision, i.e. between iterations)."""
        self._cancels = 0
        gone = [c for c in self.running if c.cancelled] + [c for c in self.waiting if c.cancelled]
        if not gone:
            return
        self.dc.sync_all(self.running)
        self.dc.ok = False
        self.running = [c for c in self.running if not c.cancelled]
        self.waiting = deque(c for c in self.waiting if not c.cancelled)
        for c in gone:
            self._release(c, final=True)
            self._end_call(c, "cancelled", self.clock)

    def _advance_idle(self, t: float) -> None:
        if self._lent_until is not None:
            return  # the diffusion batch on these devices accounts for them
        if t > self.clock:
            e = self._idle_w * (t - self.clock)
            self._account(self.clock, t, e, busy=False)
            self.recorder.step(self.pool, self.index, "idle", self.clock, t, 0, 0, 0, 0, 0, 0, self.kv.used(), e)
            self.clock = t

    def _account(self, start: float, end: float, energy: float, busy: bool) -> None:
        self.energy_j += energy
        if busy:
            self.busy_s += end - start

    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def _unpin_waiting(self) -> bool:
        """Nothing runs and nothing fits because the queued calls' own pinned KV fills the pool:
        their pins fall back to the prefix cache (reclaimable), as a real engine would have to
        evict them. Returns whether there was any."""
        pinned = [c for c in self.waiting if c.pin is not None]
        for c in pinned:
            self.kv.release_pin(c.pin)  # type: ignore[arg-type]
            c.pin = None
            self.recorder.event(self.clock, "unpinned", self.pool, self.index, c.call_id, "pool full of pinned KV")
        return bool(pinned)

    def _commit(self, plan: Plan, m: int) -> None:
        """Apply the first ``m`` iterations of ``plan`` (m = 0 applies nothing)."""
        if m == 0:
            return
        start, end = self.clock, float(plan.bounds[m])
        used_before = self.kv.used()
        waiting_before = len(self.waiting)
        d = plan.decision
        seqs = (d.ones or len(d.work)) + len(d.admit)
        energy_m = energy_sum(plan.energy_j, 0, m) if m > 1 else float(plan.energy_j[0])  # (the same value)
        cost = (energy_m, (end - start) * self.tp)  # to share among the calls served
        if plan.phase is not None:  # planned in aggregate (blocks for all k iterations known)
            self._commit_decode_lazy(m, end, cost, plan.kv_need if m == plan.k else None)
            kind = "decode"
        elif plan.steady:
            self.dc.sync_all(self.running)
            self.dc.ok = False
            self._commit_decode(m if plan.gains is None else int(plan.gains[m]), end, cost)
            kind = "decode"
        elif d.ones:
            self._commit_single_lazy(d, start, end, cost)
            kind = "decode" if plan.prefill_tokens == 0 else "mixed"
        else:
            self.dc.sync_all(self.running)
            self.dc.ok = False
            self._commit_single(d, start, end, cost)
            kind = "prefill" if plan.decode_tokens == 0 else ("decode" if plan.prefill_tokens == 0 else "mixed")
        self.clock = end
        self.iterations += m
        self.runs += 1
        if plan.decode_tokens:
            self.spec_step += m
        first = float(plan.bounds[0])
        for cut in self.cuts:
            if first < cut < end:
                break
        else:  # no report cut inside: one step row (nearly every commit)
            self.energy_j += energy_m
            self.busy_s += end - first
            self.recorder.step(self.pool, self.index, kind, first, end, m, seqs, plan.prefill_tokens * m,
                               plan.decode_tokens * m, plan.sampled * m if plan.gained is None else int(plan.gained[:m].sum()),
                               waiting_before, used_before, energy_m)
            return
        for a, b in self._segments(plan.bounds, m, first, end):
            if a == 0 and b == m:  # (the usual single row)
                energy, t_a, t_b = energy_m, first, end
            else:
                energy = energy_sum(plan.energy_j, a, b - a)
                t_a, t_b = float(plan.bounds[a]), float(plan.bounds[b])
            self._account(t_a, t_b, energy, busy=True)
            n = b - a
            out = plan.sampled * n if plan.gained is None else int(plan.gained[a:b].sum())
            self.recorder.step(self.pool, self.index, kind, t_a, t_b, n, seqs, plan.prefill_tokens * n,
                               plan.decode_tokens * n, out, waiting_before, used_before, energy)

    def _segments(self, bounds, m: int, first: float, last: float) -> list[tuple[int, int]]:
        """Split iterations [0, m) (from ``first`` = bounds[0] to ``last`` = bounds[m]) into step
        rows so that the iteration containing a report cut (warm-up end, arrivals end) is a row
        of its own: window metrics then prorate exactly one iteration, as they would in the
        per-iteration mode."""
        edges = [0]
        for cut in self.cuts:
            if first < cut < last:
                e = bisect_left(bounds, cut, 1, m + 1) - 1  # iteration containing cut
                edges += [e, e + 1]
        if len(edges) == 1:
            return [(0, m)]
        edges.append(m)
        edges = sorted(set(edges))
        return list(zip(edges[:-1], edges[1:]))

    def _commit_decode(self, grow: int, end: float, cost: tuple[float, float]) -> None:
        """Every running call gains ``grow`` tokens (the iterations' total), capped at its output,
        and an equal share of the iterations' energy and device time."""
        bs = self.block_size
        still: list[Call] = []
        done: list[Call] = []
        out = alloc = 0
        share_j, share_s = cost[0] / len(self.running), cost[1] / len(self.running)
        keep, end_ = still.append, done.append
        for c in self.running:
            c.energy_j += share_j
            c.device_s += share_s
            generated = c.generated
            left = c.output_tokens - generated
            g = grow if grow <= left else left
            out += g
            computed = c.computed = c.computed + g
            c.generated = generated + g
            blocks = -(-computed // bs)
            alloc += blocks - c.blocks
            c.blocks = blocks
            if g == left:
                end_(c)
            else:
                keep(c)
        # one allocation for all: every call only grows, so the LRU reclaims the same chunks as
        # allocating call by call
        if alloc:
            self.kv.take(alloc)
        self.output_tokens += out
        self.running = still
        # every call's growth first, as in the per-iteration mode, where finishing calls leave
        # after the last iteration's allocations (the cache reclaims the same chunks)
        for c in done:
            self._release(c, final=True)
            self._end_call(c, c.done_status, end)

    def _admit(self, d: Decision, start: float, running: list[Call]) -> dict[int, int]:
        """Take the admitted calls off the queue into ``running``; those with a prefix hold the
        cached blocks they found. Returns id(call) -> blocks found, for calls with a prefix."""
        joining = {}
        if d.admit and d.admit[-1][0] is not self.waiting[len(d.admit) - 1]:  # some were passed over
            taken = {id(c) for c, _ in d.admit}
            self.waiting = deque(c for c in self.waiting if id(c) not in taken)
        else:
            for _ in d.admit:
                self.waiting.popleft()
        for c, _ in d.admit:
            running.append(c)
            if c.admitted_s != c.admitted_s:  # NaN: first admission
                c.admitted_s = start
            if c.prefix is not None:
                hit = joining[id(c)] = d.hits.get(id(c), 0)
                # hold the cached blocks it found before anything is allocated (and reclaimed); those
                # behind a chunk still to be filled it takes at its turn, so they are reclaimed last
                c.shared = c.blocks = self.kv.ref_cached(c.prefix, hit)
                if hit > c.shared:
                    self.kv.spare(c.prefix, c.shared, hit)
        return joining

    def _commit_single(self, d: Decision, start: float, end: float, cost: tuple[float, float]) -> None:
        """Apply one decided iteration; each call worked gets a share of its energy and device
        time in proportion to the tokens it ran."""
        # preemptions (newest first): free blocks, recompute from scratch, back to the queue front
        for c in d.preempt:
            self._release(c, final=False)
            c.computed = 0
            c.preemptions += 1
            self._enqueue(c, front=True)
            self.recorder.event(start, "preempted", self.pool, self.index, c.call_id, f"generated={c.generated}")
        running = self.running[: d.keep]
        for c, _ in d.admit:
            self.dc.join(c)
        joining = self._admit(d, start, running)
        # work items are the first running calls, in order (decide() gives each its tokens in
        # turn); the calls kept after them ran nothing; the admitted ones come last
        work = d.work
        items = work if len(work) == len(running) else work + [(c, 0) for c in running[len(work): d.keep]] + d.admit
        total = sum([n for _, n in work]) + sum([n for _, n in d.admit])
        share_j, share_s = (cost[0] / total, cost[1] / total) if total else (0.0, 0.0)
        kv, bs, gain = self.kv, self.block_size, d.gain
        still, done = [], []
        out = 0
        for c, n in items:
            if n:
                c.energy_j += share_j * n
                c.device_s += share_s * n
                if joining and id(c) in joining:
                    self._join(c, joining[id(c)])
                generated, computed = c.generated, c.computed
                sample = n == c.prompt_tokens + generated - computed  # n == c.remaining
                gained = 1
                if sample and n == 1 and generated > 0:  # a decode: speculation gains up to d.gain
                    gained = n = min(gain, c.output_tokens - generated)
                computed = c.computed = computed + n
                blocks = -(-computed // bs)
                if blocks != c.blocks:
                    kv.take(blocks - c.blocks)
                    c.blocks = blocks
                if c.prefix is not None:  # its full prefix blocks become cached, for others to find
                    c.shared += kv.register(c.prefix, c.shared, computed // bs)
                if sample:
                    generated = c.generated = generated + gained
                    out += gained
                    if generated == 1:
                        c.first_token_s = end
                    if generated >= c.output_tokens:
                        done.append(c)
                        continue
            still.append(c)
        self.output_tokens += out
        if self.batcher.priority:
            still.sort(key=lambda c: -c.priority)  # preemption takes the lowest, newest first
        self.running = still
        for c in done:  # after every call took the cached blocks it found in this iteration
            self._release(c, final=True)
            self._end_call(c, c.done_status, end)

    def _join(self, c: Call, hit: int) -> None:
        """An admitted call takes the ``hit`` cached blocks it found (those an earlier chunk of
        this iteration filled included) and lets go of the pin it carried."""
        kv = self.kv
        kv.ref(c.prefix, hit, start=c.shared)  # type: ignore[arg-type]
        c.shared = c.blocks = hit
        c.computed = hit * self.block_size
        c.cached_tokens += c.computed
        if c.pin is not None:
            kv.release_pin(c.pin)
            c.pin = None

    def _release(self, c: Call, final: bool) -> None:
        """Give back a call's blocks. Its full prefix blocks become cached first (a preempted
        call may find them again); when it ends (``final``) they stay cached, are pinned for
        the caller (``retain: pin``) or are freed (``retain: drop``)."""
        kv = self.kv
        if c.prefix is not None:
            c.shared += kv.register(c.prefix, c.shared, c.computed // self.block_size)
        kv.take(c.shared - c.blocks)
        if c.shared:
            if final and c.retain == "pin":
                c.held = Pin(c.prefix, c.shared, kv)  # type: ignore[arg-type]
            else:
                kv.unref(c.prefix, c.shared, keep=not (final and c.retain == "drop"))  # type: ignore[arg-type]
        c.blocks = c.shared = 0
        if c.pin is not None:  # never admitted: its caller's KV is no longer pinned
            kv.release_pin(c.pin)
            c.pin = None

    def _end_call(self, c: Call, status: str, t: float) -> None:
        c.status = status
        c.finish_s = t
        self.recorder.call(c)
        if self.on_end is not None:
            self.on_end(c)
        if c.on_done is not None:
            c.on_done(c)
