"""The SimPy world of one scenario: pools of replicas, routers, workload processes.

:func:`build` checks the scenario against the catalog (hardware and model
names, whether the model fits the device) and wires the components; it raises
:class:`~sim.errors.ScenarioError` with the key path for anything impossible.
:meth:`World.run` runs the simulation to its end and closes every replica.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import simpy

from sim import rng

from sim.hardware import catalog
from sim.config import FixedPerf, Scenario
from sim.engine.call import Call
from sim.engine.prices import DecodePrices
from sim.engine.replica import Replica
from sim.engine.scheduler import BatcherParams
from sim.errors import ScenarioError
from sim.workloads.jobs import JobClass, strategy_width
from sim.engine.kvcache import Prefix
from sim.workloads.sessions import SessionClass
from sim.models.diffusion import DiffusionJob, DiffusionPerf, DiffusionReplica, load_card as load_diffusion_card
from sim.cluster.faults import FaultInjector, stragglers
from sim.cluster.autoscale import Autoscaler
from sim.cluster.disagg import decode_prefix, resolve_link
from sim.models.perf import FixedModel, RooflineModel
from sim.models import perf_sram
from sim.models.profile import ProfileModel
from sim.models.power import PowerModel, Tariff
from sim.models.economics import resolve as resolve_economics
from sim.cluster.router import ROUTERS
from sim.models.speculative import resolve as resolve_speculative
from sim.workloads.arrivals import generate_calls

GIB = 2**30
# CUDA context, cuBLAS/NCCL workspaces and captured CUDA graphs per device before
# activations; vLLM v1 counts this "non-torch" memory inside gpu_memory_utilization.
FIXED_RESERVE_BYTES = 1.0 * GIB


@dataclass(frozen=True)
class PoolSpec:
    """Everything resolved about one pool: cards, models, KV pool size."""

    name: str
    key: str  # key path in the scenario, for errors
    acc: catalog.Accelerator
    model: catalog.ModelCard
    tp: int
    pp: int
    replicas: int
    kv_blocks: int
    block_size: int
    weight_gib: float
    kv_gib: float
    perf: object
    power: PowerModel
    host_w_per_device: float
    speculative: object = None  # sim.models.speculative.SpeculativeCost, or None
    shares_devices: bool = False  # a diffusion pool on an LLM pool's devices (counted there)

    @property
    def devices_per_replica(self) -> int:
        return self.tp * self.pp

    @property
    def devices(self) -> int:
        return self.replicas * self.devices_per_replica


def activation_reserve_bytes(model: catalog.ModelCard, tp: int, max_tokens: int, max_seqs: int) -> float:
    """Memory vLLM's profiling pass sets aside for activations of a full token budget:
    MLP intermediate (gate+up) and a few hidden-width buffers per token, fp32 logits of the
    sampled rows, plus the fixed CUDA/NCCL reserve."""
    width = model.moe_intermediate_size * model.experts_per_token if model.is_moe else model.intermediate_size
    per_token = (2 * width / tp + 4 * model.hidden_size) * 2
    logits = max_seqs * model.vocab_size * 4 / tp
    return FIXED_RESERVE_BYTES + max_tokens * per_token + logits


def _host_w(scenario: Scenario, acc) -> float:
    host = scenario.datacenter.host_w_per_device
    return host if host is not None else 0.5 * acc.host_w_per_device_max


def pool_accelerator(pool, source: str) -> catalog.Accelerator:
    """The accelerator card of a pool, with the pool's ``power.tdp_w`` in place of the card's
    when given (a card with no public TDP, or another SKU's power limit)."""
    acc = catalog.accelerator(pool.accelerator, source, f"datacenter.pools.{pool.name}.accelerator")
    tdp = pool.power.tdp_w
    return acc if tdp is None else dataclasses.replace(acc, tdp_w=tdp)


def budget_cap_w(scenario: Scenario, acc, source: str) -> float | None:
    """The per-device cap that keeps the accelerators within ``datacenter.power_budget_w``:
    the budget shared in proportion to TDP over every device (shared pools counted once)."""
    budget = scenario.datacenter.power_budget_w
    if budget is None:
        return None
    tdp = 0.0
    for i, p in enumerate(scenario.datacenter.pools):
        if p.share_with is None:
            tdp += pool_accelerator(p, source).tdp_w * p.replicas * p.tp * p.pp
    return min(acc.tdp_w, budget * acc.tdp_w / tdp)


def _power_model(scenario: Scenario, pool, acc, wdtype: str, source: str, key: str) -> PowerModel:
    """The device power model of a pool: calibration, then the scenario's overrides; a cap (the
    pool's, or its share of the power budget if lower) must lie between a busy idle device and
    TDP."""
    cal = catalog.calibration(acc.name)
    pw = {**cal.power, **{k: v for k, v in pool.power.model_dump().items() if v is not None and k != "tdp_w"}}
    if "idle_w" in pw:
        pw["idle_w_override"] = pw.pop("idle_w")
    share = budget_cap_w(scenario, acc, source)
    cap, cap_key = pool.power_cap_w, f"{key}.power_cap_w"
    if share is not None and (cap is None or share < cap):
        cap, cap_key = share, "datacenter.power_budget_w"
    power = PowerModel(acc, acc.peak_flops(wdtype), cap_w=cap, devices=pool.tp * pool.pp, **pw)
    floor_w = power.active_base_w
    if cap is not None and not floor_w < cap <= acc.tdp_w:
        what = "the budget's share per device" if cap_key == "datacenter.power_budget_w" else "the cap"
        raise ScenarioError(source, cap_key,
                            f"{what}, {cap:g} W, is outside ({floor_w:g} W drawn by a busy device doing no work "
                            f"with the model resident, {acc.tdp_w:g} W TDP] for {acc.name} in pool {pool.name}")
    return power


def resolve_diffusion_pool(scenario: Scenario, pool, acc, source: str, key: str) -> PoolSpec:
    """A diffusion pool: its card, cost model, memory check and power model."""
    card = load_diffusion_card(pool.model, source, f"{key}.model")
    wdtype = pool.weight_dtype or card.weight_dtype
    if pool.pp != 1 or pool.speculative is not None:
        raise ScenarioError(source, key, "a diffusion pool runs tensor parallel only (no pp, no speculative)")
    if card.num_heads % pool.tp:
        raise ScenarioError(source, f"{key}.tp", f"{card.name} has {card.num_heads} heads, not divisible by tp={pool.tp}")
    perf = DiffusionPerf(card, acc, pool.tp, wdtype)
    weights = perf.weight_bytes_device()
    usable = acc.memory_bytes * pool.engine.gpu_memory_utilization
    if weights + FIXED_RESERVE_BYTES > usable:
        raise ScenarioError(source, f"{key}.model", f"{card.name} does not fit on {acc.name} at tp={pool.tp}: weights need "
                                                    f"{weights / GIB:.1f} GiB per device, {usable / GIB:.1f} GiB is usable")
    power = _power_model(scenario, pool, acc, wdtype, source, key)
    return PoolSpec(pool.name, key, acc, None, pool.tp, 1, pool.replicas, 0, pool.engine.block_size, weights / GIB, 0.0,
                    perf, power, _host_w(scenario, acc), shares_devices=pool.share_with is not None)


def _check_power_known(scenario: Scenario, pool, acc, source: str, key: str) -> None:
    """A power cap or budget needs the TDP of every device it covers; cards without a public
    TDP (TPU, Trainium, Inferentia, Cerebras) leave it unknown (NaN)."""
    if math.isnan(acc.tdp_w) and pool.power_cap_w is not None:
        raise ScenarioError(source, f"{key}.power_cap_w", f"{acc.name} has no published TDP, so its power cannot be capped "
                                                          "(give the pool power.tdp_w)")
    if scenario.datacenter.power_budget_w is not None:
        for other in scenario.datacenter.pools:
            if math.isnan(pool_accelerator(other, source).tdp_w):
                raise ScenarioError(source, "datacenter.power_budget_w", f"{other.accelerator} (pool {other.name}) has no "
                                                                         "published TDP, so a power budget cannot be shared")


def resolve_pool(scenario: Scenario, index: int, source: str) -> PoolSpec:
    pool = scenario.datacenter.pools[index]
    key = f"datacenter.pools.{pool.name}"
    acc = pool_accelerator(pool, source)
    # an SRAM-pipeline device (Groq, Cerebras) holds the weights on chip: sim.models.perf_sram, tp = chips
    sram = acc.architecture == "sram_pipeline"
    if sram:
        perf_sram.check_pool(pool, key, source)
    _check_power_known(scenario, pool, acc, source, key)
    if pool.kind == "diffusion":
        return resolve_diffusion_pool(scenario, pool, acc, source, key)
    model = catalog.model(pool.model, source, f"{key}.model")
    # fp8 weights on a device without fp8 math compute in bf16 (Accelerator.peak_flops)
    wdtype = pool.weight_dtype or model.weight_dtype
    if not sram and model.attention != "mla" and model.num_attention_heads % pool.tp != 0:
        raise ScenarioError(source, f"{key}.tp", f"{model.name} has {model.num_attention_heads} attention heads, not divisible by tp={pool.tp}")
    if pool.pp > model.num_layers:
        raise ScenarioError(source, f"{key}.pp", f"pp={pool.pp} exceeds the {model.num_layers} layers of {model.name}")
    p = pool.performance
    cal = catalog.calibration(acc.name)
    # calibrated parameters for the accelerator, then the scenario's explicit overrides
    eff = {**cal.perf, **{k: v for k, v in p.model_dump().items() if k not in ("kind", "path", "network_path")
                          and v is not None}}
    layout = {"pp": pool.pp, "expert_parallel": pool.expert_parallel}
    if pool.attention_dp:
        if not pool.expert_parallel:
            raise ScenarioError(source, f"{key}.attention_dp", "needs expert_parallel: true (the experts are what "
                                "the devices share)")
        if not model.is_moe:
            raise ScenarioError(source, f"{key}.attention_dp", f"{model.name} is a dense model: data-parallel "
                                "attention shares the devices through MoE experts; use replicas instead")
        if sram or p.kind != "roofline":
            raise ScenarioError(source, f"{key}.attention_dp", "data-parallel attention is modelled by the "
                                "roofline performance model only (performance: {kind: roofline})")
        layout["attention_dp"] = True
    roofline = (perf_sram.SramPipelineModel if sram else RooflineModel)(
        model, acc, pool.tp, wdtype, pool.kv_dtype, **layout, **({} if isinstance(p, FixedPerf) else eff))
    perf = FixedModel(p.iteration_s, p.per_token_s) if isinstance(p, FixedPerf) else roofline
    if p.kind == "profile":
        perf = ProfileModel(model, acc, pool.tp, wdtype, pool.kv_dtype, path=p.path, network_path=p.network_path,
                            base_dir=scenario.base_dir, source=source, key=key, **layout, **eff)

    eng, bat = pool.engine, pool.batcher
    usable = acc.memory_bytes * eng.gpu_memory_utilization
    # diffusion models sharing these devices keep their weights resident too
    for guest in scenario.datacenter.pools:
        if guest.share_with == pool.name:
            card = load_diffusion_card(guest.model, source, f"datacenter.pools.{guest.name}.model")
            usable -= DiffusionPerf(card, acc, guest.tp, guest.weight_dtype or card.weight_dtype).weight_bytes_device()
    specu = resolve_speculative(pool, model, acc, wdtype, perf, eff, source, key)  # draft/MTP weights and KV too
    weights = roofline.weight_bytes_device() + (specu.weight_bytes_device if specu else 0.0)
    reserve = (eng.activation_reserve_gib * GIB if eng.activation_reserve_gib is not None
               else 0.0 if sram  # activations stream chip to chip: no CUDA context or workspace
               else activation_reserve_bytes(model, pool.tp, bat.max_num_batched_tokens, bat.max_num_seqs))
    kv_bytes = usable - weights - reserve
    per_block = (roofline.kv_bytes_per_token_device() + (specu.kv_bytes_per_token_device if specu else 0.0)) * eng.block_size
    if kv_bytes < per_block and sram:
        raise ScenarioError(source, f"{key}.tp", perf_sram.fit_message(roofline, usable - reserve, eng.block_size))
    if kv_bytes < per_block:
        raise ScenarioError(
            source, f"{key}.model",
            f"{model.name} does not fit on {acc.name} at tp={pool.tp} pp={pool.pp}: weights need {weights / GIB:.1f} GiB per device "
            f"({wdtype}) plus {reserve / GIB:.1f} GiB activations, but {acc.memory_gib:g} GiB x "
            f"gpu_memory_utilization {eng.gpu_memory_utilization:g} = {usable / GIB:.1f} GiB is usable; "
            "raise tp, use a smaller weight_dtype or a larger device",
        )
    blocks = eng.num_gpu_blocks if eng.num_gpu_blocks is not None else int(kv_bytes // per_block)
    power = _power_model(scenario, pool, acc, wdtype, source, key)
    return PoolSpec(pool.name, key, acc, model, pool.tp, pool.pp, pool.replicas, blocks, eng.block_size, weights / GIB,
                    blocks * per_block / GIB, perf, power, _host_w(scenario, acc), specu)


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
            if pool.kind == "diffusion" and pool.router.kind in ("least_kv", "prefix_affinity"):
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
        self.job_classes = {c.name: JobClass(self, c) for c in scenario.workload.classes if c.job is not None}
        self.jobs_created = 0
        self.jobs_open = 0
        self.open_jobs: dict = {}  # job_id -> (JobClass, Job)
        self.session_classes = {c.name: SessionClass(self, c) for c in scenario.workload.classes if c.session is not None}
        self.sessions_created = 0
        self.open_sessions: dict = {}  # session_id -> (SessionClass, Session)
        self.videos_created = 0
        self.videos_open = 0
        self._prefix_home: dict = {}  # (pool, prefix key) -> [replica, calls of the prefix not ended]

    # ------------------------------------------------------------------ calls
    def make_call(self, cls, t: float, prompt: int, output: int, on_done=None, hashes: tuple | None = None):
        """Create what class ``cls`` sends at exact time ``t``: a call routed to a replica of its
        pool (with ``hashes``, a trace's prefix-block hashes naming its cached chunks), or, for
        a job or session class, a job or session (``output`` unused) whose calls follow."""
        if cls.job is not None:
            return self.job_classes[cls.name].start(t, prompt, on_done)
        if cls.session is not None:
            return self.session_classes[cls.name].start(t, prompt, on_done)
        if cls.video is not None:
            return self._video(cls, t, on_done)
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
        least-loaded serving replica that is up (None if every one is down)."""
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
        self._check_done()

    # ------------------------------------------------------------------ jobs
    def new_job_id(self) -> int:
        self.jobs_created += 1
        return self.jobs_created - 1

    def call_cost_usd(self, call: Call) -> float:
        """Device-time and facility-energy cost attributed to one call (rates of sim/models/economics.py:
        device $/h, host power over its device-seconds, tariff over its span, PUE)."""
        own = self.rates.call_cost_usd(call.pool, call.device_s, call.energy_j, call.admitted_s, call.finish_s)
        return own + (self.call_cost_usd(call.pre) if call.pre is not None else 0.0)

    @staticmethod
    def call_energy_j(call: Call) -> float:
        """Device energy attributed to a call, its prefill on another pool included."""
        return call.energy_j + (call.pre.energy_j if call.pre is not None else 0.0)

    def record_job(self, jc: JobClass, job) -> None:
        """Write a job's row once all its calls have ended (or at the end of the run)."""
        del self.open_jobs[job.job_id]
        self.jobs_open -= 1
        calls = job.calls
        kv_saved = 0.0
        for c in calls:
            if c.cached_tokens:
                spec = self.spec_by_name[c.pool]
                kv_saved += c.cached_tokens * spec.kv_gib * GIB / (spec.kv_blocks * spec.block_size) * spec.devices_per_replica
        s = job.strategy
        budget = getattr(s, "thinking_budget", None) if s is not None else None
        self.recorder.job((
            job.job_id, jc.cls.name, jc.cls.pool, s.kind if s is not None else "", job.level.name if job.level else "",
            job.predicted.name if job.predicted else "", strategy_width(s) if s is not None else 0,
            budget if budget is not None else -1, job.status, job.arrival_s, job.finish_s, job.finish_s - job.arrival_s,
            len(calls), sum(c.status == "cancelled" for c in calls), job.prompt_tokens,
            sum(c.prompt_tokens for c in calls), sum(c.generated for c in calls), job.thinking, job.truncated,
            sum(c.cached_tokens for c in calls), kv_saved, sum(self.call_energy_j(c) for c in calls),
            sum(self.call_cost_usd(c) for c in calls), job.expected, bool(job.right) and job.status == "finished",
        ))
        self._check_done()

    # ------------------------------------------------------------------ diffusion
    def _diffusion_replica(self, spec: PoolSpec, pool) -> DiffusionReplica:
        recorder = self.recorder
        return DiffusionReplica(
            self.env, len(self.replicas), spec.name, spec.perf, spec.power, spec.devices_per_replica, pool.max_batch,
            lambda row: recorder.video(row), lambda row: recorder.step(*row[:-1]),
            price_usd_per_device_s=self.rates.devices[spec.name].usd_per_hour / 3600,
            usd_per_j=self.rates.energy_usd(1.0, 0.0, self.scenario.duration_s))  # tariff's mean over the run

    def _video(self, cls, t: float, on_done=None) -> DiffusionJob:
        """One image / video request, routed to a replica of its diffusion pool."""
        card = self.spec_by_name[cls.pool].perf.card
        v = cls.video
        self.videos_created += 1
        self.videos_open += 1

        def ended(job):
            self.videos_open -= 1
            if on_done is not None:
                on_done(job)
            self._check_done()

        job = DiffusionJob(self.videos_created - 1, cls.name, t, v.frames or card.default_frames,
                           v.steps or card.default_steps, v.resolution_scale, ended)
        self.routers[cls.pool].pick(job).submit(job)
        return job

    # ------------------------------------------------------------------ sessions
    def new_session_id(self) -> int:
        self.sessions_created += 1
        return self.sessions_created - 1

    def host_evicted(self, sc: SessionClass, sid: int) -> None:
        """Session ``sid`` lost its host-memory copy to another session's offload."""
        entry = self.open_sessions.get(sid)
        if entry is not None:
            entry[0].lost_host_copy(entry[1])

    def record_session(self, sc: SessionClass, s) -> None:
        """Write a session's row (it has ended, or the run has)."""
        del self.open_sessions[s.sid]
        spec = sc.pool
        gib = sc.block_bytes / GIB
        devices = spec.devices_per_replica
        # pinned KV keeps a share of its replica's devices from other work: that share of their
        # idle power and hourly price is the session's
        pinned_share_s = s.pinned_block_s / spec.kv_blocks * devices
        energy = sum(c.energy_j for c in s.calls) + pinned_share_s * spec.power.idle_w
        cost = sum(self.call_cost_usd(c) for c in s.calls) + pinned_share_s * self.rates.devices[spec.name].usd_per_hour / 3600
        ttft = np.array(s.ttfts) if s.ttfts else np.array([math.nan])
        self.recorder.session((
            s.sid, sc.cls.name, sc.cls.pool, sc.policy.kind, s.status, s.arrival_s, s.finish_s, s.finish_s - s.arrival_s,
            s.turns, s.turns_done, float(ttft.mean()), float(ttft.max()), s.llm_s, s.tool_s, s.reload_s, s.prompt_tokens,
            s.output_tokens, s.cached_tokens, s.recomputed_tokens, (s.device_block_s + s.pinned_block_s) * gib,
            s.pinned_block_s * gib, s.host_block_s * gib, s.migrations, energy, cost,
        ))
        self._check_done()

    def _close_open_sessions(self) -> None:
        """Sessions still running when the run ends are recorded as timed out."""
        for sc, s in list(self.open_sessions.values()):
            s.status = "timed-out"
            s.finish_s = math.nan
            sc.end(s)

    def _close_open_jobs(self) -> None:
        """Jobs still waiting on calls when the run ends are recorded as timed out."""
        for jc, job in list(self.open_jobs.values()):
            job.status = "timed-out"
            job.right = False
            job.finish_s = math.nan
            self.record_job(jc, job)

    def _generator(self, cls, stop_s: float):
        key = f"workload.classes.{cls.name}"
        streams = lambda name: rng.stream(self.scenario.seed, self.scenario.run, f"workload/{cls.name}/{name}")
        yield from generate_calls(self.env, cls, streams, self.scenario.base_dir, stop_s, self.make_call, key)
        self._generators_left -= 1
        self._check_done()

    def _check_done(self) -> None:
        if (self._generators_left == 0 and self.calls_ended == self.calls_created and self.jobs_open == 0
                and not self.open_sessions and self.videos_open == 0 and not self._done.triggered):
            self._done.succeed()

    # ------------------------------------------------------------------ run
    def run(self) -> float:
        """Run to the end (all calls done after arrivals stop, or the drain limit); returns the end time."""
        sc = self.scenario
        classes = sc.workload.classes
        self._generators_left = len(classes)
        for cls in classes:
            self.env.process(self._generator(cls, sc.duration_s))
        for name, injector in self.injectors.items():
            for r in self._pool_replicas[name]:
                self.env.process(injector.run(r))
        for scaler in self.autoscalers.values():
            scaler.start()
        horizon = sc.duration_s + sc.drain_s
        self.env.run(until=self.env.any_of([self._done, self.env.timeout(horizon)]))
        t_end = self.env.now if self._done.triggered else horizon
        t_end = max(t_end, max((r.clock for r in self.replicas), default=0.0))
        t_end = max(t_end, sc.duration_s)
        for r in self.replicas:
            r.finish(t_end)
        for call in list(self._in_transfer.values()):  # KV still on its way
            Replica.end_unserved(call, self.recorder, self._call_ended, math.nan, "timed-out")
        self._in_transfer.clear()
        self._close_open_jobs()
        self._close_open_sessions()
        return t_end


def build(scenario: Scenario, recorder, source: str = "<scenario>") -> World:
    """Check the scenario against the catalog and wire its world."""
    return World(scenario, recorder, source)
