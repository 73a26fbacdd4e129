"""The replica's decode clock: what decoding calls gain, kept once for the whole batch.

Between two changes of batch membership every running call gains the same tokens per decode
iteration, so instead of adding them to each call at every commit the replica counts them once
(``tokens``, the clock) and each call remembers the clock when it was last brought up to date
(``Call.d0``): its true ``generated`` and ``computed`` are the stored ones plus ``tokens - d0``.
Likewise the energy and device-time shares of those commits go to a log (``Call.m0`` marks the
first entry a call has not added yet). A call is brought up to date (:meth:`DecodeClock.sync`)
only where it is read: when it finishes, is preempted or cancelled, fails, and before any part
of the engine that reads calls one by one. The shares are added in the order they were logged,
each as one addition, so a call's energy is the same float the per-call additions gave.

While every running call decodes (no prompt chunk left, no prefix blocks left to register that
another call could find, no speculation, no priority order), the clock also keeps what the
scheduler and the planner need in aggregate: the running calls' KV tokens (``S``), how many
sit at each offset in their last KV block (the blocks a run needs by iteration ``k`` follow
from these counts), and the clock value at which each call has all its output tokens, in a
heap (the next finish in O(log n)).
A decode run's commit is then O(1) plus O(finishing calls).
"""

from __future__ import annotations

import sys
from functools import reduce
from heapq import heapify, heappop, heappush
from itertools import count
from operator import add, itemgetter
from types import FunctionType

from sim.engine.call import Call

if sys.version_info < (3, 12):
    # sum() of floats adds them one by one in a C double: the floats of the left fold below,
    # without a Python float per step (3.12 made sum() compensated, so only before it)
    _fold = sum
else:
    def _fold(values: list, start: float) -> float:
        return reduce(add, values, start)


_second = itemgetter(1)


def _probe() -> None:
    """(Only its type is read: a plain function in the sources, a native one once compiled.)"""


# Compiled (mypyc), a typed loop adds the logged shares without the copy and the per-element
# reference counting of a slice; interpreted, ``sum()`` of a slice does it in C. The same
# one-by-one double additions, in the same order, either way.
COMPILED = not isinstance(_probe, FunctionType)


def phase_need(phase: list[int], block_size: int, m: int) -> int:
    """Blocks that ``m`` more tokens per call allocate, ``phase[t]`` calls holding ``t`` KV
    tokens modulo the block size (a call at 0 mod the block size has its last block full).

    With ``m - 1 = q * block_size + r`` every call crosses ``q`` block boundaries, plus one
    more if it has at most ``r`` free slots left in its last block (``t = 0`` or ``t >= bs - r``)."""
    q, r = divmod(m - 1, block_size)
    need = q * sum(phase) + phase[0]
    if r:
        need += sum(phase[block_size - r:])
    return need


def settled(c: Call, block_size: int) -> bool:
    """Whether decoding changes nothing in the prefix cache that anyone could see for ``c``: it
    has no prefix, all its prefix's chunks are already cached blocks it references (registering
    is then a no-op), or its prefix is ``solo`` (its new full chunks, registered when it next
    registers, could not have been found by anyone in between)."""
    p = c.prefix
    return p is None or p.solo or c.shared // p.chunk >= p.chunks(block_size)


def rotate(phase: list[int], m: int, block_size: int) -> list[int]:
    """The phase counts after ``m`` more tokens per call."""
    s = (-m) % block_size
    return phase[s:] + phase[:s]


