"""Autoscaling with power states: replicas switched on and off by a control loop.

A pool with ``autoscale:`` owns ``replicas`` installed replicas; each is in one of four
power states, written to the steps table as the replica's rows:

* ``off``: switched off, drawing nothing (nor does its share of the host);
* ``booting``: loading weights and starting the engine for ``boot_s``, at idle power;
* ``idle`` / busy (``run``, ``single``, ...): serving, as any replica.

A replica being switched off first *drains*: the router stops sending it calls, it finishes
the ones it has, then it is switched off (its KV cache, pinned session KV included, is lost).

Every ``interval_s`` the policy names how many replicas should serve (:meth:`Autoscaler.target`,
clamped to ``[min_replicas, replicas]``); more start booting at once (draining ones are taken
back first: they are warm), fewer are drained once the lower target has held for
``scale_down_delay_s``. Decisions and state changes go to the events table (``scale``,
``boot``, ``ready``, ``drain``, ``off``).
"""

from __future__ import annotations

import math

import numpy as np

from sim import config as C
from sim.errors import ScenarioError
from sim.config.base import step_at
from sim.workloads.arrivals import RateSchedule

GIB = 2**30


def boot_seconds(cfg: C.Autoscale, weight_gib_per_device: float) -> float:
    """Time from switch-on to serving: the engine's start-up plus each device reading its
    share of the weights (in parallel) at ``storage_gb_s``."""
    if cfg.boot_s is not None:
        return cfg.boot_s
    return cfg.startup_s + weight_gib_per_device * GIB / (cfg.storage_gb_s * 1e9)


def pool_rate(world, pool: str, source: str) -> RateSchedule:
    """Arrivals per second the workload classes send to ``pool`` (directly, or through the
    prefill pool it decodes for) as one rate schedule: what a predictive policy knows."""
    sc = world.scenario
    feeders = {pool} | {p.name for p in sc.datacenter.pools if p.decode_pool == pool}
    knots, parts = {0.0}, []
    for c in sc.workload.classes:
        if c.pool not in feeders or c.training is not None:  # (training sends no calls)
            continue
        a, key = c.arrival, f"workload.classes.{c.name}.arrival"
        if isinstance(a, C.ScheduleArrivals):
            s = RateSchedule.of(a, sc.base_dir, key)
            if s.period is not None:
                raise ScenarioError(source, f"datacenter.pools.{pool}.autoscale.policy",
                                    f"policy 'rate' reads class {c.name}'s schedule without period_s only")
        elif hasattr(a, "rate_per_s"):
            s = RateSchedule([0.0], [a.rate_per_s])
        else:
            raise ScenarioError(source, f"datacenter.pools.{pool}.autoscale.policy",
                                f"policy 'rate' needs rates known in advance; class {c.name} has '{a.kind}' arrivals")
        start = c.start_s
        stop = c.stop_s if c.stop_s is not None else math.inf
        parts.append((s, start, stop))
        knots |= {t for t in s.times.tolist()} | {start} | ({stop} if stop < math.inf else set())
    times = np.array(sorted(knots))
    rates = np.zeros(len(times))
    for s, start, stop in parts:
        rates += np.where((times >= start) & (times < stop), s.rate(times), 0.0)
    return RateSchedule(times, rates)


