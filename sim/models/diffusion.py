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
import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pyarrow as pa

from sim.hardware import catalog
from sim.hardware.catalog import DTYPE_BYTES, Accelerator
from sim.errors import ScenarioError
from sim.models.perf import ACT_BYTES, DEFAULT_EFFICIENCY, IterationCost, blend, merge_efficiency, ring_allreduce_s

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

# Diffusion-only efficiency parameters, on top of sim.models.perf.DEFAULT_EFFICIENCY.
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
                             np.array([compute_s]))

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


# --------------------------------------------------------------------------- serving

VIDEOS_SCHEMA = pa.schema(
    [
        ("job_id", pa.int64()),
        ("class", pa.string()),
        ("pool", pa.string()),
        ("replica", pa.int32()),
        ("status", pa.string()),  # finished | timed-out
        ("arrival_s", pa.float64()),
        ("admitted_s", pa.float64()),  # start of its batch (NaN: never started)
        ("finish_s", pa.float64()),  # output decoded (NaN unless finished)
        ("latency_s", pa.float64()),  # finish - arrival
        ("frames", pa.int32()),
        ("steps", pa.int32()),
        ("resolution_scale", pa.float64()),  # pixel area over the card's default
        ("latent_tokens", pa.int64()),
        ("batch", pa.int32()),  # jobs in its batch (0: never started)
        ("device_s", pa.float64()),  # device-seconds attributed (its share of the batch)
        ("energy_j", pa.float64()),  # device energy attributed likewise
        ("cost_usd", pa.float64()),  # device_s x price + energy x usd_per_j
    ]
)


class DiffusionJob:
    """One image or video request: the unit a :class:`DiffusionReplica` serves."""

    __slots__ = ("job_id", "cls", "arrival_s", "frames", "steps", "resolution_scale", "on_done",
                 "replica", "admitted_s", "finish_s", "status", "energy_j", "device_s", "batch",
                 "latent_tokens", "cost_usd")

    def __init__(self, job_id: int, cls: str, arrival_s: float, frames: int, steps: int,
                 resolution_scale: float = 1.0, on_done: Optional[Callable[["DiffusionJob"], None]] = None):
        self.job_id = job_id
        self.cls = cls
        self.arrival_s = arrival_s
        self.frames = int(frames)
        self.steps = int(steps)
        self.resolution_scale = float(resolution_scale)
        self.on_done = on_done
        self.replica = -1
        self.admitted_s = math.nan
        self.finish_s = math.nan
        self.status = ""
        self.energy_j = 0.0
        self.device_s = 0.0
        self.batch = 0
        self.latent_tokens = 0
        self.cost_usd = 0.0

    @property
    def shape(self) -> tuple[int, int, float]:
        """What must match for jobs to share a batch: frames, steps, resolution."""
        return self.frames, self.steps, self.resolution_scale

    @property
    def latency_s(self) -> float:
        return self.finish_s - self.arrival_s


