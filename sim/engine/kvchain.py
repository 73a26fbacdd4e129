"""A solo prefix's cached chunks held as ranges, for the KV pool (pure, no SimPy).

An agent session's history is hundreds of chunks, found, referenced, registered and released
at every turn. Keyed one by one (a reference count per chunk, an LRU entry per reclaimable
chunk) every turn walks them all; but the holders of a chain's chunks (the running turn, a
pin) each hold a leading range, and a release makes a range reclaimable at once. So the pool
keeps, per chain (chunk ``i`` of ``base`` being the key ``(base, i)``):

* :class:`Chain`: the cached chunks as sorted, disjoint runs ``[lo, hi)`` of equal reference
  count (one to three runs in practice, whatever the history's length);
* :class:`Stretch`: one entry of the pool's LRU order standing for consecutive reclaimable
  chunks of one chain, in their reclaim order, as ranges (a release appends its chunks deepest
  first: ``range(hi - 1, lo - 1, -1)``). Taking chunks out of a stretch splits its ranges in
  place, so the chunks left keep their places in the LRU order.

The state is exactly that of the chunk-by-chunk keys (same counts, same reclaim order); only
its representation differs, so every operation costs O(runs + ranges) instead of O(chunks).
"""

from __future__ import annotations


class Chain:
    """The cached chunks of one solo chain: ``runs`` of ``[lo, hi, references]``, sorted,
    disjoint, neighbours with equal counts merged; ``stretches``: its entries in the LRU."""

    __slots__ = ("base", "c", "runs", "stretches")

    def __init__(self, base, chunk: int):
        self.base = base
        self.c = chunk  # blocks per chunk
        self.runs: list = []
        self.stretches: list = []

    # ------------------------------------------------------------------ queries
    def leading(self, limit: int) -> int:
        """Leading chunks ``0 ..`` cached, at most ``limit``."""
        runs = self.runs
        if not runs or runs[0][0] or limit <= 0:
            return 0
        h = runs[0][1]
        for r in runs[1:]:
            if r[0] != h or h >= limit:
                break
            h = r[1]
        return h if h < limit else limit

    def next_cached(self, a: int) -> int:
        """The first cached chunk at or after ``a`` (a large number if none)."""
        for lo, hi, _ in self.runs:
            if hi > a:
                return lo if lo > a else a
        return 1 << 62

    def with_count(self, a: int, b: int, n=None) -> list:
        """Sub-ranges ``(lo, hi)`` of ``[a, b)`` cached with ``n`` references (any count if None)."""
        out = []
        for lo, hi, r in self.runs:
            if hi <= a:
                continue
            if lo >= b or a >= b:
                break
            if n is None or r == n:
                lo, hi = max(lo, a), min(hi, b)
                if out and out[-1][1] == lo:
                    out[-1] = (out[-1][0], hi)
                else:
                    out.append((lo, hi))
        return out

    def count(self, a: int, b: int, n=None) -> int:
        """Chunks of ``[a, b)`` cached with ``n`` references (cached at all if None)."""
        return sum(hi - lo for lo, hi in self.with_count(a, b, n))

    def total(self) -> int:
        return sum(hi - lo for lo, hi, _ in self.runs)

    # ------------------------------------------------------------------ changes
    def _cut(self, x: int) -> int:
        """Index of the first run starting at or after ``x``, splitting the run across ``x``."""
        runs = self.runs
        for i, r in enumerate(runs):
            if r[1] > x:
                if r[0] < x:
                    runs.insert(i + 1, [x, r[1], r[2]])
                    r[1] = x
                    return i + 1
                return i
        return len(runs)

    def _merge(self) -> None:
        runs = self.runs
        i = 1
        while i < len(runs):
            p, r = runs[i - 1], runs[i]
            if p[1] == r[0] and p[2] == r[2]:
                p[1] = r[1]
                del runs[i]
            else:
                i += 1

    def add(self, a: int, b: int, d: int) -> list:
        """Add ``d`` (+1 or -1) to the references of chunks ``[a, b)``, all cached; returns the
        sub-ranges that were unreferenced (``d = 1``) or became so (``d = -1``), ascending."""
        if a >= b:
            return []
        runs = self.runs
        r = runs[0] if runs else None
        if r is not None and r[0] == a and r[1] == b:  # (a turn's whole history: one run)
            old = r[2]
            r[2] = old + d
            if len(runs) > 1:
                self._merge()
            return [(a, b)] if (old if d > 0 else old + d) == 0 else []
        i = self._cut(a)
        j = self._cut(b)
        pos = a
        changed = []
        for r in runs[i:j]:
            if r[0] != pos:
                break
            old = r[2]
            r[2] = old + d
            if (old if d > 0 else old + d) == 0:
                if changed and changed[-1][1] == r[0]:
                    changed[-1] = (changed[-1][0], r[1])
                else:
                    changed.append((r[0], r[1]))
            pos = r[1]
        if pos != b:  # as the chunk-by-chunk keys: referencing a chunk that is not cached
            raise KeyError((self.base, pos))
        self._merge()
        return changed

    def insert(self, a: int, b: int, n: int) -> None:
        """Chunks ``[a, b)`` (none cached) become cached with ``n`` references."""
        runs = self.runs
        i = self._cut(a)
        runs.insert(i, [a, b, n])
        self._merge()

    def remove(self, a: int, b: int) -> None:
        """Chunks ``[a, b)`` (all cached) are no longer."""
        i = self._cut(a)
        j = self._cut(b)
        del self.runs[i:j]