class Autoscaler:
    """The control loop of one pool."""

    def __init__(self, world, pool: C.Pool, spec, replicas: list, serving: list, source: str):
        self.world, self.env, self.recorder = world, world.env, world.recorder
        self.name = pool.name
        self.cfg = cfg = pool.autoscale
        self.replicas = replicas  # installed, in pool order
        self.serving = serving  # the router's list, changed in place
        self.booting: list = []
        self.draining: list = []
        self.boot_s = boot_seconds(cfg, spec.weight_gib)
        self.lead_s = cfg.lead_s if cfg.lead_s is not None else self.boot_s
        self.rate = pool_rate(world, pool.name, source) if cfg.policy == "rate" else None
        self._ttfts: list = []  # TTFTs of the calls finished since the last tick (latency policy)
        self._low_since = None  # since when the target has been below the replicas on
        self._at = {r: i for i, r in enumerate(replicas)}
        # Training on the replicas this pool switches off (sharing policies): ``bounds(now)``
        # gives the (low, high) replicas inference may have; ``lender`` is told of replicas
        # switched off and gives back the ones it holds when inference needs them.
        self.bounds = None
        self.lender = None

    # ------------------------------------------------------------------ policy
    def target(self) -> int:
        """Replicas that should serve now, by the policy, within [min_replicas, replicas]."""
        return self._bounded(max(self.cfg.min_replicas, min(len(self.replicas), self.demand())))

    def demand(self) -> int:
        """Replicas the policy asks for now (not yet clamped to the pool's bounds)."""
        cfg, now = self.cfg, self.env.now
        live = len(self.serving) + len(self.booting)
        p = cfg.policy
        if p == "queue":
            load = sum(r.outstanding for r in self.serving) + sum(r.outstanding for r in self.draining)
            n = math.ceil(load / cfg.target_queue)
        elif p == "utilization":
            up = [r for r in self.serving if r.down_since is None]
            u = float(np.mean([r.kv_load(now) for r in up])) if up else 0.0
            n = math.ceil(len(self.serving) * u / cfg.target_utilization - 1e-9)
        elif p == "latency":
            busy = any(r.outstanding for r in self.serving)
            # no call finished: hold while calls are in flight, else there is no demand
            p90 = float(np.percentile(self._ttfts, 90)) if self._ttfts else (math.nan if busy else 0.0)
            self._ttfts = []
            if math.isnan(p90):
                n = live
            elif p90 > cfg.target_ttft_s:
                n = live + 1
            elif p90 < cfg.scale_down_ratio * cfg.target_ttft_s:
                n = live - 1
            else:
                n = live
        elif p == "schedule":
            s = cfg.schedule
            n = int(step_at(s.times_s, s.replicas, s.period_s, now))
        else:  # rate: the highest rate from now until a replica booted at the next tick would serve
            end = now + cfg.interval_s + self.lead_s
            inside = self.rate.times[(self.rate.times > now) & (self.rate.times < end)]
            peak = float(np.max(self.rate.rate(np.append(inside, now))))
            n = math.ceil(peak / cfg.capacity_rps - 1e-9)
        return n

    def _bounded(self, n: int) -> int:
        """``n`` within the sharing policy's bounds, if a training job shares the pool."""
        if self.bounds is None:
            return n
        lo, hi = self.bounds(self.env.now)
        return max(lo, min(hi, n))

    # ------------------------------------------------------------------ loop
    def start(self) -> None:
        """Switch off the replicas beyond the initial count and start the loop (at t=0)."""
        n = self.cfg.initial_replicas or (self.target() if self.cfg.policy in ("schedule", "rate")
                                          else self.cfg.min_replicas)
        if self.bounds is not None:
            n = self._bounded(n)
        for r in self.replicas[n:]:
            self.serving.remove(r)
            r.switch_off()
        if self.lender is not None:
            self.lender.changed()
        self.env.process(self._loop())

    def _loop(self):
        while True:
            yield self.env.timeout(self.cfg.interval_s)
            for r in list(self.draining):
                self._off_if_empty(r)
            self.scale_to(self.target())

    def scale_to(self, n: int) -> None:
        now = self.env.now
        live = len(self.serving) + len(self.booting)
        if n >= live:
            self._low_since = None
        if n > live:
            self.recorder.event(now, "scale", self.name, -1, -1, f"{live} -> {n} ({self.cfg.policy})")
            for _ in range(n - live):
                if self.draining:  # warm: take it back
                    r = self.draining.pop()
                    r.draining = False
                    self._serve(r)
                    continue
                off = [r for r in self.replicas if r.down_since is not None and r.down_kind == "off"]
                if self.lender is not None:  # a replica training does not hold, else one it gives back
                    got = self.lender.take_back(off)
                    if got is None:
                        break
                    self._boot(*got)
                    continue
                if not off:
                    break
                self._boot(off[0])
        elif n < live:
            if self._low_since is None:
                self._low_since = now
            if now - self._low_since < self.cfg.scale_down_delay_s:
                return
            k = min(live - n, len(self.serving) - (0 if self.bounds is not None else 1))
            if k <= 0:
                return
            self.recorder.event(now, "scale", self.name, -1, -1, f"{live} -> {live - k} ({self.cfg.policy})")
            # drain the replicas with the least work (ties: the highest index)
            for r in sorted(self.serving, key=lambda r: (r.outstanding, -self._at[r]))[:k]:
                self.serving.remove(r)
                r.draining = True
                self.draining.append(r)
                self.recorder.event(now, "drain", self.name, r.index, -1, f"{r.outstanding} calls on it")
                self._off_if_empty(r)

    def _boot(self, r, delay: float = 0.0) -> None:
        """Switch ``r`` on, after ``delay`` (a training job writing its checkpoint on it)."""
        self.booting.append(r)
        if delay > 0:
            self.env.timeout(delay).callbacks.append(lambda _ev: self._switch_on(r))
        else:
            self._switch_on(r)

    def _switch_on(self, r) -> None:
        if self.lender is not None:
            self.lender.booted(r)
        r.boot()
        self.recorder.event(self.env.now, "boot", self.name, r.index, -1, f"{self.boot_s:g} s")
        if self.boot_s == 0:
            self._ready(r)
        else:
            self.env.timeout(self.boot_s).callbacks.append(lambda _ev: self._ready(r))

    def _ready(self, r) -> None:
        self.booting.remove(r)
        r.ready()
        self.recorder.event(self.env.now, "ready", self.name, r.index, -1, "")
        self._serve(r)

    def _serve(self, r) -> None:
        """Put ``r`` back in the router's list, in pool order."""
        i = self._at[r]
        pos = next((j for j, x in enumerate(self.serving) if self._at[x] > i), len(self.serving))
        self.serving.insert(pos, r)

    def _off_if_empty(self, r) -> None:
        if r.draining and r.down_since is None and not r.outstanding:
            self.draining.remove(r)
            r.switch_off()
            self.recorder.event(self.env.now, "off", self.name, r.index, -1, "")
            if self.lender is not None:
                self.lender.changed()

    # ------------------------------------------------------------------ signals
    def call_ended(self, call) -> None:
        """A call of the pool ended: a TTFT for the latency policy, maybe a drained replica."""
        if call.status == "finished" and self.cfg.policy == "latency":
            self._ttfts.append(call.first_token_s - call.arrival_s)
        if call.replica >= 0:
            r = self.world.replicas[call.replica]
            if r.draining:  # switch off once the engine has let go of the call (next event)
                self.env.timeout(0).callbacks.append(lambda _ev: self._off_if_empty(r))
