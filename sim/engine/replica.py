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
takes cumulative times and energies, and schedules one SimPy wake-up at the end
(:func:`~sim.engine.instant.wake_at`, ranked as a timeout). An arrival inside the run re-arms
it at the iteration boundary where a real engine would admit it. Scheduling decisions
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

import math
from bisect import bisect_left, bisect_right
from collections import deque
from typing import Any, Callable, Optional


from sim.engine.call import Call
from sim.engine.core import ReplicaCore
from sim.engine.dclock import DecodeClock
from sim.engine.instant import END_OF_INSTANT, Due, Wake, event_id, instant_over, wake_calls
from sim.engine.kvcache import KvPool, Pin, Prefix
from sim.engine.plan import Plan, Planner, plan_need
from sim.engine.prices import DecodePrices
from sim.engine.scheduler import BATCHERS, BatcherParams, ContinuousScheduler
from sim.models.speculative import SpeculativeCost


class Replica(ReplicaCore):
    """One model instance on ``tp`` devices as a SimPy process: it asks its scheduler for a
    decision, its planner for the run's boundaries, sleeps once per run, commits, and goes
    through its lifecycle (fail, repair, switch off, boot, lend its devices)."""

    def __init__(self, env, index: int, pool: str, perf, power, tp: int, kv_blocks: int, block_size: int,
                 batcher: BatcherParams, recorder, max_context: int, max_run: int = 1 << 15,
                 on_end: Optional[Callable[[Call], None]] = None, cuts: tuple[float, ...] = (),
                 speculative: Optional[SpeculativeCost] = None, prefix_caching: bool = True,
                 prices: Optional[DecodePrices] = None):
        super().__init__(index, pool, tp, kv_blocks, block_size, batcher, recorder, max_context, on_end, cuts,
                         prefix_caching, power.idle_w * tp)
        self.env = env
        self.scheduler: ContinuousScheduler = BATCHERS[batcher.kind](batcher, block_size, speculative)
        self.planner = Planner(perf, power, tp, block_size, max_run, speculative, prices)
        # the running batch kept in aggregate where the scheduler can use it (arrival order, one token per decode)
        self.dc.enabled = batcher.kind == "continuous" and speculative is None and not batcher.priority
        self._plan: Optional[Plan] = None
        self._due: Optional[Due] = None  # a decision put off to the end of this instant
        self._target = 0
        self._version = 0
        self._lend: Optional[tuple] = None  # (seconds, on_grant) asked by a diffusion replica sharing the devices
        self.down_since: Optional[float] = None  # failed (or switched off, booting) at, until back
        self.down_kind = "down"  # step-row kind of the time down: down (failed), off, booting
        self.draining = False  # being switched off: takes no new calls from the router
        self._boundary_calls, self._due_calls = (self._boundary_woken,), (self._due_woken,)  # made once

    # the models the planner prices with (stragglers slow a replica by replacing its model)
    @property
    def perf(self) -> Any: return self.planner.perf
    @perf.setter
    def perf(self, v: Any) -> None: self.planner.perf = v
    @property
    def power(self) -> Any: return self.planner.power
    @power.setter
    def power(self, v: Any) -> None: self.planner.power = v
    @property
    def prices(self) -> Optional[DecodePrices]: return self.planner.prices
    @prices.setter
    def prices(self, v: Optional[DecodePrices]) -> None: self.planner.prices = v

    # ------------------------------------------------------------------ public

    def kv_load(self, t: float) -> float:
        """Blocks in use at time ``t`` plus blocks the waiting calls' prompts need, over the pool size.

        Inside a planned decode run, the iterations finished by ``t`` have grown the
        contexts; they are counted as a per-iteration engine would have them committed.
        """
        used = self.kv.used()
        plan = self._plan
        if plan is not None and plan.steady and (plan.computed is not None or plan.phase is not None):
            done = bisect_right(plan.bounds, t, 1) - 1
            if done:
                used += plan_need(self.block_size, plan, done)
        need = sum(self._blocks_for(c.prompt_tokens + c.generated) for c in self.waiting)
        return (used + need) / self.total_blocks

    def submit(self, call: Call) -> None:
        """A call arrives at this replica now (at ``call.arrival_s``, or later when it is retried
        after a failure elsewhere)."""
        call.replica = self.index
        t = self.env.now
        tokens = call.prompt_tokens + call.output_tokens
        if tokens > self.max_context or -(-tokens // self.block_size) > self.total_blocks:
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
            # (a waiting call the iteration in flight admits stays)
            if (b.priority and call.priority > last.priority
                    and not (self._plan is not None and any(c is last for c, _ in self._plan.decision.admit))):
                shed = self.waiting.pop()
            self._release(shed, final=True)
            self._end_call(shed, "dropped", t)
            self.recorder.event(t, "dropped", self.pool, self.index, shed.call_id, "admission control: queue full")
            if shed is call:
                return
        # with priority scheduling a call that outranks the queue's head or a running call may
        # be taken at once, even behind a blocked queue or into a full batch
        outranks = b.priority and ((self.waiting and call.priority > self.waiting[0].priority)
                                   or (self.running and call.priority > self.running[-1].priority))
        self._enqueue(call)
        if self._lent_until is not None:  # the devices run a diffusion batch: wait for them
            return
        if self._due is not None:  # the decision due at this instant will see this call
            self._due.arrived(event_id(self.env))
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
            i = bisect_left(plan.bounds, t)
            if i == 0:
                self._defer()  # arrived exactly as the run was decided: decide again
            elif i < self._target:
                self._arm(i)
        elif plan.k == 1 and t <= plan.bounds[0]:
            self._defer()  # arrived exactly as a single iteration was decided: decide again

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
        seconds, on_grant = self._lend  # type: ignore[misc]
        self._lend = None
        self._version += 1  # no boundary of an earlier plan fires
        self._plan = None
        self._advance_idle(self.env.now)
        self._lent_until = self.env.now + seconds
        self.env.timeout(seconds).callbacks.append(lambda _ev: self._resume())
        on_grant()

    def _resume(self) -> None:
        self.clock = max(self.clock, self._lent_until)  # type: ignore[type-var,assignment]  # (the diffusion batch's)
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
        m = bisect_right(plan.bounds, self.env.now) - 1  # boundaries <= now
        if m <= 0 or m >= self._target:
            return
        self._commit(plan, m)
        self._plan = self.planner.rest_of_run(plan, m)
        self._target -= m

    def restore(self, prefix: Prefix, blocks: int) -> Pin:
        """Bring a session's blocks back from host memory, pinned, into what the iteration in
        flight leaves; later iterations are decided again with the blocks gone."""
        self.settle()
        plan = self._plan
        if plan is None or self._due is not None:
            return self.kv.restore(prefix, blocks)
        j = bisect_left(plan.bounds, self.env.now)  # iterations done by the first boundary at or after now
        if j == 0:  # decided at this instant: decide again
            pin = self.kv.restore(prefix, blocks)
            self._defer()
            return pin
        if plan.steady:
            need = plan_need(self.block_size, plan, j)
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

    def _cut(self) -> None:
        """Decide again at the first iteration boundary at or after now (as a per-iteration
        engine does at every boundary), because state outside the plan changed."""
        j = bisect_left(self._plan.bounds, self.env.now)  # type: ignore[union-attr]  # (iterations done by then)
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
        self.dc.sync_all(self.running)
        self.dc.ok = False
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
        self.dc.sync_all(self.running)
        self.dc.ok = False
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
            m = bisect_right(plan.bounds, t_end) - 1
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

    def _arm(self, m: int, slot: Optional[int] = None) -> None:
        """Schedule the commit of the first ``m >= 1`` iterations of the current plan (in event
        slot ``slot`` if given, see :class:`~sim.engine.instant.Due`)."""
        self._version = version = self._version + 1
        self._target = m
        # as env.timeout(delay) would schedule it (same time, priority and id order)
        wake_calls(self.env, float(self._plan.bounds[m]), slot, self._boundary_calls, version)  # type: ignore[union-attr]

    def _boundary_woken(self, wake: Wake) -> None:  # an armed boundary's wake-up (tag: the arming's version)
        if wake.tag != self._version:
            return  # superseded by an earlier boundary
        plan, self._plan = self._plan, None
        self._commit(plan, self._target)  # type: ignore[arg-type]
        if self._lend is not None:
            self._grant()
            return
        if instant_over(self.env):  # nothing else happens at this instant
            if self._lent_until is None:  # (_start)
                self._replan()
        else:  # calls may still arrive at this instant (ended calls' clients, other replicas)
            self._defer()

    def _start(self) -> None:
        """Decide now and arm the boundary."""
        if self._lent_until is None:
            self._replan()

    def _replan(self, due: Optional[Due] = None) -> None:
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
        self._arm(plan.k, None if due is None else due.slot(plan, len(self.running) < self.batcher.max_num_seqs))

    def _defer(self) -> None:
        """Drop any decision and decide once, when every event of this instant is processed."""
        self._version += 1  # an armed boundary no longer counts
        self._plan = None
        if (not self.running and not self.waiting) or self._lent_until is not None:
            return
        due = self._due = Due(event_id(self.env), not self.waiting)
        wake_calls(self.env, self.env.now, None, self._due_calls, due, END_OF_INSTANT)  # after the instant's other events

    def _due_woken(self, wake: Wake) -> None: self._decide_due(wake.tag)  # (tag: the Due)

    def _decide_due(self, due: Due) -> None:
        if due is not self._due:
            return  # decided already (end of simulation)
        self._due = None
        if self._lend is not None:
            self._grant()
            return
        self._replan(due)

    def _make_plan(self) -> Optional[Plan]:
        """The next run of iterations, or None when nothing can run: nothing is running and no
        waiting call fits, because pinned KV holds the blocks (see :meth:`release_pin`)."""
        self.plans += 1
        running, dc = self.running, self.dc
        aggregate: Optional[DecodeClock] = dc
        # all running calls decode and fit: decided from the decode clock's aggregates, else call by call
        if (dc.enabled and dc.ready(running) and len(running) <= self.batcher.max_num_batched_tokens
                and (need := dc.need(1)) <= self.kv.allocatable()):
            if not self.waiting:  # (the common case: nothing to walk)
                return self.planner.plan_decoding(self.clock, self.scheduler.decide_decoding(len(running), need),
                                                  running, self.kv, self.spec_step, dc)
        else:
            dc.sync_all(running)
            aggregate = None
        d = self.scheduler.decide(running, self.waiting, self.kv, self.spec_step, aggregate)
        if not d.work and not d.ones and not d.admit and not d.preempt:
            if running or not self._unpin_waiting():
                return None
            d = self.scheduler.decide(running, self.waiting, self.kv, self.spec_step)
            if not d.work and not d.admit:
                return None
        return self.planner.plan(self.clock, d, running, not self.waiting, self.kv, self.spec_step, aggregate)