class Stretch:
    """Consecutive entries of a pool's LRU order, all chunks of ``chain``: ``parts`` are
    ranges of chunk indices (step 1 or -1), in reclaim order; ``n`` chunks in all."""

    __slots__ = ("chain", "parts", "n")

    def __init__(self, chain: Chain, parts: list, n: int):
        self.chain = chain
        self.parts = parts
        self.n = n  # chunks in parts

    def subtract(self, a: int, b: int) -> int:
        """Take chunks ``[a, b)`` out (where they are); returns how many were in."""
        out, taken = [], 0
        for p in self.parts:
            s, e = (p.start, p.stop) if p.step > 0 else (p.stop + 1, p.start + 1)  # p covers [s, e)
            lo, hi = max(s, a), min(e, b)
            if lo >= hi:
                out.append(p)
                continue
            taken += hi - lo
            if p.step > 0:
                pieces = (range(s, lo), range(hi, e))
            else:
                pieces = (range(e - 1, hi - 1, -1), range(lo - 1, s - 1, -1))
            out.extend(q for q in pieces if q)
        if taken:
            self.parts = out
            self.n -= taken
        return taken

    def pop_front(self, k: int) -> list:
        """Take out the first ``k`` chunks; returns them as ascending ranges ``(lo, hi)``."""
        parts = self.parts
        out = []
        self.n -= k
        while k:
            p = parts[0]
            if len(p) <= k:
                del parts[0]
                q = p
            else:
                q, parts[0] = p[:k], p[k:]
            k -= len(q)
            out.append((q.start, q.stop) if q.step > 0 else (q.stop + 1, q.start + 1))
        return out

    def first_outside(self, ranges: list):
        """The first chunk in reclaim order outside ``ranges`` (``(lo, hi)`` pairs), or None."""
        for p in self.parts:
            for v in p:
                if not any(lo <= v < hi for lo, hi in ranges):
                    return v
        return None

    def chunks(self):
        for p in self.parts:
            yield from p


class Revival:
    """What a decision notes of a solo chain's reclaimable chunks an admitted call takes (the
    chunk keys it would note one by one): ``ranges`` of chunks of ``base``."""

    __slots__ = ("base", "ranges")

    def __init__(self, base, ranges: list):
        self.base = base
        self.ranges = ranges


