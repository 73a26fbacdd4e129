"""Performance model: how long one engine iteration takes, and how busy it keeps the device.

Pure and vectorized. An iteration is described by aggregate batch quantities
(:class:`Batch`): tokens processed, sequences sampled, attention (query, key)
pairs and KV tokens read. Everything that depends only on the token count
(GEMMs, all-reduces, the LM head) is a scalar for a run of decode iterations,
because the batch membership is fixed during a run; only the attention terms
grow with the context, so they are numpy arrays over the run. Only
elementwise ``+ - * / max`` touch those arrays, which keeps a run planned at
once bit-identical to the same iterations evaluated one by one.

:class:`RooflineModel` is a per-operator roofline from the model card (GEMM
shapes, GQA/MLA attention, MoE experts touched) and the accelerator card
(peak FLOP/s, HBM bandwidth, link bandwidth), scaled by efficiency factors,
plus tensor-parallel all-reduces and a CPU-side overhead per iteration
(the other models of :mod:`sim.models.registry` share its interface).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import numpy as np

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # (only the compiler reads the decorator: without mypy it changes nothing)
    def mypyc_attr(*_args: Any, **_kwargs: Any) -> Any:  # type: ignore[misc]
        return lambda cls: cls

from sim.hardware.catalog import DTYPE_BYTES, Accelerator, ModelCard
from sim.models.efficiency import DEFAULT_EFFICIENCY, merge_efficiency
from sim.models.parallel import expected_max_load, ring_allreduce_s

ACT_BYTES = 2.0  # activations in bf16

# (tokens, sampled) shapes whose GEMM cost a model keeps (~250 bytes each).
GEMM_CACHE_ENTRIES = 1 << 16
# Elementwise kernels per layer in a fused engine (fused add+RMSNorm x2, SiLU-and-mul, rotary).
ELEMENTWISE_KERNELS = 4
# Kernels of one fused MoE layer beyond its grouped GEMMs' time (vLLM fused_moe: top-k routing,
# token-to-expert sort / block alignment, gate-up grouped GEMM, SiLU-and-mul, down grouped GEMM,
# weighted sum of the top-k outputs): each pays the minimum kernel time.
MOE_KERNELS = 6


def blend(t_compute, t_memory, p: float):
    """Smooth roofline: the p-norm of the compute and memory times (>= their max), 0 where
    both are 0; floats (the per-operator pricing, cached) or arrays (calibration fits)."""
    if isinstance(t_compute, float) and isinstance(t_memory, float):
        hi = max(t_compute, t_memory)
        return hi * ((t_compute / hi) ** p + (t_memory / hi) ** p) ** (1.0 / p) if hi > 0.0 else 0.0
    top = np.maximum(t_compute, t_memory)  # (not ``hi``: compiled, that name holds a float)
    safe = np.where(top > 0.0, top, 1.0)
    return np.where(top > 0.0, safe * ((t_compute / safe) ** p + (t_memory / safe) ** p) ** (1.0 / p), 0.0)


def maximum(a, b):
    """``np.maximum`` for arrays; for floats the same value without numpy's per-call cost."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.maximum(a, b)
    return a if a >= b else b


