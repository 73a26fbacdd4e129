"""Training jobs on a pool that also serves inference: the job (model, batch, parallelism,
efficiency), its checkpoints and restarts, and how the pool's replicas are shared between the
two (a workload class's ``training:`` section)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, model_validator

from sim.config.base import Frozen, NonNegFloat, NonNegInt, PosFloat, PosInt, check_step_function

# parallel degrees: no real job shards a model over more than this many devices a dimension
Degree = Annotated[int, Field(ge=1, le=65536)]


class Checkpoint(Frozen):
    """Checkpoints of weights and optimizer state: one after every ``interval_s`` of training
    (rounded to whole steps), ``bytes_per_param`` bytes a parameter (BF16 weights plus FP32
    master weights and Adam moments: 14), written at ``write_gb_s`` in all (None: 2 TB/s per
    16,384 devices, Meta's storage for Llama 3, times the job's devices) and read back at
    ``read_gb_s`` on a restart (None: as written). ``on_preempt``: when inference takes devices
    back the job writes a checkpoint first (``true``) or drops what it did since its last one."""

    interval_s: PosFloat
    bytes_per_param: Annotated[float, Field(gt=0, le=64)] = 14.0
    write_gb_s: Optional[Annotated[float, Field(gt=0, le=1e7)]] = None
    read_gb_s: Optional[Annotated[float, Field(gt=0, le=1e7)]] = None
    on_preempt: bool = True


class StaticSharing(Frozen):
    """A fixed split: ``inference_replicas`` of the pool serve, the rest train."""

    kind: Literal["static"]
    inference_replicas: NonNegInt


class ScheduleSharing(Frozen):
    """A time-of-day split: ``inference_replicas[i]`` serve from ``times_s[i]`` (repeated every
    ``period_s`` if given), the rest train."""

    kind: Literal["schedule"]
    times_s: list[NonNegFloat] = Field(min_length=1, max_length=100_000)
    inference_replicas: list[NonNegInt] = Field(min_length=1, max_length=100_000)
    period_s: Optional[PosFloat] = None

    @model_validator(mode="after")
    def _shape(self):
        check_step_function(self.times_s, self.inference_replicas, self.period_s, "inference_replicas")
        return self


class DemandSharing(Frozen):
    """The pool's autoscaler decides: replicas it switches off train, and it takes them back
    (preempting the job) when demand rises."""

    kind: Literal["demand"]


class PrioritySharing(Frozen):
    """Demand-driven, but inference never takes the last ``min_training_replicas``."""

    kind: Literal["priority"]
    min_training_replicas: PosInt


Sharing = Annotated[Union[StaticSharing, ScheduleSharing, DemandSharing, PrioritySharing], Field(discriminator="kind")]


class TrainingSpec(Frozen):
    """A pre-training job: ``model`` (a model card) trained on ``batch_tokens`` tokens a step
    in sequences of ``seq_len``, on data-parallel replicas of ``tp x pp`` devices each. The
    job is gang-scheduled: it runs only when at least ``min_dp`` whole replicas (default
    ``dp``: all of them) are granted, on at most ``dp``; any change of its devices restarts
    it from its last checkpoint (``restart_s`` to start plus the checkpoint read). ``mfu``:
    model-FLOPs utilization (None: 0.435, fitted to Meta's Llama 3 405B run on H100s).
    ``overlap``: share of the last micro-batch's backward pass that hides the gradient
    exchange. ``tokens``: the job ends when it has trained that many (None: it runs on)."""

    model: str = Field(min_length=1, max_length=200)
    batch_tokens: Annotated[int, Field(ge=1, le=10**10)]
    seq_len: Annotated[int, Field(ge=1, le=10**8)] = 8192
    tp: Degree = 8
    pp: Degree = 1
    dp: Degree
    min_dp: Optional[Degree] = None
    mfu: Optional[Annotated[float, Field(gt=0, le=1)]] = None
    overlap: Annotated[float, Field(ge=0, le=1)] = 1.0
    micro_batch_seqs: PosInt = 1
    tokens: Optional[Annotated[float, Field(gt=0, le=1e16)]] = None
    restart_s: NonNegFloat
    checkpoint: Checkpoint
    sharing: Sharing = DemandSharing(kind="demand")

    @model_validator(mode="after")
    def _degrees(self):
        if self.min_dp is not None and self.min_dp > self.dp:
            raise ValueError(f"'min_dp' ({self.min_dp}) must be <= 'dp' ({self.dp})")
        if self.tp * self.pp * self.dp > 10**7:
            raise ValueError(f"tp x pp x dp ({self.tp * self.pp * self.dp}) is over 10,000,000 devices")
        return self
