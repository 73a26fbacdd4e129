"""The batcher: which calls the next iteration runs, with how many tokens, which it admits and
which it preempts, as vLLM's scheduler decides it.

A scheduler is pure: it reads the running calls, the waiting queue and the KV pool, returns a
:class:`Decision` and changes nothing; it knows no clock and no SimPy. The replica applies a
decision when its iterations are committed. A batcher is one class here plus one entry in
:data:`BATCHERS` (its ``kind`` in the scenario's ``batcher:``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from sim.engine.call import Call
from sim.engine.dclock import DecodeClock
from sim.engine.kvcache import KvPool
from sim.models.speculative import SpeculativeCost, gain


@dataclass(frozen=True)
class BatcherParams:
    """Scheduler knobs (vLLM names)."""

    max_num_batched_tokens: int
    max_num_seqs: int
    kind: str = "continuous"  # a key of BATCHERS
    priority: bool = False  # priority scheduling (vLLM --scheduling-policy priority)
    max_waiting: Optional[int] = None  # admission control


class Decision:
    """What one iteration does: work per call, admissions, preemptions (not yet applied).

    A plain class with its own constructor (one is made per engine boundary; a dataclass's
    generated ``__init__`` stays interpreted in the compiled engine)."""

    __slots__ = ("work", "admit", "preempt", "keep", "hits", "gain", "kv_need", "revived", "decoding", "ones")

    def __init__(self, work: list[tuple[Call, int]], admit: list[tuple[Call, int]], preempt: list[Call], keep: int,
                 hits: dict[int, int], gain: int = 1, kv_need: int = 0, revived: frozenset = frozenset(),
                 decoding: Optional[bool] = None, ones: int = 0):
        self.work = work  # (call, new_tokens) for running calls, in order
        self.admit = admit  # (call, new_tokens) for waiting calls admitted
        self.preempt = preempt  # running calls preempted (newest first)
        self.keep = keep  # running calls that stay (running[:keep])
        self.hits = hits  # id(call) -> blocks an admitted call finds cached
        self.gain = gain  # tokens a decoding call gains this iteration (speculation), before capping at its output
        self.kv_need = kv_need  # blocks it allocates
        self.revived = revived  # reclaimable cached chunks its admissions take
        self.decoding = decoding  # every work item is one token of a call past its first (None: not known)
        self.ones = ones  # >0: ``work`` is left empty and the first ``ones`` running calls each decode one token


_NONE: frozenset = frozenset()


class ContinuousScheduler:
    """vLLM v1 (the default): every iteration first gives each running call its next tokens (a
    decode's one, a prefill's next chunk) under the token budget, allocating KV blocks and
    preempting the newest running call (recompute) when the pool runs out; then, if nothing was
    preempted, admits waiting calls in FIFO order (priority order with priority scheduling) while
    the budget, the sequence cap and free blocks allow, chunking the last prompt to fit."""

    chunked = True  # prefill chunks mix with decodes in one iteration

    def __init__(self, params: BatcherParams, block_size: int, spec: Optional[SpeculativeCost] = None):
        self.params = params
        self.block_size = block_size
        self.spec = spec
        self.spec_width = spec.query_tokens if spec is not None else 1  # tokens a decode verifies

    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    @staticmethod
    def decide_decoding(n: int, kv_need: int) -> Decision:
        """What :meth:`decide` returns for ``n`` running calls given with the decode clock and an
        empty queue (continuous batching, no speculation, no priority): each decodes one token,
        taking ``kv_need`` blocks (the clock's ``need(1)``), built without walking anything."""
        return Decision([], [], [], n, {}, 1, kv_need, _NONE, True, n)

    def decide(self, running: list[Call], waiting: deque[Call], kv: KvPool, spec_step: int,
               clock: Optional[DecodeClock] = None) -> Decision:
        """The next iteration's schedule for the ``running`` calls (in order) and the ``waiting``
        queue over the KV pool ``kv``, at the replica's ``spec_step``-th decode step; nothing changes.

        ``clock``: the replica's decode clock, given when every running call decodes, all fit
        the budget and their next blocks fit the pool: they are then scheduled in aggregate."""
        budget = self.params.max_num_batched_tokens
        free = kv.allocatable()
        keep = len(running)
        work, preempt = [], []
        ones = 0
        if clock is not None:
            ones = keep
            budget -= keep
            free -= clock.need(1)
        needs = []  # blocks each work item takes
        chunked = self.chunked
        prefill_first = not chunked and self._admissible_prefill(running, waiting, budget, free)
        bs = self.block_size
        w = self.spec_width
        g = gain(spec_step, self.spec.milli_tokens) if w > 1 else 1  # type: ignore[union-attr]
        pending: set = set()  # keys this iteration's chunks will fill (a later call can hit them)
        revived: set = set()  # reclaimable cached blocks that admitted calls hit (no longer reclaimable)
        hits: dict = {}
        decoding = True
        i = ones
        while not prefill_first and i < keep and budget > 0:
            c = running[i]
            computed, generated = c.computed, c.generated
            rem = c.prompt_tokens + generated - computed  # c.remaining
            n = (rem if rem <= budget else budget) if chunked else rem
            if n > 1 and c.prefix is not None:
                self._pending(c, computed + n, pending)
            grow = charge = n
            if w > 1 and rem == 1 and generated > 0:  # speculative decode: verifies w, gains up to g
                if chunked and budget < w:
                    break
                grow, charge = min(g, c.output_tokens - generated), w
            need = -(-(computed + grow) // bs) - c.blocks
            while need > free and keep > i + 1:
                keep -= 1
                victim = running[keep]
                free += self._freed_by(kv, victim)
                preempt.append(victim)
            if need > free:  # not even this call fits alone: preempt it too
                keep -= 1
                free += self._freed_by(kv, c)
                preempt.append(c)
                break
            free -= need
            budget -= charge
            work.append((c, n))
            needs.append(need)
            if decoding and (n != 1 or generated <= 0):
                decoding = False
            i += 1
        if self.params.priority and waiting and keep and not preempt:
            keep, free = self._preempt_for_priority(waiting, kv, running, keep, free, budget, work, needs, preempt)
        admit: list[tuple[Call, int]] = []
        if not preempt and (chunked or prefill_first):
            seqs = keep
            blocked = False  # a call did not fit: only continuations holding pinned KV may pass it
            for c in waiting:
                if budget <= 0 or seqs >= self.params.max_num_seqs:
                    break
                if blocked and c.pin is None:
                    continue
                hit, back, reclaim = 0, (), 0  # type: tuple[int, Sequence[Any], int]
                if c.prefix is not None:  # cached blocks it finds; never its last token (as vLLM)
                    hit, back, reclaim = kv.hit(c.prefix, (c.prompt_tokens + c.generated - 1) // bs, pending, revived)
                n = c.remaining - hit * bs
                if chunked:
                    n = min(n, budget)
                elif n > budget and admit:  # whole prompts only; one larger than the budget runs alone
                    break
                need = self._blocks_for(hit * bs + n) - hit + reclaim
                if need > free:
                    # FIFO stops here, but a session turn whose KV is pinned needs only its new
                    # tokens and frees the pin once admitted: letting it by keeps pins from
                    # deadlocking the queue
                    if not self._pinned_anywhere(waiting):
                        break
                    blocked = True
                    continue
                revived.update(back)
                free -= need
                budget -= n
                seqs += 1
                admit.append((c, n))
                if hit:
                    hits[id(c)] = hit
                if c.prefix is not None:
                    self._pending(c, hit * bs + n, pending)
        return Decision(work, admit, preempt, keep, hits, g, max(0, kv.allocatable() - free), frozenset(revived),
                        decoding, ones)

    def _preempt_for_priority(self, waiting, kv, running: list, keep: int, free: int, budget: int, work: list, needs: list,
                              preempt: list) -> tuple[int, int]:
        """Once the running calls have their blocks for this iteration: if the queue's head
        outranks running calls and finds no seat or no blocks for its next chunk, preempt them,
        lowest priority and newest first (the order running calls are kept in), until it would
        fit; it is admitted at the next iteration. Returns the calls kept and the blocks free."""
        head = waiting[0]
        n = min(head.remaining, max(budget, 1)) if self.chunked else head.remaining
        need = self._blocks_for(head.computed + n) - head.blocks
        while keep and running[keep - 1].priority < head.priority and (
                need > free or keep >= self.params.max_num_seqs):
            keep -= 1
            victim = running[keep]
            if work and work[-1][0] is victim:  # it had its tokens for this iteration: not any more
                work.pop()
                free += needs.pop()
            free += self._freed_by(kv, victim)
            preempt.append(victim)
        return keep, free

    @staticmethod
    def _pinned_anywhere(waiting) -> bool:
        """Whether some waiting call carries a pin (cheap check before skipping ahead)."""
        return any(c.pin is not None for c in waiting)

    def _pending(self, c: Call, computed: int, pending: set) -> None:
        """Add the keys of the full prefix blocks ``c`` will have computed to ``pending`` (none
        for a ranged prefix: no other call of the iteration can hit its chunks)."""
        prefix = c.prefix
        assert prefix is not None
        if prefix.ranged:
            return
        ch = prefix.chunk
        pending.update(prefix.keys(c.shared // ch, min(computed // (self.block_size * ch), prefix.chunks(self.block_size))))

    @staticmethod
    def _freed_by(kv, c: Call) -> int:
        """Blocks that preempting ``c`` makes allocatable: its private ones, and cached ones
        only it references (counted as if no other victim shared them)."""
        freed = c.blocks - c.shared
        if c.shared:
            freed += kv.referenced(c.prefix, c.shared)
        return freed

    def _admissible_prefill(self, running: list, waiting, budget: int, free: int) -> bool:
        """Prefill-first batcher: can the head of the queue be admitted now?"""
        if not waiting or len(running) >= self.params.max_num_seqs:
            return False
        c = waiting[0]
        return self._blocks_for(c.computed + c.remaining) - c.blocks <= free


class PrefillFirstScheduler(ContinuousScheduler):
    """Older engines (and some simulators): an iteration either prefills whole prompts (when the
    queue's head fits) or decodes every running call, never both."""

    chunked = False


BATCHERS = {"continuous": ContinuousScheduler, "prefill_first": PrefillFirstScheduler}