def minimum(a, b):
    """``np.minimum`` for arrays; for floats the same value without numpy's per-call cost."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.minimum(a, b)
    return a if a <= b else b


class Batch(NamedTuple):
    """Aggregate work of one iteration (or a run of iterations along the arrays). (A named tuple:
    immutable, and made in a fraction of a frozen dataclass's time, once per engine iteration.)

    tokens      new tokens processed (prefill chunk tokens + one per decode)
    seqs        sequences in the batch
    sampled     sequences that sample a token this iteration (LM head rows)
    attn_pairs  causal (query, key) pairs summed over sequences
    kv_tokens   KV-cache tokens read by attention, summed over sequences
    longest     new tokens of the sequence with the most (a prefill chunk), and
    longest_pairs  its attention pairs: under data-parallel attention one device serves
                that sequence whole (0: the work spreads evenly, as in a decode run)
    uniform     every sequence decodes the same number of tokens (no prefill chunk): None
                derives it as ``tokens <= seqs``; a speculative verify step (1 + k tokens per
                sequence) passes it explicitly
    """

    tokens: int
    seqs: int
    sampled: int
    attn_pairs: np.ndarray
    kv_tokens: np.ndarray
    longest: int = 0
    longest_pairs: float = 0.0
    uniform: Optional[bool] = None

    @property
    def is_uniform(self) -> bool:
        """No prefill chunk in the step (engines replay one whole captured graph for it)."""
        return self.tokens <= self.seqs if self.uniform is None else self.uniform


class IterationCost(NamedTuple):
    """Per-iteration time (s), and FLOPs and HBM bytes of one device of the replica (a named tuple).

    ``compute_s`` is the part of the time the tensor cores need at full clock (what a
    power cap stretches); None where the model does not separate it. ``comm_s`` is the part
    spent in collectives and stage hand-offs between the replica's devices, ``stall_s`` the part
    grouped-expert kernels run below their roofline with their SMs busy, ``seq_s`` the per-sequence
    cost of the step (None: none).
    """

    time_s: np.ndarray
    flops: np.ndarray
    bytes: np.ndarray
    compute_s: Optional[np.ndarray] = None
    comm_s: Optional[np.ndarray] = None
    stall_s: Optional[np.ndarray] = None
    seq_s: Optional[np.ndarray] = None


@mypyc_attr(allow_interpreted_subclasses=True)  # (the profile-table model is one)
class RooflineModel:
    """Per-operator roofline of a model on ``tp`` x ``pp`` devices.

    Tensor parallelism shards every GEMM and the KV heads over ``tp`` devices and adds
    two all-reduces per layer. Pipeline parallelism gives each group of ``tp`` devices
    ``num_layers / pp`` layers; the batch moves through the stages as ``m = min(pp,
    seqs)`` micro-batches chasing each other (vLLM's virtual engines), so a step takes
    one pass of a micro-batch through every stage plus ``pp`` activation hand-offs, and
    with fewer sequences than stages part of the pipeline idles (the bubble).
    ``expert_parallel`` places whole MoE experts on the devices (EP = tp) instead of
    slicing each expert, as vLLM's ``--enable-expert-parallel`` does without data
    parallelism: attention stays tensor-parallel, so after its all-reduce every device
    holds every token, runs its own experts on the tokens routed to them, and one
    all-reduce sums the partial outputs (no all-to-all; vLLM uses all-to-all dispatch
    only with data-parallel attention). The device with the most routed tokens and the
    most distinct experts touched sets the pace.

    ``attention_dp`` (with ``expert_parallel``; TensorRT-LLM's ``enable_attention_dp``,
    SGLang's ``--enable-dp-attention``) runs everything but the routed experts data-parallel:
    each of the ``tp`` devices holds the attention, dense and shared-expert weights whole
    and serves its own share of the sequences, keeping every KV head of their cache. The
    tokens are gathered for the experts and their outputs scattered back, one all-gather
    and one reduce-scatter per MoE layer (the bytes and steps of one all-reduce). Each
    device runs its own scheduler and sampler, so the per-sequence host overhead of a
    step is split over the devices. Decoding sequences are assumed spread evenly; the device
    prefilling a step's longest chunk (``Batch.longest``) sets that step's pace.
    """

    def __init__(
        self,
        model: ModelCard,
        acc: Accelerator,
        tp: int = 1,
        weight_dtype: str | None = None,
        kv_dtype: str = "bf16",
        pp: int = 1,
        expert_parallel: bool = False,
        attention_dp: bool = False,
        **efficiency: float | None,
    ):
        self.model, self.acc, self.tp, self.pp = model, acc, tp, pp
        self.expert_parallel = expert_parallel and model.is_moe and tp > 1
        self.attention_dp = attention_dp and self.expert_parallel
        self.dp = tp if self.attention_dp else 1  # devices serving sequences side by side
        self.weight_dtype = weight_dtype or model.weight_dtype
        self.kv_dtype = kv_dtype
        self.eff = eff = merge_efficiency(DEFAULT_EFFICIENCY, efficiency)
        self.wbytes = DTYPE_BYTES[self.weight_dtype]
        self.kvbytes = DTYPE_BYTES[kv_dtype]
        self.peak = acc.peak_flops(self.weight_dtype) * eff["gemm_efficiency"]
        # routed experts stored at the card's own expert dtype (gpt-oss: MXFP4), with that math
        edtype = model.expert_weight_dtype
        self.ewbytes = DTYPE_BYTES[edtype] if edtype else self.wbytes
        self.expert_peak = acc.peak_flops(edtype) * eff["gemm_efficiency"] if edtype else self.peak
        # dense (non-expert) GEMMs: quantized weights reach a smaller share of their higher peak
        self.dense_peak = self.peak * (eff["quantized_dense_efficiency"] if self.wbytes < 2 else 1.0)
        self.attn_peak = acc.peak_flops("bf16") * eff["attention_efficiency"]
        self.bw = acc.memory_bandwidth * eff["memory_efficiency"]
        self.link_bw = acc.link_bandwidth * eff["link_efficiency"]
        self.lat = eff["kernel_latency_s"]
        self.blend_p = eff["gemm_blend"]
        m = model
        # Attention, per layer, per device.
        self.attn_flops_per_pair = m.attention_flops_per_pair() / tp
        self.kv_bytes_per_token_layer = self.kv_elems_per_token_layer_device() * self.kvbytes
        self.window = m.sliding_window if m.windowed_layers else 0
        self._gemm_cache: dict[tuple[int, int, int], tuple[float, float, float]] = {}
        self._stall_cache: dict[tuple[int, int], float] = {}

    # ----------------------------------------------------------------- memory
    def kv_elems_per_token_layer_device(self) -> float:
        """KV elements one token keeps on each device of the replica, per layer.

        GQA shards KV heads across TP ranks (replicated when heads < tp); MLA's
        latent cache is replicated on every rank. Under data-parallel attention a token's
        whole cache lives on the one device serving its sequence: on average 1/tp of it.
        """
        m = self.model
        if self.attention_dp:
            return m.kv_elems_per_token_layer() / self.tp
        if m.attention == "mla":
            return float(m.kv_lora_rank + m.qk_rope_head_dim)
        return 2.0 * m.head_dim * math.ceil(m.num_kv_heads / self.tp)

    def kv_bytes_per_token_device(self) -> float:
        """KV bytes per token on one device: its share of the heads, for its stage's layers
        (full-attention layers only: a sliding-window layer's KV is bounded per sequence, see
        :meth:`kv_window_bytes_per_seq_device`)."""
        m = self.model
        return self.kv_bytes_per_token_layer * math.ceil((m.num_layers - m.windowed_layers) / self.pp)

    def kv_window_bytes_per_seq_device(self, block_size: int) -> float:
        """Most KV bytes one sequence keeps on a device in its sliding-window layers: the blocks
        covering the last ``window`` tokens (vLLM frees a window layer's blocks once every token
        in them has left the window, so at most ceil((window - 1) / block) + 1 stay)."""
        if not self.window:
            return 0.0
        tokens = (-(-(self.window - 1) // block_size) + 1) * block_size
        return tokens * self.kv_bytes_per_token_layer * math.ceil(self.model.windowed_layers / self.pp)

    def weight_bytes_device(self) -> float:
        """Weight bytes on one device: the routed experts at the expert dtype, the rest at the
        weight dtype (products of whole counts and powers of two: exact, so a card without an
        expert dtype gets the same bytes as one width for everything)."""
        m = self.model
        routed = m.routed_expert_params()
        rest, experts = (m.total_params() - routed) * self.wbytes, routed * self.ewbytes
        if self.attention_dp:  # routed experts sharded, everything else whole on every device
            return (rest + experts / self.tp) / self.pp
        return (rest + experts) / (self.tp * self.pp)

    # ----------------------------------------------------------------- time
    def _gemms(self, tokens: int, sampled: int, rows: int = 0) -> tuple[float, float, float]:
        """(time, flops, bytes) of everything but attention for ``tokens`` tokens passing
        through all layers once on one TP group (per device of the group); under data-parallel
        attention ``rows`` (if given) are the tokens of the device's own sequences."""
        key = (tokens, sampled, rows)
        hit = self._gemm_cache.get(key)
        if hit is None:
            if len(self._gemm_cache) >= GEMM_CACHE_ENTRIES:  # bounded memory (a pure function: start afresh)
                self._gemm_cache.clear()
            hit = self._gemm_cache[key] = self._gemms_uncached(tokens, sampled, rows)
        return hit

    def _linear(self, n_tok: float, i: int, o: int, shards: int) -> tuple[float, float, float]:
        """One GEMM of ``n_tok`` rows through an ``i`` x ``o`` weight split ``shards`` ways."""
        f = 2.0 * n_tok * i * o / shards
        b = (i * o * self.wbytes + n_tok * (i + o) * ACT_BYTES) / shards
        return self.lat + blend(f / self.dense_peak, b / self.bw, self.blend_p), f, b

    def _gemms_uncached(self, tokens: int, sampled: int, rows: int = 0) -> tuple[float, float, float]:
        # (time, flops, bytes) summed as Python floats in the order the former numpy
        # 3-vectors added them (IEEE doubles both: the same values, a few times faster)
        m, tp = self.model, self.tp
        # rows through the non-expert weights on one device, and the ways those are split
        rows, shards = (rows or -(-tokens // tp), 1) if self.attention_dp else (tokens, tp)
        linear = self._linear

        def layer(shapes) -> list:
            out = [0.0, 0.0, 0.0]
            for i, o in shapes:
                t, f, b = linear(rows, i, o, shards)
                out[0] += t
                out[1] += f
                out[2] += b
            return out

        attn = m.attention_shapes()
        n = m.dense_layers
        t, f, b = layer(attn + m.dense_mlp_shapes())
        acc = [0.0 + t * n, 0.0 + f * n, 0.0 + b * n]
        act_width = m.intermediate_size
        if m.is_moe:
            moe = layer(attn)
            parts: list[Any] = [linear(rows, m.hidden_size, m.num_experts, shards), self._experts(tokens, sampled)]
            for _ in range(m.num_shared_experts):
                parts.append(linear(rows, m.hidden_size, 2 * m.moe_intermediate_size, shards))
                parts.append(linear(rows, m.moe_intermediate_size, m.hidden_size, shards))
            for part in parts:
                moe[0] += part[0]
                moe[1] += part[1]
                moe[2] += part[2]
            n = m.moe_layers
            acc[0] += moe[0] * n
            acc[1] += moe[1] * n
            acc[2] += moe[2] * n
            act_width = m.experts_per_token * m.moe_intermediate_size
        # fused norms + residual adds, rotary, SiLU-and-mul: memory-bound elementwise traffic
        q_width = m.num_attention_heads * m.head_dim
        ew = (8.0 * m.hidden_size + 3.0 * act_width + 2.0 * (q_width + m.num_kv_heads * m.head_dim)) / tp
        ew_bytes = tokens * ew * ACT_BYTES
        n = m.num_layers
        acc[0] += (ELEMENTWISE_KERNELS * self.lat + ew_bytes / self.bw) * n
        acc[1] += 0.0 * n
        acc[2] += ew_bytes * n
        # LM head on the sampled rows (vocab-parallel across TP ranks; whole on each DP rank)
        if sampled:
            t, f, b = linear(-(-sampled // self.dp), m.hidden_size, m.vocab_size, shards)
            acc[0] += t
            acc[1] += f
            acc[2] += b
        acc[0] += self._collectives_s(tokens)
        return float(acc[0]), float(acc[1]), float(acc[2])

    def _experts(self, tokens: int, sampled: int) -> np.ndarray:
        """Routed experts of one MoE layer as one grouped GEMM over the experts the batch touches.

        The weight re-reads per block of routed tokens (``moe_weight_reread``) are charged for the
        step's sampled rows only (its decode tokens and last prefill chunks): the small-M regime in
        which fused_moe runs short row blocks; a prefill chunk's thousands of rows run vLLM's large-M
        tiles, launched in groups of row blocks (GROUP_SIZE_M) that share each weight tile through L2.

        Under expert parallelism each device holds ``num_experts / tp`` whole experts and the
        device with the most routed tokens sets the compute time. The weight bytes are the
        mean device's: under independent uniform routing the busiest device would also touch
        more distinct experts than the mean at small batches, but real routers pick correlated
        experts (fewer distinct ones than uniform routing), and the serving fits
        (hardware/calibration) reproduce the measured steps better without that term.
        """
        m, tp = self.model, self.tp
        if tokens <= 0:
            return np.zeros(3)
        e, k, ep = m.num_experts, m.experts_per_token, m.expert_params()
        touched = e * (1.0 - (1.0 - k / e) ** tokens)
        act = tokens * k * 2 * (m.hidden_size + m.moe_intermediate_size) * ACT_BYTES
        f = 2.0 * tokens * k * ep / tp
        if self.model.expert_weight_dtype.startswith("mx"):
            moe = self.eff["mx_moe_efficiency"]
        else:
            moe = self.eff["moe_efficiency"] * (self.eff["quantized_efficiency"] if self.ewbytes < 2 else 1.0)
            touched = touched + self.eff["moe_weight_reread"] * min(tokens, sampled) * k  # one per row block
        b = (touched * ep * self.ewbytes + act) / tp
        # EP: the busiest device's routed tokens set the compute time
        busiest = expected_max_load(tokens * k / tp, tp) / (tokens * k / tp) if self.expert_parallel else 1.0
        peak = self.expert_peak
        t = blend(f * busiest / (peak * moe), b / (self.bw * moe), self.blend_p)
        # time lost to kernel inefficiency is not idle: the SMs keep streaming (stalled loads,
        # dequantization), which the power model sees as HBM traffic at the fitted bandwidth,
        # and as busy SMs (the lost time, last)
        lost = t - blend(f * busiest / peak, b / self.bw, self.blend_p)
        b += lost * self.bw
        return np.array([t + MOE_KERNELS * self.lat, f, b, lost])

    def _stall_s(self, tokens: int, sampled: int) -> float:
        """Time of one pass of ``tokens`` tokens in which the grouped-expert kernels run below
        their roofline (summed over the MoE layers; 0 for a dense model)."""
        if not self.model.is_moe or tokens <= 0:
            return 0.0
        hit = self._stall_cache.get((tokens, sampled))
        if hit is None:
            if len(self._stall_cache) >= GEMM_CACHE_ENTRIES:  # bounded, as the GEMM cache
                self._stall_cache.clear()
            hit = self._stall_cache[(tokens, sampled)] = float(self._experts(tokens, sampled)[3]) * self.model.moe_layers
        return hit

    def _collectives_s(self, tokens: int) -> float:
        """TP all-reduces: after attention and after the MLP of every layer (under expert
        parallelism the MoE all-reduce sums the devices' partial expert outputs). Under
        data-parallel attention only the MoE layers communicate: an all-gather of the tokens
        and a reduce-scatter of the experts' outputs, together one all-reduce's traffic."""
        m = self.model
        if self.tp <= 1:
            return 0.0
        one = ring_allreduce_s(tokens * m.hidden_size * ACT_BYTES, self.tp, self.link_bw, self.eff["link_latency_s"])
        return one * (m.moe_layers if self.attention_dp else 2 * m.num_layers)

    def _stage_handoffs_s(self, tokens: int) -> float:
        """A micro-batch's activations handed between consecutive stages, once per stage."""
        if self.pp <= 1:
            return 0.0
        nbytes = tokens * self.model.hidden_size * ACT_BYTES / self.tp
        return self.pp * (self.eff["link_latency_s"] + nbytes / self.link_bw)

    def _over_layers(self, n, cap: float):
        """Attention pairs (or KV tokens read) ``n`` of one layer summed over the layers, a
        sliding-window layer counting at most ``cap`` of them: a query sees at most ``window``
        keys; a sequence's step reads at most the window behind its new tokens plus those.
        Exact when every context is past the window (or within it); for a prefill chunk that
        crosses the window an upper bound (the sum of per-sequence minima is at most this)."""
        win = self.model.windowed_layers
        return n * (self.model.num_layers - win) + minimum(n, cap) * win

    # cost() takes float attention terms too (one iteration, priced without numpy), and
    # cost_one() prices one iteration in typed floats
    scalar_ok = True

    def cost(self, batch: Batch) -> IterationCost:
        """Time, FLOPs and bytes (per device) of each iteration described by ``batch``."""
        layers = self.model.num_layers
        micro = max(1, min(self.pp, batch.seqs))
        tok = -(-batch.tokens // micro)
        sampled = -(-batch.sampled // micro)
        g_t, g_f, g_b = self._gemms(tok, sampled)
        if self.window:
            w = self.window
            a_f = self._over_layers(batch.attn_pairs, float(batch.tokens * w)) * (self.attn_flops_per_pair / micro)
            cap = float(batch.seqs * (w - 1) + batch.tokens)
            a_b = self._over_layers(batch.kv_tokens, cap) * (self.kv_bytes_per_token_layer / micro)
        else:
            a_f = batch.attn_pairs * (self.attn_flops_per_pair * layers / micro)
            a_b = batch.kv_tokens * (self.kv_bytes_per_token_layer * layers / micro)
        a_fs = a_f / self.attn_peak
        g_time = g_t
        if self.dp > 1 and batch.longest * self.dp > tok:
            # data-parallel attention: the device prefilling the longest chunk serves it whole
            # besides its share of the rest, and the others wait for it at the experts
            busiest = batch.longest + -(-(tok - batch.longest) // self.dp)
            g_time = self._gemms(tok, sampled, busiest)[0]
            if self.window:
                longest = self._over_layers(batch.longest_pairs, float(batch.longest * self.window))
                a_fs = a_fs + (self.dp - 1) * longest * self.attn_flops_per_pair / self.attn_peak
            else:
                a_fs = a_fs + (self.dp - 1) * batch.longest_pairs * self.attn_flops_per_pair * layers / self.attn_peak
        a_t = maximum(a_fs, a_b / self.bw)
        if self.lat:  # (adding 0.0 to these non-negative times changes nothing)
            a_t = a_t + self.lat * layers
        return IterationCost(*self._finish(tok, sampled, batch.seqs, batch.is_uniform, micro, g_time, g_f, g_b, a_t, a_f,
                                           a_b, a_fs))

    def _finish(self, tok, sampled, seqs, uniform, micro, g_time, g_f, g_b, a_t, a_f, a_b, a_fs) -> tuple:
        """The step's (time, FLOPs, bytes, compute, collective, stall, per-sequence times) from its
        GEMM and attention parts: the engine overheads, the mixed-step cost, the pipeline share
        (floats or arrays alike; :meth:`cost` and :meth:`cost_one` share it)."""
        per_seq = self.eff["per_seq_overhead_s"] * seqs / self.dp
        overhead = self.eff["iteration_overhead_s"] + per_seq
        layers = self.model.num_layers
        mixed = self.eff["mixed_layer_overhead_s"] * layers if not uniform else 0.0
        time_s = (overhead + g_time + self._stage_handoffs_s(tok)) + a_t
        flops = g_f + a_f
        nbytes = g_b + a_b
        if mixed:
            # kernels, not idle host time: the step's attention streams KV on the slower path
            time_s = time_s + mixed
            nbytes = nbytes + mixed * self.bw
        share = micro / self.pp  # of the whole batch's work, each device does 1/pp
        if share != 1.0:
            flops, nbytes = flops * share, nbytes * share
        # the tensor-core time on the step's critical path: one micro-batch's pass through every
        # stage, all of which a lower clock stretches (not only this device's 1/pp share)
        compute_s = minimum(time_s, g_f / self.peak + a_fs)
        comm_s = self._collectives_s(tok) + self._stage_handoffs_s(tok) if self.tp > 1 or self.pp > 1 else None
        stall_s = self._stall_s(tok, sampled) if self.model.is_moe else None
        return time_s, flops, nbytes, compute_s, comm_s, stall_s, per_seq

    def cost_one(self, tokens: int, seqs: int, sampled: int, attn_pairs: float, kv_tokens: float, longest: int = 0,
                 longest_pairs: float = 0.0) -> tuple:
        """:class:`IterationCost`'s fields for one iteration: :meth:`cost` of that one ``Batch`` in
        typed floats (C doubles when compiled), the same operations in the same order, so the same
        floats (``tests/test_perf_model.py``); the engine prices its single iterations here."""
        model = self.model
        layers = model.num_layers
        micro = max(1, min(self.pp, seqs))
        tok = -(-tokens // micro)
        sampled = -(-sampled // micro)
        g_t, g_f, g_b = self._gemms(tok, sampled)
        w = self.window
        win = model.windowed_layers
        if w:
            pairs_cap = float(tokens * w)
            a_f = (attn_pairs * (layers - win) + (attn_pairs if attn_pairs <= pairs_cap else pairs_cap) * win) \
                * (self.attn_flops_per_pair / micro)
            cap = float(seqs * (w - 1) + tokens)
            a_b = (kv_tokens * (layers - win) + (kv_tokens if kv_tokens <= cap else cap) * win) \
                * (self.kv_bytes_per_token_layer / micro)
        else:
            a_f = attn_pairs * (self.attn_flops_per_pair * layers / micro)
            a_b = kv_tokens * (self.kv_bytes_per_token_layer * layers / micro)
        a_fs = a_f / self.attn_peak
        g_time = g_t
        dp = self.dp
        if dp > 1 and longest * dp > tok:
            busiest = longest + -(-(tok - longest) // dp)
            g_time = self._gemms(tok, sampled, busiest)[0]
            if w:
                lcap = float(longest * w)
                own = longest_pairs * (layers - win) + (longest_pairs if longest_pairs <= lcap else lcap) * win
                a_fs = a_fs + (dp - 1) * own * self.attn_flops_per_pair / self.attn_peak
            else:
                a_fs = a_fs + (dp - 1) * longest_pairs * self.attn_flops_per_pair * layers / self.attn_peak
        a_m = a_b / self.bw
        a_t = a_fs if a_fs >= a_m else a_m
        lat = self.lat
        if lat:
            a_t = a_t + lat * layers
        return self._finish(tok, sampled, seqs, tokens <= seqs, micro, g_time, g_f, g_b, a_t, a_f, a_b, a_fs)

