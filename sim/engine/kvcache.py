"""The paged KV pool of one replica, with a prefix cache keyed by content (pure, no SimPy).

Blocks of ``block_size`` tokens are either free, private to one call, or *cached*: part
of a chunk whose content is named by a key, held once however many calls use it. A call's
:class:`Prefix` names its leading chunks (chunk ``i`` holds the same tokens in every call
whose prefix gives it the same key): the samples of one question share their prompt, the
turns of an agent session share its history, requests of a trace with equal prefix hashes
share those blocks. A chunk is ``chunk`` blocks (vLLM hashes single blocks; KV stores such
as LMCache and Mooncake use 256- and 512-token chunks, and bigger chunks make long
contexts cheap to track).

Cached chunks carry a reference count. With caching on (vLLM's ``enable_prefix_caching``,
its default) a chunk nobody references stays cached in LRU order and is reclaimed only
when an allocation needs room; with caching off it is freed at once. Releasing a sequence
puts its deepest chunks first in line for eviction, so shared prefixes live longest, as in
vLLM. A :class:`Pin` holds references for a caller outside the engine (an agent session
keeping its KV between turns).

A ``solo`` prefix without hashes (an agent session's history) is held as ranges
(:mod:`sim.engine.kvchain`): the same counts and reclaim order, kept per run of chunks, so a
turn's bookkeeping costs O(runs) instead of O(chunks).

Every count this module takes or returns is in blocks; block counts of cached parts are
multiples of the prefix's chunk.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from itertools import compress
from operator import not_
from typing import Optional

from sim.engine.kvchain import RangedChains, Revival, Stretch


class Prefix:
    """Identities of a call's leading KV chunks (``chunk`` blocks each).

    ``base`` names a private chain: chunk ``i`` is ``(base, i)``, for the first ``tokens``
    tokens (all of the context by default). With ``hashes`` (one id per ``hash_tokens``
    tokens, as in the Mooncake traces, and ``hash_tokens`` = chunk x block size) chunk ``i``
    is ``hashes[i]``.

    ``solo``: one call at a time uses these keys and nothing else reads them while it runs (an
    agent session's history: its turns follow one another). A decoding call may then leave the
    full chunks it fills private until it next registers (at its release at the latest): no
    other holder could have found them in between, so nothing it does can tell. Without
    ``hashes`` its chunks are held as ranges (no other prefix may use its ``base``), and no
    other call of the same iteration fills or takes them (nothing to note as pending).
    """

    __slots__ = ("base", "tokens", "hashes", "chunk", "solo", "ranged", "_keys")

    def __init__(self, base, tokens: int = sys.maxsize, hashes: Optional[tuple] = None, chunk: int = 1,
                 solo: bool = False):
        self.base = base
        self.tokens = tokens
        self.hashes = hashes
        self.chunk = chunk
        self.solo = solo
        self.ranged = solo and hashes is None  # held as ranges in a pool
        self._keys: list = []  # (base, i) for the chunks asked for so far

    def chunks(self, block_size: int) -> int:
        """Number of leading full chunks that have a key."""
        n = self.tokens // (self.chunk * block_size)
        return min(n, len(self.hashes)) if self.hashes is not None else n

    def key(self, i: int):
        return (self.base, i) if self.hashes is None else self.hashes[i]

    def keys(self, start: int, stop: int):
        """Keys of chunks ``start .. stop - 1`` (a sequence)."""
        if self.hashes is not None:
            return self.hashes[start:stop]
        keys = self._keys
        if len(keys) < stop:
            base = self.base
            keys.extend([(base, i) for i in range(len(keys), stop)])
        return keys[start:stop]


class Pin:
    """References on the first ``blocks`` blocks of ``prefix`` in ``pool``, held outside any
    call (void once that pool is gone: its replica failed)."""

    __slots__ = ("prefix", "blocks", "pool")

    def __init__(self, prefix: Prefix, blocks: int, pool: "KvPool"):
        self.prefix = prefix
        self.blocks = blocks
        self.pool = pool


class KvPool(RangedChains):
    """Free, private and cached blocks of one replica.

    ``free`` counts blocks holding nothing; cached chunks that nobody references (``lru``)
    are reclaimable, so :meth:`allocatable` is ``free`` plus their blocks. Chunks of keyed
    prefixes are entries of ``refs`` / ``size`` / ``lru`` one by one; those of ranged (solo)
    prefixes are a :class:`~sim.engine.kvchain.Chain` per base in ``chains``, and their
    reclaimable ones :class:`~sim.engine.kvchain.Stretch` entries of ``lru``.
    """

    def __init__(self, total: int, block_size: int, caching: bool = True):
        self.total = total
        self.bs = block_size
        self.caching = caching
        self.free = total
        self.refs: dict = {}  # key -> references (0: cached and reclaimable, in ``lru``)
        self.size: dict = {}  # key -> blocks of the chunk
        self.chains: dict = {}  # base of a ranged prefix -> its Chain
        self.lru: OrderedDict = OrderedDict()  # reclaimable keys and stretches, oldest first
        self.lru_blocks = 0
        self.cached_blocks = 0  # blocks of all cached chunks
        self.evicted = 0  # cached blocks reclaimed so far

    # ------------------------------------------------------------------ queries
    def allocatable(self) -> int:
        return self.free + self.lru_blocks

    def used(self) -> int:
        """Blocks held by calls or pins (not counting reclaimable cached ones)."""
        return self.total - self.free - self.lru_blocks

    def cached_chunks(self) -> int:
        """Chunks cached now (referenced or reclaimable)."""
        return len(self.refs) + sum(ch.total() for ch in self.chains.values())

    def hit(self, prefix: Prefix, limit: int, pending: set, revived: set) -> tuple[int, list, int]:
        """(leading blocks of ``prefix`` found cached, whole chunks within ``limit`` blocks;
        what among them is reclaimable now and not in ``revived``, and its blocks: taking them
        makes them unreclaimable, so the caller adds those to ``revived`` if it does).

        ``pending`` holds keys that earlier chunks of the same iteration will fill."""
        refs, lru, c = self.refs, self.lru, prefix.chunk
        if prefix.ranged:
            ch = self.chains.get(prefix.base)
            if ch is None:
                return 0, [], 0
            n = ch.leading(min(limit // c, prefix.chunks(self.bs)))
            back = ch.with_count(0, n, 0)
            if not back:
                return n * c, [], 0
            k = back[0][1] - back[0][0] if len(back) == 1 else sum(hi - lo for lo, hi in back)
            return n * c, [Revival(prefix.base, back)], c * k
        keys = prefix.keys(0, min(limit // c, prefix.chunks(self.bs)))
        # the leading cached chunks in one pass of the dict's own lookup (a long context is hundreds)
        found = list(map(refs.get, keys))
        n = found.index(None) if None in found else len(found)
        back = list(compress(keys[:n], map(not_, found)))  # reclaimable: no reference (in lru)
        if revived and back:
            back = [k for k in back if k not in revived]
        if n < len(keys) and pending:  # behind them, chunks this iteration fills, and cached ones
            for k in keys[n:]:
                if k in refs:
                    if k in lru and k not in revived:
                        back.append(k)
                elif k not in pending:
                    break
                n += 1
        return n * c, back, len(back) * c

    def cached_prefix(self, prefix: Prefix) -> int:
        """Leading chunks of ``prefix`` cached here now (for cache-aware routing)."""
        if prefix.ranged:
            ch = self.chains.get(prefix.base)
            return 0 if ch is None else ch.leading(prefix.chunks(self.bs))
        refs = self.refs
        n = 0
        for k in prefix.keys(0, prefix.chunks(self.bs)):
            if k not in refs:
                break
            n += 1
        return n

    def missing(self, prefix: Prefix, blocks: int) -> int:
        """Blocks of the whole chunks among the first ``blocks`` of ``prefix`` not cached here."""
        c = prefix.chunk
        if prefix.ranged:
            ch = self.chains.get(prefix.base)
            return c * (blocks // c - (0 if ch is None else ch.count(0, blocks // c)))
        refs = self.refs
        return c * sum(1 for i in range(blocks // c) if prefix.key(i) not in refs)

    def referenced(self, prefix: Prefix, blocks: int) -> int:
        """Of the first ``blocks``, how many only one holder references (releasing it would
        make them reclaimable)."""
        c, refs = prefix.chunk, self.refs
        if prefix.ranged:
            ch = self.chains.get(prefix.base)
            return 0 if ch is None else c * ch.count(0, blocks // c, 1)
        return c * sum(1 for k in prefix.keys(0, blocks // c) if refs[k] == 1)

    def expanded(self) -> tuple[dict, list, dict]:
        """(references, reclaim order, blocks) of every cached chunk by key, ranged chains'
        chunks as ``(base, i)``: the state chunk-by-chunk keys would hold (for checks)."""
        refs, size = dict(self.refs), dict(self.size)
        for base, ch in self.chains.items():
            for lo, hi, n in ch.runs:
                for i in range(lo, hi):
                    refs[(base, i)], size[(base, i)] = n, ch.c
        order = []
        for k in self.lru:
            if type(k) is Stretch:
                order += [(k.chain.base, i) for i in k.chunks()]
            else:
                order.append(k)
        return refs, order, size

    # ------------------------------------------------------------------ changes
    def take(self, n: int) -> None:
        """Allocate ``n`` private blocks (negative: give back), reclaiming cached ones if needed."""
        self.free -= n
        lru = self.lru
        while self.free < 0 and lru:
            k = next(iter(lru))
            if type(k) is Stretch:  # as many of its chunks as are needed, oldest first
                c = k.chain.c
                self._evict_ranges(k, k.pop_front(min(k.n, -(self.free // c))))
            else:
                self._evict(k)
        if self.free < 0:
            raise RuntimeError(f"KV pool over-committed by {-self.free} blocks")

    def ref_cached(self, prefix: Prefix, blocks: int) -> int:
        """Reference the leading chunks among the first ``blocks`` that are cached now; returns
        their blocks (the rest are filled later in the same iteration)."""
        refs, lru, c = self.refs, self.lru, prefix.chunk
        if prefix.ranged:
            ch = self.chains.get(prefix.base)
            n = 0 if ch is None else ch.leading(blocks // c)
            if n:
                assert ch is not None  # (n > 0 only where the chain exists)
                self._revive(ch, ch.add(0, n, 1))
            return n * c
        n = back = 0
        for k in prefix.keys(0, blocks // c):  # (found and referenced in one pass)
            r = refs.get(k)
            if r is None:
                break
            if r == 0:
                del lru[k]
                back += 1
            refs[k] = r + 1
            n += 1
        self.lru_blocks -= back * c
        return n * c

    def spare(self, prefix: Prefix, start: int, blocks: int) -> None:
        """Put the reclaimable chunks among blocks ``start .. blocks - 1`` of ``prefix`` last in
        reclaim order. An admission found them cached behind chunks an earlier call of the
        same iteration is still filling, so it can reference them only after that call's
        allocation; its decision counted them as taken, so that allocation must reclaim other
        chunks first."""
        lru, c = self.lru, prefix.chunk
        if prefix.ranged:
            ch = self.chains.get(prefix.base)
            back = [] if ch is None else ch.with_count(start // c, blocks // c, 0)
            if back:  # (still reclaimable: out of their places, then last)
                assert ch is not None
                k = sum(hi - lo for lo, hi in back)
                self._revive(ch, back)
                self._reclaimable(ch, [range(lo, hi) for lo, hi in back], k)
                self.lru_blocks += c * k
            return
        for k in prefix.keys(start // c, blocks // c):
            if k in lru:
                lru.move_to_end(k)

    def ref(self, prefix: Prefix, blocks: int, start: int = 0) -> None:
        """Reference blocks ``start .. blocks - 1`` of ``prefix`` (all cached)."""
        refs, lru, c = self.refs, self.lru, prefix.chunk
        if prefix.ranged:
            if start // c < blocks // c:
                ch = self.chains.get(prefix.base)
                if ch is None:
                    raise KeyError((prefix.base, start // c))
                self._revive(ch, ch.add(start // c, blocks // c, 1))
            return
        back = 0
        for k in prefix.keys(start // c, blocks // c):
            r = refs[k]
            if r == 0:
                del lru[k]
                back += 1
            refs[k] = r + 1
        self.lru_blocks -= back * c

    def register(self, prefix: Prefix, start: int, end: int) -> int:
        """Turn the caller's private blocks ``start .. end - 1`` of ``prefix`` (whole chunks)
        into cached chunks it references; stops at a key another sequence cached first (that
        chunk stays a private duplicate). Returns the blocks registered."""
        refs, size, c = self.refs, self.size, prefix.chunk
        if prefix.ranged:
            a, b = start // c, min(end // c, prefix.chunks(self.bs))
            if a >= b:
                return 0
            ch = self._chain(prefix)
            b = min(b, ch.next_cached(a))
            if b > a:
                ch.insert(a, b, 1)
                self.cached_blocks += (b - a) * c
                return (b - a) * c
            return 0
        n = 0
        for k in prefix.keys(start // c, min(end // c, prefix.chunks(self.bs))):
            if k in refs:
                break
            refs[k] = 1
            size[k] = c
            n += 1
        self.cached_blocks += n * c
        return n * c

    def unref(self, prefix: Prefix, blocks: int, keep: bool = True) -> None:
        """Drop one reference on the first ``blocks``, deepest chunk first. A chunk nobody
        references stays cached (reclaimable) if ``keep`` and caching is on, else is freed."""
        refs, lru, c = self.refs, self.lru, prefix.chunk
        cache = keep and self.caching
        if prefix.ranged:
            if blocks // c:
                ch = self.chains[prefix.base]
                gone = ch.add(0, blocks // c, -1)
                if not gone:
                    return
                if cache:  # reclaimable, the deepest first
                    k = gone[0][1] - gone[0][0] if len(gone) == 1 else sum(hi - lo for lo, hi in gone)
                    self._reclaimable(ch, [range(hi - 1, lo - 1, -1) for lo, hi in reversed(gone)], k)
                    self.lru_blocks += c * k
                else:
                    for lo, hi in reversed(gone):
                        self._forget_range(ch, lo, hi)
            return
        back = 0
        for k in reversed(prefix.keys(0, blocks // c)):
            r = refs[k] - 1
            if r:
                refs[k] = r
            elif cache:
                refs[k] = 0
                lru[k] = None
                back += 1
            else:
                self._forget(k)
        self.lru_blocks += back * c

    def restore(self, prefix: Prefix, blocks: int, keep: int = 0, protect=frozenset()) -> Pin:
        """Bring the first ``blocks`` of ``prefix`` back (reloaded from host memory) as cached
        chunks pinned for the caller, as many leading ones as there is room for while ``keep``
        blocks stay allocatable, reclaiming no chunk in ``protect`` (taken by a decided
        iteration)."""
        if prefix.ranged:
            return Pin(prefix, self._restore_ranged(prefix, blocks, keep, protect), self)
        refs, lru, c = self.refs, self.lru, prefix.chunk
        n = 0
        while n < blocks // c:
            k = prefix.key(n)
            r = refs.get(k)
            if r is None:
                if not self._make_room(c, keep, protect):
                    break
                self.free -= c
                refs[k] = 1
                self.size[k] = c
                self.cached_blocks += c
            else:
                if r == 0:
                    if self.allocatable() - c < keep:
                        break
                    del lru[k]
                    self.lru_blocks -= c
                refs[k] = r + 1
            n += 1
        return Pin(prefix, n * c, self)

    def release_pin(self, pin: Pin, keep: bool = True) -> None:
        if pin.pool is self:  # a pin of a pool lost with its replica holds nothing
            self.unref(pin.prefix, pin.blocks, keep)
        pin.blocks = 0

    def _forget(self, k) -> None:
        del self.refs[k]
        n = self.size.pop(k)
        self.cached_blocks -= n
        self.free += n

    def _evict(self, k=None) -> None:
        """Reclaim the least recently used chunk (or ``k``)."""
        if k is None:
            k, _ = self.lru.popitem(last=False)
        else:
            del self.lru[k]
        n = self.size[k]
        self.lru_blocks -= n
        self.evicted += n
        self._forget(k)
