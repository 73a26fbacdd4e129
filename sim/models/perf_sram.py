"""Performance model of SRAM-pipeline accelerators (Groq LPU, Cerebras WSE): weights resident on chip.

These devices have no HBM. A model's weights (and its KV cache) are spread over as many
chips as their on-chip SRAM needs, and the layers run as a pipeline across them. A token is
therefore not limited by reading the weights from DRAM once per step, as on an HBM device
(:class:`sim.models.perf.RooflineModel`), but by its walk through the pipeline: every stage reads
its own slice of the weights from its SRAM (at the SRAM bandwidth, or as fast as its matrix
units compute, whichever is slower), then hands the activations to the next chip over a
chip-to-chip link whose latency is paid at every chip boundary.

Stages. The replica's ``chips`` (a pool's ``tp``) hold ``S = max(chips, layers)`` pipeline
stages of equal size: one per chip when a model needs more chips than it has layers (Groq:
hundreds of 230 MB chips), one region of the wafer per layer when one chip holds many layers
(Cerebras: a 44 GB wafer holds a whole 8B model). Each stage has ``1/S`` of the replica's
SRAM bandwidth and compute and ``1/S`` of its weights and KV cache, so one stage takes the
same time ``t`` for a micro-batch, and a micro-batch crosses the pipeline in ``S * t`` plus
the chip-to-chip hops. For one sequence this is the whole model read at one stage's
bandwidth: on Groq, the weights read at one chip's 80 TB/s.

Batching fills the pipeline. A step (every running sequence advances one token) splits the
batch into ``m = min(S, tokens)`` micro-batches that chase each other through the stages, as
:class:`~sim.models.perf.RooflineModel` does for ``pp`` stages: the step lasts one micro-batch's walk
through the pipeline, and with ``m`` micro-batches in flight every stage is busy ``m`` times
in that walk. So the time per token of a user stays that of a lone user while the batch grows
to ``S`` sequences (each then adds only its KV reads), and beyond, the micro-batches grow and
turn compute-bound. Prefill chunks split into micro-batches of tokens too (a later chunk of a
prompt only needs earlier chunks' KV, already on its stage).

Per-layer latency. Read at these bandwidths, the weights alone would let one user run
1.2-3x (Groq) and 11-19x (Cerebras) faster than the vendors publish: each layer also costs a
fixed time per token that neither bandwidth nor FLOPs capture (dependent operations,
synchronisation, the serving stack). ``kernel_latency_s`` is that time per layer per walk
through the pipeline; the calibration of the card fits it to all of the card's
published per-user speeds (least squares on log time, with a leave-one-out check) into hardware/calibration/<card>.yaml, which every pool on
the card loads; without a calibration it is 0 (the hardware alone).

What is left out, and why (docs/accelerators.md): per-step host overheads are not published
apart from the per-layer latency, so ``iteration_overhead_s`` and ``per_seq_overhead_s``
default to 0 here (a scenario's ``performance`` block can set them); activations never leave
the chips, so elementwise traffic is not priced; pipeline fill and drain are ignored as in
the HBM model. The interface is :class:`~sim.models.perf.RooflineModel`'s: ``cost(batch)`` and the
per-device weight and KV byte helpers.
"""

from __future__ import annotations

import math

import numpy as np

from sim.hardware.catalog import DTYPE_BYTES, Accelerator, ModelCard
from sim.errors import ScenarioError
from sim.models.efficiency import DEFAULT_EFFICIENCY, merge_efficiency
from sim.models.perf import ACT_BYTES, Batch, IterationCost, blend

# Serving-stack overheads are not published for these machines: the model prices the hardware.
SRAM_OVERRIDES = {"iteration_overhead_s": 0.0, "per_seq_overhead_s": 0.0}