class DiffusionReplica:
    """One diffusion model instance on ``devices`` devices, serving batches of same-shape jobs.

    ``recorder_row`` receives one :data:`VIDEOS_SCHEMA` tuple per job when it ends;
    ``step_row`` (optional) one tuple in the steps-table layout (sim.output.trace.STEPS_SCHEMA order,
    ``avg_power_w`` last) per batch (kind ``diffusion``), per idle gap (``idle``) and for a
    batch cut by the end of the simulation (``partial``). The replica is independent of the
    LLM :class:`sim.engine.replica.Replica`; a pool shared with LLM traffic is the caller's business.
    """

    def __init__(self, env, index: int, pool: str, perf: DiffusionPerf, power, devices: int, max_batch: int,
                 recorder_row: Callable[[tuple], None], step_row: Optional[Callable[[tuple], None]] = None,
                 price_usd_per_device_s: float = 0.0, usd_per_j: float = 0.0):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.env = env
        self.index = index
        self.pool = pool
        self.perf = perf
        self.power = power
        self.devices = int(devices)
        self.max_batch = int(max_batch)
        self.recorder_row = recorder_row
        self.step_row = step_row
        self.price_usd_per_device_s = price_usd_per_device_s
        self.usd_per_j = usd_per_j
        self.waiting: deque[DiffusionJob] = deque()
        self.running: list[DiffusionJob] = []
        self.clock = 0.0  # end of the last accounted interval
        self.busy_s = 0.0
        self.energy_j = 0.0
        self.batches = 0
        self.finished = 0
        self._idle_w = power.idle_w * self.devices
        self._batch: Optional[tuple] = None  # (start, end, energy, steps, tokens, waiting_before)
        self._version = 0
        self._start_pending = False
        self._closed = False  # finish() ran: nothing starts any more
        # An LLM replica on the same devices (a pool shared with LLM traffic): each batch waits
        # for it to hand the devices over at an iteration boundary, and it, not this replica,
        # accounts the devices' idle time.
        self.host = None

    # ------------------------------------------------------------------ public
    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.running)

    def submit(self, job: DiffusionJob) -> None:
        """A job arrives (now). It starts with the next batch; a free replica starts that batch
        at the end of this instant, so jobs arriving together can share it."""
        job.replica = self.index
        job.latent_tokens = self.perf.latent_tokens(job.frames, job.resolution_scale)
        self.waiting.append(job)
        if not self.running and not self._start_pending:
            self._start_pending = True
            self.env.timeout(0).callbacks.append(lambda _ev: self._start())

    def batch_cost(self, batch: int, frames: int, steps: int, resolution_scale: float = 1.0) -> tuple[float, float]:
        """(seconds, joules over all devices) of one batch, power cap applied."""
        step, step_w = self.power.under_cap(self.perf.step_cost(batch, self.perf.tokens(frames, resolution_scale)))
        vae, vae_w = self.power.under_cap(self.perf.vae_decode_cost(batch, frames, resolution_scale))
        t_step, t_vae = float(step.time_s[0]), float(vae.time_s[0])
        seconds = steps * t_step + t_vae
        energy = (steps * t_step * float(step_w[0]) + t_vae * float(vae_w[0])) * self.devices
        return seconds, energy

    def finish(self, t_end: float) -> None:
        """End of simulation at ``t_end``: cut the batch in flight, time out every unfinished job."""
        self._version += 1  # the pending batch end, if any, no longer fires
        self._closed = True
        if self._batch is not None:
            start, end, energy, steps, tokens, waiting_before = self._batch
            self._batch = None
            if end <= t_end:  # ended at t_end exactly, before its event ran
                self._complete(start, end, energy, steps, tokens, waiting_before)
            else:
                cut = max(start, t_end)
                e = energy * (cut - start) / (end - start) if end > start else 0.0
                self._account(start, cut, e, busy=True)
                self._row("partial", start, cut, 0, len(self.running), 0, waiting_before, e)
                self._share(self.running, cut - start, e)
                self.clock = cut
        self._advance_idle(t_end)
        for j in self.running + list(self.waiting):
            self._end(j, "timed-out", math.nan)
        self.running = []
        self.waiting.clear()

    # ------------------------------------------------------------------ batches
    def _start(self) -> None:
        self._start_pending = False
        if self._closed or self.running or not self.waiting:
            return
        shape = self.waiting[0].shape
        batch, rest = [], deque()
        for j in self.waiting:
            (batch if j.shape == shape and len(batch) < self.max_batch else rest).append(j)
        waiting_before = len(self.waiting)
        self.waiting = rest
        self.running = batch
        seconds, _ = self.batch_cost(len(batch), *shape)
        if self.host is not None:  # the LLM replica lends the devices at its next boundary
            self.host.lend(seconds, lambda: self._begin(batch, waiting_before))
            return
        self._begin(batch, waiting_before)

    def _begin(self, batch: list, waiting_before: int) -> None:
        """Run ``batch`` from now: one timeout for all its steps and the VAE decode."""
        if self._closed:
            return
        now = self.env.now
        self._advance_idle(now)
        frames, steps, scale = batch[0].shape
        seconds, energy = self.batch_cost(len(batch), frames, steps, scale)
        for j in batch:
            j.admitted_s = now
            j.batch = len(batch)
        tokens = len(batch) * self.perf.tokens(frames, scale) * self.perf.card.cfg_forwards_per_step * steps
        self._batch = (now, now + seconds, energy, steps, tokens, waiting_before)
        self._version += 1
        version = self._version
        self.env.timeout(seconds).callbacks.append(lambda _ev: self._on_end(version))

    def _on_end(self, version: int) -> None:
        if version != self._version or self._batch is None:
            return
        batch, self._batch = self._batch, None
        self._complete(*batch)
        self._start()

    def _complete(self, start: float, end: float, energy: float, steps: int, tokens: int, waiting_before: int) -> None:
        self._account(start, end, energy, busy=True)
        self.batches += 1
        self._row("diffusion", start, end, steps, len(self.running), tokens, waiting_before, energy)
        done, self.running = self.running, []
        self._share(done, end - start, energy)
        self.clock = end
        for j in done:
            self.finished += 1
            self._end(j, "finished", end)

    def _share(self, jobs: list, seconds: float, energy: float) -> None:
        if not jobs:
            return
        e, s = energy / len(jobs), seconds * self.devices / len(jobs)
        for j in jobs:
            j.energy_j += e
            j.device_s += s

    # ------------------------------------------------------------------ accounting
    def _advance_idle(self, t: float) -> None:
        if self.host is not None:  # the sharing LLM replica accounts the idle devices
            self.clock = max(self.clock, t)
            return
        if t > self.clock:
            e = self._idle_w * (t - self.clock)
            self._account(self.clock, t, e, busy=False)
            self._row("idle", self.clock, t, 0, 0, 0, len(self.waiting), e)
            self.clock = t

    def _account(self, start: float, end: float, energy: float, busy: bool) -> None:
        self.energy_j += energy
        if busy:
            self.busy_s += end - start

    def _row(self, kind: str, start: float, end: float, iterations: int, seqs: int, tokens: int, waiting: int,
             energy: float) -> None:
        if self.step_row is None:
            return
        dur = end - start
        self.step_row((self.pool, self.index, kind, start, end, iterations, seqs, tokens, 0, 0, waiting, 0, energy,
                       energy / dur if dur > 0 else math.nan))

    def _end(self, job: DiffusionJob, status: str, t: float) -> None:
        job.status = status
        job.finish_s = t
        job.cost_usd = job.device_s * self.price_usd_per_device_s + job.energy_j * self.usd_per_j
        self.recorder_row((job.job_id, job.cls, self.pool, job.replica, status, job.arrival_s, job.admitted_s, t,
                           t - job.arrival_s, job.frames, job.steps, job.resolution_scale, job.latent_tokens,
                           job.batch, job.device_s, job.energy_j, job.cost_usd))
        if job.on_done is not None:
            job.on_done(job)
