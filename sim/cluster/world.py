"""The SimPy world of one scenario: pools of replicas, routers, workload processes.

:func:`build` checks the scenario against the catalog (hardware and model
names, whether the model fits the device) and wires the components; it raises
:class:`~sim.errors.ScenarioError` with the key path for anything impossible.
:meth:`World.run` runs the simulation to its end and closes every replica.
"""

from __future__ import annotations

import math

import simpy

from sim import rng

from sim.config import Scenario
from sim.engine.call import Call
from sim.engine.prices import DecodePrices
from sim.engine.replica import Replica
from sim.engine.scheduler import BatcherParams
from sim.errors import ScenarioError
from sim.workloads import WORKLOAD_KINDS
from sim.engine.kvcache import Prefix
from sim.engine.diffusion import DiffusionReplica
from sim.cluster.faults import FaultInjector, stragglers
from sim.cluster.autoscale import Autoscaler
from sim.cluster.pools import PoolSpec, resolve_pool  # noqa: F401 (PoolSpec: re-exported)
from sim.cluster.disagg import decode_prefix, resolve_link
from sim.models.power import Tariff
from sim.models.economics import resolve as resolve_economics
from sim.cluster.router import ROUTERS
from sim.workloads.arrivals import OpenLoop, generate_calls, open_loop

def _share_prices(replicas: list) -> None:
    """The stragglers of a pool are slowed alike (the same factor on the same model): give them
    one slowed model and one decode-price cache, instead of one each (a replica whose model is
    not its cache's would price with a cache of its own)."""
    if replicas:
        first = replicas[0]
        prices = DecodePrices(first.perf, first.power, first.tp)
        for r in replicas:
            r.perf, r.prices = first.perf, prices