class RangedChains:
    """The part of the KV pool that keeps ranged chains (``chains``, their stretches in ``lru``)."""

    def _chain(self, prefix) -> Chain:
        ch = self.chains.get(prefix.base)
        if ch is None:
            ch = self.chains[prefix.base] = Chain(prefix.base, prefix.chunk)
        return ch

    def _reclaimable(self, ch: Chain, parts: list, n: int) -> None:
        """Chunks of ``ch`` (``n`` in ranges, in reclaim order) go last in the LRU order."""
        s = Stretch(ch, parts, n)
        self.lru[s] = None
        ch.stretches.append(s)

    def _revive(self, ch: Chain, ranges: list) -> None:
        """Chunks of ``ch`` (``(lo, hi)`` ranges, reclaimable until now) leave the LRU order."""
        if not ranges:
            return
        k = ranges[0][1] - ranges[0][0] if len(ranges) == 1 else sum(hi - lo for lo, hi in ranges)
        if k == sum(s.n for s in ch.stretches):  # all of its reclaimable chunks (the usual turn)
            lru = self.lru
            for s in ch.stretches:
                del lru[s]
            ch.stretches = []
            self.lru_blocks -= k * ch.c
            return
        n = 0
        for s in ch.stretches:
            for lo, hi in ranges:
                n += s.subtract(lo, hi)
        if any(not s.n for s in ch.stretches):
            lru = self.lru
            for s in ch.stretches:
                if not s.n:
                    del lru[s]
            ch.stretches = [s for s in ch.stretches if s.n]
        self.lru_blocks -= n * ch.c

    def _evict_ranges(self, s: Stretch, ranges: list) -> None:
        """Reclaim chunks ``ranges`` just taken out of stretch ``s``."""
        ch = s.chain
        for lo, hi in ranges:
            ch.remove(lo, hi)
            n = (hi - lo) * ch.c
            self.lru_blocks -= n
            self.evicted += n
            self.cached_blocks -= n
            self.free += n
        if not s.n:
            del self.lru[s]
            ch.stretches.remove(s)
        if not ch.runs:
            del self.chains[ch.base]

    def _forget_range(self, ch: Chain, lo: int, hi: int) -> None:
        ch.remove(lo, hi)
        n = (hi - lo) * ch.c
        self.cached_blocks -= n
        self.free += n
        if not ch.runs:
            del self.chains[ch.base]

    def _make_room(self, c: int, keep: int, protect) -> bool:
        """Free ``c`` blocks for a reloaded chunk, reclaiming unprotected cached chunks, if
        ``keep`` blocks stay allocatable after it; False where that cannot be done."""
        if self.allocatable() - c < keep:
            return False
        while self.free < c:
            if not self._evict_unprotected(protect):
                break
        return self.free >= c

    def _evict_unprotected(self, protect) -> bool:
        """Reclaim the least recently used chunk not in ``protect``; False if there is none."""
        ranges = None
        for k in self.lru:
            if type(k) is Stretch:
                if ranges is None:  # chunks of ranged chains noted by the decision, per base
                    ranges = {}
                    for v in protect:
                        if type(v) is Revival:
                            ranges.setdefault(v.base, []).extend(v.ranges)
                i = k.first_outside(ranges.get(k.chain.base, ()))
                if i is not None:
                    k.subtract(i, i + 1)
                    self._evict_ranges(k, [(i, i + 1)])
                    return True
            elif k not in protect:
                self._evict(k)
                return True
        return False

    def _restore_ranged(self, prefix, blocks: int, keep: int, protect) -> int:
        """:meth:`restore` of a ranged prefix, a run of equal chunks at a time; returns the blocks pinned."""
        c = prefix.chunk
        n, last = 0, blocks // c
        while n < last:
            ch = self._chain(prefix)
            run = next((r for r in ch.runs if r[0] <= n < r[1]), None)
            if run is None:  # not cached: reloaded into a chunk of its own
                if not self._make_room(c, keep, protect):
                    break
                self.free -= c
                self._chain(prefix).insert(n, n + 1, 1)
                self.cached_blocks += c
                n += 1
                continue
            e = min(run[1], last)
            if run[2]:
                ch.add(n, e, 1)
                n = e
                continue
            t = min(e - n, max(0, (self.allocatable() - keep) // c))  # reclaimable ones taken while room is left
            if t:
                self._revive(ch, ch.add(n, n + t, 1))
                n += t
            if n < e:
                break
        ch = self.chains.get(prefix.base)
        if ch is not None and not ch.runs:  # (made for nothing)
            del self.chains[prefix.base]
        return n * c

