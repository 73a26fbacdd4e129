"""The replica engine: continuous batching over a paged KV cache, one SimPy event per run.

A :class:`Replica` serves :class:`Call` s the way vLLM's scheduler does. Each
iteration it first gives every running call its next tokens (one for a
decode, a chunk of the prompt for a prefill) under a token budget, allocating
KV blocks and preempting the newest running call (recompute) when the pool runs
out; then, if nothing was preempted, it admits waiting calls in FIFO order while
the budget, the sequence cap and free blocks allow.

The engine never ticks per token. Once every running call is decoding and no
waiting call can be admitted, every later iteration is determined until a call
finishes or the KV pool runs out, so the replica plans that *run* of ``k``
iterations at once: it evaluates the vectorized performance model over the
growing contexts (or slices the prices its pool kept of them, :class:`DecodePrices`),
takes cumulative times and energies, and schedules one SimPy timeout at the end. An arrival inside the run re-arms the timeout at the
iteration boundary where a real engine would admit it. Scheduling decisions
are pure (computed without touching state) and applied only when iterations
are committed, so a decision can be dropped when a call arrives exactly at its
start. ``max_run=1`` gives the per-iteration reference mode through the same
code path; both modes produce identical call tables.

Calls often arrive at the instant a decision is made (a closed-loop client
sends its next call as its previous one finishes; several clients at once).
Such a decision would be made and dropped once per arrival, so when other
events are pending at the instant the replica instead puts the decision off to
one event processed after every other event of the instant, which sees every
call of the instant, and gives its boundary event the place in SimPy's
same-time order that deciding at once would have given it (see :class:`_Due`):
the tables do not change.

With speculative decoding (:mod:`sim.models.speculative`) a decode step verifies
``k + 1`` tokens per decoding call and every decoding call gains the same
integer number of tokens ``g(S)`` at the replica's ``S``-th decode step (an
integer sequence whose mean is the expected tokens per step), so runs stay
vectorized: the gain over a run is a scalar array ``G``.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from simpy.events import NORMAL, Event

from sim.engine.kvcache import KvPool, Pin, Prefix
from sim.models.perf import Batch, IterationCost
from sim.models.speculative import SpeculativeCost, cumulative_gains, gain


class Call:
    """One generation request: the unit the engine serves.

    ``prefix`` (a :class:`~sim.engine.kvcache.Prefix`, or None) names the call's leading KV blocks:
    calls on one replica whose prefixes give a block the same key (the N samples of one
    question, a beam's expansions, an agent session's turns, trace requests with equal prefix
    hashes) share it instead of computing and storing it again. ``retain`` says what happens
    to its keyed blocks when it ends: ``cache`` (stay cached, reclaimable), ``pin`` (held for
    the caller as ``held``, a :class:`~sim.engine.kvcache.Pin`) or ``drop`` (freed). ``pin`` is a Pin
    the call takes over and releases once admitted (the previous turn's KV).
    """

    __slots__ = (
        "call_id", "cls", "pool", "arrival_s", "prompt_tokens", "output_tokens", "priority", "job_id",
        "replica", "admitted_s", "first_token_s", "finish_s", "status", "preemptions",
        "computed", "generated", "blocks", "on_done", "prefix", "shared", "retain", "pin", "held",
        "cached_tokens", "cancelled", "energy_j", "device_s", "session_id", "pre", "kv_transfer_s",
        "done_status",
    )

    def __init__(self, call_id: int, cls: str, pool: str, arrival_s: float, prompt_tokens: int, output_tokens: int,
                 priority: int = 0, job_id: int = -1, on_done: Optional[Callable[["Call"], None]] = None,
                 prefix: Optional[Prefix] = None, retain: str = "cache", pin: Optional[Pin] = None,
                 session_id: int = -1):
        self.call_id = call_id
        self.cls = cls
        self.pool = pool
        self.arrival_s = arrival_s
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.priority = priority
        self.job_id = job_id
        self.on_done = on_done
        self.replica = -1
        self.admitted_s = math.nan
        self.first_token_s = math.nan
        self.finish_s = math.nan
        self.status = ""
        self.preemptions = 0
        self.computed = 0  # tokens whose KV is in the cache
        self.generated = 0  # output tokens sampled so far
        self.blocks = 0  # KV blocks of its context (shared ones included)
        self.prefix = prefix
        self.shared = 0  # leading blocks that are cached blocks it references (the rest are private)
        self.retain = retain
        self.pin = pin
        self.held: Optional[Pin] = None
        self.session_id = session_id
        self.cached_tokens = 0  # prompt tokens served from shared KV, over all admissions
        self.cancelled = False
        self.energy_j = 0.0  # device energy attributed to this call (its share of each iteration)
        self.device_s = 0.0  # device-seconds attributed likewise
        self.pre: Optional["Call"] = None  # disaggregation: the call that prefilled this one on another pool
        self.kv_transfer_s = 0.0  # disaggregation: time its KV cache took to arrive from the prefill replica
        self.done_status = "finished"  # status once all its tokens are out ("prefilled": a prefill-only call)

    @property
    def remaining(self) -> int:
        """Tokens to run through the model before the next token can be sampled."""
        return self.prompt_tokens + self.generated - self.computed


@dataclass(frozen=True)
class BatcherParams:
    """Scheduler knobs (vLLM names)."""

    max_num_batched_tokens: int
    max_num_seqs: int
    chunked: bool  # True: vLLM-v1 mixing of prefill chunks with decodes
    priority: bool = False  # priority scheduling (vLLM --scheduling-policy priority)
    max_waiting: Optional[int] = None  # admission control


@dataclass(slots=True)
class Decision:
    """What one iteration does: work per call, admissions, preemptions (not yet applied)."""

    work: list  # (call, new_tokens) for running calls, in order
    admit: list  # (call, new_tokens) for waiting calls admitted
    preempt: list  # running calls preempted (newest first)
    keep: int  # running calls that stay (running[:keep])
    hits: dict  # id(call) -> blocks an admitted call finds cached
    gain: int = 1  # tokens a decoding call gains this iteration (speculation), before capping at its output
    kv_need: int = 0  # blocks it allocates
    revived: frozenset = frozenset()  # reclaimable cached chunks its admissions take
    decoding: Optional[bool] = None  # every work item is one token of a call past its first (None: not known)


@dataclass(slots=True)
class Plan:
    """A decided run of iterations with their boundary times and energies."""

    decision: Decision
    steady: bool  # a run of pure decode iterations over all running calls
    bounds: np.ndarray  # bounds[0] = start, bounds[i + 1] = end of iteration i
    energy_j: np.ndarray  # per iteration, all devices of the replica
    waiting_empty: bool
    prefill_tokens: int = 0  # per iteration
    decode_tokens: int = 0  # per iteration
    sampled: int = 0  # output tokens produced per iteration
    computed: Optional[np.ndarray] = None  # decode runs: each call's KV tokens at the start
    # speculative decode runs: G (tokens gained after i iterations, i = 0..k), each call's
    # output tokens left at the start, and the output tokens of each iteration
    gains: Optional[np.ndarray] = None
    remaining: Optional[np.ndarray] = None
    gained: Optional[np.ndarray] = None
    kv_need: int = 0  # blocks its iterations will allocate (held back from pins restored meanwhile)

    @property
    def k(self) -> int:
        return len(self.energy_j)


class _Due:
    """A decision put off to the end of the current instant.

    Deciding at once, the replica would re-decide at every call arriving at this
    instant and schedule its boundary event at the last re-decision. Which
    arrival that is follows from the final decision alone (the arrivals only
    join the queue, so every intermediate decision has the same running part,
    and the same head of the queue once it holds a call): a steady run of
    ``k > 1`` iterations means the queue's head could not be admitted, so only
    the first arrival re-decided, and only if the queue was empty and a seat
    free; any other decision was re-made at every arrival. ``origin``, ``first``
    and ``last`` are SimPy event ids taken at those moments: the boundary event
    scheduled under one of them ranks among the events of its own instant (SimPy
    orders them by id) as deciding at once would have ranked it.
    """

    __slots__ = ("origin", "waiting_empty", "first", "last")

    def __init__(self, origin: int, waiting_empty: bool):
        self.origin = origin  # the moment the decision fell due
        self.waiting_empty = waiting_empty  # queue empty at that moment
        self.first = None  # the first call that arrived after it
        self.last = None  # the latest one

    def arrived(self, eid: int) -> None:
        if self.first is None:
            self.first = eid
        self.last = eid

    def slot(self, plan: Plan, seat_free: bool) -> int:
        """Event id under which deciding at once would have scheduled ``plan``'s boundary."""
        if plan.steady and plan.k > 1:
            return self.first if self.first is not None and self.waiting_empty and seat_free else self.origin
        return self.last if self.last is not None else self.origin


# ndarray.sum() and np.cumsum() without their Python wrappers (same reductions)
_sum = np.add.reduce
_cumsum = np.add.accumulate

# SimPy (pinned) orders the events of one instant by priority, then by an id taken from
# ``env._eid`` when each is scheduled; the engine reserves ids and uses a priority below
# every ordinary event's for decisions put off to the end of an instant.
END_OF_INSTANT = NORMAL + 1


def _event_id(env) -> int:
    """Take the next event id from the environment (the same-time order of scheduling)."""
    return next(env._eid)


def _triggered(env) -> Event:
    ev = Event(env)
    ev._ok, ev._value = True, None
    return ev


def _timeout_in_slot(env, delay: float, eid: int) -> Event:
    """A timeout that ranks among the events of its instant as if scheduled when ``eid`` was taken."""
    ev = _triggered(env)
    heapq.heappush(env._queue, (env.now + delay, NORMAL, eid, ev))
    return ev


def _at_end_of_instant(env) -> Event:
    """An event processed after every ordinary event of the current instant, even those
    scheduled after it (by processing other events of the instant)."""
    ev = _triggered(env)
    env.schedule(ev, END_OF_INSTANT)
    return ev


class DecodePrices:
    """Durations and energies of decode iterations, kept for reuse by the replicas of a pool.

    A decode iteration of ``n`` calls that read ``ctx`` KV tokens is priced by elementwise
    functions of ``ctx`` (the contract of the performance and power models that also makes a
    run priced at once equal its iterations priced one by one). A decode run's contexts
    ``S + n, S + 2n, ...`` lie on the progression ``ctx = r + n j`` (``r = S mod n``), so its
    prices are a slice of that progression's prices: each progression is priced once over the
    contexts runs have reached (widened when a run goes beyond them) and then only sliced,
    instead of evaluating the models' ~25 array operations for every run. The values are
    those pricing the run alone gives, bit for bit: same inputs, same elementwise operations.
    """

    MAX_ITERATIONS = 1 << 21  # prices kept (16 bytes each: 32 MiB) before the cache starts afresh
    GROW = 4  # widening a progression also adds a quarter of its length in that direction

    def __init__(self, perf, power, tp: int):
        self.perf, self.power, self.tp = perf, power, tp
        self._lines: dict = {}  # (n, r) -> (j of the first price, durations, energies)
        self._kept = 0  # prices kept, over all progressions

    def run(self, n: int, start: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Durations and energies (read-only) of ``k`` decode iterations of ``n`` calls whose
        KV tokens read are ``start, start + n, ...``."""
        r = start % n
        j = start // n  # start = r + n j
        line = self._lines.get((n, r))
        if line is not None:
            i = j - line[0]
            if i >= 0 and i + k <= len(line[1]):
                return line[1][i: i + k], line[2][i: i + k]
        lo, time_s, energy = self._widen(n, r, j, k, line)
        i = j - lo
        return time_s[i: i + k], energy[i: i + k]

    def _widen(self, n: int, r: int, j: int, k: int, line: Optional[tuple]) -> tuple:
        """The progression's prices over its old range, ``j .. j + k - 1`` and what lies in
        between, plus a margin on the side that grew (fewer widenings as contexts drift)."""
        if line is None:
            lo, hi = j, j + k + k // self.GROW
            parts = [self._price(n, r, lo, hi)]
        else:
            lo, time_s, energy = line
            hi = lo + len(time_s)
            margin = len(time_s) // self.GROW
            new_lo = max(0, min(j, lo - margin)) if j < lo else lo
            new_hi = max(j + k, hi + margin) if j + k > hi else hi
            parts = [(time_s, energy)]
            if new_lo < lo:
                parts.insert(0, self._price(n, r, new_lo, lo))
            if new_hi > hi:
                parts.append(self._price(n, r, hi, new_hi))
            lo, hi = new_lo, new_hi
            self._kept -= len(time_s)
        if self._kept + (hi - lo) > self.MAX_ITERATIONS:  # bounded memory: start afresh
            self._lines.clear()
            self._kept = 0
        time_s = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        energy = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        time_s.flags.writeable = energy.flags.writeable = False  # plans hold views of them
        line = self._lines[(n, r)] = (lo, time_s, energy)
        self._kept += hi - lo
        return line

    def _price(self, n: int, r: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Durations and energies of the decode iterations reading ``r + n j`` KV tokens, ``lo <= j
        < hi`` (one query per call: attention pairs = KV tokens read), by the pool's models."""
        ctx = np.arange(lo, hi, dtype=np.float64) * n + r  # whole numbers: exact
        cost, power = self.power.under_cap(self.perf.cost(Batch(n, n, n, ctx, ctx)))
        return cost.time_s, power * cost.time_s * self.tp


class Replica:
    """One model instance on ``tp`` devices, driven by SimPy timeouts."""

    def __init__(self, env, index: int, pool: str, perf, power, tp: int, kv_blocks: int, block_size: int,
                 batcher: BatcherParams, recorder, max_context: int, max_run: int = 1 << 15,
                 on_end: Optional[Callable[[Call], None]] = None, cuts: tuple[float, ...] = (),
                 speculative: Optional[SpeculativeCost] = None, prefix_caching: bool = True,
                 prices: Optional[DecodePrices] = None):
        self.env = env
        self.index = index  # global replica number (trace column)
        self.index_in_pool = index
        self.pool = pool
        self.perf = perf
        self.power = power
        self.tp = tp
        self.total_blocks = kv_blocks
        self.kv = KvPool(kv_blocks, block_size, prefix_caching)
        self.block_size = block_size
        self.batcher = batcher
        self.recorder = recorder
        self.max_context = max_context
        self.max_run = max_run
        self.on_end = on_end
        self.cuts = cuts
        self.spec = speculative
        self.prices = prices  # decode-run prices shared with the pool's other replicas (made if None)
        self.spec_width = speculative.query_tokens if speculative is not None else 1  # tokens a decode verifies
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
        self._plan: Optional[Plan] = None
        self._due: Optional[_Due] = None  # a decision put off to the end of this instant
        self._target = 0
        self._version = 0
        self._idle_w = power.idle_w * tp
        self._lend: Optional[tuple] = None  # (seconds, on_grant) asked by a diffusion replica sharing the devices
        self._lent_until: Optional[float] = None  # the devices run a diffusion batch until then
        self.down_since: Optional[float] = None  # failed (or switched off, booting) at, until back
        self.down_kind = "down"  # step-row kind of the time down: down (failed), off, booting
        self.draining = False  # being switched off: takes no new calls from the router

    # ------------------------------------------------------------------ public
    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.running)

    def kv_load(self, t: float) -> float:
        """Blocks in use at time ``t`` plus blocks the waiting calls' prompts need, over the pool size.

        Inside a planned decode run, the iterations finished by ``t`` have grown the
        contexts; they are counted as a per-iteration engine would have them committed.
        """
        used = self.kv.used()
        plan = self._plan
        if plan is not None and plan.steady and plan.computed is not None:
            done = int(np.searchsorted(plan.bounds[1:], t, side="right"))
            if done:
                c = plan.computed
                bs = self.block_size
                grow = done if plan.gains is None else np.minimum(plan.gains[done], plan.remaining)
                used += int((-(-(c + grow) // bs) - -(-c // bs)).sum())
        need = sum(self._blocks_for(c.prompt_tokens + c.generated) for c in self.waiting)
        return (used + need) / self.total_blocks

    def submit(self, call: Call) -> None:
        """A call arrives at this replica now (at ``call.arrival_s``, or later when it is retried
        after a failure elsewhere)."""
        call.replica = self.index
        t = self.env.now
        if (call.prompt_tokens + call.output_tokens > self.max_context
                or self._blocks_for(call.prompt_tokens + call.output_tokens) > self.total_blocks):
            self._release(call, final=True)
            self._end_call(call, "dropped", t)
            self.recorder.event(t, "dropped", self.pool, self.index, call.call_id, "does not fit the KV cache or context")
            return
        b = self.batcher
        if b.max_waiting is not None and len(self.waiting) >= b.max_waiting:
            # admission control: the queue is full; a call that outranks the lowest waiting one
            # takes its place (that one is shed), any other is turned away
            shed = call
            last = self.waiting[-1]
            if b.priority and call.priority > last.priority and not self._in_plan(last):
                shed = self.waiting.pop()
            self._release(shed, final=True)
            self._end_call(shed, "dropped", t)
            self.recorder.event(t, "dropped", self.pool, self.index, shed.call_id, "admission control: queue full")
            if shed is call:
                return
        head = self.waiting[0].priority if self.waiting else None
        self._enqueue(call)
        # with priority scheduling a call that outranks the queue's head or a running call may
        # be taken at once, even behind a blocked queue or into a full batch
        outranks = b.priority and ((head is not None and call.priority > head)
                                   or (self.running and call.priority > self.running[-1].priority))
        if self._lent_until is not None:  # the devices run a diffusion batch: wait for them
            return
        if self._due is not None:  # the decision due at this instant will see this call
            self._due.arrived(_event_id(self.env))
            return
        plan = self._plan
        if plan is None:  # idle: start at the arrival
            self._advance_idle(t)
            self._defer()
            return
        if plan.steady and (((plan.waiting_empty or call.pin is not None) and len(self.running) < b.max_num_seqs)
                            or outranks):
            # The iteration boundary at or after the arrival is where it can be admitted (a
            # call behind a blocked queue cannot, unless it brings pinned KV and may pass).
            i = int(np.searchsorted(plan.bounds, t, side="left"))
            if i == 0:
                self._defer()  # arrived exactly as the run was decided: decide again
            elif i < self._target:
                self._arm(i)
        elif plan.k == 1 and t <= plan.bounds[0]:
            self._defer()  # arrived exactly as a single iteration was decided: decide again

    def _in_plan(self, call: Call) -> bool:
        """Whether the iteration decided and in flight admits ``call``."""
        return self._plan is not None and any(c is call for c, _ in self._plan.decision.admit)

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

    def cancel(self, call: Call) -> None:
        """Abort a call (its job no longer needs it), as a client disconnecting would.

        A real engine removes an aborted request between iterations, so the call is taken
        out at the first iteration boundary at or after now: the current run is cut there,
        the call keeps the tokens it generated, and ends as ``cancelled``.
        """
        if call.status or call.cancelled:
            return
        call.cancelled = True
        self._cancels += 1
        if self._due is not None:
            return  # the decision due at this instant removes it
        if self._plan is None:
            self._purge_cancelled()
            return
        self._cut()

    def lend(self, seconds: float, on_grant: Callable[[], None]) -> None:
        """A diffusion replica on the same devices asks for them for ``seconds``: granted at
        once when idle, else at the next iteration boundary (the run is cut there). Calls keep
        arriving and queue; the engine resumes when the batch is over. The batch's energy is
        the diffusion replica's; this replica records nothing for the lent time."""
        self._lend = (seconds, on_grant)
        if self._plan is None and self._due is None:
            self._grant()
        elif self._plan is not None:
            self._cut()

    def _grant(self) -> None:
        seconds, on_grant = self._lend
        self._lend = None
        self._version += 1  # no boundary of an earlier plan fires
        self._plan = None
        self._advance_idle(self.env.now)
        self._lent_until = self.env.now + seconds
        self.env.timeout(seconds).callbacks.append(lambda _ev: self._resume())
        on_grant()

    def _resume(self) -> None:
        self.clock = max(self.clock, self._lent_until)  # the lent time is the diffusion batch's
        self._lent_until = None
        if self._lend is not None:
            self._grant()
        elif self.running or self.waiting:
            self._defer()

    def settle(self) -> None:
        """Apply the iterations of the run in flight that have ended by now, keeping the rest of
        the run, so that the KV pool is what a per-iteration engine would show now (callers
        read or change it between iterations: reloads from host memory, pins let go)."""
        plan = self._plan
        if plan is None or self._due is not None or not plan.steady:
            return
        m = int(np.searchsorted(plan.bounds, self.env.now, side="right")) - 1  # boundaries <= now
        if m <= 0 or m >= self._target:
            return
        self._commit(plan, m)
        self._plan = self._rest_of_run(plan, m)
        self._target -= m

    def _rest_of_run(self, plan: Plan, m: int) -> Plan:
        """The iterations of a decode run after its first ``m`` (which were committed)."""
        rest = Plan(plan.decision, True, plan.bounds[m:], plan.energy_j[m:], plan.waiting_empty, plan.prefill_tokens,
                    plan.decode_tokens, plan.sampled)
        if plan.gains is None:
            rest.computed = plan.computed + m
            rest.kv_need = self._run_need(rest.computed, rest.k)
        else:
            g = plan.gains[m]
            rest.computed, rest.remaining = plan.computed + g, plan.remaining - g
            rest.gains, rest.gained = plan.gains[m:] - g, plan.gained[m:]
            rest.kv_need = self._run_need(rest.computed, rest.k, rest.gains, rest.remaining)
        return rest

    def restore(self, prefix: Prefix, blocks: int) -> Pin:
        """Bring a session's blocks back from host memory, pinned, into what the iteration in
        flight leaves; later iterations are decided again with the blocks gone."""
        self.settle()
        plan = self._plan
        if plan is None or self._due is not None:
            return self.kv.restore(prefix, blocks)
        j = self._next_boundary()
        if j == 0:  # decided at this instant: decide again
            pin = self.kv.restore(prefix, blocks)
            self._defer()
            return pin
        if plan.steady:
            need = self._run_need(plan.computed, j, plan.gains, plan.remaining)
        else:
            need = plan.kv_need
        pin = self.kv.restore(prefix, blocks, keep=need, protect=plan.decision.revived)
        if j < self._target:
            self._arm(j)
        return pin

    def release_pin(self, pin: Pin) -> None:
        """A caller lets go of KV it pinned: a waiting call may fit at the next boundary, and a
        replica stalled on those blocks starts again."""
        if pin.pool is not self.kv:  # lost with a failure
            return
        self.settle()
        self.kv.release_pin(pin)
        if not self.waiting or self._due is not None:
            return
        if self._plan is None:
            self._advance_idle(self.env.now)
            self._defer()
        else:
            self._cut()

    def _next_boundary(self) -> int:
        """Iterations of the current plan done by the first boundary at or after now."""
        return int(np.searchsorted(self._plan.bounds, self.env.now, side="left"))

    def _cut(self) -> None:
        """Decide again at the first iteration boundary at or after now (as a per-iteration
        engine does at every boundary), because state outside the plan changed."""
        j = self._next_boundary()
        if j == 0:
            self._defer()
        elif j < self._target:
            self._arm(j)

    def finish(self, t_end: float) -> None:
        """End of simulation at ``t_end``: commit what is done, cut the rest, time out the calls."""
        if self.down_since is not None:
            self._close_down(self._idle_w if self.down_kind == "booting" else 0.0, t_end)
            return
        self._stop(t_end)
        self._advance_idle(t_end)
        for c in list(self.running) + list(self.waiting):
            self._release(c, final=True)
            self._end_call(c, "cancelled" if c.cancelled else "timed-out", math.nan)
        self.running.clear()
        self.waiting.clear()

    def fail(self) -> list[Call]:
        """The devices fail now: the iteration in flight is lost, the KV cache (pins included)
        is gone, and every call on the replica is handed back, reset to start again, for the
        caller to retry elsewhere or fail. The replica is down until :meth:`repair`."""
        now = self.env.now
        self._stop(now)
        self._advance_idle(now)  # up (idle) until now; down from now
        self._lend = None
        calls = list(self.running) + list(self.waiting)
        for c in calls:
            c.computed = c.blocks = c.shared = c.generated = 0
            c.pin = c.held = None
            c.admitted_s = c.first_token_s = math.nan
        self.running, self.waiting = [], deque()
        self._cancels = 0
        self.kv = KvPool(self.total_blocks, self.block_size, self.kv.caching)
        self.down_since = now
        return calls

    @staticmethod
    def end_unserved(call: Call, recorder, on_end, t: float, status: str = "failed") -> None:
        """A call no replica can take (its whole pool is down) fails at once (or ends as
        ``status`` on its way to one)."""
        call.status, call.finish_s = status, t
        recorder.call(call)
        on_end(call)
        if call.on_done is not None:
            call.on_done(call)

    def end_failed(self, call: Call) -> None:
        """End a call handed back by :meth:`fail` as ``failed`` (no retry)."""
        self._end_call(call, "failed", self.env.now)

    def repair(self) -> None:
        """Back in service now, empty (its downtime draws no power)."""
        self._close_down(0.0)
        self.down_since = None
        self.down_kind = "down"

    def switch_off(self) -> None:
        """Switched off by the autoscaler (empty, drained): the KV cache (pins included) is
        gone and the devices draw nothing until :meth:`boot`."""
        assert not self.outstanding, "only an empty replica is switched off"
        self.fail()
        self.down_kind = "off"
        self.draining = False

    def boot(self) -> None:
        """Switched on: loading weights and starting the engine, at idle power, until :meth:`ready`."""
        self._close_down(0.0)
        self.down_kind = "booting"

    def ready(self) -> None:
        """Booted: serving from now."""
        self._close_down(self._idle_w)
        self.down_since = None
        self.down_kind = "down"

    def _close_down(self, device_w: float, t: Optional[float] = None) -> None:
        """Write the step row of the time down until ``t`` (default now), at ``device_w`` for
        the whole replica."""
        now = self.env.now if t is None else t
        if now > self.clock:
            e = device_w * (now - self.clock)
            self._account(self.clock, now, e, busy=False)
            self.recorder.step(self.pool, self.index, self.down_kind, self.clock, now, 0, 0, 0, 0, 0, 0, 0, e)
            self.clock = now

    def _stop(self, t: float) -> None:
        """Commit the iterations done by ``t`` and cut the one in flight there (its energy
        prorated), leaving no plan."""
        if self._due is not None:
            self._decide_due(self._due)
        if self._lent_until is not None:  # a diffusion batch holds the devices: its time is not ours
            self.clock = max(self.clock, min(self._lent_until, t))
            self._lent_until = None
        t_end = t
        plan = self._plan
        if plan is not None:
            m = int(np.searchsorted(plan.bounds, t_end, side="right")) - 1
            m = max(0, min(m, plan.k))
            self._version += 1
            self._commit(plan, m)
            self._plan = None
            if self.clock < t_end and m < plan.k:  # the iteration in flight, cut at t_end
                frac = (t_end - self.clock) / (plan.bounds[m + 1] - plan.bounds[m])
                e = float(plan.energy_j[m]) * frac
                self._account(self.clock, t_end, e, busy=True)
                self.recorder.step(self.pool, self.index, "partial", self.clock, t_end, 0, len(self.running), 0, 0, 0,
                                   len(self.waiting), self.kv.used(), e)
                self.clock = t_end

    # ------------------------------------------------------------------ timing
    def _arm(self, m: int, slot: Optional[int] = None) -> None:
        """Schedule the commit of the first ``m >= 1`` iterations of the current plan (in event
        slot ``slot`` if given, see :class:`_Due`)."""
        self._version += 1
        self._target = m
        version = self._version
        env = self.env
        delay = float(self._plan.bounds[m]) - env.now
        delay = delay if delay > 0 else 0.0
        # as env.timeout(delay) would schedule it (same time, priority and id order)
        ev = _timeout_in_slot(env, delay, next(env._eid) if slot is None else slot)
        ev.callbacks.append(lambda _ev: self._on_boundary(version))

    def _on_boundary(self, version: int) -> None:
        if version != self._version:
            return  # superseded by an earlier boundary
        plan, self._plan = self._plan, None
        self._commit(plan, self._target)
        if self._lend is not None:
            self._grant()
            return
        if self.env.peek() > self.env.now:  # nothing else happens at this instant
            self._start()
        else:  # calls may still arrive at this instant (ended calls' clients, other replicas)
            self._defer()

    def _start(self) -> None:
        """Decide now and arm the boundary."""
        if self._lent_until is None:
            self._replan()

    def _replan(self, due: Optional[_Due] = None) -> None:
        """Remove cancelled calls, decide the next run (none if nothing can run) and arm its
        boundary (in the event slot ``due`` assigns, for a decision put off to the end of an
        instant)."""
        if self._cancels:
            self._purge_cancelled()
        self._plan = None
        if not self.running and not self.waiting:
            return
        plan = self._plan = self._make_plan()
        if plan is None:
            return
        if due is None:
            self._arm(plan.k)
        else:
            self._arm(plan.k, due.slot(plan, len(self.running) < self.batcher.max_num_seqs))

    def _defer(self) -> None:
        """Drop any decision and decide once, when every event of this instant is processed."""
        self._version += 1  # an armed boundary no longer counts
        self._plan = None
        if (not self.running and not self.waiting) or self._lent_until is not None:
            return
        due = self._due = _Due(_event_id(self.env), not self.waiting)
        _at_end_of_instant(self.env).callbacks.append(lambda _ev: self._decide_due(due))

    def _decide_due(self, due: _Due) -> None:
        if due is not self._due:
            return  # decided already (end of simulation)
        self._due = None
        if self._lend is not None:
            self._grant()
            return
        self._replan(due)

    def _purge_cancelled(self) -> None:
        """Remove cancelled calls (at a decision, i.e. between iterations)."""
        self._cancels = 0
        gone = [c for c in self.running if c.cancelled] + [c for c in self.waiting if c.cancelled]
        if not gone:
            return
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

    # ------------------------------------------------------------------ scheduling
    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def _decide(self) -> Decision:
        """The next iteration's schedule, computed without changing any state."""
        budget = self.batcher.max_num_batched_tokens
        free = self.kv.allocatable()
        running = self.running
        keep = len(running)
        work, preempt = [], []
        needs = []  # blocks each work item takes
        chunked = self.batcher.chunked
        prefill_first = not chunked and self._admissible_prefill(budget, free)
        bs = self.block_size
        w = self.spec_width
        g = gain(self.spec_step, self.spec.milli_tokens) if w > 1 else 1
        pending: set = set()  # keys this iteration's chunks will fill (a later call can hit them)
        revived: set = set()  # reclaimable cached blocks that admitted calls hit (no longer reclaimable)
        hits: dict = {}
        decoding = True
        i = 0
        while not prefill_first and i < keep and budget > 0:
            c = running[i]
            computed = c.computed
            rem = c.prompt_tokens + c.generated - computed  # c.remaining
            n = (rem if rem <= budget else budget) if chunked else rem
            if n > 1 and c.prefix is not None:
                self._pending(c, computed + n, pending)
            grow = charge = n
            if w > 1 and rem == 1 and c.generated > 0:  # speculative decode: verifies w, gains up to g
                if chunked and budget < w:
                    break
                grow, charge = min(g, c.output_tokens - c.generated), w
            need = -(-(computed + grow) // bs) - c.blocks
            while need > free and keep > i + 1:
                keep -= 1
                victim = running[keep]
                free += self._freed_by(victim)
                preempt.append(victim)
            if need > free:  # not even this call fits alone: preempt it too
                keep -= 1
                free += self._freed_by(c)
                preempt.append(c)
                break
            free -= need
            budget -= charge
            work.append((c, n))
            needs.append(need)
            if decoding and (n != 1 or c.generated <= 0):
                decoding = False
            i += 1
        if self.batcher.priority and self.waiting and keep and not preempt:
            keep, free = self._preempt_for_priority(running, keep, free, budget, work, needs, preempt)
        admit = []
        if not preempt and (chunked or prefill_first):
            seqs = keep
            blocked = False  # a call did not fit: only continuations holding pinned KV may pass it
            for c in self.waiting:
                if budget <= 0 or seqs >= self.batcher.max_num_seqs:
                    break
                if blocked and c.pin is None:
                    continue
                hit, back = 0, ()
                if c.prefix is not None:  # cached blocks it finds; never its last token (as vLLM)
                    hit, back = self.kv.hit(c.prefix, (c.prompt_tokens + c.generated - 1) // bs, pending, revived)
                n = c.remaining - hit * bs
                if chunked:
                    n = min(n, budget)
                elif n > budget and admit:  # whole prompts only; one larger than the budget runs alone
                    break
                need = self._blocks_for(hit * bs + n) - hit + len(back) * (c.prefix.chunk if back else 0)
                if need > free:
                    # FIFO stops here, but a session turn whose KV is pinned needs only its new
                    # tokens and frees the pin once admitted: letting it by keeps pins from
                    # deadlocking the queue
                    if not self._pinned_anywhere():
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
        return Decision(work, admit, preempt, keep, hits, g, max(0, self.kv.allocatable() - free), frozenset(revived),
                        decoding)

    def _unpin_waiting(self) -> bool:
        """Nothing runs and nothing fits because the queued calls' own pinned KV fills the pool:
        their pins fall back to the prefix cache (reclaimable), as a real engine would have to
        evict them. Returns whether there was any."""
        pinned = [c for c in self.waiting if c.pin is not None]
        for c in pinned:
            self.kv.release_pin(c.pin)
            c.pin = None
            self.recorder.event(self.clock, "unpinned", self.pool, self.index, c.call_id, "pool full of pinned KV")
        return bool(pinned)

    def _preempt_for_priority(self, running: list, keep: int, free: int, budget: int, work: list, needs: list,
                              preempt: list) -> tuple[int, int]:
        """Once the running calls have their blocks for this iteration: if the queue's head
        outranks running calls and finds no seat or no blocks for its next chunk, preempt them,
        lowest priority and newest first (the order running calls are kept in), until it would
        fit; it is admitted at the next iteration. Returns the calls kept and the blocks free."""
        head = self.waiting[0]
        n = min(head.remaining, max(budget, 1)) if self.batcher.chunked else head.remaining
        need = self._blocks_for(head.computed + n) - head.blocks
        while keep and running[keep - 1].priority < head.priority and (
                need > free or keep >= self.batcher.max_num_seqs):
            keep -= 1
            victim = running[keep]
            if work and work[-1][0] is victim:  # it had its tokens for this iteration: not any more
                work.pop()
                free += needs.pop()
            free += self._freed_by(victim)
            preempt.append(victim)
        return keep, free

    def _pinned_anywhere(self) -> bool:
        """Whether some waiting call carries a pin (cheap check before skipping ahead)."""
        return any(c.pin is not None for c in self.waiting)

    def _pending(self, c: Call, computed: int, pending: set) -> None:
        """Add the keys of the full prefix blocks ``c`` will have computed to ``pending``."""
        prefix = c.prefix
        ch = prefix.chunk
        pending.update(prefix.keys(c.shared // ch, min(computed // (self.block_size * ch), prefix.chunks(self.block_size))))

    def _freed_by(self, c: Call) -> int:
        """Blocks that preempting ``c`` makes allocatable: its private ones, and cached ones
        only it references (counted as if no other victim shared them)."""
        freed = c.blocks - c.shared
        if c.shared:
            freed += self.kv.referenced(c.prefix, c.shared)
        return freed

    def _admissible_prefill(self, budget: int, free: int) -> bool:
        """Prefill-first batcher: can the head of the queue be admitted now?"""
        if not self.waiting or len(self.running) >= self.batcher.max_num_seqs:
            return False
        c = self.waiting[0]
        return self._blocks_for(c.computed + c.remaining) - c.blocks <= free

    def _make_plan(self) -> Optional[Plan]:
        """The next run of iterations, or None when nothing can run: nothing is running and no
        waiting call fits, because pinned KV holds the blocks (see :meth:`release_pin`)."""
        self.plans += 1
        d = self._decide()
        if not d.work and not d.admit and not d.preempt:
            if self.running or not self._unpin_waiting():
                return None
            d = self._decide()
            if not d.work and not d.admit:
                return None
        steady = (
            self.max_run > 1 and not d.admit and not d.preempt and len(d.work) == len(self.running)
            and (d.decoding if d.decoding is not None else all(n == 1 and c.generated > 0 for c, n in d.work))
        )
        waiting_empty = not self.waiting
        if steady:
            return self._plan_decode_run(d, waiting_empty)
        return self._plan_single(d, waiting_empty)

    def _plan_single(self, d: Decision, waiting_empty: bool) -> Plan:
        tokens = seqs = sampled = 0
        pairs = kv = 0
        prefill = decode = 0
        longest = longest_pairs = 0  # the sequence with the most new tokens (data-parallel attention)
        spec = self.spec
        spec_seqs = spec_ctx = spec_out = 0  # speculative decodes: count, KV tokens, tokens gained
        hits = d.hits
        for c, n in d.work + d.admit:
            if spec is not None and c.remaining == 1 and c.generated > 0:
                spec_seqs += 1
                spec_ctx += c.computed
                spec_out += min(d.gain, c.output_tokens - c.generated)
                continue
            hit = hits.get(id(c), 0) * self.block_size if hits else 0
            computed = c.computed + hit
            tokens += n
            seqs += 1
            if n == c.remaining - hit:
                sampled += 1
            own = n * computed + n * (n + 1) // 2
            pairs += own
            kv += computed + n
            if n > longest:
                longest, longest_pairs = n, own
            if c.remaining == 1 and c.generated > 0:
                decode += 1
            else:
                prefill += n
        if spec is None:
            if self.power.cap_w is None and getattr(self.perf, "scalar_ok", False):  # priced in floats
                cost = self.perf.cost(Batch(tokens, seqs, sampled, float(pairs), float(kv), longest, float(longest_pairs)))
            else:
                cost = self.perf.cost(Batch(tokens, seqs, sampled, np.array([float(pairs)]), np.array([float(kv)]),
                                            longest, float(longest_pairs)))
            return self._priced(d, False, cost, waiting_empty, prefill, decode, sampled)
        cost = spec.step_cost(tokens, seqs, sampled, float(pairs), float(kv), spec_seqs, np.array([float(spec_ctx)]))
        return self._priced(d, False, cost, waiting_empty, prefill, spec_seqs * self.spec_width, sampled + spec_out)

    def _plan_decode_run(self, d: Decision, waiting_empty: bool) -> Plan:
        running = self.running
        n = len(running)
        comps = [c.computed for c in running]
        computed = np.fromiter(comps, dtype=np.int64, count=n)
        spec = self.spec
        if spec is None:
            k = min(min([c.output_tokens - c.generated for c in running]), self.max_run)
            k, need = self._decode_fit(comps, computed, k)
            time_s, energy = self._decode_prices().run(n, sum(comps) + n, k)  # KV tokens read: S + n i
            plan = Plan(d, True, self._bounds(time_s), energy, waiting_empty, 0, n, n, computed=computed, kv_need=need)
            return plan
        remaining_out = np.fromiter([c.output_tokens - c.generated for c in running], dtype=np.int64, count=n)
        shortest = int(remaining_out.min())
        k = min(shortest, self.max_run)
        # every call gains G(i) tokens over the first i iterations (G(i) >= i): the run ends
        # at the iteration where the shortest call is done, or where the KV pool runs out
        gains = cumulative_gains(self.spec_step, k, spec.milli_tokens)
        k = min(int(np.searchsorted(gains, shortest, side="left")), k)
        k = self._iterations_that_fit(computed, k, gains, remaining_out)
        ctx = float(computed.sum()) + n * gains[:k].astype(np.float64)  # KV tokens at each iteration's start
        cost = spec.step_cost(0, 0, 0, 0.0, 0.0, n, ctx)
        plan = self._priced(d, True, cost, waiting_empty, 0, n * self.spec_width, 0)
        gained = n * np.diff(gains[: k + 1])
        gained[-1] = int(np.minimum(gains[k], remaining_out).sum()) - n * int(gains[k - 1])  # finishing calls stop early
        plan.computed, plan.gains, plan.remaining, plan.gained = computed, gains[: k + 1], remaining_out, gained
        plan.kv_need = self._run_need(computed, k, gains, remaining_out)
        return plan

    def _decode_prices(self) -> DecodePrices:
        """The decode prices it was given (its pool's), or prices of its own if it was given none
        or its models are no longer theirs."""
        prices = self.prices
        if prices is None or prices.perf is not self.perf or prices.power is not self.power or prices.tp != self.tp:
            prices = self.prices = DecodePrices(self.perf, self.power, self.tp)
        return prices

    def _bounds(self, time_s: np.ndarray) -> np.ndarray:
        """Iteration boundaries: the clock, then running sums of ``time_s`` from it."""
        bounds = np.empty(len(time_s) + 1)
        bounds[0] = self.clock
        bounds[1:] = time_s
        return _cumsum(bounds, out=bounds)  # (in place)

    def _decode_fit(self, comps: list, computed: np.ndarray, k: int) -> tuple[int, int]:
        """:meth:`_iterations_that_fit` without speculation (every call grows one token per
        iteration), and the blocks beyond those held that the iterations that fit allocate.
        ``comps`` and ``computed``: the running calls' KV tokens (list and array)."""
        free = self.kv.allocatable()
        up = self.block_size - 1
        bs = self.block_size
        if len(comps) <= 64:  # exact integers either way; Python's are cheaper for small batches
            held = sum([(c + up) // bs for c in comps])

            def need(it: int) -> int:  # blocks the first ``it`` iterations allocate (ceil is monotone)
                more = it + up
                return sum([(c + more) // bs for c in comps]) - held
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

    def _iterations_that_fit(self, computed: np.ndarray, k: int, gains: Optional[np.ndarray] = None,
                             remaining: Optional[np.ndarray] = None) -> int:
        """Largest k' <= k such that iterations 0..k'-1 find KV blocks without preemption.

        Each call grows by one token per iteration, or with speculation by ``gains[i]`` over
        ``i`` iterations, capped at its ``remaining`` output tokens.
        """
        free = self.kv.allocatable()

        def extra(it: int) -> int:  # blocks beyond those held that iteration ``it`` needs
            return self._run_need(computed, it + 1, gains, remaining)

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

    def _run_need(self, computed: np.ndarray, k: int, gains: Optional[np.ndarray] = None,
                  remaining: Optional[np.ndarray] = None) -> int:
        """Blocks beyond those held that the first ``k`` iterations of a decode run allocate."""
        bs = self.block_size
        grow = k if gains is None else np.minimum(gains[k], remaining)
        return int(np.maximum(0, -(-(computed + grow) // bs) - -(-computed // bs)).sum())

    def _priced(self, d: Decision, steady: bool, cost: IterationCost, waiting_empty: bool, prefill: int, decode: int,
                sampled: int) -> Plan:
        cost, power = self.power.under_cap(cost)
        if isinstance(cost.time_s, float):  # one iteration priced in floats: the same arithmetic
            t = cost.time_s
            energy = np.array((power * t * self.tp,))
            bounds = np.array((self.clock, self.clock + t))
        else:
            energy = power * cost.time_s * self.tp
            bounds = self._bounds(cost.time_s)
        return Plan(d, steady, bounds, energy, waiting_empty, prefill, decode, sampled, kv_need=d.kv_need)

    # ------------------------------------------------------------------ commit
    def _commit(self, plan: Plan, m: int) -> None:
        """Apply the first ``m`` iterations of ``plan`` (m = 0 applies nothing)."""
        if m == 0:
            return
        start, end = self.clock, float(plan.bounds[m])
        used_before = self.kv.used()
        waiting_before = len(self.waiting)
        d = plan.decision
        seqs = len(d.work) + len(d.admit)
        energy_m = float(_sum(plan.energy_j[:m])) if m > 1 else float(plan.energy_j[0])  # (the same value)
        cost = (energy_m, (end - start) * self.tp)  # to share among the calls served
        if plan.steady:
            self._commit_decode(m if plan.gains is None else int(plan.gains[m]), end, cost)
            kind = "decode"
        else:
            self._commit_single(d, start, end, cost)
            kind = "prefill" if plan.decode_tokens == 0 else ("decode" if plan.prefill_tokens == 0 else "mixed")
        self.clock = end
        self.iterations += m
        self.runs += 1
        if plan.decode_tokens:
            self.spec_step += m
        first = float(plan.bounds[0])
        for a, b in self._segments(plan.bounds, m, first, end):
            if a == 0 and b == m:  # (the usual single row)
                energy, t_a, t_b = energy_m, first, end
            else:
                energy = float(_sum(plan.energy_j[a:b]))
                t_a, t_b = float(plan.bounds[a]), float(plan.bounds[b])
            self._account(t_a, t_b, energy, busy=True)
            n = b - a
            out = plan.sampled * n if plan.gained is None else int(plan.gained[a:b].sum())
            self.recorder.step(self.pool, self.index, kind, t_a, t_b, n, seqs, plan.prefill_tokens * n,
                               plan.decode_tokens * n, out, waiting_before, used_before, energy)

    def _segments(self, bounds: np.ndarray, m: int, first: float, last: float) -> list[tuple[int, int]]:
        """Split iterations [0, m) (from ``first`` = bounds[0] to ``last`` = bounds[m]) into step
        rows so that the iteration containing a report cut (warm-up end, arrivals end) is a row
        of its own: window metrics then prorate exactly one iteration, as they would in the
        per-iteration mode."""
        edges = [0]
        for cut in self.cuts:
            if first < cut < last:
                e = int(np.searchsorted(bounds[1: m + 1], cut, side="left"))  # iteration containing cut
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
        still, done = [], []
        out = alloc = 0
        share_j, share_s = cost[0] / len(self.running), cost[1] / len(self.running)
        for c in self.running:
            c.energy_j += share_j
            c.device_s += share_s
            left = c.output_tokens - c.generated
            g = grow if grow <= left else left
            out += g
            computed = c.computed = c.computed + g
            c.generated += g
            blocks = -(-computed // bs)
            alloc += blocks - c.blocks
            c.blocks = blocks
            (done if g == left else still).append(c)
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
        still, done = [], []
        worked = {id(c): n for c, n in d.work}
        worked.update((id(c), n) for c, n in d.admit)
        total = sum(worked.values())
        share_j, share_s = (cost[0] / total, cost[1] / total) if total else (0.0, 0.0)
        for c in running:
            n = worked.get(id(c))
            if n is not None:
                c.energy_j += share_j * n
                c.device_s += share_s * n
                if joining and id(c) in joining:
                    self._join(c, joining[id(c)])
                sample = n == c.remaining
                gained = 1
                if sample and n == 1 and c.generated > 0:  # a decode: speculation gains up to d.gain
                    gained = n = min(d.gain, c.output_tokens - c.generated)
                c.computed += n
                blocks = -(-c.computed // self.block_size)
                self.kv.take(blocks - c.blocks)
                c.blocks = blocks
                if c.prefix is not None:  # its full prefix blocks become cached, for others to find
                    c.shared += self.kv.register(c.prefix, c.shared, c.computed // self.block_size)
                if sample:
                    c.generated += gained
                    self.output_tokens += gained
                    if c.generated == 1:
                        c.first_token_s = end
                    if c.generated >= c.output_tokens:
                        done.append(c)
                        continue
            still.append(c)
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
        kv.ref(c.prefix, hit, start=c.shared)
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
                c.held = Pin(c.prefix, c.shared, kv)
            else:
                kv.unref(c.prefix, c.shared, keep=not (final and c.retain == "drop"))
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