def sram_defaults(acc: Accelerator) -> dict:
    """Efficiency defaults for an SRAM-pipeline device: the HBM defaults (same kernel
    efficiencies), no host overhead, and the card's chip-to-chip latency where it has one."""
    out = {**DEFAULT_EFFICIENCY, **SRAM_OVERRIDES}
    if acc.interconnect_latency_us is not None:
        out["link_latency_s"] = acc.interconnect_latency_us * 1e-6
    return out


class SramPipelineModel:
    """Per-step time of ``model`` pipelined over ``tp`` chips of an SRAM-pipeline ``acc``.

    ``kernel_latency_s`` is a fixed time per layer per walk through the pipeline: the latency
    a stage adds that neither bandwidth nor FLOPs capture. No vendor publishes it; pools take
    the value fitted to the card's published per-user speeds (hardware/calibration/<card>.yaml),
    and the model alone defaults to 0. ``link_latency_s`` is the time of one chip-to-chip hop.
    """

    def __init__(self, model: ModelCard, acc: Accelerator, tp: int = 1, weight_dtype: str | None = None,
                 kv_dtype: str = "bf16", pp: int = 1, expert_parallel: bool = False, **efficiency: float | None):
        self.model, self.acc, self.tp, self.pp = model, acc, tp, 1
        self.chips = tp
        self.stages = max(tp, model.num_layers)
        self.weight_dtype = weight_dtype or model.weight_dtype
        self.kv_dtype = kv_dtype
        self.eff = eff = merge_efficiency(sram_defaults(acc), efficiency)
        self.wbytes = DTYPE_BYTES[self.weight_dtype]
        self.kvbytes = DTYPE_BYTES[kv_dtype]
        # the replica's aggregate rates; a stage has 1/S of each
        self.peak = acc.peak_flops(self.weight_dtype) * eff["gemm_efficiency"] * tp
        self.attn_peak = acc.peak_flops("bf16") * eff["attention_efficiency"] * tp
        self.bw = acc.memory_bandwidth * eff["memory_efficiency"] * tp
        self.link_bw = acc.link_bandwidth * eff["link_efficiency"]
        self.blend_p = eff["gemm_blend"]
        m = model
        self.attn_flops_per_pair = m.attention_flops_per_pair() * m.num_layers  # whole model
        self.kv_bytes_per_token = m.kv_elems_per_token_layer() * m.num_layers * self.kvbytes
        dense, _ = m.layer_params()
        attn = sum(i * o for i, o in m.attention_shapes())
        self._dense_layer = dense
        self._moe_fixed = attn + m.hidden_size * m.num_experts + m.num_shared_experts * m.expert_params() if m.is_moe else 0
        self._head = m.vocab_size * m.hidden_size
        self._cache: dict[tuple[int, int], tuple[float, float, float, float]] = {}

    # ----------------------------------------------------------------- memory
    def weight_bytes_device(self) -> float:
        """Weight bytes resident in each chip's SRAM (the whole model spread evenly)."""
        return self.model.weight_bytes(self.weight_dtype) / self.chips

    def kv_bytes_per_token_device(self) -> float:
        """KV bytes one token keeps on each chip: the chip's share of the layers' cache."""
        return self.kv_bytes_per_token / self.chips

    # ----------------------------------------------------------------- time
    def _params_touched(self, tokens: int) -> tuple[float, float]:
        """(parameters read, parameters multiplied per token) by ``tokens`` tokens through
        every layer: MoE layers read only the experts the tokens route to."""
        m = self.model
        read = used = m.dense_layers * float(self._dense_layer)
        if m.is_moe:
            e, k, ep = m.num_experts, m.experts_per_token, m.expert_params()
            touched = e * (1.0 - (1.0 - k / e) ** tokens) if tokens > 0 else 0.0
            read += m.moe_layers * (self._moe_fixed + touched * ep)
            used += m.moe_layers * (self._moe_fixed + k * ep)
        return read, used

    def _walk(self, tokens: int, sampled: int) -> tuple[float, float, float, float]:
        """(time, FLOPs, SRAM bytes, compute time) of one micro-batch of ``tokens`` tokens (of
        which ``sampled`` reach the LM head) walking every stage, attention excluded."""
        key = (tokens, sampled)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        m, eff = self.model, self.eff
        read, used = self._params_touched(tokens)
        head = self._head if sampled else 0
        flops = 2.0 * tokens * used + 2.0 * sampled * head
        nbytes = (read + head) * self.wbytes
        # every stage does 1/S of the work on 1/S of the hardware: S equal stage times
        stage = blend(flops / self.peak, nbytes / self.bw, self.blend_p)
        walk = self.stages * stage + m.num_layers * eff["kernel_latency_s"]
        if self.chips > 1:  # activations cross every chip boundary, and back to the first chip
            walk += self.chips * (eff["link_latency_s"] + tokens * m.hidden_size * ACT_BYTES / self.link_bw)
        hit = self._cache[key] = (walk, flops, nbytes, self.stages * flops / self.peak)
        return hit

    def cost(self, batch: Batch) -> IterationCost:
        """Time, FLOPs and SRAM bytes (per chip) of each iteration described by ``batch``."""
        micro = max(1, min(self.stages, batch.tokens))
        walk, g_f, g_b, g_c = self._walk(-(-batch.tokens // micro), -(-batch.sampled // micro))
        a_f = batch.attn_pairs * (self.attn_flops_per_pair / micro)
        a_b = batch.kv_tokens * (self.kv_bytes_per_token / micro)
        a_t = np.maximum(a_f / self.attn_peak, a_b / self.bw) * self.stages
        overhead = self.eff["iteration_overhead_s"] + self.eff["per_seq_overhead_s"] * batch.seqs
        time_s = (overhead + walk) + a_t
        share = micro / self.chips  # every micro-batch passes every chip
        flops = (g_f + a_f) * share
        nbytes = (g_b + a_b) * share
        compute_s = np.minimum(time_s, g_c + a_f * (self.stages / self.attn_peak))
        return IterationCost(time_s, flops, nbytes, compute_s)


def check_pool(pool, key: str, source: str) -> None:
    """ScenarioError naming the key of a pool option the SRAM pipeline does not model."""
    if pool.kind == "diffusion":
        raise ScenarioError(source, f"{key}.accelerator", f"diffusion pools on {pool.accelerator} (an SRAM-pipeline "
                                                         "accelerator) are not modelled")
    if pool.pp != 1:
        raise ScenarioError(source, f"{key}.pp", f"{pool.accelerator} pipelines the layers over its tp chips itself; "
                                                 "set pp: 1 and tp to the chips per replica")
    if pool.speculative is not None:
        raise ScenarioError(source, f"{key}.speculative", f"speculative decoding on {pool.accelerator} is not modelled")
    if pool.performance.kind == "profile":
        raise ScenarioError(source, f"{key}.performance.kind", f"measured GPU profiles do not apply to {pool.accelerator}")


def chips_needed(perf: SramPipelineModel, usable_per_chip: float, block_size: int) -> int:
    """Fewest chips whose usable SRAM holds the weights plus one KV block."""
    total = perf.model.weight_bytes(perf.weight_dtype) + perf.kv_bytes_per_token * block_size
    return max(1, math.ceil(total / usable_per_chip))


def fit_message(perf: SramPipelineModel, usable_per_chip: float, block_size: int) -> str:
    """One line: the pool's tp is too few chips for the model's weights in SRAM."""
    need = chips_needed(perf, usable_per_chip, block_size)
    return (f"{perf.model.name} ({perf.weight_dtype}) needs at least {need} x {perf.acc.name} chips to hold its "
            f"weights ({perf.model.weight_bytes(perf.weight_dtype) / 1e9:.1f} GB) and one KV block in on-chip SRAM "
            f"({usable_per_chip / 2**20:.0f} MiB usable per chip), but tp={perf.chips}; raise tp to {need} or more")
