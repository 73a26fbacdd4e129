"""Image and video diffusion serving: model cards, a compute-bound cost model, a batching replica.

A diffusion transformer (DiT) turns noise into an image or a video in ``steps`` denoising
steps; every step runs the whole network once (twice with classifier-free guidance: the
prompt and the negative prompt) over all latent tokens of the job, with full bidirectional
attention and no KV cache. A VAE then decodes the latents into pixels. Unlike LLM decode,
the work per step is large and fixed for a given shape (frames, resolution, steps), so

* :class:`DiffusionPerf` prices one denoising step of ``B`` same-shape jobs on the
  roofline (linear layers compute-bound at the calibrated GEMM efficiency, attention
  quadratic in the tokens at the attention efficiency, one read of the weights per step,
  memory-bound elementwise traffic, tensor-parallel all-reduces, a per-step overhead), and
  the VAE decode (compute-bound at an assumed conv efficiency); pure, no SimPy;
* :class:`DiffusionReplica` serves :class:`DiffusionJob` s by static batching: when free it
  takes the oldest waiting job and every waiting job of the same shape, up to ``max_batch``,
  and runs them to the end (all steps and the decode) as one SimPy timeout; nothing joins
  mid-denoising. Each job gets an equal share of its batch's energy and device time.

Cards live in ``hardware/diffusion/<name>.yaml`` with the ``{value, source}`` convention of
hardware/README.md. docs/diffusion.md gives the formulas and the validation against
published timings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np

from sim.hardware import catalog
from sim.hardware.catalog import DTYPE_BYTES, Accelerator
from sim.errors import ScenarioError
from sim.models.efficiency import DEFAULT_EFFICIENCY, merge_efficiency
from sim.models.parallel import ring_allreduce_s
from sim.models.perf import ACT_BYTES, IterationCost, blend

# --------------------------------------------------------------------------- cards

ATTENTION_KINDS = ("joint", "cross")  # MMDiT joint text+image attention | self-attention + text cross-attention


@dataclass(frozen=True)
class DiffusionCard:
    """Architecture and default-output numbers of one diffusion transformer.

    ``attention``: ``joint`` (MMDiT, FLUX / SD3: the text tokens join the sequence of every
    block) or ``cross`` (Wan, PixArt: self-attention over the latent tokens, then
    cross-attention from them to the text tokens). ``latent_tokens_per_frame`` is at the
    default resolution; a video of ``n`` frames has ``1 + ceil((n - 1) / t)`` latent frames
    with ``t = frames_per_latent_frame`` (causal video VAEs keep the first frame alone).
    """

    name: str
    attention: str
    num_layers: int
    hidden_size: int
    num_heads: int
    ffn_size: int
    params_billion: float
    text_tokens: int
    latent_tokens_per_frame: int
    frames_per_latent_frame: int
    default_steps: int
    cfg_forwards_per_step: int
    vae_decode_gflops_per_frame: float
    default_width: int
    default_height: int
    default_frames: int = 1
    default_fps: Optional[float] = None
    weight_dtype: str = "bf16"
    display_name: str = ""
    hf_id: str = ""

    @property
    def is_video(self) -> bool:
        return self.frames_per_latent_frame > 1 or self.default_frames > 1

    def linear_params_per_token(self) -> int:
        """Weights one latent (or joint text) token is multiplied by in one forward, all blocks:
        q, k, v, out (4 d^2), the two MLP matrices (2 d ffn) and, for cross-attention, its query
        and output projections (2 d^2). Modulation (adaLN) and embedders act once per job, not
        per token, and are left out."""
        d = self.hidden_size
        per_layer = 4 * d * d + 2 * d * self.ffn_size + (2 * d * d if self.attention == "cross" else 0)
        return self.num_layers * per_layer

    def text_params_per_token(self) -> int:
        """Cross-attention key and value projections applied to each text token (0 for joint
        attention, where text tokens are counted among the sequence)."""
        d = self.hidden_size
        return self.num_layers * 2 * d * d if self.attention == "cross" else 0


_CARD_FIELDS = set(DiffusionCard.__dataclass_fields__)
_REQUIRED = {n for n, f in DiffusionCard.__dataclass_fields__.items()
             if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}


def cards() -> dict[str, dict]:
    """Raw diffusion cards by name (``hardware/diffusion/*.yaml``)."""
    return catalog._load_cards("diffusion")


def load_card(name: str, source: str = "<scenario>", key: str = "") -> DiffusionCard:
    """The diffusion model card ``name``; ScenarioError naming ``source``/``key`` if unknown or malformed."""
    raw = cards().get(name)
    if raw is None:
        known = ", ".join(sorted(cards())) or "none"
        raise ScenarioError(source, key, f"unknown diffusion model '{name}' (known: {known})")
    plain = {k: v for k, v in catalog._plain(raw).items() if k in _CARD_FIELDS}
    plain.setdefault("name", name)
    missing = sorted(_REQUIRED - set(plain))
    if missing:
        raise ScenarioError(source, key, f"diffusion card '{name}' lacks {', '.join(missing)}")
    card = DiffusionCard(**plain)
    if card.attention not in ATTENTION_KINDS:
        raise ScenarioError(source, key, f"diffusion card '{name}': attention must be one of {ATTENTION_KINDS}")
    if card.cfg_forwards_per_step not in (1, 2):
        raise ScenarioError(source, key, f"diffusion card '{name}': cfg_forwards_per_step must be 1 or 2")
    if card.weight_dtype not in DTYPE_BYTES:
        raise ScenarioError(source, key, f"diffusion card '{name}': unknown weight_dtype '{card.weight_dtype}'")
    return card


# --------------------------------------------------------------------------- cost model

# Diffusion-only efficiency parameters, on top of sim.models.efficiency.DEFAULT_EFFICIENCY.
# vae_efficiency: fraction of bf16 peak the VAE decoder's convolutions reach. An assumption
# (cuDNN implicit-GEMM convs at 128-512 channels typically run at 30-50% of peak), not fitted.
DIFFUSION_EFFICIENCY = {"vae_efficiency": 0.4}
# Elementwise activation traffic per token per block, in activation elements read + written:
# adaLN modulate (x2), LayerNorm/RMSNorm (x2 + q/k norms), gated residual adds (x2), rotary on
# q and k: ~16 passes over a hidden-wide row, and the GELU over the MLP width (read + write).
# Derived count for an unfused (eager) DiT block; memory-bound, so it matters only for short
# sequences.
ELEMENTWISE_HIDDEN_PASSES = 16
ELEMENTWISE_FFN_PASSES = 2


def latent_frames(card: DiffusionCard, frames: int) -> int:
    """Latent frames of a ``frames``-frame output (causal temporal compression)."""
    t = card.frames_per_latent_frame
    if t <= 1:
        return max(1, frames)
    return 1 + -(-(max(1, frames) - 1) // t)


class DiffusionPerf:
    """Time, FLOPs and HBM bytes of denoising steps and VAE decodes on ``tp`` devices.

    Tensor parallelism (Megatron-style) shards every linear layer and the heads ``tp`` ways and
    adds two all-reduces of the activations per block. The VAE decode runs on one device of the
    replica (the others wait); its FLOPs are reported averaged over the devices, as the power
    model reads per-device activity.
    """

    def __init__(self, card: DiffusionCard, acc: Accelerator, tp: int = 1, weight_dtype: str | None = None,
                 efficiency: dict | None = None):
        self.card, self.acc, self.tp = card, acc, int(tp)
        if self.tp < 1:
            raise ValueError("tp must be >= 1")
        self.weight_dtype = weight_dtype or card.weight_dtype
        eff = {**DEFAULT_EFFICIENCY, **DIFFUSION_EFFICIENCY}
        eff.update({k: v for k, v in catalog.calibration(acc.name).perf.items() if k in eff})
        self.eff = eff = merge_efficiency(eff, efficiency or {})
        self.wbytes = DTYPE_BYTES[self.weight_dtype]
        self.peak = acc.peak_flops(self.weight_dtype) * eff["gemm_efficiency"]
        self.attn_peak = acc.peak_flops("bf16") * eff["attention_efficiency"]
        self.vae_peak = acc.peak_flops("bf16") * eff["vae_efficiency"]
        self.bw = acc.memory_bandwidth * eff["memory_efficiency"]
        self.link_bw = acc.link_bandwidth * eff["link_efficiency"]
        self._cache: dict[tuple, IterationCost] = {}

    # ------------------------------------------------------------------ sizes
    def latent_tokens(self, frames: int, resolution_scale: float = 1.0) -> int:
        """Latent tokens of one job: latent frames x tokens per latent frame, scaled by pixel area."""
        per_frame = max(1, round(self.card.latent_tokens_per_frame * resolution_scale))
        return latent_frames(self.card, frames) * per_frame

    def tokens(self, frames: int, resolution_scale: float = 1.0) -> int:
        """Sequence length of one job in the self-attention: its latent tokens, plus the text
        tokens where the architecture attends jointly (MMDiT)."""
        extra = self.card.text_tokens if self.card.attention == "joint" else 0
        return self.latent_tokens(frames, resolution_scale) + extra

    def weight_bytes_device(self) -> float:
        return self.card.params_billion * 1e9 * self.wbytes / self.tp

    # ------------------------------------------------------------------ costs
    def step_cost(self, batch_jobs: int, tokens: int) -> IterationCost:
        """One denoising step of ``batch_jobs`` same-shape jobs of ``tokens`` sequence tokens each
        (as :meth:`tokens` gives), all classifier-free-guidance forwards included; per device."""
        key = ("step", int(batch_jobs), int(tokens))
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._step(int(batch_jobs), int(tokens))
        return hit

    def _step(self, batch: int, tokens: int) -> IterationCost:
        c, tp, e = self.card, self.tp, self.eff
        seqs = batch * c.cfg_forwards_per_step  # sequences through the network this step
        d, layers = c.hidden_size, c.num_layers
        text = c.text_tokens if c.attention == "cross" else 0
        # linear layers: 2 FLOPs per weight per token, weights read once per step (the CFG pair and
        # the batch go through the network as one batch)
        lin_f = 2.0 * seqs * (tokens * c.linear_params_per_token() + text * c.text_params_per_token()) / tp
        w_b = self.weight_bytes_device()
        # GEMM inputs + outputs per block: qkv (d in, 3d out), out (d, d), MLP (d, ffn), (ffn, d),
        # cross-attention query and output (d, d) twice
        io = 8 * d + 2 * c.ffn_size + (4 * d if c.attention == "cross" else 0)
        act_b = seqs * tokens * layers * io * ACT_BYTES / tp
        t_lin = blend(lin_f / self.peak, (w_b + act_b) / self.bw, e["gemm_blend"])
        # attention: QK^T and PV over every (query, key) pair, heads split over tp
        attn_f = 4.0 * seqs * layers * d * (tokens * tokens + tokens * text) / tp
        t_attn = attn_f / self.attn_peak
        # elementwise (norms, modulation, residuals, rotary, activation): memory-bound
        ew_b = seqs * tokens * layers * (ELEMENTWISE_HIDDEN_PASSES * d + ELEMENTWISE_FFN_PASSES * c.ffn_size) \
            * ACT_BYTES / tp
        t_ew = ew_b / self.bw
        # tensor parallelism: all-reduce after attention and after the MLP of every block
        t_comm = 0.0
        if tp > 1:
            t_comm = 2 * layers * ring_allreduce_s(seqs * tokens * d * ACT_BYTES, tp, self.link_bw, e["link_latency_s"])
        time_s = e["iteration_overhead_s"] + t_lin + t_attn + t_ew + t_comm
        compute_s = min(time_s, lin_f / self.peak + attn_f / self.attn_peak)
        return IterationCost(np.array([time_s]), np.array([lin_f + attn_f]), np.array([w_b + act_b + ew_b]),
                             np.array([compute_s]), np.array([t_comm]) if tp > 1 else None)

    def vae_decode_cost(self, batch_jobs: int, frames: int, resolution_scale: float = 1.0) -> IterationCost:
        """VAE decode of ``batch_jobs`` jobs of ``frames`` output frames each (compute-bound, one device)."""
        key = ("vae", int(batch_jobs), int(frames), float(resolution_scale))
        hit = self._cache.get(key)
        if hit is None:
            f = self.card.vae_decode_gflops_per_frame * 1e9 * max(1, frames) * resolution_scale * batch_jobs
            t = f / self.vae_peak
            hit = self._cache[key] = IterationCost(np.array([t]), np.array([f / self.tp]), np.array([0.0]),
                                                   np.array([t]))
        return hit

    def job_time_s(self, frames: int, steps: int, batch: int = 1, resolution_scale: float = 1.0) -> float:
        """Seconds to serve ``batch`` same-shape jobs from the first step to the decoded output."""
        step = self.step_cost(batch, self.tokens(frames, resolution_scale))
        vae = self.vae_decode_cost(batch, frames, resolution_scale)
        return float(steps * step.time_s[0] + vae.time_s[0])
