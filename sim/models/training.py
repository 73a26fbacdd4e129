"""Training jobs as pure cost models: step time, checkpoint cost, and the Young/Daly waste.

A training step processes a global batch of ``B`` tokens on ``tp x pp x dp`` devices.

* **Compute**: ``B x F`` FLOPs with ``F = 6 N + 12 L d s`` per token (forward and backward
  of the weights, plus the attention scores and values of a ``s``-token context: PaLM's
  model-FLOPs count, Chowdhery et al. 2022, "PaLM", Appendix B), at ``MFU`` of the devices'
  dense BF16 peak. MFU folds in what the roofline leaves out (pipeline bubble, kernel
  efficiency, recomputation); its default is fitted to Meta's Llama 3 405B run (below).
* **Data-parallel gradient exchange**: each data-parallel rank holds ``N / (tp pp)``
  parameters; their gradients (2 bytes each, BF16) are all-reduced (or reduce-scattered and
  the updated shards all-gathered, the same bytes: Megatron's distributed optimizer) over the
  ``dp`` ranks with a ring: ``2 (dp - 1) / dp x bytes / bandwidth``; the bandwidth is the
  scale-up link when the whole job fits in one node, else the per-device scale-out NIC. The
  exchange overlaps the backward pass of the last micro-batch (bucketed all-reduce as in
  PyTorch DDP, Li et al. 2020, VLDB); what does not fit behind it adds to the step.
* **Checkpoint**: weights and optimizer state, ``bytes_per_param`` per parameter (BF16
  weights plus FP32 master weights and Adam's two moments: 2 + 12 = 14 bytes; ZeRO, Rajbhandari
  et al. 2020, section 3.1, counts 16 with the FP16 gradients, which a checkpoint does not keep),
  written at the storage bandwidth; a restart re-reads it.

The Young/Daly functions give the expected share of a job's time lost to checkpoints,
re-done work and restarts when failures arrive at rate ``1 / MTBF`` (Young 1974, "A first
order approximation to the optimum checkpoint interval", CACM 17(9); Daly 2006, FGCS 22(3)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.models.parallel import ring_allreduce_s

# Meta's Llama 3 405B pre-training (Dubey et al. 2024, "The Llama 3 Herd of Models", Table 4):
# 8,192 H100 GPUs, TP 8, CP 1, PP 16, DP 64, sequence 8,192, 16M tokens a batch: 430 TFLOPs
# per GPU, BF16 MFU 43%. MFU here is that rate over the H100 SXM's dense BF16 peak (989.4
# TFLOPs, hardware/accelerators/h100-sxm.yaml); its exchange is hidden behind the backward
# pass, so the fitted MFU is the compute efficiency alone.
LLAMA3_405B_TFLOPS_PER_GPU = 430.0
H100_BF16_PEAK_TFLOPS = 989.4
DEFAULT_MFU = LLAMA3_405B_TFLOPS_PER_GPU / H100_BF16_PEAK_TFLOPS

# Meta's storage for Llama 3 (same paper, section 3.3.1): Tectonic sustains 2 TB/s of
# checkpoint traffic for a 16,384-GPU job. Per device: the default write and read bandwidth.
STORAGE_GB_S_PER_DEVICE = 2000.0 / 16384

GRAD_BYTES = 2  # BF16 gradients


def flops_per_token(params: float, layers: int, d_model: int, seq_len: int) -> float:
    """Training FLOPs of one token: ``6 N`` for the weights plus ``12 L d s`` for attention
    (PaLM's count, forward and backward)."""
    return 6.0 * params + 12.0 * layers * d_model * seq_len


@dataclass(frozen=True)
class TrainingModel:
    """One job's step and checkpoint costs on one kind of device."""

    params: float  # parameters N
    layers: int
    d_model: int
    seq_len: int
    batch_tokens: int  # global batch, tokens a step
    tp: int
    pp: int
    peak_flops: float  # dense BF16 FLOP/s of one device
    mfu: float = DEFAULT_MFU
    link_bw: float = 450e9  # scale-up bytes/s, one direction
    network_bw: float | None = None  # scale-out NIC bytes/s of one device (None: the link's)
    devices_per_node: int = 8
    micro_batch_seqs: int = 1
    overlap: float = 1.0  # share of the backward pass of the last micro-batch the exchange can hide behind
    bytes_per_param: float = 14.0

    @property
    def group_devices(self) -> int:
        """Devices of one data-parallel replica (``tp x pp``)."""
        return self.tp * self.pp

    @property
    def flops_per_token(self) -> float:
        return flops_per_token(self.params, self.layers, self.d_model, self.seq_len)

    def compute_s(self, dp: int) -> float:
        """Forward and backward of the global batch on ``dp`` replicas at the fitted MFU."""
        return self.batch_tokens * self.flops_per_token / (dp * self.group_devices * self.peak_flops * self.mfu)

    def micro_batches(self, dp: int) -> int:
        """Micro-batches each data-parallel replica runs a step (gradient accumulation)."""
        return max(1, math.ceil(self.batch_tokens / (self.seq_len * self.micro_batch_seqs * dp)))

    def exchange_s(self, dp: int) -> float:
        """Ring all-reduce of one replica's shard of the gradients over the ``dp`` replicas."""
        one_node = dp * self.group_devices <= self.devices_per_node
        bw = self.link_bw if one_node or self.network_bw is None else self.network_bw
        # bandwidth term only: gradient buckets of tens of MB make the hop latencies negligible
        return ring_allreduce_s(self.params / self.group_devices * GRAD_BYTES, dp, bw, 0.0)

    def exposed_exchange_s(self, dp: int) -> float:
        """The part of the exchange not hidden behind the last micro-batch's backward pass
        (two thirds of its compute)."""
        hide = self.overlap * (2.0 / 3.0) * self.compute_s(dp) / self.micro_batches(dp)
        return max(0.0, self.exchange_s(dp) - hide)

    def step_s(self, dp: int) -> float:
        """Seconds of one optimizer step on ``dp`` data-parallel replicas."""
        return self.compute_s(dp) + self.exposed_exchange_s(dp)

    def achieved_flops_per_device(self, dp: int) -> float:
        """Model FLOP/s of one device over a whole step (what papers report as TFLOPs/GPU)."""
        return self.batch_tokens * self.flops_per_token / (self.step_s(dp) * dp * self.group_devices)

    @property
    def checkpoint_bytes(self) -> float:
        """Weights and optimizer state of the whole model."""
        return self.params * self.bytes_per_param

    def checkpoint_s(self, write_bytes_s: float) -> float:
        """Time to write one checkpoint at an aggregate ``write_bytes_s``."""
        return self.checkpoint_bytes / write_bytes_s


# --------------------------------------------------------------------------- Young / Daly


def young_interval(checkpoint_s: float, mtbf_s: float) -> float:
    """Young's first-order optimum period between checkpoints, ``sqrt(2 C M)``."""
    return math.sqrt(2.0 * checkpoint_s * mtbf_s)


def first_order_waste(period_s: float, checkpoint_s: float, mtbf_s: float, restart_s: float = 0.0) -> float:
    """Share of the time lost with a checkpoint every ``period_s`` (work plus its checkpoint):
    ``C / T`` writing checkpoints plus, per failure (one every ``M``), half a period of work
    done again and the restart: ``C / T + (T / 2 + R) / M``. At ``T = sqrt(2 C M)``, R = 0,
    it is ``sqrt(2 C / M)``."""
    return checkpoint_s / period_s + (period_s / 2.0 + restart_s) / mtbf_s


def exact_waste(work_s: float, checkpoint_s: float, mtbf_s: float, restart_s: float = 0.0) -> float:
    """The same share, exact for exponential failures that may also strike during a
    checkpoint or a restart: a segment of ``w = work + C`` takes ``M e^(R/M) (e^(w/M) - 1)`` in
    expectation (a restart struck by a failure starts again; Daly 2006),
    of which ``work`` is kept."""
    expected = mtbf_s * math.exp(restart_s / mtbf_s) * math.expm1((work_s + checkpoint_s) / mtbf_s)
    return 1.0 - work_s / expected
