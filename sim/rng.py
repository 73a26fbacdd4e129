"""Named random streams.

Every component draws from its own ``numpy.random.Generator`` derived from the
scenario's ``(seed, run)`` and a stable stream name, so adding a component (or a
workload class) never shifts the numbers another component sees.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
from numpy.random.bit_generator import ISeedSequence


@functools.lru_cache(maxsize=4096)
def name_key(name: str) -> int:
    """A stream name as a 64-bit spawn-key word (stable across runs and Python versions)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def stream(seed: int, run: int, name: str, *index: int) -> np.random.Generator:
    """Generator for component ``name`` in replication ``run`` of a scenario seeded ``seed``;
    ``index`` (e.g. a job number and a purpose) names a sub-stream of it."""
    seq = np.random.SeedSequence(entropy=[int(seed), int(run)], spawn_key=(name_key(name), *map(int, index)))
    return np.random.Generator(np.random.PCG64(seq))


# numpy's SeedSequence (its published algorithm) in Python integers, for the jobs'
# sub-streams: a job's streams differ only in the last word of their spawn key (the purpose),
# and the jobs of one class only in the word before it (the job's index), so the mixing of
# the words they share is done once (numpy redoes all of it for every stream; that mixing
# and its array handling were most of the ~25 us a Generator cost). The hash constants
# depend only on how many words were mixed before, so they are computed once too.
_MASK32 = 0xFFFFFFFF
_POOL = 4
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715


def _words(n: int) -> list[int]:
    """A non-negative integer as uint32 words, least significant first (0 is one word)."""
    if n < 0:
        raise ValueError("seed words must be non-negative")
    out = [n & _MASK32]
    n >>= 32
    while n:
        out.append(n & _MASK32)
        n >>= 32
    return out


@functools.lru_cache(maxsize=64)
def _chain(h: int, mult: int, n: int) -> tuple[int, ...]:
    """``h`` and the ``n`` hash constants after it (each the last times ``mult``, in 32 bits)."""
    out = [h]
    for _ in range(n):
        out.append((out[-1] * mult) & _MASK32)
    return tuple(out)


def _hashmix(value: int, h: int, h_next: int) -> int:
    """SeedSequence's hashmix of ``value`` under hash constant ``h`` (``h_next`` follows it)."""
    value = ((value ^ h) * h_next) & _MASK32
    return value ^ (value >> 16)


def _mix(x: int, y: int) -> int:
    """SeedSequence's mix of pool word ``x`` with a hashed word ``y``."""
    r = (_MIX_L * x - _MIX_R * y) & _MASK32
    return r ^ (r >> 16)


_STATE_H = _chain(_INIT_B, _MULT_B, 8)  # generate_state's hash constants for 8 words
_STATE_STEPS = tuple((i & 3, _STATE_H[i], _STATE_H[i + 1]) for i in range(8))  # (pool word, h, next h) per output word


class SeedMixer:
    """The entropy pool of ``SeedSequence(entropy=[seed, run], spawn_key=key)`` once the words
    of ``key`` given so far are mixed in; :meth:`extend` mixes in more words and :meth:`seed`
    gives ``generate_state(4, np.uint64)``, bit for bit (tests/test_engine_speed_streams.py
    checks both against numpy)."""

    __slots__ = ("pool", "h")

    def __init__(self, pool: tuple, h: int):
        self.pool, self.h = pool, h  # the four pool words and the next hash constant

    @classmethod
    def of(cls, seed: int, run: int, key: tuple[int, ...] = ()) -> "SeedMixer":
        run_words = _words(int(seed)) + _words(int(run))
        run_words += [0] * (_POOL - len(run_words))  # padded to the pool size when a spawn key follows
        hs = _chain(_INIT_A, _MULT_A, _POOL)
        pool = [_hashmix(w, hs[i], hs[i + 1]) for i, w in enumerate(run_words[:_POOL])]
        h = hs[-1]
        for src in range(_POOL):  # mix all bits together so late bits can affect earlier bits
            for dst in range(_POOL):
                if src != dst:
                    h_next = (h * _MULT_A) & _MASK32
                    pool[dst] = _mix(pool[dst], _hashmix(pool[src], h, h_next))
                    h = h_next
        return cls(tuple(pool), h).extend(*run_words[_POOL:], *key)

    def extend(self, *key: int) -> "SeedMixer":
        """The pool once the words of ``key`` (integers, each one or more uint32 words) are
        mixed, one after the other, into every pool word."""
        pool, h = self.pool, self.h
        for k in key:
            k = int(k)
            if 0 <= k <= _MASK32:  # one word (a job's index, a purpose): _hashmix and _mix written out
                h0, h1, h2, h3, h = _chain(h, _MULT_A, _POOL)
                p0, p1, p2, p3 = pool
                v = ((k ^ h0) * h1) & _MASK32
                r = (_MIX_L * p0 - _MIX_R * (v ^ (v >> 16))) & _MASK32
                p0 = r ^ (r >> 16)
                v = ((k ^ h1) * h2) & _MASK32
                r = (_MIX_L * p1 - _MIX_R * (v ^ (v >> 16))) & _MASK32
                p1 = r ^ (r >> 16)
                v = ((k ^ h2) * h3) & _MASK32
                r = (_MIX_L * p2 - _MIX_R * (v ^ (v >> 16))) & _MASK32
                p2 = r ^ (r >> 16)
                v = ((k ^ h3) * h) & _MASK32
                r = (_MIX_L * p3 - _MIX_R * (v ^ (v >> 16))) & _MASK32
                pool = (p0, p1, p2, r ^ (r >> 16))
                continue
            for w in _words(k):
                hs = _chain(h, _MULT_A, _POOL)
                pool = tuple([_mix(p, _hashmix(w, hs[i], hs[i + 1])) for i, p in enumerate(pool)])
                h = hs[-1]
        return SeedMixer(pool, h)

    def seed(self) -> np.ndarray:
        """What the sequence's ``generate_state(4, np.uint64)`` returns (PCG64's seed)."""
        w = []
        for x, h, h_next in _STATE_STEPS:  # _hashmix(pool[i % 4], hs[i], hs[i + 1]) for i in 0..7
            v = ((self.pool[x] ^ h) * h_next) & _MASK32
            w.append(v ^ (v >> 16))
        return np.array((w[0] | w[1] << 32, w[2] | w[3] << 32, w[4] | w[5] << 32, w[6] | w[7] << 32), dtype=np.uint64)


class MixedSeed(ISeedSequence):
    """A seed sequence whose state is already computed (all PCG64 asks of one)."""

    __slots__ = ("_state",)

    def __init__(self, state: np.ndarray):
        self._state = state

    def generate_state(self, n_words, dtype=np.uint32):
        if n_words != 4 or (dtype is not np.uint64 and np.dtype(dtype) != np.uint64):
            raise ValueError("only PCG64's seeding is precomputed")
        return self._state
