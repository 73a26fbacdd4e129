"""Speculative decoding: tokens gained per step and the price of a verify step.

Pure helpers for the engine (:mod:`sim.engine.replica`) and the world (:mod:`sim.cluster.world`).

Each decode step of a call, a *proposer* guesses ``k`` tokens and the target
model checks all of them in one pass over ``k + 1`` query tokens (the last
sampled token plus the ``k`` guesses). With i.i.d. acceptance probability ``a``
the step yields ``E = (1 - a^(k+1)) / (1 - a)`` tokens on average (Leviathan et
al., 2023, "Fast Inference from Transformers via Speculative Decoding", eq. 1).

**Deterministic integer gains.** The engine never draws random acceptances:
``E`` is held as an integer number of milli-tokens ``E_m = round(1000 E)`` and a
replica's ``S``-th speculative step gives every decoding call
``g(S) = F(S + 1) - F(S)`` tokens with ``F(S) = floor(S E_m / 1000)``. Over any
``i`` steps from ``S0`` the gain is ``G(i) = F(S0 + i) - F(S0)``, a scalar
sequence, so a run of decode steps is still planned at once (one ``searchsorted``
finds the step where the shortest call finishes) and equals the same steps taken
one by one. The long-run mean of ``g`` is ``E_m / 1000`` exactly.

**Cost of a step** (:meth:`SpeculativeCost.step_cost`): the target's cost of the
batch with ``k + 1`` query tokens (and ``k + 1`` LM-head rows) per decoding
sequence, plus the proposer's ``k`` sequential one-token passes over the
decoding sequences. The proposer also runs over the step's prefill tokens in
its first pass: it needs its own KV cache of every prompt. Proposers:

* ``draft``: a separate small model (its own card) on the same devices, same TP,
  with its own KV cache of the same context lengths.
* ``mtp``: the target's multi-token-prediction module, modelled as a one-layer
  version of the target (one transformer block of the target's shape, which for
  an MoE target is an MoE block, plus the shared LM head). The approximation:
  DeepSeek-V3's MTP block also has a small ``2h x h`` input projection, which is
  left out of time and weights.

Proposer passes run inside the engine step, so they pay no CPU-side
``iteration_overhead_s`` (the scheduler runs once per step); they do pay the
per-sequence overhead (sampling the proposals) and every roofline term. Only
elementwise ``+ - * /`` touch the context arrays, so a run priced at once is
bit-identical to its iterations priced one by one.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sim.hardware import catalog
from sim.errors import ScenarioError
from sim.models.efficiency import DEFAULT_EFFICIENCY
from sim.models.perf import Batch, IterationCost, RooflineModel


def expected_tokens_per_step(k: int, acceptance: float) -> float:
    """Mean tokens a step yields: ``(1 - a^(k+1)) / (1 - a)`` (``k + 1`` as ``a -> 1``)."""
    if acceptance >= 1.0:
        return float(k + 1)
    return (1.0 - acceptance ** (k + 1)) / (1.0 - acceptance)


def milli_tokens(k: int, acceptance: float) -> int:
    """``E`` as an integer number of milli-tokens (at least 1000: a step always yields a token)."""
    return max(1000, int(round(expected_tokens_per_step(k, acceptance) * 1000)))


def gain(step: int, e_milli: int) -> int:
    """Tokens every decoding call gains at speculative step ``step``: ``g(S)``."""
    return (step + 1) * e_milli // 1000 - step * e_milli // 1000


def cumulative_gains(start: int, steps: int, e_milli: int) -> np.ndarray:
    """``G(i)`` for ``i = 0..steps``: tokens gained over steps ``start .. start + i - 1``."""
    f = np.arange(start, start + steps + 1, dtype=np.int64) * e_milli // 1000
    return f - f[0]


def mtp_card(model: catalog.ModelCard) -> catalog.ModelCard:
    """A one-layer view of ``model``: its MTP module (MoE block for an MoE model), shared LM head."""
    return dataclasses.replace(model, name=f"{model.name}/mtp", num_layers=1, first_dense_layers=0)


def _sum(a: IterationCost, b: IterationCost) -> IterationCost:
    compute = None if a.compute_s is None or b.compute_s is None else a.compute_s + b.compute_s
    comm, stall, seq = (y if x is None else x if y is None else x + y
                        for x, y in ((a.comm_s, b.comm_s), (a.stall_s, b.stall_s), (a.seq_s, b.seq_s)))
    return IterationCost(a.time_s + b.time_s, a.flops + b.flops, a.bytes + b.bytes, compute, comm, stall, seq)


def _scaled(a: IterationCost, times: float) -> IterationCost:
    compute = None if a.compute_s is None else a.compute_s * times
    comm, stall, seq = (None if x is None else x * times for x in (a.comm_s, a.stall_s, a.seq_s))
    return IterationCost(a.time_s * times, a.flops * times, a.bytes * times, compute, comm, stall, seq)


class SpeculativeCost:
    """Prices verify steps of ``target`` with ``k`` proposals from ``proposer`` each.

    ``weight_bytes_device`` and ``kv_bytes_per_token_device`` are what the proposer
    adds per device to the target's weights and to every cached token.
    """

    def __init__(self, target, proposer, k: int, acceptance: float, method: str = "draft",
                 weight_bytes_device: float = 0.0, kv_bytes_per_token_device: float = 0.0):
        if k < 1:
            raise ValueError("speculation needs k >= 1 proposed tokens")
        if not 0.0 <= acceptance < 1.0:
            raise ValueError("acceptance rate must be in [0, 1)")
        self.target = target
        self.proposer = proposer
        self.k = k
        self.acceptance = acceptance
        self.method = method
        self.weight_bytes_device = weight_bytes_device
        self.kv_bytes_per_token_device = kv_bytes_per_token_device
        self.milli_tokens = milli_tokens(k, acceptance)

    @property
    def expected_tokens_per_step(self) -> float:
        return expected_tokens_per_step(self.k, self.acceptance)

    @property
    def query_tokens(self) -> int:
        """Tokens a decoding sequence puts through the target per step (and into the token budget)."""
        return self.k + 1

    def step_cost(self, tokens: int, seqs: int, sampled: int, pairs: float, kv: float,
                  decodes: int, decode_ctx: np.ndarray) -> IterationCost:
        """Cost of verify steps, one per element of ``decode_ctx``.

        ``tokens``, ``seqs``, ``sampled``, ``pairs`` and ``kv`` describe the step's
        non-speculative work (prefill chunks) as in :class:`~sim.models.perf.Batch`;
        ``decodes`` sequences are decoding, with ``decode_ctx`` KV tokens cached in
        total at the start of each step.
        """
        w = self.k + 1
        tri = decodes * (w * (w + 1) / 2.0)  # causal pairs among the w new tokens
        target = self.target.cost(Batch(tokens + decodes * w, seqs + decodes, sampled + decodes * w,
                                        pairs + (decode_ctx * w + tri), kv + (decode_ctx + decodes * w),
                                        uniform=tokens <= seqs))  # 1 + k tokens per decode: still uniform
        # first proposer pass: the prefill tokens (its own KV of the prompts) and one token per decode
        first_ctx = decode_ctx + decodes
        cost = _sum(target, self.proposer.cost(Batch(tokens + decodes, seqs + decodes, decodes,
                                                     pairs + first_ctx, kv + first_ctx)))
        if decodes and self.k > 1:
            # passes 2..k: one token per decode over a context one longer each time; attention
            # time is linear in the context, so k - 1 passes at their mean context cost the same
            mean_ctx = decode_ctx + decodes * ((self.k + 2) / 2.0)
            rest = self.proposer.cost(Batch(decodes, decodes, decodes, mean_ctx, mean_ctx))
            cost = _sum(cost, _scaled(rest, float(self.k - 1)))
        return cost


def resolve(pool, model: catalog.ModelCard, acc: catalog.Accelerator, weight_dtype: str, target, efficiency: dict,
            source: str, key: str) -> SpeculativeCost | None:
    """The pool's :class:`SpeculativeCost`, or None without ``speculative``; ScenarioError naming
    ``<key>.speculative...`` for what cannot be served."""
    cfg = pool.speculative
    if cfg is None:
        return None
    key = f"{key}.speculative"
    if cfg.method == "draft":
        if not cfg.draft_model:
            raise ScenarioError(source, f"{key}.draft_model", "method 'draft' needs 'draft_model' (a model card name)")
        card = catalog.model(cfg.draft_model, source, f"{key}.draft_model")
        if card.attention != "mla" and card.num_attention_heads % pool.tp != 0:
            raise ScenarioError(source, f"{key}.draft_model", f"{card.name} has {card.num_attention_heads} attention "
                                                             f"heads, not divisible by tp={pool.tp}")
    else:
        card = mtp_card(model)
    if pool.pp > 1:
        raise ScenarioError(source, key, "speculative decoding with pipeline parallelism (pp > 1) is not modelled")
    if pool.batcher.max_num_batched_tokens < cfg.num_speculative_tokens + 1:
        raise ScenarioError(source, f"{key}.num_speculative_tokens",
                            f"a decode verifies {cfg.num_speculative_tokens + 1} tokens per step, more than "
                            f"max_num_batched_tokens={pool.batcher.max_num_batched_tokens}")
    eff = {k: v for k, v in efficiency.items() if k in DEFAULT_EFFICIENCY}
    eff["iteration_overhead_s"] = 0.0  # the CPU-side step overhead is paid once, by the target
    wdtype = weight_dtype if cfg.method == "mtp" else (pool.weight_dtype or card.weight_dtype)
    proposer = RooflineModel(card, acc, pool.tp, wdtype, pool.kv_dtype, **eff)
    if cfg.method == "mtp":
        dense, moe = card.layer_params()
        weights = (moe if card.is_moe else dense) * proposer.wbytes / pool.tp  # embeddings and head are shared
    else:
        weights = proposer.weight_bytes_device()
    return SpeculativeCost(target, proposer, cfg.num_speculative_tokens, cfg.acceptance_rate, cfg.method,
                           weights, proposer.kv_bytes_per_token_device())
