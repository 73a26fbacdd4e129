"""Pool resolution: a scenario's pool checked against the catalog and turned into a
:class:`PoolSpec` (cards, the performance and power models, the KV pool size that fits beside the
weights and activations). Raises :class:`~sim.errors.ScenarioError` with the key path for
anything impossible. No SimPy."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from sim.config import Scenario
from sim.errors import ScenarioError
from sim.hardware import catalog
from sim.models import perf_sram
from sim.models.diffusion import DiffusionPerf, load_card as load_diffusion_card
from sim.models.perf import RooflineModel
from sim.models.power import PowerModel
from sim.models.registry import PERF_MODELS, PerfContext
from sim.models.speculative import resolve as resolve_speculative

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
    kind = PERF_MODELS[p.kind]
    # the roofline sizes weights and KV whatever model prices the iterations
    roofline = (perf_sram.SramPipelineModel if sram else RooflineModel)(
        model, acc, pool.tp, wdtype, pool.kv_dtype, **layout, **(eff if kind.roofline_overrides else {}))
    perf = kind.build(p, PerfContext(model, acc, pool.tp, wdtype, pool.kv_dtype, layout, eff, roofline,
                                     scenario.base_dir, source, key))

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
    # sliding-window layers (gpt-oss) keep at most a window of KV per sequence: held for a full batch
    window = 0.0 if sram else bat.max_num_seqs * (roofline.kv_window_bytes_per_seq_device(eng.block_size) + (
        specu.proposer.kv_window_bytes_per_seq_device(eng.block_size) if specu else 0.0))
    kv_bytes = usable - weights - reserve - window
    per_block = (roofline.kv_bytes_per_token_device() + (specu.kv_bytes_per_token_device if specu else 0.0)) * eng.block_size
    if kv_bytes < per_block and sram:
        raise ScenarioError(source, f"{key}.tp", perf_sram.fit_message(roofline, usable - reserve, eng.block_size))
    if kv_bytes < per_block:
        raise ScenarioError(
            source, f"{key}.model",
            f"{model.name} does not fit on {acc.name} at tp={pool.tp} pp={pool.pp}: weights need {weights / GIB:.1f} GiB per device "
            f"({wdtype}{', ' + model.expert_weight_dtype + ' experts' if model.expert_weight_dtype else ''}) "
            f"plus {reserve / GIB:.1f} GiB activations, but {acc.memory_gib:g} GiB x "
            f"gpu_memory_utilization {eng.gpu_memory_utilization:g} = {usable / GIB:.1f} GiB is usable; "
            "raise tp, use a smaller weight_dtype or a larger device",
        )
    blocks = eng.num_gpu_blocks if eng.num_gpu_blocks is not None else int(kv_bytes // per_block)
    power = _power_model(scenario, pool, acc, wdtype, source, key)
    return PoolSpec(pool.name, key, acc, model, pool.tp, pool.pp, pool.replicas, blocks, eng.block_size, weights / GIB,
                    blocks * per_block / GIB, perf, power, _host_w(scenario, acc), specu)