class DecodeClock:
    """Tokens every running call gained in decode commits, the logged shares, and (while
    ``ok``) the running batch in aggregate: KV tokens, offsets in the last block, finishes."""

    __slots__ = ("bs", "enabled", "tokens", "ok", "S", "cnt", "heap", "_seq", "log_j", "log_s", "base", "dirty")

    def __init__(self, block_size: int, enabled: bool):
        self.bs = block_size
        self.enabled = enabled  # aggregates usable at all (continuous batching, no speculation, no priority)
        self.tokens = 0  # decode tokens each running call gained in lazy commits, since the start
        self.ok = False  # aggregates valid for the running calls
        self.S = 0  # running calls' KV tokens
        self.cnt: list[int] = [0] * block_size  # calls by (stored computed - d0) mod block size
        self.heap: list[tuple[int, int, Call]] = []  # (clock value at which a call has all its output, seq, call)
        self._seq = count()
        self.log_j: list[float] = []  # energy shares of lazy commits, in order
        self.log_s: list[float] = []  # device-time shares likewise
        self.base = 0  # log index of log_j[0] (older entries were added by every call)
        self.dirty = False  # some running call is not up to date

    # ------------------------------------------------------------------ per call
    def join(self, c: Call) -> None:
        """``c`` joins the running batch, up to date as it is."""
        c.d0 = self.tokens
        c.m0 = self.base + len(self.log_j)

    def sync(self, c: Call) -> None:
        """Bring a running call up to date: the tokens and shares of the lazy commits it was in."""
        g = self.tokens - c.d0
        if g:
            c.generated += g
            computed = c.computed = c.computed + g
            c.blocks = -(-computed // self.bs)
            c.d0 = self.tokens
        lj = self.log_j
        i = c.m0 - self.base
        n = len(lj)
        if i < n:  # one addition per share, in order (a left fold, as the per-call additions)
            if COMPILED:
                ls = self.log_s
                e, s = c.energy_j, c.device_s
                while i < n:
                    e += lj[i]
                    s += ls[i]
                    i += 1
                c.energy_j, c.device_s = e, s
            else:
                c.energy_j = _fold(lj[i:], c.energy_j)
                c.device_s = _fold(self.log_s[i:], c.device_s)
            c.m0 = self.base + n

    def sync_all(self, running: list[Call]) -> None:
        if self.dirty:
            for c in running:
                self.sync(c)
            self.dirty = False

    # ------------------------------------------------------------------ the batch in aggregate
    def ready(self, running: list[Call]) -> bool:
        """Whether the aggregates hold for ``running`` (rebuilt if they were invalidated):
        every call decodes, has no prefix blocks left to register and its blocks match its KV tokens."""
        if self.ok:
            return True
        if not self.enabled or not running:
            return False
        bs, d = self.bs, self.tokens
        cnt = [0] * bs
        heap = []
        total = 0
        seq = self._seq
        for c in running:
            g = d - c.d0
            generated, computed = c.generated + g, c.computed + g
            if (generated <= 0 or computed != c.prompt_tokens + generated - 1 or not settled(c, bs)
                    or c.blocks != -(-(c.computed) // bs) or generated >= c.output_tokens):
                return False
            total += computed
            cnt[(c.computed - c.d0) % bs] += 1
            heap.append((c.d0 + c.output_tokens - c.generated, next(seq), c))
        heapify(heap)
        self.cnt, self.heap, self.S, self.ok = cnt, heap, total, True
        return True

    def add(self, c: Call) -> None:
        """An up-to-date decoding call with no prefix blocks left to register joins the aggregates."""
        self.S += c.computed
        self.cnt[(c.computed - c.d0) % self.bs] += 1
        heappush(self.heap, (c.d0 + c.output_tokens - c.generated, next(self._seq), c))

    def phase(self) -> list[int]:
        """Running calls by their true KV tokens modulo the block size."""
        s = (-self.tokens) % self.bs
        cnt = self.cnt
        return cnt[s:] + cnt[:s]

    def need(self, m: int) -> int:
        """Blocks the running calls allocate over ``m`` more decode iterations."""
        if m == 1:
            return self.cnt[(-self.tokens) % self.bs]
        return phase_need(self.phase(), self.bs, m)

    def left(self) -> int:
        """Output tokens left to the call that finishes first."""
        return self.heap[0][0] - self.tokens

    def first_computed(self, c: Call) -> int:
        return c.computed + self.tokens - c.d0

    def advance(self, m: int, n: int, share_j: float, share_s: float, running: list[Call]) -> list[Call]:
        """Every one of the ``n`` running calls gains ``m`` tokens and the shares: returns the
        calls that now have all their output tokens, up to date, in running order (they leave
        the aggregates; the caller removes them from the batch)."""
        if len(self.log_j) >= 4096:
            self._trim(running)
        self.log_j.append(share_j)
        self.log_s.append(share_s)
        self.tokens += m
        self.S += n * m
        self.dirty = True
        heap, d = self.heap, self.tokens
        if not heap or heap[0][0] > d:
            return []
        entries = []
        while heap and heap[0][0] <= d:
            entries.append(heappop(heap))
        if len(entries) > 1:  # running order: the entries' numbers follow it (given in running order, joiners last)
            entries.sort(key=_second)
        done = [e[2] for e in entries]
        bs, cnt = self.bs, self.cnt
        for c in done:
            cnt[(c.computed - c.d0) % bs] -= 1
            self.sync(c)
            self.S -= c.computed
        return done

    def _trim(self, running: list[Call]) -> None:
        """Drop the log entries every running call has added."""
        low = min([c.m0 for c in running], default=self.base + len(self.log_j))
        cut = low - self.base
        if cut > 0:
            del self.log_j[:cut]
            del self.log_s[:cut]
            self.base = low