class World:
    """Pools, routers and workload processes of one scenario in one SimPy environment."""

    def __init__(self, scenario: Scenario, recorder, source: str = "<scenario>"):
        self.scenario = scenario
        self.recorder = recorder
        self.env = simpy.Environment()
        self.specs = [resolve_pool(scenario, i, source) for i in range(len(scenario.datacenter.pools))]
        self.spec_by_name = {s.name: s for s in self.specs}
        dc = scenario.datacenter
        self.tariff = Tariff(dc.pue, dc.energy_usd_per_kwh, dc.carbon_g_per_kwh, dc.carbon_schedule)
        self.rates = resolve_economics(scenario, self.specs, source)  # device $/h, tariff (sim/models/economics.py)
        max_run = 1 if scenario.engine_mode == "per_iteration" else 1 << 15
        self.replicas: list[Replica] = []
        self.routers = {}
        self._pool_replicas: dict = {}
        self._serving: dict = {}  # pool -> replicas its router picks from (in pool order)
        for spec, pool in zip(self.specs, dc.pools):
            reps = []
            # decode prices shared by the pool's replicas (a diffusion pool has no decode runs)
            prices = None if pool.kind == "diffusion" else DecodePrices(spec.perf, spec.power, spec.devices_per_replica)
            for j in range(spec.replicas):
                if pool.kind == "diffusion":
                    r = self._diffusion_replica(spec, pool)
                    r.index_in_pool = j
                    reps.append(r)
                    self.replicas.append(r)
                    continue
                r = Replica(
                    self.env, len(self.replicas), spec.name, spec.perf, spec.power, spec.devices_per_replica, spec.kv_blocks,
                    spec.block_size,
                    BatcherParams(pool.batcher.max_num_batched_tokens, pool.batcher.max_num_seqs,
                                  kind=pool.batcher.kind,
                                  priority=getattr(pool.batcher, "scheduling_policy", "fcfs") == "priority",
                                  max_waiting=getattr(pool.batcher, "max_waiting", None)),
                    recorder, spec.model.max_context_tokens, max_run, on_end=self._call_ended,
                    cuts=(scenario.warmup_s, scenario.duration_s), speculative=spec.speculative,
                    prefix_caching=pool.engine.prefix_caching, prices=prices,
                )
                r.index_in_pool = j
                reps.append(r)
                self.replicas.append(r)
            if pool.kind == "diffusion" and getattr(ROUTERS[pool.router.kind], "needs_kv", False):
                raise ScenarioError(source, f"datacenter.pools.{pool.name}.router.kind",
                                    f"'{pool.router.kind}' routes by KV cache; a diffusion pool has none "
                                    "(use round_robin, random or jsq)")
            router_rng = rng.stream(scenario.seed, scenario.run, f"router/{spec.name}")
            # the router picks among the serving replicas (all, unless an autoscaler changes the list)
            self._serving[spec.name] = serving = list(reps)
            self.routers[spec.name] = ROUTERS[pool.router.kind](serving, router_rng, pool.router)
            self._pool_replicas[spec.name] = reps
        for pool in dc.pools:
            if pool.share_with is not None:  # each diffusion replica borrows its LLM replica's devices
                for d, host in zip(self._pool_replicas[pool.name], self._pool_replicas[pool.share_with]):
                    d.host = host
            if pool.stragglers is not None:
                _share_prices(stragglers(self._pool_replicas[pool.name], pool.stragglers,
                                         rng.stream(scenario.seed, scenario.run, f"stragglers/{pool.name}")))
        self.links = {p.name: resolve_link(p, self.specs[i], self.spec_by_name[p.decode_pool], source)
                      for i, p in enumerate(dc.pools) if p.decode_pool is not None}
        self._in_transfer: dict = {}  # call_id -> call whose KV is on its way to a decode replica
        self._pre_owner: dict = {}  # prefill call_id -> the call it prefills
        self.autoscalers = {p.name: Autoscaler(self, p, self.specs[i], self._pool_replicas[p.name],
                                               self._serving[p.name], source)
                            for i, p in enumerate(dc.pools) if p.autoscale is not None}
        self.injectors = {p.name: FaultInjector(self, p.name, p.faults, rng.stream(scenario.seed, scenario.run,
                                                                                    f"faults/{p.name}"))
                          for p in dc.pools if p.faults is not None}
        self.arrival_seed = scenario.seed  # seeds the arrival streams (a part of a split world keeps the whole's)
        self.calls_created = 0
        self.calls_ended = 0
        self._generators_left = 0
        self._done = self.env.event()
        self._source = source
        for c in scenario.workload.classes:
            a = c.arrival
            if getattr(a, "hash_column", None) and a.hash_tokens % self.spec_by_name[c.pool].block_size:
                raise ScenarioError(source, f"workload.classes.{c.name}.arrival.hash_tokens",
                                    f"{a.hash_tokens} is not a multiple of pool {c.pool}'s block_size "
                                    f"({self.spec_by_name[c.pool].block_size})")
        self.lenders: dict = {}  # pool -> what lends its switched-off replicas to training jobs
        self.t_end = None  # the run's end, once known (the kinds close their units there)
        # reasoning jobs, agent sessions, videos: one plugin per kind the scenario uses
        kinds = [K(self, [c for c in scenario.workload.classes if K.claims(c)]) for K in WORKLOAD_KINDS.values()]
        self.kinds = [k for k in kinds if k.classes]
        self._kind_of = {c.name: k for k in self.kinds for c in k.classes}
        self._prefix_home: dict = {}  # (pool, prefix key) -> [replica, calls of the prefix not ended]

    # ------------------------------------------------------------------ calls
    def make_call(self, cls, t: float, prompt: int, output: int, on_done=None, hashes: tuple | None = None):
        """Create what class ``cls`` sends at exact time ``t``: a call routed to a replica of its
        pool (with ``hashes``, a trace's prefix-block hashes naming its cached chunks), or, for
        a job or session class, a job or session (``output`` unused) whose calls follow."""
        kind = self._kind_of.get(cls.name)
        if kind is not None:
            return kind.start(cls, t, prompt, on_done)
        prefix = None
        if hashes is not None:
            chunk = cls.arrival.hash_tokens // self.spec_by_name[cls.pool].block_size
            prefix = Prefix("trace", prompt, hashes=hashes, chunk=chunk)
        return self.submit(cls.pool, cls.name, t, prompt, output, cls.priority, -1, on_done, prefix)

    def submit(self, pool: str, cls_name: str, t: float, prompt: int, output: int, priority: int = 0, job_id: int = -1,
               on_done=None, prefix: Prefix | None = None, group: bool = False, **call_options) -> Call:
        """Create one call and route it. With ``group`` the calls of one prefix (same
        ``prefix.base``) go where its first call went while any of them is in the pool, so
        they share its KV blocks. ``call_options``: Call's ``retain`` and ``pin``."""
        call = Call(self.calls_created, cls_name, pool, t, prompt, output, priority, job_id, on_done, prefix, **call_options)
        self.calls_created += 1
        sent = call
        if pool in self.links:  # disaggregated: a prefill call runs first, here
            call.pool = self.links[pool].decode_pool
            sent = call.pre = Call(self.calls_created, cls_name, pool, t, prompt, 1, priority, job_id, self._prefilled,
                                   prefix)
            sent.done_status = "prefilled"
            self._pre_owner[sent.call_id] = call
            self.calls_created += 1
        if not group:
            self._send(sent, self.route(pool, sent))
            return call
        key = (pool, prefix.base)
        home = self._prefix_home.get(key)
        if home is None or home[0].down_since is not None or home[0].draining:
            home = self._prefix_home[key] = [self.route(pool, sent), home[1] if home else 0]
        home[1] += 1
        self._send(sent, home[0])
        return call

    # ------------------------------------------------------------------ disaggregation
    def _prefilled(self, pre: Call) -> None:
        """A prefill call ended: on success its KV cache starts moving to a decode replica;
        otherwise the call it served ends as it did."""
        call = self._pre_owner.pop(pre.call_id)
        if pre.status != "prefilled" or call.cancelled:
            status = "cancelled" if call.cancelled else pre.status
            Replica.end_unserved(call, self.recorder, self._call_ended, pre.finish_s, status)
            return
        link = self.links[pre.pool]
        spec = self.spec_by_name[call.pool]
        call.prefix = decode_prefix(call.call_id, call.prompt_tokens, spec.block_size, pre.prefix)
        r = self.route(call.pool, call)
        if r is None:
            Replica.end_unserved(call, self.recorder, self._call_ended, self.env.now)
            return
        r.settle()  # its KV pool as it is now
        refs = r.kv.refs
        missing = sum(1 for k in call.prefix.hashes if k not in refs)
        call.kv_transfer_s = link.transfer_s(missing)
        self._in_transfer[call.call_id] = call
        self.env.timeout(call.kv_transfer_s).callbacks.append(lambda _ev: self._transferred(call, r))

    def _transferred(self, call: Call, r) -> None:
        """The KV cache is on decode replica ``r``: pin it there and hand the call over."""
        del self._in_transfer[call.call_id]
        if call.cancelled:
            Replica.end_unserved(call, self.recorder, self._call_ended, self.env.now, "cancelled")
            return
        if r.down_since is not None or r.draining:  # it failed or is being switched off meanwhile
            r = self.route(call.pool, call)
            if r is None:
                Replica.end_unserved(call, self.recorder, self._call_ended, self.env.now)
                return
        call.pin = r.restore(call.prefix, len(call.prefix.hashes))
        r.submit(call)

    def route(self, pool: str, call):
        """The router's pick among the serving replicas, or, if that replica is down, the
        least-loaded serving replica that is up (None if every one is down, or, when a training
        job has them all, none serves)."""
        if not self._serving[pool]:
            return None
        r = self.routers[pool].pick(call)
        if getattr(r, "down_since", None) is None:
            return r
        up = [x for x in self._serving[pool] if x.down_since is None]
        return min(up, key=lambda x: (x.outstanding, x.index_in_pool)) if up else None

    def _send(self, call: Call, replica) -> None:
        if replica is None:  # the whole pool is down
            Replica.end_unserved(call, self.recorder, self._call_ended, self.env.now)
            return
        replica.submit(call)

    def resubmit(self, call: Call) -> None:
        """A call handed back by a failed replica, sent again from scratch."""
        self._send(call, self.route(call.pool, call))

    def submit_to(self, pool: str, replica, cls_name: str, t: float, prompt: int, output: int, priority: int = 0,
                  job_id: int = -1, on_done=None, prefix: Prefix | None = None, **call_options) -> Call:
        """Create one call and send it to ``replica`` of ``pool`` (session affinity decided by the
        caller; None or a replica that is down: the call fails)."""
        call = Call(self.calls_created, cls_name, pool, t, prompt, output, priority, job_id, on_done, prefix,
                    **call_options)
        self.calls_created += 1
        self._send(call, replica if replica is not None and replica.down_since is None else None)
        return call

    def cancel(self, call: Call) -> None:
        """Abort a call that no longer matters (it ends as ``cancelled`` at its replica's next
        iteration boundary, or, still prefilling or in transfer, when that ends)."""
        if call.status:
            return
        if call.replica < 0:  # disaggregated, not yet on a decode replica
            call.cancelled = True
            if not call.pre.status:
                self.replicas[call.pre.replica].cancel(call.pre)
            return
        self.replicas[call.replica].cancel(call)

    def _call_ended(self, call: Call) -> None:
        self.calls_ended += 1
        scaler = self.autoscalers.get(call.pool)
        if scaler is not None:
            scaler.call_ended(call)
        if call.prefix is not None and (call.pool, call.prefix.base) in self._prefix_home:
            key = (call.pool, call.prefix.base)
            home = self._prefix_home[key]
            home[1] -= 1
            if home[1] == 0:
                del self._prefix_home[key]
        self.check_done()

    # ------------------------------------------------------------------ cost of calls
    def call_cost_usd(self, call: Call) -> float:
        """Device-time and facility-energy cost attributed to one call (rates of sim/models/economics.py:
        device $/h, host power over its device-seconds, tariff over its span, PUE)."""
        own = self.rates.call_cost_usd(call.pool, call.device_s, call.energy_j, call.admitted_s, call.finish_s)
        return own + (self.call_cost_usd(call.pre) if call.pre is not None else 0.0)

    @staticmethod
    def call_energy_j(call: Call) -> float:
        """Device energy attributed to a call, its prefill on another pool included."""
        return call.energy_j + (call.pre.energy_j if call.pre is not None else 0.0)

    # ------------------------------------------------------------------ diffusion
    def _diffusion_replica(self, spec: PoolSpec, pool) -> DiffusionReplica:
        recorder = self.recorder
        return DiffusionReplica(
            self.env, len(self.replicas), spec.name, spec.perf, spec.power, spec.devices_per_replica, pool.max_batch,
            lambda row: recorder.row("videos", row), lambda row: recorder.step(*row[:-1]),
            price_usd_per_device_s=self.rates.devices[spec.name].usd_per_hour / 3600,
            usd_per_j=self.rates.energy_usd(1.0, 0.0, self.scenario.duration_s))  # tariff's mean over the run

    def _streams(self, cls):
        """The class's named random streams (``streams(name)``)."""
        seed = self.arrival_seed
        return lambda name: rng.stream(seed, self.scenario.run, f"workload/{cls.name}/{name}")

    def _generator(self, cls, stop_s: float):
        key = f"workload.classes.{cls.name}"
        yield from generate_calls(self.env, cls, self._streams(cls), self.scenario.base_dir, stop_s, self.make_call, key)
        self._generator_done()

    def _generator_done(self) -> None:
        self._generators_left -= 1
        self.check_done()

    def check_done(self) -> None:
        """End the run once arrivals have stopped and every call and unit has ended."""
        if (self._generators_left == 0 and self.calls_ended == self.calls_created
                and not any(k.busy for k in self.kinds) and not self._done.triggered):
            self._done.succeed()

    def units_created(self, key: str) -> int:
        """Units (jobs, sessions, videos) a workload kind started (0 if the scenario has none)."""
        return sum(k.created for k in self.kinds if k.key == key)

    # ------------------------------------------------------------------ run
    def run(self) -> float:
        """Run to the end (all calls done after arrivals stop, or the drain limit); returns the end time."""
        self.start()
        sc = self.scenario
        horizon = sc.duration_s + sc.drain_s
        self.env.run(until=self.env.any_of([self._done, self.env.timeout(horizon)]))
        t_end = self.env.now if self._done.triggered else horizon
        t_end = max(t_end, max((r.clock for r in self.replicas), default=0.0))
        t_end = max(t_end, sc.duration_s)
        self.finish(t_end)
        return t_end

    def start(self) -> None:
        """Start the arrival processes, the fault injectors and the autoscalers (at time 0)."""
        sc = self.scenario
        classes = sc.workload.classes
        self._generators_left = len(classes)
        for cls in classes:
            if open_loop(cls):  # (the same events, without a process resumed per call)
                OpenLoop(self.env, cls, self._streams(cls), sc.base_dir, sc.duration_s, self.make_call,
                         f"workload.classes.{cls.name}", self._generator_done).start()
            else:
                self.env.process(self._generator(cls, sc.duration_s))
        for name, injector in self.injectors.items():
            for r in self._pool_replicas[name]:
                self.env.process(injector.run(r))
        for scaler in self.autoscalers.values():
            scaler.start()

    def finish(self, t_end: float) -> None:
        """Close every replica at ``t_end``; calls still moving and units still open end as timed out."""
        self.t_end = t_end
        for r in self.replicas:
            r.finish(t_end)
        for call in list(self._in_transfer.values()):  # KV still on its way
            Replica.end_unserved(call, self.recorder, self._call_ended, math.nan, "timed-out")
        self._in_transfer.clear()
        for kind in self.kinds:  # units still open end as timed out
            kind.close()


def build(scenario: Scenario, recorder, source: str = "<scenario>") -> World:
    """Check the scenario against the catalog and wire its world."""
    return World(scenario, recorder, source)
