"""Performance model: how long one engine iteration takes, and how busy it keeps the device.

Pure and vectorized. An iteration is described by aggregate batch quantities
(:class:`Batch`): tokens processed, sequences sampled, attention (query, key)
pairs and KV tokens read. Everything that depends only on the token count
(GEMMs, all-reduces, the LM head) is a scalar for a run of decode iterations,
because the batch membership is fixed during a run; only the attention terms
grow with the context, so they are numpy arrays over the run. Only
elementwise ``+ - * / max`` touch those arrays, which keeps a run planned at
once bit-identical to the same iterations evaluated one by one.

Two models share one interface:

* :class:`RooflineModel`: per-operator roofline from the model card (GEMM
  shapes, GQA/MLA attention, MoE experts touched) and the accelerator card
  (peak FLOP/s, HBM bandwidth, link bandwidth), scaled by efficiency factors,
  plus tensor-parallel all-reduces and a CPU-side overhead per iteration.
* :class:`FixedModel`: ``iteration_s + per_token_s * tokens`` for queueing
  checks and measured engines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.catalog import DTYPE_BYTES, Accelerator, ModelCard

ACT_BYTES = 2.0  # activations in bf16

# Default efficiency factors: fraction of datasheet peak real kernels reach.
# Dense bf16 GEMMs on H100 reach 600-750 of 989 TFLOP/s in cuBLAS benchmarks;
# FlashAttention-2/3 forward reaches 35-75% of peak; STREAM-like copies reach
# ~80-90% of HBM bandwidth; NCCL all-reduce bus bandwidth on NVLink4 ~ 80% of
# one direction. Overheads: vLLM's CPU scheduling + launch with CUDA graphs is
# 1-3 ms per step at small batches (vLLM v1 blog, 2025). Refit per device with
# `dcsim calibrate`; these are the starting points.
DEFAULT_EFFICIENCY = {
    "gemm_efficiency": 0.7,
    "attention_efficiency": 0.5,
    "memory_efficiency": 0.8,
    "link_efficiency": 0.8,
    "iteration_overhead_s": 0.002,
    "per_seq_overhead_s": 0.000015,
    "link_latency_s": 0.000010,
}


@dataclass(frozen=True)
class Batch:
    """Aggregate work of one iteration (or a run of iterations along the arrays).

    tokens      new tokens processed (prefill chunk tokens + one per decode)
    seqs        sequences in the batch
    sampled     sequences that sample a token this iteration (LM head rows)
    attn_pairs  causal (query, key) pairs summed over sequences
    kv_tokens   KV-cache tokens read by attention, summed over sequences
    """

    tokens: int
    seqs: int
    sampled: int
    attn_pairs: np.ndarray
    kv_tokens: np.ndarray


@dataclass(frozen=True)
class IterationCost:
    """Per-iteration time (s), FLOPs and HBM bytes of one device."""

    time_s: np.ndarray
    flops: np.ndarray
    bytes: np.ndarray


class RooflineModel:
    """Per-operator roofline of a model served with tensor parallelism ``tp``."""

    def __init__(
        self,
        model: ModelCard,
        acc: Accelerator,
        tp: int = 1,
        weight_dtype: str | None = None,
        kv_dtype: str = "bf16",
        **efficiency: float | None,
    ):
        self.model, self.acc, self.tp = model, acc, tp
        self.weight_dtype = weight_dtype or model.weight_dtype
        self.kv_dtype = kv_dtype
        eff = dict(DEFAULT_EFFICIENCY)
        eff.update({k: v for k, v in efficiency.items() if v is not None})
        self.eff = eff
        self.wbytes = DTYPE_BYTES[self.weight_dtype]
        self.kvbytes = DTYPE_BYTES[kv_dtype]
        self.peak = acc.peak_flops(self.weight_dtype) * eff["gemm_efficiency"]
        self.attn_peak = acc.peak_flops("bf16") * eff["attention_efficiency"]
        self.bw = acc.memory_bandwidth * eff["memory_efficiency"]
        self.link_bw = acc.link_bandwidth * eff["link_efficiency"]
        m = model
        # Attention, per layer, per device.
        self.attn_flops_per_pair = m.attention_flops_per_pair() / tp
        self.kv_bytes_per_token_layer = self.kv_elems_per_token_layer_device() * self.kvbytes
        self._gemm_cache: dict[int, tuple[float, float, float]] = {}

    # ----------------------------------------------------------------- memory
    def kv_elems_per_token_layer_device(self) -> float:
        """KV elements one token keeps on each device of the replica, per layer.

        GQA shards KV heads across TP ranks (replicated when heads < tp); MLA's
        latent cache is replicated on every rank.
        """
        m = self.model
        if m.attention == "mla":
            return float(m.kv_lora_rank + m.qk_rope_head_dim)
        return 2.0 * m.head_dim * math.ceil(m.num_kv_heads / self.tp)

    def kv_bytes_per_token_device(self) -> float:
        return self.kv_bytes_per_token_layer * self.model.num_layers

    def weight_bytes_device(self) -> float:
        return self.model.total_params() * self.wbytes / self.tp

    # ----------------------------------------------------------------- time
    def _gemms(self, tokens: int, sampled: int) -> tuple[float, float, float]:
        """(time, flops, bytes) of everything but attention for ``tokens`` tokens."""
        key = (tokens, sampled)
        hit = self._gemm_cache.get(key)
        if hit is not None:
            return hit
        m, tp, wb = self.model, self.tp, self.wbytes
        t_total = f_total = b_total = 0.0

        def linear(n_tok: float, i: int, o: int, weight_frac: float = 1.0) -> None:
            nonlocal t_total, f_total, b_total
            f = 2.0 * n_tok * i * o / tp
            b = (i * o * wb * weight_frac + n_tok * (i + o) * ACT_BYTES) / tp
            t_total += max(f / self.peak, b / self.bw)
            f_total += f
            b_total += b

        attn = m.attention_shapes()
        # one representative layer of each kind, scaled by the number of such layers
        t0, f0, b0 = t_total, f_total, b_total
        for i, o in attn + m.dense_mlp_shapes():
            linear(tokens, i, o)
        dt, df, db = t_total - t0, f_total - f0, b_total - b0
        t_total, f_total, b_total = t0 + dt * m.dense_layers, f0 + df * m.dense_layers, b0 + db * m.dense_layers
        if m.is_moe:
            t1, f1, b1 = t_total, f_total, b_total
            for i, o in attn:
                linear(tokens, i, o)
            linear(tokens, m.hidden_size, m.num_experts)  # router
            e, k = m.num_experts, m.experts_per_token
            touched = e * (1.0 - (1.0 - k / e) ** tokens) if tokens > 0 else 0.0
            # routed experts as one grouped GEMM over the experts the batch touches
            ep = m.expert_params()
            f = 2.0 * tokens * k * ep / tp
            b = (touched * ep * wb + tokens * k * 2 * (m.hidden_size + m.moe_intermediate_size) * ACT_BYTES) / tp
            t_total += max(f / self.peak, b / self.bw)
            f_total += f
            b_total += b
            for _ in range(m.num_shared_experts):
                linear(tokens, m.hidden_size, 2 * m.moe_intermediate_size)
                linear(tokens, m.moe_intermediate_size, m.hidden_size)
            dt, df, db = t_total - t1, f_total - f1, b_total - b1
            t_total, f_total, b_total = t1 + dt * m.moe_layers, f1 + df * m.moe_layers, b1 + db * m.moe_layers
        # norms, residual adds, rotary, activation: memory-bound elementwise traffic
        ew = 8.0 * tokens * m.hidden_size * ACT_BYTES * m.num_layers
        t_total += ew / self.bw
        b_total += ew
        # LM head on the sampled rows (vocab-parallel across TP ranks)
        linear(sampled, m.hidden_size, m.vocab_size)
        # tensor-parallel all-reduces: two per layer (after attention and after MLP)
        if tp > 1:
            msg = tokens * m.hidden_size * ACT_BYTES
            ring = 2.0 * (tp - 1) / tp * msg / self.link_bw
            t_total += 2 * m.num_layers * (self.eff["link_latency_s"] + ring)
        result = (t_total, f_total, b_total)
        self._gemm_cache[key] = result
        return result

    def cost(self, batch: Batch) -> IterationCost:
        """Time, FLOPs and bytes of each iteration described by ``batch``."""
        g_t, g_f, g_b = self._gemms(batch.tokens, batch.sampled)
        layers = self.model.num_layers
        a_f = batch.attn_pairs * self.attn_flops_per_pair
        a_b = batch.kv_tokens * self.kv_bytes_per_token_layer
        a_t = np.maximum(a_f / self.attn_peak, a_b / self.bw) * layers
        overhead = self.eff["iteration_overhead_s"] + self.eff["per_seq_overhead_s"] * batch.seqs
        time_s = (overhead + g_t) + a_t
        return IterationCost(time_s, g_f + a_f * layers, g_b + a_b * layers)


class FixedModel:
    """``iteration_s + per_token_s * tokens`` per iteration; no memory traffic."""

    def __init__(self, iteration_s: float, per_token_s: float = 0.0):
        self.iteration_s = iteration_s
        self.per_token_s = per_token_s

    def cost(self, batch: Batch) -> IterationCost:
        t = self.iteration_s + self.per_token_s * batch.tokens
        z = np.zeros_like(batch.kv_tokens, dtype=float)
        return IterationCost(z + t, z, z)
