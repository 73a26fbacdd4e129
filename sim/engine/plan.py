"""Run pricing: a decision turned into a run of iterations with their boundary times and energies.

Between two changes of batch membership every iteration is determined, so a decision whose
iterations are all decodes of every running call becomes a *run* of ``k`` iterations priced at
once (the vectorized performance model over the growing contexts, or slices of the pool's
:class:`~sim.engine.prices.DecodePrices`); any other decision is one iteration. ``k`` stops
where the shortest call finishes, where the KV pool runs out, or at ``max_run`` (1: the
per-iteration reference mode). Pure: no SimPy, nothing changed but the price cache.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any, Optional

import numpy as np

from sim.engine.call import Call
from sim.engine.dclock import DecodeClock, phase_need, rotate
from sim.engine.kvcache import KvPool
from sim.engine.prices import DecodePrices
from sim.engine.scheduler import Decision
from sim.models.perf import Batch, IterationCost
from sim.models.speculative import SpeculativeCost, cumulative_gains

# ndarray.sum() and np.cumsum() without their Python wrappers (the same reductions)
_sum = np.add.reduce
_cumsum = np.add.accumulate
# A run of at most this many iterations keeps its boundaries and energies as lists of floats
# (read one at a time and bisected, which lists do faster); a longer one as arrays (built in C).
SHORT_RUN = 32


def pairwise_sum(values: list, lo: int, n: int) -> float:
    """The sum of ``values[lo:lo + n]`` (floats) added in numpy's pairwise order, so it is the
    float ``np.add.reduce`` gives for them (``tests/test_engine_loop.py`` checks it): under 8
    values one by one from 0.0, up to 128 in 8 interleaved partial sums, more by halves. A
    run's energy is a handful of values, which this adds several times faster than numpy."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += values[i]
        return res
    if n <= 128:
        r0, r1, r2, r3, r4, r5, r6, r7 = values[lo: lo + 8]
        i, full, end = lo + 8, lo + n - n % 8, lo + n
        while i < full:
            r0 += values[i]
            r1 += values[i + 1]
            r2 += values[i + 2]
            r3 += values[i + 3]
            r4 += values[i + 4]
            r5 += values[i + 5]
            r6 += values[i + 6]
            r7 += values[i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < end:
            res += values[i]
            i += 1
        return res
    half = n // 2
    half -= half % 8
    return pairwise_sum(values, lo, half) + pairwise_sum(values, lo + half, n - half)


def _short(values: np.ndarray) -> list | np.ndarray:
    """A run's per-iteration values: a list for a short run, else the array (see SHORT_RUN)."""
    return values.tolist() if len(values) <= SHORT_RUN else values


def energy_sum(energy: list | np.ndarray, lo: int, n: int) -> float:
    """The sum of a plan's energies ``lo .. lo + n - 1``: the float ``np.add.reduce`` gives."""
    if type(energy) is list:
        return pairwise_sum(energy, lo, n)
    return float(_sum(energy[lo: lo + n]))


class Plan:
    """A decided run of iterations with their boundary times and energies.

    A plain class (one is made per engine run): the constructor sets what every plan has, the
    planner sets the rest where it applies; the class attributes are their defaults."""

    # decision: Decision
    # steady: bool  a run of pure decode iterations over all running calls
    # bounds: list | np.ndarray  bounds[0] = start, bounds[i + 1] = end of iteration i (increasing: bisect them)
    # energy_j: list | np.ndarray  per iteration, all devices of the replica (summed with energy_sum)
    # k: int  iterations
    # waiting_empty: bool
    # prefill_tokens, decode_tokens, sampled: int  per iteration (sampled: output tokens produced)
    computed: Any = None  # decode runs (an array): each call's KV tokens at the start
    # speculative decode runs: G (tokens gained after i iterations, i = 0..k), each call's
    # output tokens left at the start, and the output tokens of each iteration
    gains: Any = None  # (arrays)
    remaining: Any = None
    gained: Any = None
    kv_need: int = 0  # blocks its iterations will allocate (held back from pins restored meanwhile)
    phase: Optional[list[int]] = None  # decode runs planned in aggregate: calls by KV tokens mod block size, at the start

    def __init__(self, decision: Decision, steady: bool, bounds, energy_j, waiting_empty: bool, prefill_tokens: int = 0,
                 decode_tokens: int = 0, sampled: int = 0, kv_need: int = 0, phase: Optional[list[int]] = None):
        self.decision = decision
        self.steady = steady
        self.bounds = bounds
        self.energy_j = energy_j
        self.k = len(energy_j)
        self.waiting_empty = waiting_empty
        self.prefill_tokens = prefill_tokens
        self.decode_tokens = decode_tokens
        self.sampled = sampled
        self.kv_need = kv_need
        self.phase = phase


def run_need(block_size: int, computed: np.ndarray, k: int, gains: Optional[np.ndarray] = None,
              remaining: Optional[np.ndarray] = None) -> int:
    """Blocks beyond those held that the first ``k`` iterations of a decode run allocate."""
    bs = block_size
    grow = k if gains is None else np.minimum(gains[k], remaining)  # type: ignore[arg-type]
    return int(np.maximum(0, -(-(computed + grow) // bs) - -(-computed // bs)).sum())


def plan_need(block_size: int, plan: Plan, k: int) -> int:
    """Blocks beyond those held that the first ``k`` iterations of a decode ``plan`` allocate."""
    if plan.phase is not None:
        return phase_need(plan.phase, block_size, k)
    return run_need(block_size, plan.computed, k, plan.gains, plan.remaining)


class Planner:
    """Prices the decisions of one replica: its performance and power models on ``tp`` devices,
    speculative decoding if any, and the decode prices it shares with its pool."""

    def __init__(self, perf, power, tp: int, block_size: int, max_run: int,
                 speculative: Optional[SpeculativeCost] = None, prices: Optional[DecodePrices] = None):
        self.perf, self.power, self.tp = perf, power, tp
        self.block_size = block_size
        self.max_run = max_run
        self.spec = speculative
        self.spec_width = speculative.query_tokens if speculative is not None else 1  # tokens a decode verifies
        self.prices = prices  # decode-run prices shared with the pool's other replicas (made if None)

    def plan(self, clock: float, d: Decision, running: list[Call], waiting_empty: bool, kv: KvPool, spec_step: int,
             dclock: Optional[DecodeClock] = None) -> Plan:
        """The run that decision ``d`` starts at ``clock``: many decode iterations when every running
        call just decodes (and ``max_run`` allows), else one iteration. ``dclock``: the replica's
        decode clock, for decisions made in aggregate (``d.ones``)."""
        steady = (
            self.max_run > 1 and not d.admit and not d.preempt and (d.ones or len(d.work)) == len(running)
            and (d.decoding if d.decoding is not None else all(n == 1 and c.generated > 0 for c, n in d.work))
        )
        if steady:
            if d.ones:
                return self._plan_decode_aggregate(clock, d, len(running), waiting_empty, kv, dclock)  # type: ignore[arg-type]
            return self._plan_decode_run(clock, d, running, waiting_empty, kv, spec_step)
        return self._plan_single(clock, d, waiting_empty, running, dclock)

    def plan_decoding(self, clock: float, d: Decision, running: list[Call], kv: KvPool, spec_step: int,
                      dclock: DecodeClock) -> Plan:
        """:meth:`plan` for a decision made in aggregate with nothing waiting (every running call
        decodes one token): a decode run, unless ``max_run`` is 1."""
        if self.max_run > 1:
            return self._plan_decode_aggregate(clock, d, len(running), True, kv, dclock)
        return self.plan(clock, d, running, True, kv, spec_step, dclock)

    def rest_of_run(self, plan: Plan, m: int) -> Plan:
        """The iterations of a decode run after its first ``m`` (which were committed)."""
        rest = Plan(plan.decision, True, plan.bounds[m:], plan.energy_j[m:], plan.waiting_empty, plan.prefill_tokens,
                    plan.decode_tokens, plan.sampled)
        if plan.phase is not None:
            rest.phase = rotate(plan.phase, m, self.block_size)
            rest.kv_need = phase_need(rest.phase, self.block_size, rest.k)
        elif plan.gains is None:
            rest.computed = plan.computed + m
            rest.kv_need = run_need(self.block_size, rest.computed, rest.k)
        else:
            g = plan.gains[m]
            rest.computed, rest.remaining = plan.computed + g, plan.remaining - g
            rest.gains, rest.gained = plan.gains[m:] - g, plan.gained[m:]
            rest.kv_need = run_need(self.block_size, rest.computed, rest.k, rest.gains, rest.remaining)
        return rest

    def _plan_single(self, clock: float, d: Decision, waiting_empty: bool, running: list[Call],
                     dclock: Optional[DecodeClock]) -> Plan:
        tokens = seqs = sampled = 0
        pairs = kv = 0
        prefill = decode = 0
        longest = longest_pairs = 0  # the sequence with the most new tokens (data-parallel attention)
        if d.ones:  # the first ``ones`` running calls decode one token each: their sums at once
            n = d.ones
            tokens = seqs = sampled = decode = n
            assert dclock is not None
            pairs = kv = dclock.S + n  # each reads its KV tokens and its new one
            longest, longest_pairs = 1, dclock.first_computed(running[0]) + 1
        spec = self.spec
        spec_seqs = spec_ctx = spec_out = 0  # speculative decodes: count, KV tokens, tokens gained
        hits = d.hits
        bs = self.block_size
        for c, n in (d.work + d.admit if d.admit else d.work):
            generated, computed = c.generated, c.computed
            remaining = c.prompt_tokens + generated - computed  # c.remaining
            decoding = remaining == 1 and generated > 0
            if spec is not None and decoding:
                spec_seqs += 1
                spec_ctx += computed
                spec_out += min(d.gain, c.output_tokens - generated)
                continue
            hit = hits.get(id(c), 0) * bs if hits else 0
            computed += hit
            tokens += n
            seqs += 1
            if n == remaining - hit:
                sampled += 1
            own = n * computed + n * (n + 1) // 2
            pairs += own
            kv += computed + n
            if n > longest:
                longest, longest_pairs = n, own
            if decoding:
                decode += 1
            else:
                prefill += n
        if spec is None:
            if self.power.cap_w is None and getattr(self.perf, "scalar_ok", False):
                # priced in floats (the model's typed path; uncapped, under_cap is busy_w)
                t, f, b, _, comm, stall, seq = self.perf.cost_one(tokens, seqs, sampled, float(pairs), float(kv),
                                                                  longest, float(longest_pairs))
                power = self.power.busy_w(t, f, b, 1.0, None, comm, stall, seq)
                return Plan(d, False, [clock, clock + t], [float(power * t * self.tp)], waiting_empty, prefill, decode,
                            sampled, d.kv_need)
            cost = self.perf.cost(Batch(tokens, seqs, sampled, np.array([float(pairs)]), np.array([float(kv)]),
                                        longest, float(longest_pairs)))
            return self._priced(clock, d, False, cost, waiting_empty, prefill, decode, sampled)
        cost = spec.step_cost(tokens, seqs, sampled, float(pairs), float(kv), spec_seqs, np.array([float(spec_ctx)]))
        return self._priced(clock, d, False, cost, waiting_empty, prefill, spec_seqs * self.spec_width, sampled + spec_out)

    def _plan_decode_run(self, clock: float, d: Decision, running: list[Call], waiting_empty: bool, kv: KvPool,
                         spec_step: int) -> Plan:
        n = len(running)
        comps = [c.computed for c in running]
        computed = np.fromiter(comps, dtype=np.int64, count=n)
        spec = self.spec
        if spec is None:
            k = min(min([c.output_tokens - c.generated for c in running]), self.max_run)
            k, need = self._decode_fit(kv, comps, computed, k)
            time_s, energy = self._decode_prices().run(n, sum(comps) + n, k)  # KV tokens read: S + n i
            plan = Plan(d, True, self._bounds(clock, time_s), _short(energy), waiting_empty, 0, n, n, need)
            plan.computed = computed
            return plan
        remaining_out = np.fromiter([c.output_tokens - c.generated for c in running], dtype=np.int64, count=n)
        shortest = int(remaining_out.min())
        k = min(shortest, self.max_run)
        # every call gains G(i) tokens over the first i iterations (G(i) >= i): the run ends
        # at the iteration where the shortest call is done, or where the KV pool runs out
        gains = cumulative_gains(spec_step, k, spec.milli_tokens)
        k = min(int(np.searchsorted(gains, shortest, side="left")), k)
        k = self._iterations_that_fit(kv, computed, k, gains, remaining_out)
        ctx = float(computed.sum()) + n * gains[:k].astype(np.float64)  # KV tokens at each iteration's start
        cost = spec.step_cost(0, 0, 0, 0.0, 0.0, n, ctx)
        plan = self._priced(clock, d, True, cost, waiting_empty, 0, n * self.spec_width, 0)
        gained = n * np.diff(gains[: k + 1])
        gained[-1] = int(np.minimum(gains[k], remaining_out).sum()) - n * int(gains[k - 1])  # finishing calls stop early
        plan.computed, plan.gains, plan.remaining, plan.gained = computed, gains[: k + 1], remaining_out, gained
        plan.kv_need = run_need(self.block_size, computed, k, gains, remaining_out)
        return plan

    def _plan_decode_aggregate(self, clock: float, d: Decision, n: int, waiting_empty: bool, kv: KvPool,
                               dclock: DecodeClock) -> Plan:
        """:meth:`_plan_decode_run` from the decode clock's aggregates (no speculation): the run
        ends where the first call finishes or the pool runs out, found without a pass over the calls."""
        k = min(dclock.left(), self.max_run)
        phase = dclock.phase()
        bs = self.block_size
        free = kv.allocatable()
        need = phase_need(phase, bs, k)
        if need > free:
            lo, hi = 0, k - 1  # need(lo + 1) <= free < need(hi + 1), as in _decode_fit
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if phase_need(phase, bs, mid + 1) <= free:
                    lo = mid
                else:
                    hi = mid
            k, need = lo + 1, phase_need(phase, bs, lo + 1)
        time_s, energy = self._decode_prices().run(n, dclock.S + n, k)  # KV tokens read: S + n i
        return Plan(d, True, self._bounds(clock, time_s), _short(energy), waiting_empty, 0, n, n, need, phase)

    def _decode_prices(self) -> DecodePrices:
        """The decode prices it was given (its pool's), or prices of its own if it was given none
        or its models are no longer theirs."""
        prices = self.prices
        if prices is None or prices.perf is not self.perf or prices.power is not self.power or prices.tp != self.tp:
            prices = self.prices = DecodePrices(self.perf, self.power, self.tp)
        return prices

    @staticmethod
    def _bounds(clock: float, time_s: np.ndarray) -> list | np.ndarray:
        """Iteration boundaries: the clock, then running sums of ``time_s`` from it, added one by
        one in order (the same floats either way): a list for a short run, else an array."""
        if len(time_s) <= SHORT_RUN:
            return list(accumulate(time_s.tolist(), initial=clock))
        bounds = np.empty(len(time_s) + 1)
        bounds[0] = clock
        bounds[1:] = time_s
        return _cumsum(bounds, out=bounds)  # (in place)

    def _decode_fit(self, kv, comps: list, computed: np.ndarray, k: int) -> tuple[int, int]:
        """:meth:`_iterations_that_fit` without speculation (every call grows one token per
        iteration), and the blocks beyond those held that the iterations that fit allocate.
        ``comps`` and ``computed``: the running calls' KV tokens (list and array)."""
        free = kv.allocatable()
        up = self.block_size - 1
        bs = self.block_size
        if len(comps) <= 64:  # exact integers either way; Python's are cheaper for small batches

            def need(it: int) -> int:  # blocks the first ``it`` iterations allocate (ceil is monotone)
                more = it + up
                return sum([(c + more) // bs - (c + up) // bs for c in comps])
        else:
            held = int(_sum((computed + up) // bs))

            def need(it: int) -> int:
                return int(_sum((computed + (it + up)) // bs)) - held

        last = need(k)
        if last <= free:
            return k, last
        lo, hi = 0, k - 1  # need(lo + 1) <= free < need(hi + 1)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if need(mid + 1) <= free:
                lo = mid
            else:
                hi = mid
        return lo + 1, need(lo + 1)

    def _iterations_that_fit(self, kv, computed: np.ndarray, k: int, gains: Optional[np.ndarray] = None,
                             remaining: Optional[np.ndarray] = None) -> int:
        """Largest k' <= k such that iterations 0..k'-1 find KV blocks without preemption.

        Each call grows by one token per iteration, or with speculation by ``gains[i]`` over
        ``i`` iterations, capped at its ``remaining`` output tokens.
        """
        free = kv.allocatable()

        def extra(it: int) -> int:  # blocks beyond those held that iteration ``it`` needs
            return run_need(self.block_size, computed, it + 1, gains, remaining)

        if extra(k - 1) <= free:
            return k
        lo, hi = 0, k - 1  # extra(lo) <= free < extra(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if extra(mid) <= free:
                lo = mid
            else:
                hi = mid
        return lo + 1

    def _priced(self, clock: float, d: Decision, steady: bool, cost: IterationCost, waiting_empty: bool, prefill: int, decode: int,
                sampled: int) -> Plan:
        cost, power = self.power.under_cap(cost)
        if isinstance(cost.time_s, float):  # one iteration priced in floats: the same arithmetic
            t = float(cost.time_s)
            energy = [float(power * t * self.tp)]
            bounds = [clock, clock + t]
        else:
            energy = _short(power * cost.time_s * self.tp)
            bounds = self._bounds(clock, cost.time_s)
        return Plan(d, steady, bounds, energy, waiting_empty, prefill, decode, sampled, d.kv_need)
