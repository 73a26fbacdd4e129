"""The paged KV pool of one replica, with a prefix cache keyed by block identity (pure, no SimPy).

Blocks of ``block_size`` tokens are either free, private to one call, or *cached*: a
block whose content is named by a key, held once however many calls use it. A call's
:class:`Prefix` names its leading blocks (block ``i`` holds the same tokens in every call
whose prefix gives it the same key): the samples of one question share their prompt's
blocks, the turns of an agent session share its history, requests of a trace with equal
prefix hashes share those blocks.

Cached blocks carry a reference count. With caching on (vLLM's ``enable_prefix_caching``,
its default) a block nobody references stays cached in LRU order and is reclaimed only when
an allocation needs it; with caching off it is freed at once. Releasing a sequence puts its
deepest blocks first in line for eviction, so shared prefixes live longest, as in vLLM. A
:class:`Pin` holds references for a caller outside the engine (an agent session keeping
its KV between turns).
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from typing import Optional


class Prefix:
    """Identities of a call's leading KV blocks.

    ``base`` names a private chain: block ``i`` is ``(base, i)`` for the first ``tokens``
    tokens (all of the context by default). With ``hashes`` (one id per ``hash_tokens``
    tokens, as in the Mooncake traces) block ``i`` is ``(hashes[j], i - j * per_hash)``.
    """

    __slots__ = ("base", "tokens", "hashes", "hash_tokens")

    def __init__(self, base, tokens: int = sys.maxsize, hashes: Optional[tuple] = None, hash_tokens: int = 0):
        self.base = base
        self.tokens = tokens
        self.hashes = hashes
        self.hash_tokens = hash_tokens
        if hashes is not None:
            self.tokens = min(tokens, len(hashes) * hash_tokens)

    def blocks(self, block_size: int) -> int:
        """Number of leading full blocks that have a key."""
        return self.tokens // block_size

    def key(self, i: int, block_size: int):
        if self.hashes is None:
            return (self.base, i)
        per = self.hash_tokens // block_size
        j = i // per
        return (self.hashes[j], i - j * per)


class Pin:
    """References on the first ``blocks`` keys of ``prefix``, held outside any call."""

    __slots__ = ("prefix", "blocks")

    def __init__(self, prefix: Prefix, blocks: int):
        self.prefix = prefix
        self.blocks = blocks


class KvPool:
    """Free, private and cached blocks of one replica.

    ``free`` counts blocks holding nothing; cached blocks that nobody references
    (``lru``) are reclaimable, so :meth:`allocatable` is ``free + len(lru)``.
    """

    def __init__(self, total: int, block_size: int, caching: bool = True):
        self.total = total
        self.bs = block_size
        self.caching = caching
        self.free = total
        self.refs: dict = {}  # key -> references (0: cached and reclaimable, in ``lru``)
        self.lru: OrderedDict = OrderedDict()  # reclaimable keys, oldest first
        self.evicted = 0  # cached blocks reclaimed so far

    # ------------------------------------------------------------------ queries
    def allocatable(self) -> int:
        return self.free + len(self.lru)

    def used(self) -> int:
        """Blocks held by calls or pins (not counting reclaimable cached ones)."""
        return self.total - self.free - len(self.lru)

    def hit(self, prefix: Prefix, limit: int, pending: set, revived: set) -> tuple[int, int]:
        """(leading blocks of ``prefix`` found, at most ``limit``; how many of them were
        reclaimable and are not yet in ``revived``, which is updated).

        ``pending`` holds keys that earlier chunks of the same iteration will fill."""
        bs, refs, lru = self.bs, self.refs, self.lru
        n = back = 0
        while n < limit:
            k = prefix.key(n, bs)
            if k in refs:
                if k in lru and k not in revived:
                    revived.add(k)
                    back += 1
            elif k not in pending:
                break
            n += 1
        return n, back

    def referenced(self, prefix: Prefix, blocks: int) -> int:
        """Of the first ``blocks`` keys, how many only this holder references (so releasing
        it would make them reclaimable)."""
        refs, bs = self.refs, self.bs
        return sum(1 for i in range(blocks) if refs[prefix.key(i, bs)] == 1)

    # ------------------------------------------------------------------ changes
    def take(self, n: int) -> None:
        """Allocate ``n`` private blocks (negative: give back), reclaiming cached ones if needed."""
        self.free -= n
        while self.free < 0 and self.lru:
            self._evict()
        if self.free < 0:
            raise RuntimeError(f"KV pool over-committed by {-self.free} blocks")

    def ref_cached(self, prefix: Prefix, blocks: int) -> int:
        """Reference the leading keys among the first ``blocks`` that are cached now; returns
        how many (the rest are filled later in the same iteration)."""
        refs, bs = self.refs, self.bs
        n = 0
        while n < blocks and prefix.key(n, bs) in refs:
            n += 1
        self.ref(prefix, n)
        return n

    def ref(self, prefix: Prefix, blocks: int, start: int = 0) -> None:
        """Reference keys ``start .. blocks - 1`` of ``prefix`` (all cached)."""
        refs, lru, bs = self.refs, self.lru, self.bs
        for i in range(start, blocks):
            k = prefix.key(i, bs)
            r = refs[k]
            if r == 0:
                del lru[k]
            refs[k] = r + 1

    def register(self, prefix: Prefix, start: int, end: int) -> int:
        """Turn the caller's private blocks ``start .. end - 1`` of ``prefix`` into cached
        blocks it references; stops at a key another sequence cached first (that block stays
        a private duplicate). Returns how many were registered."""
        refs, bs = self.refs, self.bs
        end = min(end, prefix.blocks(bs))
        i = start
        while i < end:
            k = prefix.key(i, bs)
            if k in refs:
                break
            refs[k] = 1
            i += 1
        return i - start

    def unref(self, prefix: Prefix, blocks: int, keep: bool = True) -> None:
        """Drop one reference on the first ``blocks`` keys, deepest first. A block nobody
        references stays cached (reclaimable) if ``keep`` and caching is on, else is freed."""
        refs, lru, bs = self.refs, self.lru, self.bs
        cache = keep and self.caching
        for i in range(blocks - 1, -1, -1):
            k = prefix.key(i, bs)
            r = refs[k] - 1
            if r:
                refs[k] = r
            elif cache:
                refs[k] = 0
                lru[k] = None
            else:
                del refs[k]
                self.free += 1

    def drop(self, prefix: Prefix, blocks: int) -> None:
        """Free the reclaimable ones among the first ``blocks`` keys (a dropped session's KV)."""
        refs, lru, bs = self.refs, self.lru, self.bs
        for i in range(blocks):
            k = prefix.key(i, bs)
            if refs.get(k) == 0:
                del refs[k], lru[k]
                self.free += 1

    def restore(self, prefix: Prefix, blocks: int) -> Pin:
        """Bring the first ``blocks`` keys of ``prefix`` back (reloaded from host memory) as
        cached blocks pinned for the caller, as many leading ones as there is room for."""
        refs, lru, bs = self.refs, self.lru, self.bs
        n = 0
        while n < blocks:
            k = prefix.key(n, bs)
            r = refs.get(k)
            if r is None:
                if self.free == 0:
                    if not lru:
                        break
                    self._evict()
                self.free -= 1
                refs[k] = 1
            else:
                if r == 0:
                    del lru[k]
                refs[k] = r + 1
            n += 1
        return Pin(prefix, n)

    def release_pin(self, pin: Pin, keep: bool = True) -> None:
        self.unref(pin.prefix, pin.blocks, keep)
        pin.blocks = 0

    def _evict(self) -> None:
        k, _ = self.lru.popitem(last=False)
        del self.refs[k]
        self.free += 1
        self.evicted += 1
