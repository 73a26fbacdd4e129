"""Decode-iteration prices kept per pool: the performance and power models evaluated once per
context progression and sliced by every decode run of the pool's replicas."""

from __future__ import annotations

from typing import Optional

import numpy as np

from sim.models.perf import Batch


class DecodePrices:
    """Durations and energies of decode iterations, kept for reuse by the replicas of a pool.

    A decode iteration of ``n`` calls that read ``ctx`` KV tokens is priced by elementwise
    functions of ``ctx`` (the contract of the performance and power models that also makes a
    run priced at once equal its iterations priced one by one). A decode run's contexts
    ``S + n, S + 2n, ...`` are kept on *lines*: arithmetic progressions of contexts priced once
    over the range runs have reached (widened when a run goes beyond it) and then only sliced,
    instead of evaluating the models' ~25 array operations for every run. A short run of a
    large batch (``DENSE_CALLS`` calls or more, contexts spanning at most ``DENSE_SPAN``
    tokens) is sliced, every ``n``-th price, from the line of *every* context for ``n`` calls
    (whatever ``S mod n``: one line per batch size, where batches that change size often
    would otherwise price a new progression at nearly every run); any other run from its own
    progression ``ctx = r + n j`` (``r = S mod n``). The
    values are those pricing the run alone gives, bit for bit: same inputs, same elementwise
    operations.
    """

    MAX_ITERATIONS = 1 << 21  # prices kept (16 bytes each: 32 MiB) before the cache starts afresh
    GROW = 4  # widening a line also adds a quarter of its length in that direction
    DENSE_SPAN = 1 << 12  # runs whose contexts span at most this many tokens use the line of every context,
    DENSE_CALLS = 16  # if they have at least this many calls (a small batch has few progressions, often reused)

    def __init__(self, perf, power, tp: int):
        self.perf, self.power, self.tp = perf, power, tp
        self._lines: dict = {}  # (n, step, r) -> (j of the first price, durations, energies); ctx = r + step j
        self._kept = 0  # prices kept, over all lines

    def run(self, n: int, start: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Durations and energies (read-only) of ``k`` decode iterations of ``n`` calls whose
        KV tokens read are ``start, start + n, ...``."""
        span = n * (k - 1) + 1
        if n >= self.DENSE_CALLS and span <= self.DENSE_SPAN:  # every context: every n-th price from ``start``
            key, j, stride = (n, 1, 0), start, n
        else:  # its own progression: consecutive prices
            key, j, stride, span = (n, n, start % n), start // n, 1, k
        line = self._lines.get(key)
        if line is not None:
            i = j - line[0]
            if i >= 0 and i + span <= len(line[1]):
                return line[1][i: i + span: stride], line[2][i: i + span: stride]
        lo, time_s, energy = self._widen(key, j, span, line)
        i = j - lo
        return time_s[i: i + span: stride], energy[i: i + span: stride]

    def _widen(self, key: tuple, j: int, k: int, line: Optional[tuple]) -> tuple:
        """The line's prices over its old range, ``j .. j + k - 1`` and what lies in between,
        plus a margin on the side that grew (fewer widenings as contexts drift)."""
        if line is None:
            lo, hi = j, j + k + k // self.GROW
            parts = [self._price(key, lo, hi)]
        else:
            lo, time_s, energy = line
            hi = lo + len(time_s)
            margin = len(time_s) // self.GROW
            new_lo = max(0, min(j, lo - margin)) if j < lo else lo
            new_hi = max(j + k, hi + margin) if j + k > hi else hi
            parts = [(time_s, energy)]
            if new_lo < lo:
                parts.insert(0, self._price(key, new_lo, lo))
            if new_hi > hi:
                parts.append(self._price(key, hi, new_hi))
            lo, hi = new_lo, new_hi
            self._kept -= len(time_s)
        if self._kept + (hi - lo) > self.MAX_ITERATIONS:  # bounded memory: start afresh
            self._lines.clear()
            self._kept = 0
        time_s = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        energy = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        time_s.flags.writeable = energy.flags.writeable = False  # plans hold views of them
        line = self._lines[key] = (lo, time_s, energy)
        self._kept += hi - lo
        return line

    def _price(self, key: tuple, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Durations and energies of the decode iterations of ``n`` calls reading ``r + step j``
        KV tokens, ``lo <= j < hi`` (one query per call: attention pairs = KV tokens read), by
        the pool's models."""
        n, step, r = key
        ctx = np.arange(lo, hi, dtype=np.float64)  # whole numbers: exact
        if step != 1:
            ctx = ctx * step + r
        cost, power = self.power.under_cap(self.perf.cost(Batch(n, n, n, ctx, ctx)))
        return cost.time_s, power * cost.time_s * self.tp
